"""The FAISS edge: float32 vectors and int64 ids in, ``(D, I)`` neighbours out.

Vectors are expected L2-normalised and compared by inner product, so scores are cosine
similarities. Every index built here carries its own ids (``IDMap2`` or IVF's native ids),
so ``add_with_ids`` and ``remove_ids`` work and ``I`` holds ids, never row positions.
Small stores get an exact index; large ones an IVF index whose ``nprobe`` is stored in the
file. This module knows nothing of torch or of the store above it.

It is the one name callers use; the work lives in modules of one noun each:
``factory`` (choosing an index and planning its memory), ``build`` (training and adding),
``faiss_io`` (files and descriptions), ``gpu``, and ``edge`` (coercing arrays).
"""

from __future__ import annotations

import faiss
import numpy as np

from ..errors import DimensionMismatchError, IndexFileError, IndexStateError, InvalidFactoryError, InvalidIdsError
from .build import TRAIN_SEED, build_index, training_sample
from .edge import as_ids, as_vectors
from .factory import (
    BUDGET_FRACTION_OF_RAM,
    DEFAULT_BUDGET_BYTES,
    EXACT_FACTORY,
    EXACT_THRESHOLD,
    ID_BYTES,
    MIN_POINTS_PER_LIST,
    MIN_PQ_BYTES,
    TRAIN_POINTS_PER_CENTROID,
    BuildPlan,
    check_factory,
    choose_factory,
    default_memory_budget,
    default_nprobe,
    estimate_build_bytes,
    plan_build,
)
from .faiss_io import describe, ids, is_mapped, read_index, write_index
from .gpu import gpu_available
from .vectors import READ_CHUNK_ROWS

__all__ = [
    "BUDGET_FRACTION_OF_RAM",
    "DEFAULT_BUDGET_BYTES",
    "EXACT_FACTORY",
    "EXACT_THRESHOLD",
    "ID_BYTES",
    "MIN_POINTS_PER_LIST",
    "MIN_PQ_BYTES",
    "READ_CHUNK_ROWS",
    "TRAIN_POINTS_PER_CENTROID",
    "TRAIN_SEED",
    "BuildPlan",
    "DimensionMismatchError",
    "IndexFileError",
    "IndexStateError",
    "InvalidFactoryError",
    "InvalidIdsError",
    "add",
    "build_index",
    "check_factory",
    "choose_factory",
    "default_memory_budget",
    "default_nprobe",
    "describe",
    "estimate_build_bytes",
    "gpu_available",
    "ids",
    "is_mapped",
    "plan_build",
    "read_index",
    "remove",
    "search",
    "training_sample",
    "write_index",
]


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add ``vectors`` under ``ids``; an id already present gets a second entry, so remove it first.

    Args:
        index: an index from ``build_index`` or ``read_index(..., mmap=False)``.
        vectors: ``(n, dim)`` or one ``(dim,)`` vector, L2-normalised.
        ids: ``(n,)`` non-negative integer ids.

    Raises:
        DimensionMismatchError: shapes don't fit each other or the index's dimension.
        InvalidIdsError: ids that are not integers, or negative.
        IndexStateError: the index is mapped from its file, or untrained.
    """
    x = as_vectors(np.atleast_2d(vectors) if np.ndim(vectors) == 1 else vectors, dim=index.d)
    ids = as_ids(np.atleast_1d(ids), len(x))
    _check_writable(index, "add to")
    if not index.is_trained:
        raise IndexStateError("the index is not trained: make it with build_index")
    index.add_with_ids(x, ids)


def remove(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove every vector stored under one of ``ids``; ids not in the index are ignored.

    Args:
        index: an index from ``build_index`` or ``read_index(..., mmap=False)``.
        ids: integer ids, any shape (flattened).

    Returns:
        How many vectors were removed.

    Raises:
        InvalidIdsError: ids that are not integers.
        IndexStateError: the index is mapped from its file.
    """
    ids = np.asarray(ids).ravel()
    if ids.size and ids.dtype.kind not in "iu":
        raise InvalidIdsError(f"ids must be integers, got dtype {ids.dtype}")
    _check_writable(index, "remove from")
    if ids.size == 0:
        return 0
    return int(index.remove_ids(np.ascontiguousarray(ids, dtype="int64")))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest stored vectors of each query, as FAISS gives them.

    Args:
        index: any index of this module (mapped or not).
        queries: ``(n, dim)``, or one ``(dim,)`` query taken as one row.
        k: neighbours per query; more than the index holds is fine.

    Returns:
        ``(D, I)``, both ``(n, k)``: scores (inner products, best first) and ids. Where fewer
        than ``k`` neighbours are found, ``I`` is ``-1`` and ``D`` is ``-3.4e38`` (the
        float32 lowest; ``+3.4e38`` for L2).

    Raises:
        DimensionMismatchError: queries are not ``(dim,)`` or ``(n, dim)`` for the index's dim.
        IndexStateError: the index is not trained.
        ValueError: ``k`` is less than 1.
    """
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    q = np.atleast_2d(queries) if np.ndim(queries) == 1 else queries
    q = as_vectors(q, dim=index.d, what="queries")
    if not index.is_trained:
        raise IndexStateError("the index is not trained: make it with build_index")
    return index.search(q, int(k))


def _check_writable(index: faiss.Index, action: str) -> None:
    if is_mapped(index):
        raise IndexStateError(f"can't {action} an index mapped from its file: read it with mmap=False to change it")
