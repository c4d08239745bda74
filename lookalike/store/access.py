"""Why a store can't be read or written: permission denied, a read-only filesystem, a lock held, or damage.

Each has its own advice, and only damage points at ``--reset``, which deletes the store: a
user told "damaged" for a store they merely may not write would throw away every vector.
SQLite reports most of these as "unable to open database file" or "attempt to write a
readonly database"; which it is, is asked of the filesystem (``statvfs`` for a read-only
mount, ``access`` for this user's rights).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..errors import (
    LookalikeError,
    StoreDamagedError,
    StoreError,
    StoreLockedError,
    StorePermissionError,
    StoreReadOnlyError,
)

_PERMISSION = (errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def explained(path: str | os.PathLike, writing: bool) -> Iterator[None]:
    """Turn an ``OSError`` or ``sqlite3.Error`` met reading (or ``writing``) the store file ``path`` into a typed error."""
    try:
        yield
    except LookalikeError:
        raise
    except (OSError, sqlite3.Error) as e:
        raise explain(e, path, writing) from e


def explain(error: OSError | sqlite3.Error, path: str | os.PathLike, writing: bool) -> StoreError:
    """The typed error, with its advice, for ``error`` met reading (or ``writing``) ``path``."""
    path = Path(getattr(error, "filename", None) or path)
    code = getattr(error, "sqlite_errorname", "") or ""
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreLockedError(f"{path} is locked by another process ({error}): wait for it to finish, "
                                f"then run the command again")
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return damaged(path, str(error))
    if getattr(error, "errno", None) == errno.ENOSPC or code == "SQLITE_FULL":
        return StoreError(f"no space left for {path}: free some, then run the command again (nothing committed is lost)")
    if getattr(error, "errno", None) == errno.EROFS or read_only_filesystem(path):
        return read_only(path, writing)
    if getattr(error, "errno", None) in _PERMISSION or code.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")) \
            or not _allowed(path, writing):
        return permission_denied(path, writing)
    return StoreError(f"can't {'write' if writing else 'read'} {path}: {error}")


def damaged(path: Path, why: str) -> StoreDamagedError:
    return StoreDamagedError(f"{path} is damaged ({why}): restore the store from a backup, or index again with "
                             f"--reset, which deletes the store and embeds every image again")


def read_only(path: Path, writing: bool) -> StoreReadOnlyError:
    if writing:
        return StoreReadOnlyError(f"{path} is on a read-only filesystem and this command writes to the store: remount it "
                                  f"read-write, or copy the store somewhere writable (query, dupes, info and export "
                                  f"only read)")
    return StoreReadOnlyError(f"{path} is on a read-only filesystem and can't be read there as it is: run any lookalike "
                              f"command on the store once where it is writable, or copy the store somewhere writable")


def permission_denied(path: Path, writing: bool) -> StorePermissionError:
    what = "write to" if writing else "read"
    return StorePermissionError(f"permission denied: this user may not {what} {path}; run lookalike as the user who "
                                f"owns the store, or give this user access to it (chmod, chown); the store is unharmed")


def read_only_filesystem(path: str | os.PathLike) -> bool:
    """Whether ``path`` (or the nearest folder above it that exists) is on a filesystem mounted read-only."""
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        try:
            return bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return False


def _allowed(path: Path, writing: bool) -> bool:
    """Whether this user may read (or write) ``path`` and, writing, make files beside it (SQLite's journals)."""
    folder = path.parent
    if writing:
        return (not path.exists() or os.access(path, os.R_OK | os.W_OK)) and os.access(folder, os.W_OK | os.X_OK)
    return os.access(folder, os.X_OK) and (not path.exists() or os.access(path, os.R_OK))
