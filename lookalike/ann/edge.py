"""What crosses the FAISS edge: arrays coerced to what FAISS takes, and its errors cut to one line."""

from __future__ import annotations

import numpy as np

from ..errors import DimensionMismatchError, InvalidIdsError


def as_vectors(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """Contiguous float32 ``(n, dim)``; the error names what was wrong."""
    x = np.ascontiguousarray(vectors, dtype="float32")
    if x.ndim != 2:
        raise DimensionMismatchError(f"{what} must be a 2-D array (n, dim), got shape {x.shape}")
    if x.shape[1] < 1 or (dim is not None and x.shape[1] != dim):
        want = f"the index's dimension {dim}" if dim is not None else "at least 1"
        raise DimensionMismatchError(f"{what} have dimension {x.shape[1]}, need {want}")
    return x


def as_ids(ids: np.ndarray, n_rows: int) -> np.ndarray:
    """Contiguous non-negative int64 ids, one for each of ``n_rows`` rows."""
    raw = np.asarray(ids)
    if raw.ndim != 1 or len(raw) != n_rows:
        raise DimensionMismatchError(f"need one id per vector: {n_rows} vectors, ids of shape {raw.shape}")
    if raw.size and raw.dtype.kind not in "iu":
        raise InvalidIdsError(f"ids must be integers, got dtype {raw.dtype}")
    out = np.ascontiguousarray(raw, dtype="int64")
    if out.size and out.min() < 0:
        raise InvalidIdsError(f"ids must be non-negative (-1 means 'no neighbour'), got {out.min()}")
    return out
