"""Building an index: training it on a bounded sample, then adding every vector a chunk at a time.

Vectors may be a ``RowView`` of the store's memory-mapped rows. Neither the sample nor the
adding ever copies them all: the sample is at most ``train_size`` rows (100 a list by
default), copied chunk by chunk into one array, and rows are added ``READ_CHUNK_ROWS`` at a
time, mapped pages handed back after each chunk. ``factory.plan_build`` counts all of it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

import faiss
import numpy as np

from ..errors import InvalidFactoryError, first_line
from . import factory as factories
from . import gpu, kmeans
from . import rows as row_views
from .edge import as_ids, as_vectors
from .faiss_io import codes_holder
from .progress import Progress
from .rows import RowView

logger = logging.getLogger(__name__)

TRAIN_SEED = 0


def build_index(
    vectors: np.ndarray | RowView,
    ids: np.ndarray,
    factory: str | None = None,
    *,
    metric: int = faiss.METRIC_INNER_PRODUCT,
    train_size: int | None = None,
    use_gpu: bool | None = None,
    coarse: faiss.Index | None = None,
) -> faiss.Index:
    """A CPU index holding ``vectors`` under ``ids``, trained if its type needs it.

    Training uses a seeded random sample of at most ``train_size`` vectors. IVF indexes get
    ``nprobe`` set for recall@10 >= 0.95 on realistic data; it is saved with the index.

    Args:
        vectors: ``(n, dim)`` L2-normalised vectors (coerced to contiguous float32), or a
            ``RowView`` of the store's memory-mapped rows, read a chunk at a time so that no
            copy of them all sits beside the index (only the training sample, while training).
        ids: ``(n,)`` non-negative integer ids, one per row (coerced to int64); keep them unique.
        factory: a FAISS ``index_factory`` string; ``None`` picks one with ``choose_factory``.
        metric: a FAISS metric; inner product (cosine, for normalised vectors) by default.
        train_size: most vectors to train on; ``None`` means ``factory.TRAIN_POINTS_PER_CENTROID`` a list.
        use_gpu: train and assign on a GPU; ``None`` means where this faiss build has one.
            The index returned is always a CPU index, so it can be written.
        coarse: an IVF index whose trained lists to keep (see ``trained_index``).

    Returns:
        The index, with ``ntotal == n``.

    Raises:
        DimensionMismatchError: ``vectors`` is not 2-D or ``ids`` doesn't have one id a row.
        InvalidIdsError: ids that are not integers, or negative.
        InvalidFactoryError: FAISS can't parse ``factory``, its index can't take ids or
            removals, or there are fewer vectors than it needs to train.
        MissingDependencyError: ``use_gpu=True`` where faiss has no GPU.
    """
    x = vectors if isinstance(vectors, RowView) else as_vectors(vectors)
    ids = as_ids(ids, len(x))
    factory = factory or factories.choose_factory(len(x), x.shape[1])
    on_gpu = gpu.resolve_gpu(use_gpu)
    index = trained_index(x, factory, metric=metric, train_size=train_size, use_gpu=on_gpu, coarse=coarse)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        _reserve_codes(index, len(x))
    progress = Progress(f"adding {len(x):,} vectors to the index", len(x), "rows")
    if on_gpu and ivf is not None:
        _add_with_gpu_quantizer(index, ivf, x, ids, progress)
    else:
        add_in_chunks(index, x, ids, progress)
    progress.finish()
    logger.debug("built %s over %d vectors of dim %d", factory, index.ntotal, index.d)
    return index


def trained_index(
    vectors: np.ndarray | RowView,
    factory: str,
    *,
    metric: int = faiss.METRIC_INNER_PRODUCT,
    train_size: int | None = None,
    use_gpu: bool | None = None,
    coarse: faiss.Index | None = None,
) -> faiss.Index:
    """The empty index of ``factory``, trained on a seeded sample of ``vectors`` as ``build_index`` trains it.

    IVF indexes get their default ``nprobe``, which copies of the index keep. Copies filled
    with different rows and merged (see ``ondisk``) make the same index as one filled with all.

    Args:
        coarse: an earlier IVF index of these vectors. When ``factory`` has as many lists, of
            the same dimension and metric, its trained centroids are kept and only the codes
            are trained, on at most ``factory.ENCODER_SAMPLE_ROWS`` rows: changing an index's codes
            then skips k-means, most of a build (about an hour at 1M x 1280-d on 2 cores).

    Raises:
        InvalidFactoryError: as ``build_index``.
    """
    index = factories.from_factory(vectors.shape[1], factory, metric)
    if _keep_lists(index, coarse):
        nlist = faiss.extract_index_ivf(index).nlist
        train_size = min(train_size or factories.default_train_rows(len(vectors), nlist), max(factories.ENCODER_SAMPLE_ROWS, nlist))
    if not index.is_trained:
        _skip_polysemous_training(index)
        _train(index, factory, training_sample(index, vectors, train_size), gpu.resolve_gpu(use_gpu))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = factories.default_nprobe(ivf.nlist)
    return index


def _keep_lists(index: faiss.Index, coarse: faiss.Index | None) -> bool:
    """Give ``index`` the trained centroids of ``coarse`` where they fit; whether it did.

    IVF training then skips k-means: FAISS trains no quantizer that already holds nlist centroids.
    """
    if coarse is None or any(isinstance(faiss.downcast_index(i), faiss.IndexPreTransform) for i in (index, coarse)):
        return False  # centroids live in the transform's space, which is trained afresh
    ivf = faiss.try_extract_index_ivf(index)
    old = faiss.try_extract_index_ivf(coarse)
    if ivf is None or old is None or (old.nlist, old.d, old.metric_type) != (ivf.nlist, ivf.d, ivf.metric_type):
        return False
    if not (old.is_trained and old.quantizer.ntotal == old.nlist and ivf.quantizer.ntotal == 0):
        return False
    try:
        centroids = old.quantizer.reconstruct_n(0, old.nlist)
    except RuntimeError as error:  # a quantizer that can't give its vectors back: train as usual
        logger.debug("can't reuse the earlier lists: %s", first_line(error))
        return False
    ivf.quantizer.add(centroids)
    logger.info("keeping the %d trained lists of the earlier index: only the codes are trained", ivf.nlist)
    return True


def training_sample(index: faiss.Index, x: np.ndarray | RowView, train_size: int | None) -> np.ndarray:
    """A seeded random sample of at most ``train_size`` rows (default 100 a list), in their original order."""
    ivf = faiss.try_extract_index_ivf(index)
    nlist = ivf.nlist if ivf is not None else 1
    if train_size is None:
        train_size = factories.default_train_rows(len(x), nlist)
    if min(train_size, len(x)) < nlist:
        raise InvalidFactoryError(
            f"an index with {nlist} lists needs at least {nlist} training vectors "
            f"({factories.MIN_POINTS_PER_LIST * nlist} to train well), got {min(train_size, len(x))}: "
            f"use {factories.EXACT_FACTORY!r} or fewer lists"
        )
    if not isinstance(x, RowView):
        if len(x) <= train_size:
            return x  # already contiguous float32: no copy
        return np.ascontiguousarray(x[_sample_rows(len(x), train_size)])
    rows = np.arange(len(x)) if len(x) <= train_size else _sample_rows(len(x), train_size)
    return x.read_into(np.empty((len(rows), x.shape[1]), dtype=np.float32), rows)


def _sample_rows(n: int, size: int) -> np.ndarray:
    return np.sort(np.random.default_rng(TRAIN_SEED).choice(n, size=size, replace=False))


def _skip_polysemous_training(index: faiss.Index) -> None:
    """PQ indexes reorder codes for Hamming pre-filtering by default; search here doesn't use it, and it
    costs seconds a sub-quantizer whatever the data size."""
    holder = codes_holder(index)
    if getattr(holder, "do_polysemous_training", False):
        holder.do_polysemous_training = False


def _train(index: faiss.Index, factory: str, sample: np.ndarray, on_gpu: bool) -> None:
    """Train ``index``; with ``on_gpu``, IVF's k-means assigns points on the GPU.

    On the CPU, a plain IVF index of at least ``kmeans.MIN_LISTS`` lists gets its lists from
    two-level k-means (``kmeans``), then only its codes are trained, on at most
    ``factory.ENCODER_SAMPLE_ROWS`` rows: FAISS's one-level k-means would cost ``nlist`` distances a
    row an iteration (an hour and a half at 1M x 1280-d, 4,096 lists, on 2 cores).
    """
    ivf = faiss.try_extract_index_ivf(index)
    lists_trained = ivf is not None and ivf.quantizer.ntotal == ivf.nlist  # kept from an earlier index: no k-means
    if ivf is not None and not lists_trained and len(sample) < factories.MIN_POINTS_PER_LIST * ivf.nlist:
        logger.warning("training %s on %d vectors: fewer than 39 a list, recall may suffer", factory, len(sample))
    if not on_gpu and not lists_trained and kmeans.two_level_applies(index):
        ivf.quantizer.add(kmeans.two_level_centroids(sample, ivf.nlist, spherical=ivf.cp.spherical, seed=TRAIN_SEED))
        lists_trained = True
    if lists_trained and len(sample) > factories.ENCODER_SAMPLE_ROWS:
        sample = sample[_sample_rows(len(sample), factories.ENCODER_SAMPLE_ROWS)]  # FAISS assigns every row it trains codes on
    if not (on_gpu and ivf is not None):
        index.train(sample)
        return
    ivf.clustering_index = gpu.to_gpu(faiss.IndexFlat(ivf.quantizer.d, ivf.metric_type))
    try:
        index.train(sample)
    finally:
        ivf.clustering_index = None


def _reserve_codes(index: faiss.Index, n: int) -> None:
    """Size a flat index's code array for all ``n`` rows at once: grown add by add, it doubles, and
    while it does the old and new arrays are both held (twice the index, at the end)."""
    holder = codes_holder(index)
    codes = getattr(holder, "codes", None)
    if codes is not None and hasattr(codes, "resize") and holder.ntotal == 0:
        codes.resize(n * holder.code_size)
        codes.resize(0)  # a vector keeps its capacity when it shrinks


def _add_with_gpu_quantizer(index: faiss.Index, ivf: faiss.IndexIVF, x, ids: np.ndarray, progress=None) -> None:
    """Add with the coarse quantizer copied to the GPU, where assigning to lists costs most."""
    try:
        gpu_quantizer = gpu.to_gpu(ivf.quantizer)
    except RuntimeError as error:  # a quantizer type the GPU lacks (HNSW): add on the CPU
        logger.debug("adding on the CPU: %s", first_line(error))
        add_in_chunks(index, x, ids, progress)
        return
    cpu_quantizer = ivf.quantizer
    ivf.quantizer = gpu_quantizer
    try:
        add_in_chunks(index, x, ids, progress)
    finally:
        ivf.quantizer = cpu_quantizer


def add_in_chunks(index: faiss.Index, x: np.ndarray | RowView, ids: np.ndarray, progress: Progress | None = None) -> None:
    """Add rows in order, ``READ_CHUNK_ROWS`` at a time: the same index as one call, without reading all of a ``RowView``."""
    for start in range(0, len(x), row_views.READ_CHUNK_ROWS):
        stop = start + row_views.READ_CHUNK_ROWS
        index.add_with_ids(as_vectors(x[start:stop], dim=index.d), ids[start:stop])
        _return_freed_memory()
        if progress is not None:
            progress.step(min(stop, len(x)) - start)


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def _return_freed_memory() -> None:
    """Hand back to the OS what glibc keeps of freed buffers: each inverted list grows by reallocating,
    and the old buffers otherwise stay resident (a third of the index, measured at 2048 lists)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
