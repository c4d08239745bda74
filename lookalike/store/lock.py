"""The store's write lock: one writing process at a time, released the moment that process dies.

It is a POSIX record lock (``fcntl.lockf``) on ``lock``, not a ``flock``: decoding workers
forked by a writer inherit a ``flock`` and, orphaned when the writer is killed, kept it
for seconds, refusing the rerun. Record locks belong to the process, are never inherited
by its children, and go with it. They have a trap: closing *any* descriptor of the file in
the owning process drops them, so the file is opened exactly once per hold, and a second
writer in the same process is refused before it ever opens the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreLockedError
from .layout import LOCK

_held: set[str] = set()  # lock files this process holds
_guard = threading.Lock()
_holding = threading.local()  # lock files a ``hold_store`` in this thread holds, for writers inside it


@contextlib.contextmanager
def lock_store(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the store's write lock, or raise ``StoreLockedError`` at once if another writer has it.

    Raises:
        StoreLockedError: another process, or another writer in this one, holds it; the message names the process.
    """
    path = os.path.realpath(Path(directory) / LOCK)
    if path in getattr(_holding, "paths", ()):  # inside this thread's own hold_store: already locked
        yield
        return
    with _guard:
        if path in _held:
            raise StoreLockedError(f"this process is already writing to {directory}: close that writer first")
        _held.add(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _lock(fd, directory)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message another writer gets
            yield
        finally:
            os.close(fd)  # drops the lock
    finally:
        with _guard:
            _held.discard(path)


def _lock(fd: int, directory) -> None:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        who = f" (process {holder})" if holder.isdigit() else ""
        raise StoreLockedError(f"another lookalike process{who} is writing to {directory}; wait for it to finish") from None


@contextlib.contextmanager
def hold_store(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock across many writers: those opened in this thread meanwhile write under it.

    ``lookalike watch`` holds its store so for as long as it runs, between its indexing passes
    too, so a second ``index`` or ``watch`` is refused with the usual message.

    Raises:
        StoreLockedError: as ``lock_store``.
    """
    path = os.path.realpath(Path(directory) / LOCK)
    with lock_store(directory):
        _holding.paths = getattr(_holding, "paths", frozenset()) | {path}
        try:
            yield
        finally:
            _holding.paths = _holding.paths - {path}
