"""Where the stored vectors are: one path for every reader, whichever engine wrote them.

Shard 0 is ``vectors.f32``: the local engine's append-only file, of which the catalog counts
the committed rows. Shards 1, 2, ... are ``shards/<name>.f32``: float32 rows written whole,
once, by the Ray engine's workers (a temporary name, fsync, rename, fsync of the folder),
then committed by the catalog together with the files whose rows they hold. A shard file
no catalog row names is an orphan of a killed run: only ever deleted, never adopted.

Raw float32, not Parquet: a reader fetches any row through a memory map (100 random rows of
an 80 MiB shard: 0.16 ms; Parquet decodes the whole column chunk first, 635 ms), and the
catalog stays the one truth about which file a row belongs to.
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import crashpoints
from ..ann.rows import MAPPED_ROWS, RowView, release_pages
from ..atomic import TMP_SUFFIX, fsync_folder, make_folder
from ..errors import StoreError
from .catalog import Catalog, Shard
from .layout import SHARDS, VECTORS
from .vectors import VectorFile

SUFFIX = ".f32"
MAX_OPEN_MAPS = 1024  # far under vm.max_map_count (65,530)
# A gather of at most this many rows reads them from the files: a map would cost page faults
# and handing the pages back (madvise over 5 GB); 22 rows for a search re-rank took 1.4 ms so.
READ_ROWS = 256


def shard_path(directory: str | os.PathLike, name: str) -> Path:
    return Path(directory) / SHARDS / f"{name}{SUFFIX}"


def write_shard_file(directory: str | os.PathLike, vectors: np.ndarray) -> str:
    """Write ``vectors`` as a new shard of the store in ``directory``, durably; returns its name.

    A fresh name on every call, so a retried task never overwrites a file another attempt may
    have had committed. The file exists under its final name only once it is complete.
    """
    folder = make_folder(Path(directory) / SHARDS)
    name = uuid.uuid4().hex
    tmp = folder / f".{name}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        crashpoints.reached("shard.written")
        os.replace(tmp, folder / f"{name}{SUFFIX}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    crashpoints.reached("shard.renamed")
    fsync_folder(folder)
    return name


def orphans(directory: str | os.PathLike, committed: Iterable[str]) -> list[Path]:
    """Entries of ``shards/`` that are not a committed shard: a killed run's files and temporaries.

    Only delete them holding the store's lock: then no run has shards in flight.
    """
    folder = Path(directory) / SHARDS
    if not folder.is_dir():
        return []
    names = {f"{name}{SUFFIX}" for name in committed}
    return sorted(p for p in folder.iterdir() if p.name not in names)


class ShardSet:
    """The committed vectors of a store, as of one catalog snapshot, memory-mapped on demand."""

    def __init__(self, directory: str | os.PathLike, dim: int, vectors_rows: int, shards: Iterable[Shard] = ()):
        self.directory = Path(directory)
        self.dim = dim
        self.vectors_rows = vectors_rows
        self.shards = {s.id: s for s in shards}
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def of(cls, directory: str | os.PathLike, dim: int, catalog: Catalog) -> ShardSet:
        """The shards ``catalog`` has committed; call it inside the snapshot the rows are read in."""
        return cls(directory, dim, catalog.meta("rows"), catalog.shards())

    def view(self, shard: int) -> np.ndarray:
        """A shard's rows, memory-mapped read-only, shape (rows, dim).

        Raises:
            StoreError: the file is missing or holds fewer rows than the catalog committed.
        """
        if shard in self._maps:
            self._maps.move_to_end(shard)
            return self._maps[shard]
        if shard == 0:
            data = VectorFile(self.directory / VECTORS, self.dim).view(self.vectors_rows)
        else:
            data = self._map_shard(shard)
        self._maps[shard] = data
        while len(self._maps) > MAX_OPEN_MAPS:
            self._maps.popitem(last=False)
        return data

    def _map_shard(self, shard: int) -> np.ndarray:
        path, rows = self._shard_file(shard)
        if rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(path, dtype=np.float32, mode="r", shape=(rows, self.dim))

    def _shard_file(self, shard: int) -> tuple[Path, int]:
        """A committed shard's file and rows, checked against the catalog (shard 1 and up)."""
        record = self.shards.get(shard)
        if record is None:
            raise StoreError(f"the catalog names shard {shard}, which it never committed: run `lookalike check`")
        path = shard_path(self.directory, record.name)
        size = path.stat().st_size if path.exists() else -1
        if size != record.rows * 4 * self.dim:
            raise StoreError(f"{path} holds {max(size, 0)} bytes, the catalog expects {record.rows} vectors "
                             f"({record.rows * 4 * self.dim} bytes): the store is damaged; run `lookalike check`")
        return path, record.rows

    def rows(self, shards: np.ndarray, rows: np.ndarray) -> RowView:
        """The chosen rows, read lazily a block at a time (a plain ``RowView`` when all are in shard 0)."""
        shards = np.asarray(shards, dtype=np.int64)
        if not shards.size or not shards.any():
            return RowView(self.view(0), rows)
        return ShardRowView(self, shards, rows)

    def gather(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """A copy of the chosen rows, shape (len(rows), dim)."""
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(rows) <= READ_ROWS:
            return self._read(np.asarray(shards, dtype=np.int64), np.asarray(rows, dtype=np.int64))
        return self.rows(shards, rows)[:]

    def _read(self, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The chosen rows read from their files, a row at a time (checked as ``view`` checks them)."""
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        row_bytes = 4 * self.dim
        for shard in np.unique(shards).tolist():
            if shard == 0:
                path, total = self.directory / VECTORS, self.vectors_rows
            else:
                path, total = self._shard_file(shard)
            picked = np.flatnonzero(shards == shard)
            outside = rows[picked][(rows[picked] < 0) | (rows[picked] >= total)]
            if outside.size:
                raise StoreError(f"the catalog names row {int(outside[0])} of {path}, which holds {total} "
                                 f"committed rows: the store is damaged; run `lookalike check`")
            with open(path, "rb", buffering=0) as file:
                for i in picked.tolist():
                    file.seek(int(rows[i]) * row_bytes)
                    if file.readinto(memoryview(out[i]).cast("B")) != row_bytes:
                        raise StoreError(f"{path} is shorter than the {total} vectors the catalog counts: "
                                         f"the store is damaged; run `lookalike index --reset` to rebuild it")
        return out

    def release(self) -> None:
        for data in self._maps.values():
            release_pages(data)


class ShardRowView(RowView):
    """A ``RowView`` whose rows lie in several shards; read a block at a time, pages handed back after each."""

    def __init__(self, shard_set: ShardSet, shards: np.ndarray, rows: np.ndarray):
        self.shard_set = shard_set
        self.shard_ids = np.asarray(shards, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.shard_ids.shape != self.rows.shape:
            raise StoreError(f"{len(self.shard_ids)} shard numbers for {len(self.rows)} rows")

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.shard_set.dim)

    def __getitem__(self, item) -> np.ndarray:
        positions = np.arange(len(self.rows))[item]
        if np.ndim(positions) == 0:
            return np.array(self.shard_set.view(int(self.shard_ids[positions]))[self.rows[positions]])
        return self._copy(positions)

    def read_into(self, out: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self._copy(np.asarray(positions), out)

    def _copy(self, positions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty((len(positions), self.shard_set.dim), dtype=np.float32)
        for start in range(0, len(positions), MAPPED_ROWS):
            block = positions[start:start + MAPPED_ROWS]
            shards, rows = self.shard_ids[block], self.rows[block]
            for shard in np.unique(shards):
                chosen = np.flatnonzero(shards == shard)
                data = self.shard_set.view(int(shard))
                out[start + chosen] = data[rows[chosen]]
                release_pages(data)
        return out

    def release(self) -> None:
        self.shard_set.release()


def shard_problems(directory: str | os.PathLike, dim: int, vectors_rows: int, shards: Iterable[Shard],
                   records: Iterable) -> list[str]:
    """What is wrong between the catalog's ``records`` (embedded files) and the vector files they point into.

    Shard 0 must hold at least the committed rows, every other shard exactly its rows; every file's
    row lies inside its shard, no two files share a row, and ``shards/`` holds nothing uncommitted.
    """
    directory, shards = Path(directory), list(shards)
    lengths = {0: vectors_rows} | {s.id: s.rows for s in shards}
    problems = []
    vectors = directory / VECTORS
    size = vectors.stat().st_size if vectors.exists() else 0
    if size < vectors_rows * 4 * dim:
        problems.append(f"vectors.f32 holds {size // (4 * dim)} rows, the catalog counts {vectors_rows}")
    for shard in shards:
        path = shard_path(directory, shard.name)
        size = path.stat().st_size if path.exists() else -1
        if size != shard.rows * 4 * dim:
            problems.append(f"shard {path.name} holds {max(size, 0)} bytes, not its {shard.rows} rows"
                            + ("" if size >= 0 else " (missing)"))
    records = list(records)
    bad = [r.path for r in records if not 0 <= r.row < lengths.get(r.shard, -1)]
    if bad:
        problems.append(f"{len(bad)} files point past the stored vectors, e.g. {bad[0]}")
    if len({(r.shard, r.row) for r in records}) != len(records):
        problems.append("two files share one vector row")
    left = orphans(directory, (s.name for s in shards))
    if left:
        problems.append(f"shards/ holds {len(left)} files no catalog row names, e.g. {left[0].name} "
                        f"(from a killed run: the next `lookalike index` or `repair` deletes them)")
    return problems
