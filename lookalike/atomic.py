"""Files replaced whole or not at all: write a temporary sibling, fsync, rename, fsync the folder."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from . import crashpoints

TMP_SUFFIX = ".tmp"


def write_atomically(path: str | os.PathLike, data: bytes, crash_point: str | None = None) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one, never half of one."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    replace_atomically(path, write, crash_point)


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], None], crash_point: str | None = None) -> None:
    """Replace ``path`` with what ``write(tmp)`` writes to a temporary sibling, as ``write_atomically`` does.

    ``crash_point`` names the steps for ``lookalike.crashpoints``: ``NAME.written`` (the
    temporary file is complete and fsynced) and ``NAME.renamed`` (it replaced ``path``).
    A process killed before the rename leaves the temporary file, named by
    ``temporary_files``, for the next writer to delete.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")  # two writers never share one
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # Windows fsyncs only handles open for writing
            os.fsync(handle.fileno())
        if crash_point:
            crashpoints.reached(f"{crash_point}.written")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if crash_point:
        crashpoints.reached(f"{crash_point}.renamed")
    fsync_folder(path.parent)


def temporary_files(path: str | os.PathLike) -> list[Path]:
    """Temporary siblings that ``replace_atomically`` left for ``path`` when its process died."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"))


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename durable; folders can't be opened for fsync on Windows, where it's skipped."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
