"""The store: a folder holding a manifest, a SQLite catalog, the raw vectors and a FAISS index.

The catalog is the truth (see ``layout`` for the files). Vectors are appended before the
catalog commits the rows that point at them, and the index is replaced atomically after,
recording the generation it reflects; a search adds what changed since by brute force. A
crash at any moment thus leaves a state in which catalog, vectors and index agree, losing at
most one batch: ``tests/test_crash.py`` kills the indexer at every durable step to prove it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import crashpoints
from ..ann.rows import RowView
from ..atomic import make_folder
from ..errors import StoreDamagedError, StoreError, StoreNotFoundError
from . import queries as queries_module
from .access import explained
from .catalog import Catalog, FileRecord
from .consistency import CheckReport, check_store
from .layout import (  # noqa: F401 - the names callers have always imported from here
    CATALOG,
    INDEX,
    IVFDATA_GLOB,
    LOCK,
    MANIFEST,
    SHARDS,
    STORE_DIRNAME,
    STORE_ENV,
    STORE_FILES,
    TRAINED,
    VECTORS,
    find_store,
    remove_store_files,
    sizes_on_disk,
    trained_files,
)
from .lock import lock_store
from .manifest import FORMAT_VERSION, Manifest
from .mapped import MappedIndex
from .neighbours import Hit, neighbours
from .queries import Group
from .resident import ResidentFiles
from .shards import ShardSet, shard_path
from .writer import NO_INDEX, StoreWriter

logger = logging.getLogger(__name__)

# The catalog's meta key under which indexing keeps what its last run skipped (JSON); ``info`` shows it.
LAST_SCAN = "last_scan"

# Paths -> (vectors row-aligned with the paths that worked, {path: failure reason}).
Embedder = Callable[[list[str]], tuple[list[str], np.ndarray, dict[str, str]]]


class Store:
    """An opened store. Reading is safe while another process writes."""

    def __init__(self, directory: str | os.PathLike, manifest: Manifest):
        self.directory = Path(directory)
        self.manifest = manifest
        self.embedder: Embedder | None = None  # set by lookalike.open_store, to embed new images
        self._resident = ResidentFiles()  # held by ``warm``: the catalog and vector files
        # not a bound method: a Store must not keep itself alive through its index, mapped as long as it lives
        self._index_file = MappedIndex(self.directory / INDEX, on_new=functools.partial(
            _hold_files, self.directory, self._resident, manifest.dim))

    @classmethod
    def create(cls, directory, root, spec: dict, index_factory: str | None = None, weights: str | None = None,
               model_file: str | None = None) -> "Store":
        """Make an empty store: the catalog first, the manifest last and atomically.

        A crash in between leaves no store (no manifest), only files the next ``create`` deletes.

        Raises:
            StoreError: another process made a store there meanwhile.
        """
        directory = Path(directory)
        with explained(directory, writing=True):
            make_folder(directory)  # durable: a power cut must not take back the folder of committed vectors
            root = os.path.relpath(Path(root).resolve(), directory.resolve())
            manifest = Manifest(spec=spec, root=root, index_factory=index_factory, weights=weights,
                                model_file=model_file)
            with lock_store(directory):
                if (directory / MANIFEST).exists():
                    raise StoreError(f"another process made a store in {directory} meanwhile: run the command again")
                remove_store_files(directory)  # from a creation killed before its manifest: nothing in them is trusted
                Catalog(directory / CATALOG, create=True).close()
                crashpoints.reached("create.catalog")
                manifest.write(directory / MANIFEST)
        return cls(directory, manifest)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "Store":
        """Open the store in ``directory``; a store of an older format is upgraded in place first.

        Raises:
            StoreNotFoundError: no store there.
            StoreError: it is damaged, or of a format this lookalike can't read.
            StoreLockedError: it must be upgraded while another process writes to it.
        """
        directory = Path(directory)
        with explained(directory / MANIFEST, writing=False):
            if not (directory / MANIFEST).is_file():
                raise StoreNotFoundError(f"{directory} is not a lookalike store (no {MANIFEST}): "
                                         f"run `lookalike index DIR` first")
            if not (directory / CATALOG).is_file():
                raise StoreDamagedError(f"{directory} has lost its {CATALOG}: the store is damaged; "
                                        f"index again with --reset")
            store = cls(directory, Manifest.read(directory / MANIFEST))
        if store.manifest.format_version != FORMAT_VERSION:
            store._upgrade()
        return store

    def _upgrade(self) -> None:
        """An older format to this one: the catalog gains its columns and tables (in one transaction), then the manifest.

        A crash in between (``upgrade.catalog``) leaves an upgraded catalog under the old
        manifest; the next open upgrades again, finding the catalog done.
        """
        with explained(self.directory / CATALOG, writing=True), lock_store(self.directory):
            Catalog(self.directory / CATALOG).close()
            crashpoints.reached("upgrade.catalog")
            self.manifest.format_version = FORMAT_VERSION
            self.manifest.write(self.directory / MANIFEST)
        logger.info("upgraded %s to store format %d", self.directory, FORMAT_VERSION)

    @property
    def root(self) -> Path:
        """The indexed folder; kept relative to the store when inside it, so the two can move together."""
        return (self.directory / self.manifest.root).resolve()

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def catalog(self, write: bool = False) -> Catalog:
        """The catalog, read-only unless ``write`` (only the writer writes; see ``Catalog``)."""
        return Catalog(self.directory / CATALOG, write=write)

    def relative(self, path: str | os.PathLike) -> str:
        """The catalog key of a path: relative to the root, with forward slashes."""
        root = self.root
        for candidate in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):  # a symlinked way in, too
            try:
                return candidate.relative_to(root).as_posix()
            except ValueError:
                continue
        return Path(os.path.abspath(path)).as_posix()

    def __len__(self) -> int:
        with self.catalog() as catalog:
            return catalog.count("ok")

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """(path, vector) for every embedded file, in path order."""
        with self.catalog() as catalog:
            catalog.snapshot()
            stored = self._shard_set(catalog)
            root = str(self.root)
            for record in catalog.records("ok"):
                yield os.path.join(root, record.path), np.array(stored.view(record.shard)[record.row])
            catalog.end_snapshot()

    def failures(self) -> list[FileRecord]:
        with self.catalog() as catalog:
            return list(catalog.records("failed"))

    def get_vectors(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Stored vectors of indexed files, row-aligned with ``paths``.

        Raises:
            StoreError: a path is not in the store, or has no vector (it failed).
        """
        keys = [self.relative(p) for p in paths]
        with self.catalog() as catalog:
            catalog.snapshot()
            records = catalog.by_paths(keys)
            stored = self._shard_set(catalog)
            catalog.end_snapshot()
        missing = [k for k in keys if k not in records or records[k].row is None]
        if missing:
            raise StoreError(f"not in the store (or not embedded): {', '.join(missing[:5])}")
        chosen = [records[k] for k in keys]
        return stored.gather(np.array([r.shard for r in chosen], dtype=np.int64), np.array([r.row for r in chosen], dtype=np.int64))

    def stored(self, image_id: int) -> tuple[str, np.ndarray] | None:
        """The catalog key and stored vector of the embedded image ``image_id``, read in one snapshot.

        Returns:
            ``(key, vector)``, or None when no embedded image has this id.
        """
        with self.catalog() as catalog:
            catalog.snapshot()
            record = catalog.by_ids([image_id]).get(image_id)
            stored = self._shard_set(catalog) if record is not None and record.row is not None else None
            catalog.end_snapshot()
        if stored is None:
            return None
        return record.path, stored.gather(np.array([record.shard], dtype=np.int64), np.array([record.row], dtype=np.int64))[0]

    def _shard_set(self, catalog: Catalog) -> ShardSet:
        return ShardSet.of(self.directory, self.dim, catalog)

    def search(self, queries: np.ndarray | Sequence[str | os.PathLike], k: int = 10, *, workers: int = 1,
               clamp: bool = False) -> list[list[Hit]]:
        """The ``k`` nearest stored images of each query, the query itself included if it is stored (see ``similar``).

        Args:
            queries: vectors (n, dim), or image paths: indexed ones reuse their stored
                vector, others are embedded with the store's own spec (needs ``lookalike.open_store``),
                or stored images' ids.
            k: neighbours per query, at most the number of images in the store.
            workers: with fewer queries than this, threads that share each query's scan of an
                IVF index (see ``faiss_index.search``): for a lone query while the cores are idle.
            clamp: ``k`` past the store's size gives every image instead of failing.

        Returns:
            One list of ``Hit`` per query, best first.

        Raises:
            StoreError: the store is empty, holds fewer than ``k`` images (without ``clamp``), a path can't be
                embedded, or vectors have the wrong dim.
        """
        vectors = self._query_vectors(queries)
        if k < 1:
            raise StoreError(f"k must be at least 1, not {k}")
        with self.catalog() as catalog:
            index = self._consistent_index(catalog)  # leaves the catalog in a read snapshot
            try:
                return self._search(catalog, index, vectors, k, workers, clamp)
            finally:
                catalog.end_snapshot()

    def _consistent_index(self, catalog: Catalog):
        """Read the index and begin a catalog snapshot in which it can be trusted.

        A writer commits, then replaces the file, then records the generation it reflects.
        So a file reflects at least the generation recorded before it was read (more, if a
        writer replaced it and has not recorded yet, or died first), and a snapshot begun
        after the read holds at least what the file holds: searching the file minus what
        changed since the recorded generation, plus those changes by brute force, is exact.
        What breaks it is a generation recorded between the read and the snapshot (the file
        read is then older than the snapshot says), so the generation is read again inside
        the snapshot and must not have moved.
        """
        for _ in range(5):
            before = catalog.meta("index_generation")
            index = self._index_file.get(before) if before >= 0 else None
            catalog.snapshot()
            if catalog.meta("index_generation") == before:
                return index
            catalog.end_snapshot()
        catalog.snapshot()
        return None  # the index keeps changing under us: brute force this once

    def warm(self) -> bool:
        """Read the store through once and keep it mapped, so that searches find it all in memory.

        A long-running reader (``lookalike serve``) calls it once at start, and ``keep_warm`` for
        the files written while it runs. The index is mapped and touched whole: a fresh mapping
        pays a page fault per page a search touches first. The catalog and the vector files
        are kept resident (``ResidentFiles``, on POSIX): a search reads the catalog rows and
        stored vectors of its candidates at random. Reads come from disk when the files are not
        in the page cache (about 1 s a GB).

        Returns:
            Whether there was an index to warm.
        """
        with self.catalog() as catalog:
            generation = catalog.meta("index_generation")
        _hold_files(self.directory, self._resident, self.dim)
        return self._index_file.warm(generation) if generation >= 0 else False

    def keep_warm(self) -> None:
        """``warm`` now, and from now on warm each newly written index, and the files beside it, on a background
        thread once a search maps it."""
        self.warm()
        self._index_file.keep_warm = True

    def _query_vectors(self, queries) -> np.ndarray:
        return queries_module.query_items(self, queries)[0]

    def similar(self, item, k: int = 10, threshold: float | None = None, *, workers: int = 1) -> list[Hit]:
        """The ``k`` stored images most like one image, best first; never the image itself.

        Args:
            item: a stored image's id, an image's path (an indexed one reuses its stored vector
                and is left out of its own results; any other is embedded with the store's spec),
                or a vector.
            k: neighbours wanted; more than the store holds (besides the image) gives them all.
            threshold: keep only neighbours at least this similar (cosine).
            workers: threads sharing the scan of an IVF index (see ``search``).

        Raises:
            StoreError: the store is empty, or the image can't be read.
            UnknownImageError: no embedded image has the id.
        """
        return queries_module.similar(self, [item], k, threshold, workers)[0]

    def similar_many(self, items, k: int = 10, threshold: float | None = None, *, workers: int = 1) -> list[list[Hit]]:
        """``similar`` for several images at once (one search), a list of hits each."""
        return queries_module.similar(self, items, k, threshold, workers)

    def duplicate_groups(self, threshold: float = 0.95, k: int = 10, progress=None) -> list[Group]:
        """Groups of near-duplicate images over the whole store (see ``queries.duplicate_groups``)."""
        return queries_module.duplicate_groups(self, threshold, k, progress)

    def _search(self, catalog: Catalog, index, vectors: np.ndarray, k: int, workers: int = 1,
                clamp: bool = False) -> list[list[Hit]]:
        # the root is resolved once: per hit, resolving cost more than the FAISS search itself
        return neighbours(catalog, index, self._shard_set(catalog), str(self.root), vectors, k, workers, clamp)

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``search`` of vectors in FAISS's shape ``(D, I)``, both ``(n, k)``, for ``dupes.duplicate_groups``.

        The scores are exact whatever the index's codes; ``k`` is at most the store's size.
        """
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, hits in enumerate(self.search(queries, k)):
            for column, hit in enumerate(hits):
                scores[row, column], ids[row, column] = hit.score, hit.id
        return scores, ids

    def vectors(self) -> tuple[np.ndarray, list[str], RowView]:
        """(ids, keys, vectors) of every embedded file in one consistent state; vectors read lazily."""
        with self.catalog() as catalog:
            catalog.snapshot()
            records = list(catalog.records("ok"))
            stored = self._shard_set(catalog)
            catalog.end_snapshot()
        ids = np.array([r.id for r in records], dtype=np.int64)
        shards = np.array([r.shard for r in records], dtype=np.int64)
        return ids, [r.path for r in records], stored.rows(shards, np.array([r.row for r in records], dtype=np.int64))

    def vector_rows(self) -> tuple[np.ndarray, RowView]:
        """(ids, vectors) of every embedded file, by id, in one consistent state: 24 bytes a file, vectors read lazily.

        ``vectors`` without the paths, for passes over a whole large store (``dupes``).
        """
        with self.catalog() as catalog:
            catalog.snapshot()
            ids, shards, rows = catalog.ids_and_rows()
            stored = self._shard_set(catalog)
            catalog.end_snapshot()
        return ids, stored.rows(shards, rows)

    def check(self, repair: bool = False) -> CheckReport:
        """Whether catalog, vectors and index agree (``consistency.check``); with ``repair``, mend the index.

        An index behind the catalog is no inconsistency (searches add what changed since); with
        ``repair`` it is brought up to date, and an index that disagrees is rebuilt from the vectors.
        """
        return check_store(self, repair)

    def export(self, output: str | os.PathLike, fmt: str = "npy") -> int:
        """Write every stored vector with its path to ``output`` (``npy`` or ``parquet``, see ``export``); how many."""
        from .export import export

        return export(self, output, fmt)

    def index_lag(self) -> tuple[int, int]:
        """(the generation the index reflects, the catalog's): equal when the index is up to date.

        The first is -1 while no index is written (or one is to be rebuilt).
        """
        with self.catalog() as catalog:
            catalog.snapshot()
            lag = catalog.meta("index_generation"), catalog.meta("generation")
            catalog.end_snapshot()
        return lag

    def repair(self) -> None:
        """Rebuild the index from the stored vectors (the catalog and vectors are the truth).

        The catalog first records that there is no index to trust (``repair.marked``), so a
        crash before the new one is recorded leaves searches exact, and the next writer builds it.
        """
        with self.writer() as writer:
            writer.catalog.set_meta(index_generation=NO_INDEX)
            crashpoints.reached("repair.marked")

    def info(self) -> dict:
        """The store's spec, counts, generation, index type, bytes on disk by file, and what the last index skipped."""
        with self.catalog() as catalog:
            counts = {"embedded": catalog.count("ok"), "failed": catalog.count("failed")}
            generation = catalog.meta("generation")
            factory = catalog.meta("index_factory")
            last_scan = catalog.meta(LAST_SCAN)
        return {"store": str(self.directory), "root": str(self.root), "spec": self.manifest.spec,
                "weights": self.manifest.weights, "created": self.manifest.created, **counts,
                "generation": generation, "index_factory": factory, "bytes": sizes_on_disk(self.directory),
                "last_index": json.loads(last_scan) if last_scan else {}}

    def writer(self, sync: bool = True, map_parts=None) -> "StoreWriter":
        """The one writer: a context manager holding the store's lock (``sync``: update the index on exit).

        ``map_parts`` given, an IVF index is built on disk with it running the parts (see ``ondisk``).
        """
        return StoreWriter(self, sync, map_parts)


def _hold_files(directory: Path, resident: ResidentFiles, dim: int) -> None:
    """Keep the catalog and the committed vectors of the store in ``directory`` resident.

    Of ``vectors.f32`` only the committed rows: a writer cuts off a killed writer's tail.
    Shard files are written whole before they are committed, and never change.
    """
    with Catalog(directory / CATALOG, write=False) as catalog:
        rows, names = catalog.meta("rows"), [shard.name for shard in catalog.shards()]
    resident.hold([directory / CATALOG, directory / VECTORS, *(shard_path(directory, name) for name in names)],
                  lengths={directory / VECTORS: rows * 4 * dim})
