"""The FAISS edge: float32 vectors and int64 ids in, ``(D, I)`` neighbours out.

Vectors are expected L2-normalised and compared by inner product, so scores are cosine
similarities. Every index built here carries its own ids (``IDMap2`` or IVF's native ids),
so ``add_with_ids`` and ``remove_ids`` work and ``I`` holds ids, never row positions.
Small stores get an exact index; large ones an IVF index whose ``nprobe`` is stored in the
file. This module knows nothing of torch or of the store above it.

The rest of the toolbox lives in modules of one noun each: ``factory`` (choosing an index
and planning its memory), ``build`` (training and adding), ``faiss_io`` (files and
descriptions), ``gpu``, ``edge`` (coercing arrays), ``rows`` (row views of mapped files)
and ``dupes`` (near-duplicate groups).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

from ..errors import IndexStateError, InvalidIdsError
from .edge import as_ids, as_vectors
from .faiss_io import codes_holder, is_mapped

SHARES_PER_WORKER = 4  # a query's probed lists go out in this many shares a thread
# Lossy codes: neighbours asked for per neighbour kept, re-ranked by exact vectors (``candidates``).
SCALAR_CANDIDATES = 2
OTHER_CANDIDATES = 4
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()

__all__ = ["add", "candidates", "exact_search", "remove", "search"]


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


def candidates(index: faiss.Index, k: int) -> int:
    """How many neighbours to ask ``index`` for, so that an exact re-rank of them keeps the true best ``k``.

    Float codes (``Flat``) score exactly: ``k``. Scalar-quantized ones (``SQfp16``, ``SQ8``)
    only swap near-ties: ``2k`` (at 1M x 1280-d, recall@10 of the re-ranked top 20 was 1.000
    for both, against 0.999 and 0.978 for their own top 10). Others (PQ, or any codes behind a
    PCA or OPQ transform, whose scores are taken in the reduced space): ``4k``.
    """
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):  # PCA, OPQ: scores in another space
        return OTHER_CANDIDATES * k
    holder = codes_holder(index)
    if isinstance(holder, faiss.IndexFlat | faiss.IndexIVFFlat):
        return k
    if isinstance(holder, faiss.IndexScalarQuantizer | faiss.IndexIVFScalarQuantizer):
        return SCALAR_CANDIDATES * k
    return OTHER_CANDIDATES * k


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest inner products of each query with ``vectors``, by brute force (FAISS's ``knn``).

    FAISS works through the product a block at a time, so memory stays bounded, unlike a full
    ``queries @ vectors.T``.

    Returns:
        ``(D, I)``, both ``(n, k)``: scores, best first, and row positions in ``vectors``.
    """
    return faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(vectors, dtype=np.float32),
                     int(k), metric=faiss.METRIC_INNER_PRODUCT)


def search(index: faiss.Index, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
           workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest stored vectors of each query, as FAISS gives them.

    Args:
        index: any index of this module (mapped or not).
        queries: ``(n, dim)``, or one ``(dim,)`` query taken as one row.
        k: neighbours per query; more than the index holds is fine.
        exclude: ids never to return (outdated in the index). An IVF index skips them while it
            scans (an ``IDSelector``: costs nothing per id); others are asked for more and filtered.
        workers: threads that share one query's probed lists (an IVF index, fewer queries than
            workers): FAISS's OpenMP team where OpenMP waits passively (``waits_passively``),
            else threads of this module that sleep while they wait (``_search_shared``).

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
    exclude = np.unique(np.asarray(exclude if exclude is not None else [], dtype=np.int64))
    ivf = faiss.try_extract_index_ivf(index)
    plain_ivf = ivf is not None and isinstance(faiss.downcast_index(index), faiss.IndexIVF)  # no wrapper around it
    if plain_ivf and 1 < workers and len(q) < workers and ivf.nprobe > 1:
        if waits_passively():
            return _search_team(ivf, q, int(k), exclude, workers)
        return _search_shared(ivf, q, int(k), exclude, workers)
    if not exclude.size:
        return index.search(q, int(k))
    if plain_ivf:
        with _excluding(exclude, ivf.nprobe) as params:
            return index.search(q, int(k), params=params)
    scores, ids = index.search(q, int(k) + exclude.size)
    stale = np.isin(ids, exclude)
    order = np.argsort(stale, axis=1, kind="stable")[:, : int(k)]  # fresh ones first, in their order
    scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    stale = np.take_along_axis(stale, order, 1)
    return np.where(stale, _missing_score(index), scores), np.where(stale, -1, ids)


