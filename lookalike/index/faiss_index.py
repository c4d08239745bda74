"""The FAISS edge: float32 vectors and int64 ids in, ``(D, I)`` neighbours out.

Vectors are expected L2-normalised and compared by inner product, so scores are cosine
similarities. Every index built here carries its own ids (``IDMap2`` or IVF's native ids),
so ``add_with_ids`` and ``remove_ids`` work and ``I`` holds ids, never row positions.
Small stores get an exact index; large ones an IVF index whose ``nprobe`` is stored in the
file. This module knows nothing of torch or of the store above it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
from pathlib import Path

import faiss
import numpy as np

from ..atomic import fsync_folder
from ..errors import (
    DimensionMismatchError,
    IndexFileError,
    IndexStateError,
    InvalidFactoryError,
    InvalidIdsError,
    MissingDependencyError,
)
from .vectors import RowView

logger = logging.getLogger(__name__)

__all__ = [
    "DimensionMismatchError",
    "IndexFileError",
    "IndexStateError",
    "InvalidFactoryError",
    "InvalidIdsError",
    "add",
    "build_index",
    "choose_factory",
    "describe",
    "gpu_available",
    "is_mapped",
    "read_index",
    "remove",
    "search",
    "write_index",
]

EXACT_FACTORY = "IDMap2,Flat"
EXACT_THRESHOLD = 100_000  # below this many vectors, exact search is fast enough and costs no training
MIN_POINTS_PER_LIST = 39  # FAISS warns below 39 training points per centroid
TRAIN_POINTS_PER_CENTROID = 256  # FAISS k-means subsamples to this anyway
TRAIN_SEED = 0
DEFAULT_BUDGET_BYTES = 4 * 2**30  # when physical RAM can't be read
BUDGET_FRACTION_OF_RAM = 0.5
ID_BYTES = 8
MIN_PQ_BYTES = 8  # fewer bytes a vector keep too little to rank neighbours by
ADD_CHUNK_ROWS = 65_536  # rows read and added at a time: the only copy made beside the index (320 MiB at 1280-d)


# --- choosing a factory ---------------------------------------------------------------


def choose_factory(n_vectors: int, dim: int, memory_budget_bytes: int | None = None) -> str:
    """A FAISS ``index_factory`` string for ``n_vectors`` vectors of ``dim`` floats.

    Below ``EXACT_THRESHOLD`` vectors: ``"IDMap2,Flat"`` (exact, no training, and ids can be
    looked up and removed). Above: ``"IVF{nlist},{codes}"`` with ``nlist`` the power of two
    nearest ``4 * sqrt(n)``, at most ``n / 39``, and the richest codes whose memory fits the
    budget: ``Flat`` (exact distances within the probed lists), then ``SQ8`` (a quarter of the
    memory), then ``PQ{m}`` (``m`` bytes a vector, lower recall).

    Args:
        n_vectors: how many vectors the index will hold.
        dim: their dimension.
        memory_budget_bytes: memory the index may use; ``None`` means half the physical RAM
            (or 4 GiB where that can't be read).

    Returns:
        The factory string, for ``build_index(..., factory=...)``.

    Raises:
        InvalidFactoryError: even the smallest PQ codes don't fit the budget.
        ValueError: ``n_vectors`` is negative or ``dim`` is not positive.
    """
    if n_vectors < 0 or dim < 1:
        raise ValueError(f"need n_vectors >= 0 and dim >= 1, got n_vectors={n_vectors}, dim={dim}")
    if n_vectors < EXACT_THRESHOLD:
        return EXACT_FACTORY
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    nlist = _choose_nlist(n_vectors)
    centroid_bytes = nlist * dim * 4
    for codes, code_bytes in _codes_by_preference(dim):
        if n_vectors * (code_bytes + ID_BYTES) + centroid_bytes <= budget:
            return f"IVF{nlist},{codes}"
    smallest = min(code_bytes for _, code_bytes in _codes_by_preference(dim))
    needed = n_vectors * (smallest + ID_BYTES) + centroid_bytes
    raise InvalidFactoryError(
        f"{n_vectors} vectors of dim {dim} need at least {needed / 2**20:.0f} MiB even with PQ codes, "
        f"over the budget of {budget / 2**20:.0f} MiB: raise memory_budget_bytes"
    )


def default_memory_budget() -> int:
    """Half the physical RAM where the OS tells it, else 4 GiB."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return DEFAULT_BUDGET_BYTES
    return int(ram * BUDGET_FRACTION_OF_RAM) if ram > 0 else DEFAULT_BUDGET_BYTES


def _choose_nlist(n_vectors: int) -> int:
    """The power of two nearest ``4 * sqrt(n)``, leaving every list at least 39 training points."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    most = max(1, n_vectors // MIN_POINTS_PER_LIST)
    while nlist > most:
        nlist //= 2
    return max(1, nlist)


def _codes_by_preference(dim: int) -> list[tuple[str, int]]:
    """(codes, bytes a vector), best recall first: Flat, SQ8, then PQ from the largest ``m`` dividing ``dim``."""
    fewest = min(MIN_PQ_BYTES, dim // 2)
    pq = [(f"PQ{m}", m) for m in range(dim // 2, 0, -1) if dim % m == 0 and m >= fewest]
    return [("Flat", 4 * dim), ("SQ8", dim), *pq]


def _default_nprobe(nlist: int) -> int:
    """Lists probed per query: ``2 * sqrt(nlist)`` rounded up to a power of two, at least 16.

    Measured on clustered 128-d data (100k vectors, IVF1024): nprobe 64 gives recall@10
    of 0.996 where 16 gives 0.97; scaling with sqrt keeps large indexes fast.
    """
    nprobe = 2 ** math.ceil(math.log2(max(16.0, 2 * math.sqrt(nlist))))
    return min(nlist, nprobe)


# --- building -------------------------------------------------------------------------


def build_index(
    vectors: np.ndarray | RowView,
    ids: np.ndarray,
    factory: str | None = None,
    *,
    metric: int = faiss.METRIC_INNER_PRODUCT,
    train_size: int | None = None,
    use_gpu: bool | None = None,
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
        train_size: most vectors to train on; ``None`` means 256 per centroid (FAISS's own cap).
        use_gpu: train and assign on a GPU; ``None`` means where this faiss build has one.
            The index returned is always a CPU index, so it can be written.

    Returns:
        The index, with ``ntotal == n``.

    Raises:
        DimensionMismatchError: ``vectors`` is not 2-D or ``ids`` doesn't have one id a row.
        InvalidIdsError: ids that are not integers, or negative.
        InvalidFactoryError: FAISS can't parse ``factory``, its index can't take ids or
            removals, or there are fewer vectors than it needs to train.
        MissingDependencyError: ``use_gpu=True`` where faiss has no GPU.
    """
    x = vectors if isinstance(vectors, RowView) else _as_vectors(vectors)
    ids = _as_ids(ids, len(x))
    factory = factory or choose_factory(len(x), x.shape[1])
    index = _from_factory(x.shape[1], factory, metric)
    gpu = _resolve_gpu(use_gpu)
    if not index.is_trained:
        _skip_polysemous_training(index)
        _train(index, factory, _training_sample(index, x, train_size), gpu)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = _default_nprobe(ivf.nlist)
    if gpu and ivf is not None:
        _add_with_gpu_quantizer(index, ivf, x, ids)
    else:
        _add_in_chunks(index, x, ids)
    logger.debug("built %s over %d vectors of dim %d", factory, index.ntotal, index.d)
    return index


def check_factory(factory: str, dim: int) -> None:
    """Raise ``InvalidFactoryError`` now, before hours of embedding, if ``factory`` can't serve a store."""
    _from_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)


