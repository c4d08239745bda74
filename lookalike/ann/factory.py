"""Choosing a FAISS index for a store's size, and planning the memory its build takes.

Small stores get an exact index; large ones an IVF index with the richest codes whose build
fits the memory budget. An IVF index only finds candidates: the store keeps every vector as
float32 beside it and re-ranks what lossy codes find by its exact vectors (``Store.search``),
so float codes in the index would only copy them.

The plan counts everything the build holds at its peak: the index as its lists grow, the
training sample copied out of the memory-mapped vectors (and the residuals FAISS computes
from it), the chunk of rows being added, and the caller's ids.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import faiss

from ..errors import InvalidFactoryError, first_line
from . import kmeans
from .rows import MAPPED_ROWS, READ_CHUNK_ROWS

EXACT_FACTORY = "IDMap2,Flat"
EXACT_THRESHOLD = 100_000  # below this many vectors, exact search is fast enough and costs no training
MIN_POINTS_PER_LIST = 39  # FAISS warns below 39 training points per centroid
# Training rows a list. At 1M x 1280-d (IVF4096,SQ8) 64, 100 and 256 gave the same recall@10
# after re-rank (benchmarks/bench_build.py); 100 leaves each list 2.5x FAISS's minimum of 39.
TRAIN_POINTS_PER_CENTROID = 100
ENCODER_SAMPLE_ROWS = 65_536  # rows that train the codes alone (FAISS's PQ k-means subsamples to 256 x 256)
DEFAULT_BUDGET_BYTES = 4 * 2**30  # when physical RAM can't be read
BUDGET_FRACTION_OF_RAM = 0.5
ID_BYTES = 8
MIN_PQ_BYTES = 8  # fewer bytes a vector keep too little to rank neighbours by
# Inverted lists grow in place; with freed buffers handed back (see build.py) they held 1.06x
# their codes at 512 lists and 1.10x at 2048 (250k x 1280-d, measured), so plan for 1.2x.
LIST_SLACK = 1.2
EXACT_MAP_BYTES = 64  # IDMap2's id list and reverse map, per vector
CALLER_BYTES = 2 * ID_BYTES  # the store's ids and vector-row numbers, held while it builds
# k-means' block of distances (4,096 x 1,024 floats, 16 MiB) and the BLAS library's work
# buffers: training IVF1024,SQ8 on 100k x 1280-d took 25 MiB more than the arrays counted (2 threads)
TRAIN_WORK_BYTES = 48 << 20


class BuildPlan(NamedTuple):
    """How an index will be built: its factory, how many rows train it, and the memory at the build's peak."""

    factory: str
    train_rows: int  # 0 for an index that needs no training
    peak_bytes: int  # beyond what the process held before the build
    budget_bytes: int


def choose_factory(n_vectors: int, dim: int, memory_budget_bytes: int | None = None) -> str:
    """A FAISS ``index_factory`` string for ``n_vectors`` vectors of ``dim`` floats.

    Below ``EXACT_THRESHOLD`` vectors: ``"IDMap2,Flat"`` (exact, no training, and ids can be
    looked up and removed). Above: ``"IVF{nlist},{codes}"`` with ``nlist`` the power of two
    nearest ``4 * sqrt(n)``, at most ``n / 39``, and the richest codes whose build fits the
    budget (see ``plan_build``): ``SQ8`` (a byte a dimension, a quarter of float32), then
    ``PQ{m}`` (``m`` bytes a vector, lower recall). The store re-ranks what the codes find by
    the exact vectors (``faiss_index.candidates``): on 8,000 real Lite0 embeddings (augmented
    photos), recall@10 of SQ8's re-ranked top 20 equalled Flat's (0.995), and at 1M x 1280-d
    (nprobe 128) a query on two cores took 10 ms against 20 ms with ``SQfp16`` and more with
    ``Flat``: the scan is bound by memory, so half the bytes is half the time.

    Args:
        n_vectors: how many vectors the index will hold.
        dim: their dimension.
        memory_budget_bytes: memory the build may use; ``None`` means half the physical RAM
            (or 4 GiB where that can't be read).

    Returns:
        The factory string, for ``build_index(..., factory=...)``.

    Raises:
        InvalidFactoryError: even the smallest PQ codes don't fit the budget.
        ValueError: ``n_vectors`` is negative or ``dim`` is not positive.
    """
    return plan_build(n_vectors, dim, memory_budget_bytes=memory_budget_bytes).factory


