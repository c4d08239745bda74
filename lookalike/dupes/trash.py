"""The operating system's trash, through ``send2trash``; on Linux (the freedesktop trash) also found again for undo.

``send2trash`` moves a file into the trash and writes a ``.trashinfo`` naming where it came from,
but doesn't say where it put it. On Linux the trash is a folder: ``Trash/files/NAME`` beside
``Trash/info/NAME.trashinfo`` in ``$XDG_DATA_HOME`` (or in a ``.Trash-UID`` folder at the top
of another volume), so a trashed file can be found by the path its info records, and put back.
Elsewhere (macOS, Windows) undo says to restore the file from the trash by hand.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import unquote

from ..errors import DuplicatesError

INSTALL = "pip install send2trash"


def trash(path: str) -> str | None:
    """Send ``path`` to the trash; where it went (on Linux), else None.

    Raises:
        DuplicatesError: send2trash is not installed.
        OSError: the file could not be trashed (it is then where it was).
    """
    try:
        from send2trash import send2trash
    except ImportError:
        raise DuplicatesError(f"--trash needs send2trash: {INSTALL}") from None
    send2trash(path)
    found = find(path)
    return found[0] if found else None


def find(path: str) -> tuple[str, str] | None:
    """The newest trashed copy of the file that was at ``path``: (its file in the trash, its .trashinfo); Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    path = os.path.abspath(path)
    best = None
    for trash_dir, topdir in _trash_dirs(path):
        info_dir = Path(trash_dir) / "info"
        if not info_dir.is_dir():
            continue
        name = os.path.basename(path)
        stem, suffix = os.path.splitext(name)
        # send2trash names it NAME, else "STEM N.SUFFIX" (the first free N): only those can be it
        for info in [info_dir / f"{name}.trashinfo", *info_dir.glob(f"{_glob_safe(stem)} *{_glob_safe(suffix)}.trashinfo")]:
            origin, when = _read_info(info, topdir)
            if origin != path:
                continue
            order = (when, info.stat().st_mtime_ns)
            if best is None or order > best[2]:
                best = (str(Path(trash_dir) / "files" / info.name[: -len(".trashinfo")]), str(info), order)
        if best:
            break
    return (best[0], best[1]) if best else None


def restore(trashed: str, info: str, to: str) -> None:
    """Put a trashed file back at ``to`` (which must be free) and drop its .trashinfo."""
    os.makedirs(os.path.dirname(to), exist_ok=True)
    os.rename(trashed, to)
    Path(info).unlink(missing_ok=True)


def _trash_dirs(path: str) -> list[tuple[str, str | None]]:
    """Where send2trash may have put ``path``: the home trash, then the trash folders of its volume."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    dirs = [(os.path.join(data_home, "Trash"), None)]
    top = _mount_point(path)
    uid = os.getuid()
    dirs += [(os.path.join(top, ".Trash", str(uid)), top), (os.path.join(top, f".Trash-{uid}"), top)]
    try:
        from send2trash import (
            plat_other,  # the folder it read when imported, if XDG_DATA_HOME changed since
        )

        dirs.insert(1, (os.fsdecode(plat_other.HOMETRASH_B), None))
    except (ImportError, AttributeError):
        pass
    return dirs


def _glob_safe(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _mount_point(path: str) -> str:
    path = os.path.realpath(os.path.dirname(path))
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def _read_info(info: Path, topdir: str | None) -> tuple[str | None, str]:
    try:
        text = info.read_text(errors="replace")
    except OSError:
        return None, ""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    origin = fields.get("Path")
    if origin is None:
        return None, ""
    origin = unquote(origin)
    if not os.path.isabs(origin) and topdir:
        origin = os.path.join(topdir, origin)
    return os.path.abspath(origin), fields.get("DeletionDate", "")
