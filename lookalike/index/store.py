"""The store: a folder holding a manifest, a SQLite catalog, the raw vectors and a FAISS index.

    .lookalike/
      manifest.json    format version, embedding spec, metric, forced index factory
      catalog.sqlite   one row per file: stable id, path, size, mtime, status, reason, vector row
      vectors.f32      float32 rows, append-only, memory-mapped
      index.faiss      the FAISS index over the catalog's ids (a cache: rebuilt from the vectors)
      lock             held by the one process writing

The catalog is the truth. Vectors are appended before the catalog commits the rows that
point at them, and the index is replaced atomically after, recording the generation it
reflects; a search adds what changed since by brute force. A crash at any moment thus
leaves a state in which catalog, vectors and index agree, losing at most one batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InvalidFactoryError, StoreError, StoreLockedError, StoreNotFoundError
from . import faiss_index
from .catalog import Catalog, Entry, FileRecord
from .manifest import Manifest
from .vectors import RowView, VectorFile

logger = logging.getLogger(__name__)

STORE_DIRNAME = ".lookalike"
STORE_ENV = "LOOKALIKE_STORE"
MANIFEST, CATALOG, VECTORS, INDEX, LOCK = "manifest.json", "catalog.sqlite", "vectors.f32", "index.faiss", "lock"
STORE_FILES = (MANIFEST, CATALOG, VECTORS, INDEX)

# Paths -> (vectors row-aligned with the paths that worked, {path: failure reason}).
Embedder = Callable[[list[str]], tuple[list[str], np.ndarray, dict[str, str]]]


class Hit(NamedTuple):
    """One neighbour: its rank (1 = nearest), cosine similarity, path and stable id."""

    rank: int
    score: float
    path: str
    id: int


def find_store(start: str | os.PathLike = ".") -> Path:
    """The store for ``start``: ``$LOOKALIKE_STORE``, else the nearest ``.lookalike/`` upward, as git finds ``.git``.

    Raises:
        StoreNotFoundError: none found; the message says how to make one.
    """
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / STORE_DIRNAME / MANIFEST).is_file():
            return folder / STORE_DIRNAME
    raise StoreNotFoundError(
        f"no lookalike store in {here} or any folder above it: run `lookalike index DIR` first, "
        f"or point --store (or ${STORE_ENV}) at one"
    )


class Store:
    """An opened store. Reading is safe while another process writes."""

    def __init__(self, directory: str | os.PathLike, manifest: Manifest):
        self.directory = Path(directory)
        self.manifest = manifest
        self.embedder: Embedder | None = None  # set by lookalike.open_store, to embed new images
        self._mapped: tuple[tuple, object] | None = None  # (what the index file was, its mapped index)

    @classmethod
    def create(cls, directory, root, spec: dict, index_factory: str | None = None, weights: str | None = None) -> "Store":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        root = os.path.relpath(Path(root).resolve(), directory.resolve())
        manifest = Manifest(spec=spec, root=root, index_factory=index_factory, weights=weights)
        manifest.write(directory / MANIFEST)
        Catalog(directory / CATALOG).close()
        return cls(directory, manifest)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "Store":
        directory = Path(directory)
        if not (directory / MANIFEST).is_file():
            raise StoreNotFoundError(f"{directory} is not a lookalike store (no {MANIFEST}): run `lookalike index DIR` first")
        if not (directory / CATALOG).is_file():
            raise StoreError(f"{directory} has lost its {CATALOG}: the store is damaged; index again with --reset")
        return cls(directory, Manifest.read(directory / MANIFEST))

    @property
    def root(self) -> Path:
        """The indexed folder; kept relative to the store when inside it, so the two can move together."""
        return (self.directory / self.manifest.root).resolve()

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def catalog(self) -> Catalog:
        return Catalog(self.directory / CATALOG)

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
            vectors = VectorFile(self.directory / VECTORS, self.dim).view(catalog.meta("rows"))
            root = str(self.root)
            for record in catalog.records("ok"):
                yield os.path.join(root, record.path), np.array(vectors[record.row])
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
            vectors = VectorFile(self.directory / VECTORS, self.dim).view(catalog.meta("rows"))
            catalog.end_snapshot()
        missing = [k for k in keys if k not in records or records[k].row is None]
        if missing:
            raise StoreError(f"not in the store (or not embedded): {', '.join(missing[:5])}")
        return np.stack([vectors[records[k].row] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def search(self, queries: np.ndarray | Sequence[str | os.PathLike], k: int = 10) -> list[list[Hit]]:
        """The ``k`` nearest stored images of each query.

        Args:
            queries: vectors (n, dim), or image paths: indexed ones reuse their stored
                vector, others are embedded with the store's own spec (needs ``lookalike.open_store``).
            k: neighbours per query, at most the number of images in the store.

        Returns:
            One list of ``Hit`` per query, best first.

        Raises:
            StoreError: the store is empty, a path can't be embedded, or vectors have the wrong dim.
        """
        vectors = self._query_vectors(queries)
        if k < 1:
            raise StoreError(f"k must be at least 1, not {k}")
        with self.catalog() as catalog:
            index = self._consistent_index(catalog)  # leaves the catalog in a read snapshot
            try:
                return self._search(catalog, index, vectors, k)
            finally:
                catalog.end_snapshot()

    def _consistent_index(self, catalog: Catalog):
        """Read the index and begin a catalog snapshot that the index file belongs to.

        A writer marks the index as being replaced (generation -2) before it swaps the
        file and records the new generation after; an unchanged generation on both sides
        of the read proves the file read is the one the snapshot names.
        """
        for _ in range(5):
            before = catalog.meta("index_generation")
            index = self._mapped_index(before) if before >= 0 else None
            catalog.snapshot()
            if catalog.meta("index_generation") == before:
                return index
            catalog.end_snapshot()
        catalog.snapshot()
        return None  # the index keeps changing under us: brute force this once

    def _mapped_index(self, generation: int):
        """The index file, memory-mapped, or None without one; kept while the file and its generation stay.

        A fresh mapping faults in every page a search touches again: at 1M vectors that cost 1 s
        a batch of 1,000 queries, more than 10% of the search. The file is only ever replaced
        whole (a new inode), never changed in place, so its identity says the mapping is current.
        """
        path = self.directory / INDEX
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        key = (generation, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._mapped is None or self._mapped[0] != key:
            self._mapped = (key, faiss_index.read_index(path))
        return self._mapped[1]

    def _query_vectors(self, queries) -> np.ndarray:
        if isinstance(queries, np.ndarray):
            vectors = np.atleast_2d(np.ascontiguousarray(queries, dtype=np.float32))
            if vectors.shape[1] != self.dim:
                raise StoreError(f"query vectors are {vectors.shape[1]}-d, this store holds {self.dim}-d vectors")
            return vectors
        paths = [os.fspath(p) for p in queries]
        with self.catalog() as catalog:
            known = catalog.by_paths(self.relative(p) for p in paths)
        stored = {p for p in paths if (r := known.get(self.relative(p))) is not None and r.row is not None}
        new = [p for p in paths if p not in stored]
        embedded: dict[str, np.ndarray] = {}
        if new:
            if self.embedder is None:
                raise StoreError("to search with images outside the store, open it with lookalike.open_store")
            keys, vectors, failed = self.embedder(new)
            if failed:
                path, reason = next(iter(failed.items()))
                raise StoreError(f"cannot read query image {path}: {reason}")
            embedded = dict(zip(keys, vectors))
        old = dict(zip(sorted(stored), self.get_vectors(sorted(stored)))) if stored else {}
        return np.stack([embedded[p] if p in embedded else old[p] for p in paths])

    def _search(self, catalog: Catalog, index, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        total = catalog.count("ok", at_most=k)  # exact whenever it is under k; a full count cost 0.2 s at 1M files
        if total == 0:
            raise StoreError("the store holds no vectors yet: run `lookalike index DIR` on a folder with images")
        if k > total:
            raise StoreError(f"k={k} is more than the {total} images in the store; ask for at most {total}")
        stored = VectorFile(self.directory / VECTORS, self.dim).view(catalog.meta("rows"))
        parts = []
        if index is not None:
            changed, removed = catalog.changed_since(catalog.meta("index_generation"))
            stale = np.array([r.id for r in changed] + removed, dtype=np.int64)  # outdated in the index
            fresh = [r for r in changed if r.row is not None]  # searched by brute force instead
            if index.ntotal:
                scores, ids = faiss_index.search(index, vectors, min(k + len(stale), index.ntotal))
                parts.append((scores, np.where(np.isin(ids, stale), -1, ids)))
        else:
            fresh = list(catalog.records("ok"))  # no usable index: everything by brute force
        if fresh:
            fresh_ids = np.array([r.id for r in fresh], dtype=np.int64)
            scores = vectors @ np.stack([stored[r.row] for r in fresh]).T
            top = np.argsort(-scores, axis=1)[:, :k]
            parts.append((np.take_along_axis(scores, top, 1), fresh_ids[top]))
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        return self._hits(catalog, scores, ids, k)

    def _hits(self, catalog: Catalog, scores: np.ndarray, ids: np.ndarray, k: int) -> list[list[Hit]]:
        """Best first, each id once, only ids the catalog snapshot knows as embedded."""
        records = catalog.by_ids(np.unique(ids[ids >= 0]).tolist())
        root = str(self.root)  # resolved once: per hit, resolving cost more than the FAISS search itself
        paths = {id_: os.path.join(root, r.path) for id_, r in records.items() if r.row is not None}
        order = np.argsort(-scores, axis=1, kind="stable")
        scores, ids = np.take_along_axis(scores, order, 1).tolist(), np.take_along_axis(ids, order, 1).tolist()
        results = []
        for row_scores, row_ids in zip(scores, ids):
            seen, hits = set(), []
            for score, id_ in zip(row_scores, row_ids):
                path = paths.get(id_)
                if path is None or id_ in seen:
                    continue
                seen.add(id_)
                hits.append(Hit(len(hits) + 1, score, path, id_))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def vectors(self) -> tuple[np.ndarray, list[str], RowView]:
        """(ids, keys, vectors) of every embedded file in one consistent state; vectors read lazily."""
        with self.catalog() as catalog:
            catalog.snapshot()
            records = list(catalog.records("ok"))
            data = VectorFile(self.directory / VECTORS, self.dim).view(catalog.meta("rows"))
            catalog.end_snapshot()
        ids = np.array([r.id for r in records], dtype=np.int64)
        return ids, [r.path for r in records], RowView(data, np.array([r.row for r in records], dtype=np.int64))

    def current_index(self):
        """The stored index if it reflects the catalog, else one built in memory from the vectors."""
        with self.catalog() as catalog:
            current = catalog.meta("index_generation") == catalog.meta("generation")
        if current and (self.directory / INDEX).exists():
            return faiss_index.read_index(self.directory / INDEX)
        ids, _, vectors = self.vectors()
        factory = self.manifest.index_factory or faiss_index.choose_factory(len(ids), self.dim)
        return faiss_index.build_index(vectors, ids, factory)

    def check(self) -> list[str]:
        """What is inconsistent between catalog, vectors and index; empty when all agree."""
        problems = []
        with self.catalog() as catalog:
            catalog.snapshot()
            rows, generation = catalog.meta("rows"), catalog.meta("generation")
            index_generation = catalog.meta("index_generation")
            records = list(catalog.records("ok"))
            catalog.end_snapshot()
        size = (self.directory / VECTORS).stat().st_size if (self.directory / VECTORS).exists() else 0
        if size < rows * 4 * self.dim:
            problems.append(f"vectors.f32 holds {size // (4 * self.dim)} rows, the catalog counts {rows}")
        bad_rows = [r.path for r in records if not 0 <= r.row < rows]
        if bad_rows:
            problems.append(f"{len(bad_rows)} files point past the stored vectors, e.g. {bad_rows[0]}")
        if len({r.row for r in records}) != len(records):
            problems.append("two files share one vector row")
        index_path = self.directory / INDEX
        if records and not index_path.exists():
            problems.append("index.faiss is missing")
        elif index_path.exists() and index_generation == generation:
            indexed = faiss_index.ids(faiss_index.read_index(index_path))
            if sorted(indexed.tolist()) != sorted(r.id for r in records):
                problems.append(f"index.faiss holds {len(indexed)} ids, the catalog {len(records)} embedded files")
        elif index_path.exists():
            problems.append(f"index.faiss reflects generation {index_generation}, the catalog is at {generation}")
        return problems

    def repair(self) -> None:
        """Rebuild the index from the stored vectors (the catalog and vectors are the truth)."""
        with self.writer() as writer:
            writer.catalog.set_meta(index_generation=-1)

    def info(self) -> dict:
        with self.catalog() as catalog:
            counts = {"embedded": catalog.count("ok"), "failed": catalog.count("failed")}
            generation = catalog.meta("generation")
            factory = catalog.meta("index_factory")
        files = {name: (self.directory / name).stat().st_size for name in (CATALOG, VECTORS, INDEX)
                 if (self.directory / name).exists()}
        return {"store": str(self.directory), "root": str(self.root), "spec": self.manifest.spec,
                "weights": self.manifest.weights, "created": self.manifest.created, **counts,
                "generation": generation, "index_factory": factory, "bytes": files}

    def writer(self, sync: bool = True) -> "StoreWriter":
        """The one writer: a context manager holding the store's lock (``sync``: update the index on exit)."""
        return StoreWriter(self, sync)

    def sync_index(self, catalog: Catalog) -> None:
        """Bring ``index.faiss`` up to the catalog: incrementally, or rebuilt when its kind should change."""
        generation = catalog.meta("generation")
        index_generation = catalog.meta("index_generation")
        if index_generation == generation and (self.directory / INDEX).exists():
            return
        records = list(catalog.records("ok"))
        stored = VectorFile(self.directory / VECTORS, self.dim).view(catalog.meta("rows"))
        factory = self.manifest.index_factory or faiss_index.choose_factory(len(records), self.dim)
        path = self.directory / INDEX
        rebuild = (
            index_generation < 0
            or not path.exists()
            or catalog.meta("index_factory") != factory
        )
        if rebuild:
            ids = np.array([r.id for r in records], dtype=np.int64)
            vectors = RowView(stored, np.array([r.row for r in records], dtype=np.int64))  # read in chunks, never all copied
            try:
                index = faiss_index.build_index(vectors, ids, factory)
            except InvalidFactoryError as e:  # e.g. too few vectors yet to train a forced IVF index
                logger.warning("using an exact index for now: %s", e)
                factory = faiss_index.EXACT_FACTORY
                index = faiss_index.build_index(vectors, ids, factory)
        else:
            index = faiss_index.read_index(path, mmap=False)
            changed, removed = catalog.changed_since(index_generation)
            faiss_index.remove(index, np.array([r.id for r in changed] + removed, dtype=np.int64))
            ok = [r for r in changed if r.row is not None]
            if ok:
                faiss_index.add(index, np.stack([stored[r.row] for r in ok]), np.array([r.id for r in ok], dtype=np.int64))
        catalog.set_meta(index_generation=-2)  # readers: the file is being replaced (see _consistent_index)
        faiss_index.write_index(index, path)
        catalog.set_meta(index_generation=generation, index_factory=factory)