def plan_build(n_vectors: int, dim: int, factory: str | None = None, memory_budget_bytes: int | None = None) -> BuildPlan:
    """The factory (chosen as ``choose_factory`` does, unless given), training rows and peak memory of a build.

    The training sample is at most ``TRAIN_POINTS_PER_CENTROID`` rows a list, fewer where that is what
    fits the budget, never fewer than 39 a list for a chosen factory. A forced ``factory``
    is planned as well as it fits and kept even over budget (its ``peak_bytes`` says by how much).

    Raises:
        InvalidFactoryError: nothing fits the budget (only when choosing), or ``factory`` is unusable.
        ValueError: ``n_vectors`` is negative or ``dim`` is not positive.
    """
    if n_vectors < 0 or dim < 1:
        raise ValueError(f"need n_vectors >= 0 and dim >= 1, got n_vectors={n_vectors}, dim={dim}")
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    if factory is not None:
        return _fit(n_vectors, dim, factory, budget, min_rows_per_list=1)
    if n_vectors < EXACT_THRESHOLD:
        return _fit(n_vectors, dim, EXACT_FACTORY, budget, min_rows_per_list=1)
    nlist = _choose_nlist(n_vectors)
    for codes in _codes_by_preference(dim):
        plan = _fit(n_vectors, dim, f"IVF{nlist},{codes}", budget, min_rows_per_list=MIN_POINTS_PER_LIST)
        if plan.peak_bytes <= budget:
            return plan
    raise InvalidFactoryError(
        f"{n_vectors} vectors of dim {dim} need at least {plan.peak_bytes / 2**20:.0f} MiB to index even with "
        f"{plan.factory.split(',')[1]} codes, over the budget of {budget / 2**20:.0f} MiB: raise memory_budget_bytes"
    )


def estimate_build_bytes(n_vectors: int, dim: int, factory: str, train_rows: int) -> int:
    """Bytes a build of ``factory`` over ``n_vectors`` holds at its peak, trained on ``train_rows`` rows.

    The larger of two phases, each with the caller's ids and rows (16 bytes a vector):
    training (the sample, the residuals and encoder sample FAISS copies from it, the
    k-means assignments) and adding (the index as its lists grow, and one chunk of rows).
    """
    index = from_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    held = n_vectors * CALLER_BYTES
    # a chunk's floats and list numbers, and the mapped pages of the block being copied into it
    chunk = min(n_vectors, READ_CHUNK_ROWS) * (4 * dim + ID_BYTES) + min(n_vectors, MAPPED_ROWS) * 4 * dim
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        code_bytes = _code_size(index, dim)
        return held + chunk + n_vectors * (code_bytes + ID_BYTES + EXACT_MAP_BYTES)
    row = 4 * dim
    centroids = ivf.nlist * row
    encoder_rows = ivf.train_encoder_num_vectors() or train_rows
    groups = 0
    if kmeans.two_level_applies(index):  # codes train on a subsample; k-means copies a group at a time
        encoder_rows = ENCODER_SAMPLE_ROWS
        groups = kmeans.LARGEST_GROUP_SHARE * train_rows * row // max(1, round(math.sqrt(ivf.nlist)))
    encoder_rows = min(train_rows, encoder_rows)
    copies = (encoder_rows < train_rows) + bool(ivf.by_residual)  # a subsample, residuals
    training = train_rows * (row + 12) + max(encoder_rows * row * copies, groups) + TRAIN_WORK_BYTES
    adding = int(n_vectors * (ivf.code_size + ID_BYTES) * LIST_SLACK) + chunk
    return held + centroids + max(training, adding)


