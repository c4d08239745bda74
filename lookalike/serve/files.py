"""Stored files as they were indexed: opened without following a symlink, checked against their catalog row.

Anyone who can write into an indexed folder could otherwise swap an image for a symlink to
any file the server's user can read, and have the server hand it out. So a stored file is
served only when

- its real path (every symlink resolved) lies inside the indexed folder, resolved as the
  indexer resolved it (``Store.root``). A file the indexer reached through a symlink that
  leads out of the folder is refused too: the server can't tell that link from a planted one;
- it is opened one component at a time from ``/`` with ``O_NOFOLLOW``, so a component
  swapped for a symlink after the path was resolved fails the open instead of being followed;
- the open file is a regular file with the size and modification time of its catalog row.

Every byte served is then read from that same descriptor (``OpenFile``, ``FileBody``): no
path is looked up twice, so nothing can change between the check and the read.
"""

from __future__ import annotations

import errno
import os
import stat
from urllib.parse import quote

import anyio
from starlette.responses import Response

from ..errors import LookalikeError
from ..store.catalog import FileRecord

_DIRECTORY = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO planted there can't hang the open
_CHUNK = 1 << 20


class StoredFileError(LookalikeError):
    """A stored image's file can't be served as it was indexed; ``status`` is the HTTP answer (404 gone, 409 changed)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class OpenFile:
    """A stored file, open and checked: read it through ``fd`` (or ``path``), then ``close`` it.

    ``name`` is its file name as indexed; ``key`` identifies this version of the file (real
    path, size, modification time) for caches.
    """

    def __init__(self, fd: int, name: str, real: str, size: int, mtime_ns: int):
        self.fd = fd
        self.name = name
        self.real = real
        self.size = size
        self.mtime_ns = mtime_ns
        self.key = (real, size, mtime_ns)

    @property
    def path(self) -> str:
        """A path that opens this very file (the descriptor's, not the name's), for readers that want a path."""
        return f"/proc/self/fd/{self.fd}" if os.path.isdir("/proc/self/fd") else f"/dev/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "OpenFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_indexed(root: str, record: FileRecord) -> OpenFile:
    """Open the file of a catalog row, only if it is still the file that was indexed.

    Args:
        root: the indexed folder, resolved (``Store.root``).
        record: the file's catalog row; ``record.path`` is relative to ``root``.

    Returns:
        The open file; the caller closes it.

    Raises:
        StoredFileError: 404 when the file is gone, not a regular file, or its real path
            leads out of ``root``; 409 when its size or modification time is not the row's.
    """
    real = os.path.realpath(os.path.join(root, record.path))
    name = f"the file of image {record.id} ({record.path})"
    if os.path.commonpath([real, root]) != root:
        raise StoredFileError(f"{name} leads out of the indexed folder through a symlink: only files inside it are served", 404)
    fd = _open_without_symlinks(real, name)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoredFileError(f"{name} is no longer a regular file", 404)
        if (info.st_size, info.st_mtime_ns) != (record.size, record.mtime_ns):
            raise StoredFileError(f"{name} has changed since it was indexed ({_change(record, info)}): "
                                  f"run `lookalike index` to index it again", 409)
    except BaseException:
        os.close(fd)
        raise
    return OpenFile(fd, os.path.basename(record.path), real, info.st_size, info.st_mtime_ns)


def _open_without_symlinks(real: str, name: str) -> int:
    """Open the absolute path ``real`` from ``/``, one component at a time, following no symlink."""
    *folders, leaf = real.lstrip("/").split("/")
    fd = os.open("/", _DIRECTORY)
    try:
        for folder in folders:
            inner = os.open(folder, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        opened = os.open(leaf, _FILE, dir_fd=fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):  # a component became a symlink (or a file) since realpath
            raise StoredFileError(f"{name} changed while it was opened (a symlink appeared on its path)", 409) from None
        if error.errno == errno.ENOENT:
            raise StoredFileError(f"{name} is no longer on disk", 404) from None
        raise StoredFileError(f"{name} can't be opened: {error.strerror}", 404) from None
    finally:
        os.close(fd)
    return opened


def _change(record: FileRecord, info: os.stat_result) -> str:
    changes = []
    if info.st_size != record.size:
        changes.append(f"{record.size:,} bytes then, {info.st_size:,} now")
    if info.st_mtime_ns != record.mtime_ns:
        changes.append("modified since")
    return " and ".join(changes)


class FileBody(Response):
    """A response that streams an ``OpenFile`` (its checked size, no more) and closes it, even when the client leaves."""

    def __init__(self, opened: OpenFile, media_type: str, filename: str):
        disposition = (f'inline; filename="{filename}"' if quote(filename) == filename
                       else f"inline; filename*=utf-8''{quote(filename)}")
        super().__init__(None, media_type=media_type, headers={"content-disposition": disposition})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"content-length", str(opened.size).encode()))
        self.opened = opened

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            offset, size = 0, self.opened.size
            while offset < size:
                chunk = await anyio.to_thread.run_sync(os.pread, self.opened.fd, min(_CHUNK, size - offset), offset)
                if not chunk:  # cut short on disk meanwhile: the client sees a short body, never other bytes
                    break
                offset += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": offset < size})
            if offset < size or size == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.opened.close()