class StoreWriter:
    """Appends batches and removals, each durable on return; syncs the index on exit."""

    def __init__(self, store: Store, sync: bool = True):
        self.store = store
        self.sync = sync
        self.catalog: Catalog | None = None
        self.vectors: VectorFile | None = None

    def __enter__(self) -> "StoreWriter":
        self._lock = lock_store(self.store.directory)
        self._lock.__enter__()
        try:
            self.catalog = self.store.catalog()
            self.vectors = VectorFile(self.store.directory / VECTORS, self.store.dim)
            self.vectors.open_for_append(self.catalog.meta("rows"))
        except BaseException:
            if self.catalog is not None:
                self.catalog.close()
            self._lock.__exit__(None, None, None)
            raise
        return self

    def write(self, embedded: list[tuple[str, int, int]], vectors: np.ndarray, failed: list[tuple[str, int, int, str]]) -> None:
        """Record one batch: (key, size, mtime_ns) rows with their vectors, and failures with reasons."""
        entries = []
        if embedded:
            start = self.vectors.append(vectors)
            entries += [Entry(key, size, mtime, row=start + i) for i, (key, size, mtime) in enumerate(embedded)]
        entries += [Entry(key, size, mtime, reason=reason) for key, size, mtime, reason in failed]
        if entries:
            self.catalog.commit(entries, rows=self.vectors.rows_written)

    def remove(self, keys: Sequence[str]) -> None:
        if keys:
            self.catalog.commit([], rows=self.vectors.rows_written, removed_paths=keys)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.sync and (exc_type is None or issubclass(exc_type, KeyboardInterrupt)):
                self.store.sync_index(self.catalog)  # what was committed stays searchable
        finally:
            self.vectors.close()
            self.catalog.close()
            self._lock.__exit__(None, None, None)


@contextlib.contextmanager
def lock_store(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the store's write lock, or raise ``StoreLockedError`` at once if another process has it."""
    with open(Path(directory) / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(f"another lookalike process is writing to {directory}; wait for it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
