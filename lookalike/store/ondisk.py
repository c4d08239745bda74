"""An IVF index whose inverted lists stay on disk: trained once, filled in parts, merged into one file.

    trained  the empty index, trained on a sample (``index.trained.<factory>.faiss``, kept for rebuilds)
    parts    copies of it, each filled with a group of rows under their catalog ids, written
             to ``.build-<token>/part-<k>.faiss`` (``map_parts`` runs them: the built-in ``map``
             here, Ray tasks on a cluster; this module knows nothing of Ray)
    merge    ``faiss.contrib.ondisk.merge_ondisk`` concatenates the parts' lists, in order, into
             ``index.<generation>.<token>.ivfdata``; the small ``index.faiss`` naming it is
             written last, by atomic rename

Parts filled in catalog order and merged in that order make the same index as one copy filled
with every row (tested: the same top-10 ids). A search maps the lists instead of loading them
(see ``faiss_io.read_index``). The ``.ivfdata`` is never changed once written, and each build
writes a new one, so the file ``index.faiss`` names is always whole.
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np

from .. import crashpoints
from ..ann.build import add_in_chunks
from ..ann.faiss_io import ondisk_lists, quiet_stdout, read_index, write_index
from ..ann.rows import RowView
from ..atomic import fsync_folder
from .layout import BUILD_GLOB, INDEX, IVFDATA_GLOB

logger = logging.getLogger(__name__)

PART_ROWS = 2_000_000  # rows a part adds: 2.6 GB of 1280-d PQ320 codes, minutes of one core's work

MapParts = Callable[[Callable, Sequence], Iterable]


class Piece(NamedTuple):
    """Rows of one vector file that a part adds: ``rows`` of ``file`` (``file_rows`` long) under ``ids``."""

    file: str
    file_rows: int
    rows: np.ndarray
    ids: np.ndarray


class PartJob(NamedTuple):
    """What one add task needs: everything by path, so that it can run on any node that mounts the store."""

    trained: str
    pieces: list[Piece]
    dim: int
    out: str


class PartResult(NamedTuple):
    rows: int
    seconds: float
    peak_rss_bytes: int
    host: str


def plan_parts(pieces: Iterable[Piece], trained: str, dim: int, folder: str, part_rows: int = PART_ROWS) -> list[PartJob]:
    """Group ``pieces`` (in catalog order) into jobs of at most ``part_rows`` rows, splitting a piece where needed."""
    jobs: list[PartJob] = []
    current: list[Piece] = []
    size = 0

    def close() -> None:
        nonlocal current, size
        if current:
            jobs.append(PartJob(trained, current, dim, os.path.join(folder, f"part-{len(jobs):05d}.faiss")))
        current, size = [], 0

    for piece in pieces:
        start = 0
        while start < len(piece.rows):
            take = min(part_rows - size, len(piece.rows) - start)
            current.append(piece._replace(rows=piece.rows[start:start + take], ids=piece.ids[start:start + take]))
            size, start = size + take, start + take
            if size == part_rows:
                close()
    close()
    return jobs


def add_part(job: PartJob) -> PartResult:
    """Fill a copy of the trained index with a job's rows and write it (atomically): the body of one add task."""
    started = time.perf_counter()
    index = read_index(job.trained, mmap=False)
    for piece in job.pieces:
        data = np.memmap(piece.file, dtype=np.float32, mode="r", shape=(piece.file_rows, job.dim))
        add_in_chunks(index, RowView(data, piece.rows), np.ascontiguousarray(piece.ids, dtype=np.int64))
        del data
    write_index(index, job.out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return PartResult(int(index.ntotal), time.perf_counter() - started, peak, os.uname().nodename)


def build_ondisk(directory: str | os.PathLike, trained: str | os.PathLike, pieces: Iterable[Piece], dim: int,
                 generation: int, map_parts: MapParts = map, part_rows: int = PART_ROWS) -> tuple[str, list[PartResult]]:
    """Fill, merge and install an on-disk index in ``directory`` (the caller holds the store's lock).

    Args:
        directory: the store folder; ``index.faiss`` there is replaced last.
        trained: the trained empty index file.
        pieces: the rows to add, in catalog order, with their ids.
        dim: the vectors' dimension.
        generation: the catalog generation the index reflects (part of the ``.ivfdata`` name).
        map_parts: ``map_parts(add_part, jobs)`` runs the jobs and returns their results in order.
        part_rows: rows a job adds at most.

    Returns:
        The name of the ``.ivfdata`` file now in use, and what each add task reported.
    """
    directory = Path(directory)
    folder = directory / f"{BUILD_GLOB[:-1]}{secrets.token_hex(4)}"
    folder.mkdir()
    jobs = plan_parts(pieces, os.fspath(trained), dim, os.fspath(folder), part_rows)
    results = list(map_parts(add_part, jobs))
    crashpoints.reached("ondisk.parts_written")
    name = f"index.{generation}.{secrets.token_hex(4)}.ivfdata"
    index = merge_parts(os.fspath(trained), [job.out for job in jobs], directory / name)
    crashpoints.reached("ondisk.ivfdata_written")
    write_index(index, directory / INDEX, crash_point="index")
    del index
    shutil.rmtree(folder, ignore_errors=True)
    return name, results


def merge_parts(trained: str, parts: list[str], ivfdata: Path) -> faiss.Index:
    """The trained index with every part's lists, in order, in ``ivfdata`` (durable, name and all, on return)."""
    from faiss.contrib.ondisk import merge_ondisk

    index = read_index(trained, mmap=False)
    if parts:
        with quiet_stdout():  # it prints "resizing ..." to fd 1
            merge_ondisk(index, parts, os.fspath(ivfdata))
    else:  # nothing to add: still an on-disk index, with empty lists
        lists = faiss.OnDiskInvertedLists(index.nlist, index.code_size, os.fspath(ivfdata))
        faiss.extract_index_ivf(index).replace_invlists(lists, True)
        lists.this.disown()
    fd = os.open(ivfdata, os.O_RDONLY)
    try:
        os.fsync(fd)  # on Linux this also flushes the pages merge_ondisk wrote through its shared map
    finally:
        os.close(fd)
    fsync_folder(ivfdata.parent)  # its name is durable before an index.faiss that names it can be
    return index


def ivfdata_name(index: faiss.Index) -> str | None:
    """The file name of an on-disk index's lists, or None for an index with its lists in memory."""
    lists = ondisk_lists(index)
    return os.path.basename(lists.filename) if lists is not None else None


def remove_unused(directory: str | os.PathLike, keep: Iterable[str | None]) -> list[Path]:
    """Delete ``.ivfdata`` files other than ``keep`` and leftover part folders (holding the store's lock).

    Keep the file the index used before the current one: a process on another machine may
    still map it (on NFS, deleting a mapped file gives its reader ESTALE or SIGBUS).
    """
    directory = Path(directory)
    kept = {name for name in keep if name}
    gone = [p for p in directory.glob(IVFDATA_GLOB) if p.name not in kept]
    for path in gone:
        path.unlink(missing_ok=True)
    for folder in directory.glob(BUILD_GLOB):
        shutil.rmtree(folder, ignore_errors=True)
    return gone