@contextlib.contextmanager
def _excluding(exclude: np.ndarray, nprobe: int) -> Iterator[faiss.SearchParametersIVF]:
    """Search parameters probing ``nprobe`` lists and skipping ``exclude`` (the selectors live until the exit)."""
    batch = faiss.IDSelectorBatch(exclude) if exclude.size else None
    selector = faiss.IDSelectorNot(batch) if batch is not None else None
    yield faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # its own nprobe (1) would override the index's


def waits_passively() -> bool:
    """Whether OpenMP's threads sleep while they wait: ``OMP_WAIT_POLICY=PASSIVE`` in the environment
    (it takes effect only when set before FAISS first runs; ``lookalike serve`` sets it at start)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def _search_team(ivf: faiss.IndexIVF, q: np.ndarray, k: int, exclude: np.ndarray, workers: int):
    """FAISS's own OpenMP team on ``workers`` threads, sharing each query's probed lists (``parallel_mode`` 1).

    At 1M x 1280-d (IVF4096,SQ8, nprobe 128) one query took 7.5 ms so on 2 threads with passive
    waits, against 8.5 ms for ``_search_shared`` and 11.0 ms on one thread; with another
    process spinning on one of the cores, 11.1 ms (p90 12.7), where spinning waits had a p90
    of 34.6 ms. So it is used only where OpenMP waits passively.
    """
    threads, mode = faiss.omp_get_max_threads(), ivf.parallel_mode
    faiss.omp_set_num_threads(workers)  # this thread's teams only
    ivf.parallel_mode = 1  # a lone search: no other search runs on this index meanwhile (see the gallery)
    try:
        with _excluding(exclude, ivf.nprobe) as params:
            return ivf.search(q, k, params=params)
    finally:
        ivf.parallel_mode = mode
        faiss.omp_set_num_threads(threads)


def _search_shared(ivf: faiss.IndexIVF, q: np.ndarray, k: int, exclude: np.ndarray, workers: int):
    """Search with the probed lists shared among ``workers`` threads; the best ``k`` of all they found.

    FAISS's own way (``parallel_mode`` 1, an OpenMP team) spins while it waits: with another
    process busy on one of 2 cores, one query over 1M 1280-d vectors took 34 ms with it and
    26 ms on one thread; these threads sleep while they wait (17 ms). The lists go out in
    small shares, each taken by whichever thread is free, so a thread the OS keeps waiting
    holds up no more than one share.
    """
    coarse_scores, lists = ivf.quantizer.search(q, ivf.nprobe)
    count = min(ivf.nprobe, SHARES_PER_WORKER * workers)
    shares = iter([(np.ascontiguousarray(lists[:, s::count]), np.ascontiguousarray(coarse_scores[:, s::count]))
                   for s in range(count)])
    taking = threading.Lock()

    def scan_shares() -> list[tuple[np.ndarray, np.ndarray]]:
        found = []
        while True:
            with taking:
                share = next(shares, None)
            if share is None:
                return found
            keys, key_scores = share
            scores, ids = np.empty((len(q), k), dtype=np.float32), np.empty((len(q), k), dtype=np.int64)
            with _excluding(exclude, keys.shape[1]) as params:
                ivf.search_preassigned_c(len(q), faiss.swig_ptr(q), k, faiss.swig_ptr(keys), faiss.swig_ptr(key_scores),
                                         faiss.swig_ptr(scores), faiss.swig_ptr(ids), False, params)
            found.append((scores, ids))

    helpers = [_pool().submit(scan_shares) for _ in range(workers - 1)]
    parts = scan_shares()  # this thread takes shares too
    for helper in helpers:
        if not helper.cancel():  # one still queued behind another search's helpers has nothing left to do
            parts += helper.result()
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-scores if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def _pool() -> ThreadPoolExecutor:
    """The threads that scan shares of a query's lists, made on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="lookalike-scan")
        return _POOL


def _missing_score(index: faiss.Index) -> np.float32:
    lowest = np.finfo(np.float32).min
    return np.float32(lowest if index.metric_type == faiss.METRIC_INNER_PRODUCT else -lowest)


def _check_writable(index: faiss.Index, action: str) -> None:
    if is_mapped(index):
        raise IndexStateError(f"can't {action} an index mapped from its file: read it with mmap=False to change it")
