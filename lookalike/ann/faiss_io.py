"""Index files: written atomically, read whole or memory-mapped, and described.

An on-disk index (``OnDiskInvertedLists``, see ``ondisk``) is a small file naming the file
of its inverted lists. It is always read with ``IO_FLAG_ONDISK_SAME_DIR | IO_FLAG_READ_ONLY``:
the lists are found beside the index wherever the store is mounted, and are mapped read-only
(``remove_ids`` on them would write into the live file, or abort the process). Never with
``IO_FLAG_MMAP``, which segfaults on such an index in faiss 1.15.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from ..atomic import replace_atomically
from ..errors import IndexFileError, first_line
from .gpu import to_cpu

logger = logging.getLogger(__name__)


def write_index(index: faiss.Index, path: str | os.PathLike, crash_point: str | None = None) -> None:
    """Write ``index`` to ``path`` atomically: readers see the old file or the new one, never half.

    Writes a temporary file in the same folder, fsyncs it, then ``os.replace``s it over
    ``path``; an index mapped from the old file keeps reading the old one.

    Args:
        index: the index (a GPU index is copied to the CPU first).
        path: where to write; the folder must exist.
        crash_point: names the steps for ``lookalike.crashpoints`` (the store passes ``"index"``).

    Raises:
        IndexFileError: the file can't be written.
    """
    path = Path(path)
    try:
        replace_atomically(path, lambda tmp: faiss.write_index(to_cpu(index), str(tmp)), crash_point)
    except (RuntimeError, OSError) as error:
        raise IndexFileError(f"can't write the index to {path}: {first_line(error)}") from None


def read_index(path: str | os.PathLike, mmap: bool = True) -> faiss.Index:
    """Read an index written by ``write_index`` (or by ``faiss.write_index``), or an on-disk one.

    With ``mmap``, vector codes stay in the file and pages load as searches touch them, so
    opening is instant and memory is shared between processes; such an index can be
    searched but not changed (see ``is_mapped``). Types FAISS can't map are read normally.
    An on-disk index is always mapped read-only, whatever ``mmap`` says.

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
    flags = (_mmap_flag() | faiss.IO_FLAG_ONDISK_SAME_DIR) if mmap else ONDISK_FLAGS
    try:
        with quiet_stdout():  # SAME_DIR printf()s to fd 1, which would corrupt `query --json`
            return faiss.read_index(str(path), flags)
    except RuntimeError as error:
        if mmap and "OnDiskInvertedLists" in str(error):  # on-disk lists can't be mapped in place
            return read_index(path, mmap=False)
        logger.debug("%s can't be mapped (%s): reading it", path, first_line(error))
    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:
        raise IndexFileError(f"{path} is not a readable FAISS index ({first_line(error)}): rebuild the index") from None


ONDISK_FLAGS = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY


def ondisk_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    """The on-disk inverted lists of ``index``, or None when its lists are in memory (or it has none).

    The result doesn't own its C++ object: the caller must keep ``index`` alive while using it.
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send what C code prints to fd 1 (FAISS's on-disk reads and merges do) to /dev/null meanwhile."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        _flush_c_stdout()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _flush_c_stdout() -> None:
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)  # what C buffered goes to /dev/null, not to the real stdout later


def is_mapped(index: faiss.Index) -> bool:
    """Whether ``index`` reads its codes from a mapped file, so that adding or removing would crash FAISS."""
    holder = codes_holder(index)
    if isinstance(holder, faiss.IndexIVF):
        lists = faiss.downcast_InvertedLists(holder.invlists)
        if isinstance(lists, faiss.OnDiskInvertedLists):
            return True  # never changed in place, even where FAISS would let it
        codes = getattr(lists, "codes", None)
        return bool(lists.nlist) and codes is not None and not getattr(codes.at(0), "is_owned", True)
    codes = getattr(holder, "codes", None)
    return codes is not None and not getattr(codes, "is_owned", True)


def fault_in(index: faiss.Index) -> None:
    """Read every code of ``index`` once, so that a mapped index has all its pages mapped into this process.

    Even with the file in the page cache, a fresh mapping costs a page fault for each page
    a search touches first: at 1M 1280-d vectors (IVF4096,Flat, nprobe 128) a query took
    84 ms until the lists it probed had been touched, 21 ms after. One query over every
    list touches them all (about 1 s for that 5 GB index once in the page cache).
    """
    query = np.zeros((1, index.d), dtype=np.float32)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and isinstance(faiss.downcast_index(index), faiss.IndexIVF):
        index.search(query, 1, params=faiss.SearchParametersIVF(nprobe=ivf.nlist))
    else:  # exact indexes read every code on every search anyway
        index.search(query, 1)


def codes_holder(index: faiss.Index) -> faiss.Index:
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


def _mmap_flag() -> int:
    """In-place mapping of flat and IVF codes where this faiss has it (1.11+), else IVF-only mapping."""
    return getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)


def _factory_string(index: faiss.Index) -> str:
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return reverse_index_factory(index)
    except (NotImplementedError, RuntimeError, AttributeError):
        return type(index).__name__


def _metric_name(metric: int) -> str:
    names = {faiss.METRIC_INNER_PRODUCT: "inner_product", faiss.METRIC_L2: "l2"}
    return names.get(metric, f"metric {metric}")
