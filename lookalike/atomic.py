"""Files replaced whole or not at all: write a temporary sibling, fsync, rename, fsync the folder.

A file's data is durable once it is fsynced; its name, once its folder is (a new folder's
name, once the folder above it is). Until then a power cut may take either back, whatever
order they were made in: ``tests/test_powercut.py`` checks every fsync here on a
filesystem that forgets the rest.
"""

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


def make_folder(folder: str | os.PathLike) -> Path:
    """Make ``folder`` (and any missing folder above it) so that it survives a power cut.

    The folder above is fsynced even when ``folder`` was there already: a process killed
    between its ``mkdir`` and that fsync left a folder that a power cut would still take back.
    """
    folder = Path(folder)
    if not folder.is_dir():
        make_folder(folder.parent)
        folder.mkdir(exist_ok=True)
    fsync_folder(folder.parent)
    return folder


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename durable; folders can't be opened for fsync on Windows, where it's skipped."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
