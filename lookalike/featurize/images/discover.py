"""Finding the image files under a folder: recursive, hidden folders and the store skipped,
symlinks followed without looping."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)


class FoundFile(NamedTuple):
    """A file to index: ``key`` is its path relative to the root, with forward slashes.

    ``ctime_ns`` and ``mode`` tell a failed file that was fixed without being rewritten (a chmod).
    """

    key: str
    path: str
    size: int
    mtime_ns: int
    ctime_ns: int = 0
    mode: int = 0


class UnreadableFolder(NamedTuple):
    """A folder that could not be listed: ``key`` relative to the root, ending in ``/``; why; its own times."""

    key: str
    reason: str
    mtime_ns: int = 0
    ctime_ns: int = 0
    mode: int = 0


def discover(root: str | os.PathLike, extensions: frozenset[str], skip: str | os.PathLike | None = None,
             unreadable: list[UnreadableFolder] | None = None) -> list[FoundFile]:
    """Every file under ``root`` whose lower-cased suffix is in ``extensions``, sorted by key.

    Args:
        root: the folder to walk.
        extensions: suffixes with the dot, e.g. ``{".jpg", ".png"}``.
        skip: a folder never to enter (the store).
        unreadable: given, each folder that could not be listed is appended to it (an
            ``UnreadableFolder``); without it they are passed over with a logged warning.

    Hidden files and folders (a leading dot) are skipped. A symlinked folder is followed
    once: a link back up the tree, or a second link to the same folder, is not entered again.
    """
    root = Path(root)
    skipped = os.path.realpath(skip) if skip is not None else None
    visited: set[tuple[int, int]] = set()
    found = []

    def refused(error: OSError) -> None:
        logger.warning("not reading the folder %s: %s", error.filename, error.strerror)
        if unreadable is not None and error.filename is not None:
            unreadable.append(_folder(root, error))

    for folder, dirs, names in os.walk(root, followlinks=True, onerror=refused):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) != skipped)
        for name in sorted(names):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in extensions:
                continue
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError as e:  # a broken symlink, or a file deleted as we walked
                logger.warning("skipping %s: %s", path, e.strerror)
                continue
            key = Path(path).relative_to(root).as_posix()
            found.append(FoundFile(key, path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_mode))
    found.sort(key=lambda f: f.key)
    return found


def _folder(root: Path, error: OSError) -> UnreadableFolder:
    key = Path(error.filename).relative_to(root).as_posix().rstrip("/") + "/"
    reason = f"folder not read ({error.strerror or type(error).__name__}): the images in it are not indexed"
    try:
        stat = os.stat(error.filename)
        return UnreadableFolder(key, reason, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_mode)
    except OSError:
        return UnreadableFolder(key, reason)