def default_train_rows(n_vectors: int, nlist: int) -> int:
    """``TRAIN_POINTS_PER_CENTROID`` rows a list, or every row when there are fewer."""
    return min(n_vectors, TRAIN_POINTS_PER_CENTROID * max(nlist, 1))


def default_memory_budget() -> int:
    """Half the physical RAM where the OS tells it, else 4 GiB."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return DEFAULT_BUDGET_BYTES
    return int(ram * BUDGET_FRACTION_OF_RAM) if ram > 0 else DEFAULT_BUDGET_BYTES


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: ``2 * sqrt(nlist)`` rounded up to a power of two, at least 16.

    Measured on clustered 128-d data (100k vectors, IVF1024): nprobe 64 gives recall@10
    of 0.996 where 16 gives 0.97; scaling with sqrt keeps large indexes fast.
    """
    nprobe = 2 ** math.ceil(math.log2(max(16.0, 2 * math.sqrt(nlist))))
    return min(nlist, nprobe)


def check_factory(factory: str, dim: int) -> None:
    """Raise ``InvalidFactoryError`` now, before hours of embedding, if ``factory`` can't serve a store."""
    from_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)


def from_factory(dim: int, factory: str, metric: int) -> faiss.Index:
    """The empty index of ``factory``, checked to take ids and removals."""
    try:
        index = faiss.index_factory(dim, factory, metric)
    except RuntimeError as error:
        raise InvalidFactoryError(
            f"FAISS can't build {factory!r} for dim {dim} ({first_line(error)}): "
            f"try {EXACT_FACTORY!r} or 'IVF1024,Flat'"
        ) from None
    takes_ids = isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2)
    if not takes_ids and faiss.try_extract_index_ivf(index) is None:
        raise InvalidFactoryError(f"{factory!r} numbers vectors by position: prefix it with 'IDMap2,'")
    try:
        index.remove_ids(faiss.IDSelectorRange(0, 0))  # empty selection: only asks whether it can
    except RuntimeError:
        raise InvalidFactoryError(
            f"{factory!r} can't remove vectors (HNSW can't), which the store needs when files go: use an IVF factory"
        ) from None
    return index


def _fit(n_vectors: int, dim: int, factory: str, budget: int, min_rows_per_list: int) -> BuildPlan:
    """The plan for ``factory`` with the most training rows (up to the default) that fit ``budget``."""
    ivf = faiss.try_extract_index_ivf(from_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
    if ivf is None:
        return BuildPlan(factory, 0, estimate_build_bytes(n_vectors, dim, factory, 0), budget)
    most = default_train_rows(n_vectors, ivf.nlist)
    least = min(most, min_rows_per_list * ivf.nlist)
    rows = most
    while rows > least and estimate_build_bytes(n_vectors, dim, factory, rows) > budget:
        rows = max(least, rows * 3 // 4)  # the estimate is not linear (subsamples cap it): step down
    return BuildPlan(factory, rows, estimate_build_bytes(n_vectors, dim, factory, rows), budget)


def _choose_nlist(n_vectors: int) -> int:
    """The power of two nearest ``4 * sqrt(n)``, leaving every list at least 39 training points."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    most = max(1, n_vectors // MIN_POINTS_PER_LIST)
    while nlist > most:
        nlist //= 2
    return max(1, nlist)


def _codes_by_preference(dim: int) -> list[str]:
    """Codes, best recall first: SQ8, then PQ from the largest ``m`` dividing ``dim``.

    Neither ``Flat`` nor ``SQfp16`` is among them: the store holds the float32 vectors already
    and re-ranks by them, after which SQ8 loses nothing measurable (see ``choose_factory``).
    """
    fewest = min(MIN_PQ_BYTES, dim // 2)
    pq = [f"PQ{m}" for m in range(dim // 2, 0, -1) if dim % m == 0 and m >= fewest]
    return ["SQ8", *pq]


def _code_size(index: faiss.Index, dim: int) -> int:
    try:
        return int(index.sa_code_size())
    except RuntimeError:  # types without standalone codes (HNSW): plan for floats
        return 4 * dim
