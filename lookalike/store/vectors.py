"""The raw vectors: one append-only float32 file, row-major, read through a memory map.

Rows are only ever appended. The catalog records how many rows are committed; rows past
that are a batch that was being written when a process died, and the next writer cuts
them off. Readers map only committed rows, so an append in progress never shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import crashpoints
from ..atomic import fsync_folder
from ..errors import StoreError


class VectorFile:
    """``path`` holding rows of ``dim`` float32 values."""

    def __init__(self, path: str | Path, dim: int):
        self.path = Path(path)
        self.dim = dim
        self._row_bytes = 4 * dim
        self._writer = None

    def view(self, rows: int) -> np.ndarray:
        """The first ``rows`` committed rows, memory-mapped read-only, shape (rows, dim)."""
        if rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < rows * self._row_bytes:
            raise StoreError(
                f"{self.path} holds {size // self._row_bytes} vectors but the catalog counts {rows}: "
                f"the store is damaged; run `lookalike index --reset` to rebuild it"
            )
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(rows, self.dim))

    def open_for_append(self, committed_rows: int) -> None:
        """Start writing after the committed rows, dropping any half-written tail."""
        self._writer = open(self.path, "ab+")
        fsync_folder(self.path.parent)  # its name survives a power cut before any row committed into it
        size = os.fstat(self._writer.fileno()).st_size
        if size < committed_rows * self._row_bytes:  # truncate() would pad with zero vectors
            self._writer.close()
            raise StoreError(
                f"{self.path} holds {size // self._row_bytes} vectors but the catalog counts {committed_rows}: "
                f"the store is damaged; run `lookalike index DIR --reset` to rebuild it"
            )
        self._writer.truncate(committed_rows * self._row_bytes)
        self._writer.seek(0, os.SEEK_END)
        self._next_row = committed_rows

    def append(self, vectors: np.ndarray) -> int:
        """Write rows durably (fsync) and return the first one's row number."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise StoreError(f"vectors of shape {vectors.shape} don't fit a store of dim {self.dim}")
        start = self._next_row
        self._writer.write(vectors.tobytes())
        self._writer.flush()
        crashpoints.reached("vectors.before_fsync")
        os.fsync(self._writer.fileno())
        crashpoints.reached("vectors.after_fsync")
        self._next_row += len(vectors)
        return start

    @property
    def rows_written(self) -> int:
        return self._next_row

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
