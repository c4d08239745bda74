"""Resident files: the store's catalog and vectors kept mapped and read through, for a long-running reader.

Every search reads a few stored vectors at random (the exact re-rank) and the catalog rows
of its candidates. When those pages have left the page cache, each read goes to the disk:
at 1M vectors that was about 1 ms a search for the 20 rows of a re-rank, and
more for the catalog's pages. A server therefore reads its files through once at start and
keeps them mapped, as FAISS's ``IndexRefineFlat`` keeps its vectors in memory. The pages
are the page cache's, shared with every process, not the server's own memory; the kernel
may still reclaim them under memory pressure, but it prefers pages no process maps (the VM
these figures come from pages out unmapped file pages not touched for a minute).

Only on POSIX systems: on Windows a mapped file can't be truncated or replaced, which the
writer and SQLite need to do.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PAGE = mmap.PAGESIZE


class ResidentFiles:
    """Files kept mapped read-only, each read through once when it is first held or has changed."""

    def __init__(self):
        self._maps: dict[Path, tuple[tuple[int, int], mmap.mmap]] = {}
        self._lock = threading.Lock()

    def hold(self, paths: Iterable[Path], lengths: Mapping[Path, int] | None = None) -> int:
        """Map and read through each of ``paths`` not already held as it is now; let go of any other.

        Args:
            paths: the files to hold.
            lengths: bytes to hold of some of them, from the start: only what is committed, for
                a file whose uncommitted tail a writer may cut off (a page mapped past the end
                of a file kills the process that reads it with SIGBUS).

        Returns:
            Bytes read through (0 when every file was already held, or off POSIX).
        """
        if os.name != "posix":
            return 0
        wanted = {Path(p) for p in paths}
        lengths = {Path(p): n for p, n in (lengths or {}).items()}
        read = 0
        with self._lock:
            for path in [p for p in self._maps if p not in wanted]:
                self._maps.pop(path)[1].close()
            for path in sorted(wanted):
                read += self._hold(path, lengths.get(path))
        return read

    def _hold(self, path: Path, limit: int | None) -> int:
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                length = stat.st_size if limit is None else min(limit, stat.st_size)
                key = (stat.st_ino, length)
                held = self._maps.get(path)
                if held is not None and held[0] == key:
                    return 0
                if length == 0:
                    return 0
                mapping = mmap.mmap(file.fileno(), length, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:  # gone meanwhile, or can't be mapped: searches read it as before
            logger.debug("not keeping %s resident: %s", path, error)
            return 0
        pages = np.frombuffer(mapping, dtype=np.uint8)
        int(pages[::PAGE].sum())  # one byte a page: each page read once and mapped into this process
        del pages  # the mapping can't close while an array exports it
        if held is not None:
            held[1].close()
        self._maps[path] = (key, mapping)
        return length

    def close(self) -> None:
        self.hold([])

    @property
    def held(self) -> dict[Path, int]:
        """The files held, and how many bytes of each."""
        with self._lock:
            return {path: key[1] for path, (key, _) in sorted(self._maps.items())}
