"""Moving one user's file without ever losing it: no overwrite, no half-written copy under the real name.

On one filesystem a move is a hard link at the destination, then the source unlinked: a crash
between leaves one file under two names (the same bytes, nothing half-written), and linking
never replaces a file that is already there, as ``rename`` would. Across filesystems the bytes
are copied to a temporary name beside the destination, fsynced, linked to the real name, and
only then is the source unlinked. Where a filesystem has no hard links (FAT, exFAT, some
shares), a rename takes the link's place, after checking that nothing is at the destination.
``settle`` finishes or rolls back a move a crash interrupted.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..atomic import fsync_folder, make_folder
from ..featurize.images.facts import file_digest

TMP_SUFFIX = ".lookalike-part"


def move(source: str, dest: str, folders: set[str]) -> None:
    """Move a regular file to ``dest``, which must not exist; the folders touched are added to ``folders``.

    Raises:
        FileExistsError: something is at ``dest`` (nothing was moved).
        OSError: the move failed (the file is still at ``source``).
    """
    _make_parents(dest)
    try:
        linked = _link_or_rename(source, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        _copy(source, dest)
        linked = True
    if linked:
        os.unlink(source)
    folders.update((os.path.dirname(source), os.path.dirname(dest)))


def settle(source: str, dest: str, digest: str) -> str:
    """Where a move that may have been interrupted left the file: ``"source"``, ``"dest"``, ``"both"`` or ``"gone"``.

    A move cut off after its link (the same file under both names) is finished; a copy whose
    bytes at ``dest`` are the file's (``digest``) too; a part-copy is deleted. ``"both"`` remains
    only where ``dest`` holds other bytes than the file's: then neither is touched.
    """
    part = _part(dest)
    if os.path.lexists(part):
        os.unlink(part)
    at_source, at_dest = os.path.lexists(source), os.path.lexists(dest)
    if at_source and at_dest:
        same = os.path.samefile(source, dest) or file_digest(dest) == digest
        if not same:
            return "both"
        os.unlink(source)
        fsync_folder(os.path.dirname(source))
        return "dest"
    return "dest" if at_dest else "source" if at_source else "gone"


def sync(folders: set[str]) -> None:
    """fsync every folder a batch of moves touched, so the moves survive a power cut."""
    for folder in sorted(folders):
        if os.path.isdir(folder):
            fsync_folder(folder)
    folders.clear()


def _copy(source: str, dest: str) -> None:
    part = _part(dest)
    try:
        with open(source, "rb") as src, open(part, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(source, part)
        _link_or_rename(part, dest)
    finally:
        if os.path.lexists(part):
            os.unlink(part)
    fsync_folder(os.path.dirname(dest))


def _link_or_rename(source: str, dest: str) -> bool:
    """Give ``source`` the name ``dest`` too (True), or, where the filesystem has no hard links, rename it (False).

    A link never replaces a file that is there; the rename is checked first (FAT, exFAT and
    some network shares have no links).
    """
    try:
        os.link(source, dest)
        return True
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "exists", dest)
    os.rename(source, dest)
    return False


def _part(dest: str) -> str:
    return os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}{TMP_SUFFIX}")


def _make_parents(dest: str) -> None:
    """Create the destination's missing folders, each named durably in its parent before a file goes in.

    Durable now, not at the batch's ``sync``: a move across filesystems unlinks the original
    as soon as its copy is, and a copy in a folder a power cut takes back is no copy.
    """
    parent = Path(dest).parent
    if not parent.is_dir():
        make_folder(parent)