def _from_factory(dim: int, factory: str, metric: int) -> faiss.Index:
    """The empty index of ``factory``, checked to take ids and removals."""
    try:
        index = faiss.index_factory(dim, factory, metric)
    except RuntimeError as error:
        raise InvalidFactoryError(
            f"FAISS can't build {factory!r} for dim {dim} ({_first_line(error)}): "
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


def _training_sample(index: faiss.Index, x: np.ndarray, train_size: int | None) -> np.ndarray:
    """A seeded random sample of rows to train on, in their original order."""
    ivf = faiss.try_extract_index_ivf(index)
    nlist = ivf.nlist if ivf is not None else 1
    if train_size is None:
        train_size = TRAIN_POINTS_PER_CENTROID * max(nlist, 256)
    if min(train_size, len(x)) < nlist:
        raise InvalidFactoryError(
            f"an index with {nlist} lists needs at least {nlist} training vectors "
            f"({MIN_POINTS_PER_LIST * nlist} to train well), got {min(train_size, len(x))}: "
            f"use {EXACT_FACTORY!r} or fewer lists"
        )
    if len(x) <= train_size:
        return _as_vectors(x[:])
    rows = np.random.default_rng(TRAIN_SEED).choice(len(x), size=train_size, replace=False)
    return _as_vectors(x[np.sort(rows)])


def _skip_polysemous_training(index: faiss.Index) -> None:
    """PQ indexes reorder codes for Hamming pre-filtering by default; search here doesn't use it, and it
    costs seconds a sub-quantizer whatever the data size."""
    holder = _codes_holder(index)
    if getattr(holder, "do_polysemous_training", False):
        holder.do_polysemous_training = False


def _train(index: faiss.Index, factory: str, sample: np.ndarray, gpu: bool) -> None:
    """Train ``index``; with ``gpu``, IVF's k-means assigns points on the GPU."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and len(sample) < MIN_POINTS_PER_LIST * ivf.nlist:
        logger.warning("training %s on %d vectors: fewer than 39 a list, recall may suffer", factory, len(sample))
    if not (gpu and ivf is not None):
        index.train(sample)
        return
    gpu_flat = _to_gpu(faiss.IndexFlat(ivf.quantizer.d, ivf.metric_type))
    ivf.clustering_index = gpu_flat
    try:
        index.train(sample)
    finally:
        ivf.clustering_index = None


def _add_with_gpu_quantizer(index: faiss.Index, ivf: faiss.IndexIVF, x: np.ndarray, ids: np.ndarray) -> None:
    """Add with the coarse quantizer copied to the GPU, where assigning to lists costs most."""
    try:
        gpu_quantizer = _to_gpu(ivf.quantizer)
    except RuntimeError as error:  # a quantizer type the GPU lacks (HNSW): add on the CPU
        logger.debug("adding on the CPU: %s", _first_line(error))
        _add_in_chunks(index, x, ids)
        return
    cpu_quantizer = ivf.quantizer
    ivf.quantizer = gpu_quantizer
    try:
        _add_in_chunks(index, x, ids)
    finally:
        ivf.quantizer = cpu_quantizer


def _add_in_chunks(index: faiss.Index, x: np.ndarray | RowView, ids: np.ndarray) -> None:
    """Add rows in order, ``ADD_CHUNK_ROWS`` at a time: the same index as one call, without reading all of a ``RowView``."""
    for start in range(0, len(x), ADD_CHUNK_ROWS):
        stop = start + ADD_CHUNK_ROWS
        index.add_with_ids(_as_vectors(x[start:stop], dim=index.d), ids[start:stop])


# --- GPU ------------------------------------------------------------------------------


def gpu_available() -> bool:
    """Whether this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def _resolve_gpu(use_gpu: bool | None) -> bool:
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        raise MissingDependencyError(
            "use_gpu=True, but this faiss has no GPU support or sees no GPU: "
            "pip uninstall faiss-cpu && pip install faiss-gpu, or pass use_gpu=False"
        )
    return bool(use_gpu)


def _to_gpu(index: faiss.Index) -> faiss.Index:
    """A copy of a CPU index on GPU 0 (the GPU index keeps its resources alive)."""
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, 0, index)


