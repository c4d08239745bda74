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


def discover(root: str | os.PathLike, extensions: frozenset[str], skip: str | os.PathLike | None = None) -> list[FoundFile]:
    """Every file under ``root`` whose lower-cased suffix is in ``extensions``, sorted by key.

    Args:
        root: the folder to walk.
        extensions: suffixes with the dot, e.g. ``{".jpg", ".png"}``.
        skip: a folder never to enter (the store).

    Hidden files and folders (a leading dot) are skipped. A symlinked folder is followed
    once: a link back up the tree, or a second link to the same folder, is not entered again.
    """
    root = Path(root)
    skipped = os.path.realpath(skip) if skip is not None else None
    visited: set[tuple[int, int]] = set()
    found = []
    for folder, dirs, names in os.walk(root, followlinks=True):
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
