"""Finding the image files under a folder: recursive, hidden folders and the store skipped,
symlinks followed without looping; with ``scan``, the image files not read counted by type,
and RAW files read through their JPEG sidecars."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from .formats import IMAGE_EXTENSIONS, JPEG_EXTENSIONS, RAW_EXTENSIONS, UNREAD_EXTENSIONS, readable_extensions

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


class Scan(NamedTuple):
    """What ``scan`` found under a folder.

    Attributes:
        found: the files to read, sorted by key.
        skipped: the keys of image files of types not read here, sorted: a decoder not
            installed (RAW without the ``raw`` extra), or a type lookalike never reads (``.psd``, ``.svg``...).
        sidecars: a RAW file's key -> the key of the JPEG beside it with the same stem, which is
            read instead (the camera's rendering of the same shot): the RAW is in neither list.
    """

    found: list[FoundFile]
    skipped: list[str]
    sidecars: dict[str, str]

    def skipped_by_type(self) -> dict[str, int]:
        """How many files were skipped, by lower-cased extension, most first."""
        return skipped_by_type(self.skipped)


def skipped_by_type(keys: list[str]) -> dict[str, int]:
    """Keys counted by lower-cased extension, most first (then by extension)."""
    counts = Counter(os.path.splitext(key)[1].lower() for key in keys)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def scan(root: str | os.PathLike, skip: str | os.PathLike | None = None,
         unreadable: list[UnreadableFolder] | None = None) -> Scan:
    """The image files under ``root`` that this installation reads, and what it leaves, and why (see ``Scan``).

    Args:
        root: the folder to walk (as ``discover``).
        skip: a folder never to enter (the store).
        unreadable: where a folder that could not be listed is appended (it is also logged).
    """
    readable = readable_extensions()
    found, skipped, sidecars = [], [], {}
    for folder, names in _folders(Path(root), skip, unreadable):
        by_name = {}
        for name in names:
            extension = os.path.splitext(name)[1].lower()
            if extension in IMAGE_EXTENSIONS or extension in UNREAD_EXTENSIONS:
                by_name[name] = extension
        jpegs = _jpegs_by_stem(by_name)
        for name, extension in by_name.items():
            key = Path(folder, name).relative_to(root).as_posix()
            jpeg = jpegs.get(os.path.splitext(name)[0]) if extension in RAW_EXTENSIONS else None
            if jpeg is not None:
                sidecars[key] = Path(folder, jpeg).relative_to(root).as_posix()
            elif extension in readable:
                if (f := _found(Path(root), folder, name)) is not None:
                    found.append(f)
            else:
                skipped.append(key)
    found.sort(key=lambda f: f.key)
    return Scan(found, sorted(skipped), sidecars)


def jpeg_sidecar(path: str | os.PathLike) -> str | None:
    """The JPEG beside a RAW file with the same stem (``IMG_1234.CR2`` -> ``IMG_1234.JPG``), as ``scan`` pairs
    them; None for a file that is not RAW, or has none."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    if os.path.splitext(name)[1].lower() not in RAW_EXTENSIONS:
        return None
    try:
        names = [n for n in os.listdir(folder or ".") if not n.startswith(".")]
    except OSError:
        return None
    jpeg = _jpegs_by_stem(names).get(os.path.splitext(name)[0])
    return os.path.join(folder, jpeg) if jpeg is not None else None


def _jpegs_by_stem(names) -> dict[str, str]:
    """stem -> the first (by name) JPEG of that stem among ``names``."""
    jpegs = {}
    for name in sorted(names):
        stem, extension = os.path.splitext(name)
        if extension.lower() in JPEG_EXTENSIONS:
            jpegs.setdefault(stem, name)
    return jpegs


def discover(root: str | os.PathLike, extensions: frozenset[str], skip: str | os.PathLike | None = None,
             unreadable: list[UnreadableFolder] | None = None) -> list[FoundFile]:
    """Every file under ``root`` whose lower-cased suffix is in ``extensions``, sorted by key.

    Args:
        root: the folder to walk.
        extensions: suffixes with the dot, e.g. ``{".jpg", ".png"}``.
        skip: a folder never to enter (the store).

    Hidden files and folders (a leading dot) are skipped. A symlinked folder is followed
    once: a link back up the tree, or a second link to the same folder, is not entered again.
    """
    root = Path(root)
    found = []
    for folder, names in _folders(root, skip, unreadable):
        for name in names:
            if os.path.splitext(name)[1].lower() in extensions and (f := _found(root, folder, name)) is not None:
                found.append(f)
    found.sort(key=lambda f: f.key)
    return found


def _folders(root: Path, skip: str | os.PathLike | None,
             unreadable: list[UnreadableFolder] | None) -> Iterator[tuple[str, list[str]]]:
    """Each folder under ``root`` once, with its files' names, sorted: hidden ones and ``skip`` left out."""
    skipped = os.path.realpath(skip) if skip is not None else None
    visited: set[tuple[int, int]] = set()

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
        yield folder, sorted(name for name in names if not name.startswith("."))


def _found(root: Path, folder: str, name: str) -> FoundFile | None:
    path = os.path.join(folder, name)
    try:
        stat = os.stat(path)
    except OSError as e:  # a broken symlink, or a file deleted as we walked
        logger.warning("skipping %s: %s", path, e.strerror)
        return None
    key = Path(path).relative_to(root).as_posix()
    return FoundFile(key, path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_mode)


def _folder(root: Path, error: OSError) -> UnreadableFolder:
    key = Path(error.filename).relative_to(root).as_posix().rstrip("/") + "/"
    reason = f"folder not read ({error.strerror or type(error).__name__}): the images in it are not indexed"
    try:
        stat = os.stat(error.filename)
        return UnreadableFolder(key, reason, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_mode)
    except OSError:
        return UnreadableFolder(key, reason)