def _to_cpu(index: faiss.Index) -> faiss.Index:
    gpu_index = getattr(faiss, "GpuIndex", None)
    if gpu_index is not None and isinstance(index, gpu_index):
        return faiss.index_gpu_to_cpu(index)
    return index


# --- add, remove, search --------------------------------------------------------------


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
    x = _as_vectors(np.atleast_2d(vectors) if np.ndim(vectors) == 1 else vectors, dim=index.d)
    ids = _as_ids(np.atleast_1d(ids), len(x))
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
    q = _as_vectors(q, dim=index.d, what="queries")
    if not index.is_trained:
        raise IndexStateError("the index is not trained: make it with build_index")
    return index.search(q, int(k))


def _as_vectors(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """Contiguous float32 ``(n, dim)``; the error names what was wrong."""
    x = np.ascontiguousarray(vectors, dtype="float32")
    if x.ndim != 2:
        raise DimensionMismatchError(f"{what} must be a 2-D array (n, dim), got shape {x.shape}")
    if x.shape[1] < 1 or (dim is not None and x.shape[1] != dim):
        want = f"the index's dimension {dim}" if dim is not None else "at least 1"
        raise DimensionMismatchError(f"{what} have dimension {x.shape[1]}, need {want}")
    return x


def _as_ids(ids: np.ndarray, n_rows: int) -> np.ndarray:
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


# --- files ----------------------------------------------------------------------------


def write_index(index: faiss.Index, path: str | os.PathLike) -> None:
    """Write ``index`` to ``path`` atomically: readers see the old file or the new one, never half.

    Writes a temporary file in the same folder, fsyncs it, then ``os.replace``s it over
    ``path``; an index mapped from the old file keeps reading the old one.

    Args:
        index: the index (a GPU index is copied to the CPU first).
        path: where to write; the folder must exist.

    Raises:
        IndexFileError: the file can't be written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        faiss.write_index(_to_cpu(index), str(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except (RuntimeError, OSError) as error:
        tmp.unlink(missing_ok=True)
        raise IndexFileError(f"can't write the index to {path}: {_first_line(error)}") from None


def read_index(path: str | os.PathLike, mmap: bool = True) -> faiss.Index:
    """Read an index written by ``write_index`` (or by ``faiss.write_index``).

    With ``mmap``, vector codes stay in the file and pages load as searches touch them, so
    opening is instant and memory is shared between processes; such an index can be
    searched but not changed (see ``is_mapped``). Types FAISS can't map are read normally.

    Args:
        path: the index file.
        mmap: map the codes from the file instead of reading them into memory.

    Returns:
        The CPU index.

    Raises:
        IndexFileError: the file is missing, not a file, or not a readable FAISS index.
    """
    path = Path(path)
    if not path.is_file():
        reason = "it is a folder" if path.is_dir() else "no such file"
        raise IndexFileError(f"can't read an index from {path}: {reason}; build the index first")
    if mmap:
        try:
            return faiss.read_index(str(path), _mmap_flag())
        except RuntimeError as error:
            logger.debug("%s can't be mapped (%s): reading it", path, _first_line(error))
    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:
        raise IndexFileError(
            f"{path} is not a readable FAISS index ({_first_line(error)}): rebuild the index"
        ) from None


def is_mapped(index: faiss.Index) -> bool:
    """Whether ``index`` reads its codes from a mapped file, so that adding or removing would crash FAISS."""
    holder = _codes_holder(index)
    if isinstance(holder, faiss.IndexIVF):
        lists = faiss.downcast_InvertedLists(holder.invlists)
        if isinstance(lists, faiss.OnDiskInvertedLists):
            return bool(lists.read_only)
        codes = getattr(lists, "codes", None)
        return bool(lists.nlist) and codes is not None and not getattr(codes.at(0), "is_owned", True)
    codes = getattr(holder, "codes", None)
    return codes is not None and not getattr(codes, "is_owned", True)


def _codes_holder(index: faiss.Index) -> faiss.Index:
    """The concrete index inside ``index`` that holds the codes: its IVF, or what an IDMap wraps.

    The result doesn't own its C++ object: the caller must keep ``index`` alive while using it.
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return faiss.downcast_index(ivf)
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexIDMap | faiss.IndexIDMap2):
        return faiss.downcast_index(concrete.index)
    return concrete


