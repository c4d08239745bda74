"""Row views: chosen rows of a memory-mapped array, read a block at a time, their pages handed back.

The store's vector files are read through them when an index is built, so that a million
1280-d rows never sit in memory at once; the FAISS toolbox takes them wherever it takes arrays.
"""

from __future__ import annotations

import mmap

import numpy as np

READ_CHUNK_ROWS = 65_536  # rows read at a time to build an index: 320 MiB at 1280-d
MAPPED_ROWS = 4_096  # rows' pages mapped at once while copying: 20 MiB at 1280-d


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
