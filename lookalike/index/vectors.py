"""The raw vectors: one append-only float32 file, row-major, read through a memory map.

Rows are only ever appended. The catalog records how many rows are committed; rows past
that are a batch that was being written when a process died, and the next writer cuts
them off. Readers map only committed rows, so an append in progress never shows.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from .. import crashpoints
from ..errors import StoreError

READ_CHUNK_ROWS = 65_536  # rows read at a time to build an index: 320 MiB at 1280-d
MAPPED_ROWS = 4_096  # rows' pages mapped at once while copying: 20 MiB at 1280-d


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


class RowView:
    """Chosen rows of a (memory-mapped) array, read slice by slice, never all at once.

    Each read hands the mapped pages it touched back to the page cache: otherwise every page
    ever read counts in the process's RSS until it exits (4.9 GiB for 1M 1280-d rows), and
    while an index is built they sit beside the chunk copied from them.
    """

    def __init__(self, data: np.ndarray, rows: np.ndarray):
        self.data = data
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.data.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item) -> np.ndarray:
        """A copy of the chosen rows (a slice, an index array, or one row)."""
        rows = self.rows[item]
        return np.array(self.data[rows]) if np.ndim(rows) == 0 else self._copy(rows)

    def read_into(self, out: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Copy the rows at ``positions`` of this view into ``out`` (no other copy of them is made)."""
        return self._copy(self.rows[positions], out)

    def _copy(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows of the file, with at most ``MAPPED_ROWS`` rows' pages mapped at once."""
        if out is None:
            out = np.empty((len(rows), self.data.shape[1]), dtype=self.data.dtype)
        for start in range(0, len(rows), MAPPED_ROWS):
            stop = start + MAPPED_ROWS
            # clip: no bounds-check buffer, which mode="raise" makes the size of the block
            np.take(self.data, rows[start:stop], axis=0, out=out[start:stop], mode="clip")
            self.release()
        return out

    def release(self) -> None:
        release_pages(self.data)


def release_pages(array: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process (the page cache keeps them; reads fault them back)."""
    mapping = getattr(array, "_mmap", None)
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