def _mmap_flag() -> int:
    """In-place mapping of flat and IVF codes where this faiss has it (1.11+), else IVF-only mapping."""
    return getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)


def _check_writable(index: faiss.Index, action: str) -> None:
    if is_mapped(index):
        raise IndexStateError(f"can't {action} an index mapped from its file: read it with mmap=False to change it")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:  # Windows fsyncs only handles open for writing
        os.fsync(handle.fileno())


def _first_line(error: BaseException) -> str:
    """What a FAISS error says, without the C++ signature and source line it starts with."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    match = re.match(r"Error in .*? at \S+:\d+: (?:Error: )?(.*)", lines[0])
    return match.group(1) if match else lines[0]


# --- description ----------------------------------------------------------------------


def ids(index: faiss.Index) -> np.ndarray:
    """Every id an index holds: the id map of IDMap indexes, or the inverted lists of IVF ones."""
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def describe(index: faiss.Index) -> dict[str, object]:
    """What an index is, for an ``info`` command.

    Args:
        index: any FAISS index.

    Returns:
        ``type`` (FAISS class), ``factory`` (an equivalent factory string, or the class name),
        ``metric`` (``"inner_product"``, ``"l2"``, ...), ``dim``, ``ntotal``, ``is_trained``,
        ``mapped`` (see ``is_mapped``), ``bytes_per_vector`` (code size, ids not counted), and for IVF indexes
        ``nlist`` and ``nprobe``.
    """
    concrete = faiss.downcast_index(index)  # doesn't own the C++ object: ``index`` must stay bound
    info: dict[str, object] = {
        "type": type(concrete).__name__,
        "factory": _factory_string(concrete),
        "metric": _metric_name(index.metric_type),
        "dim": int(index.d),
        "ntotal": int(index.ntotal),
        "is_trained": bool(index.is_trained),
        "mapped": is_mapped(index),
    }
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        info.update(bytes_per_vector=int(ivf.code_size), nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
    else:
        with contextlib.suppress(RuntimeError):  # types without standalone codes (HNSW) have no size
            info["bytes_per_vector"] = int(index.sa_code_size())
    return info


def _factory_string(index: faiss.Index) -> str:
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return reverse_index_factory(index)
    except (NotImplementedError, RuntimeError, AttributeError):
        return type(index).__name__


def _metric_name(metric: int) -> str:
    names = {faiss.METRIC_INNER_PRODUCT: "inner_product", faiss.METRIC_L2: "l2"}
    return names.get(metric, f"metric {metric}")
