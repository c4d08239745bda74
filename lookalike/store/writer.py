"""The one writer of a store: durable batches, shards and removals, then the index brought up to date.

Each batch's vectors are appended and fsynced before the catalog commits the rows that
point at them, so a crash leaves at most a tail of rows no catalog row names, which the
next writer cuts off. A shard (the Ray engine's) is a whole file, durable before the catalog
commits it with its files; a crash leaves at most shard files no catalog row names, which the
next writer deletes. The index is replaced whole after, and the catalog records which
generation it reflects; readers add by brute force what changed since.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np

from .. import crashpoints
from ..ann import build as ann_build
from ..ann import factory as ann_factory
from ..ann import faiss_io
from ..ann import index as faiss_index
from ..ann.rows import RowView
from ..errors import IndexFileError, InvalidFactoryError, StoreError
from . import ondisk
from .access import explained
from .catalog import Catalog, Entry, FileRecord
from .layout import INDEX, MANIFEST, VECTORS, leftover_builds, leftover_files, trained_files, trained_path
from .lock import lock_store
from .manifest import Manifest
from .shards import ShardSet, orphans, shard_path
from .vectors import VectorFile

logger = logging.getLogger(__name__)

NO_INDEX = -1  # index_generation while no index is written, or one is to be rebuilt
# An on-disk index is rebuilt (never changed in place) once more rows changed since it was
# built than this; fewer are searched exactly beside it. At 1280-d, 50,000 rows is 256 MB a scan.
DELTA_MAX_ROWS = 50_000
DELTA_MAX_FRACTION = 0.05


class StoreWriter:
    """Appends batches and removals, each durable on return; syncs the index on exit.

    ``store`` is anything with ``directory``, ``dim``, ``manifest`` and ``catalog()`` (a ``Store``).
    """

    def __init__(self, store, sync: bool = True, map_parts: ondisk.MapParts | None = None):
        self.store = store
        self.sync = sync
        self.map_parts = map_parts  # given: IVF indexes are built on disk, their parts run by it (see ondisk)
        self.catalog: Catalog | None = None
        self.vectors: VectorFile | None = None

    def __enter__(self) -> "StoreWriter":
        """Take the lock and open the files; a store this user may not write fails here, saying why.

        Raises:
            StoreLockedError, StorePermissionError, StoreReadOnlyError, StoreDamagedError: see ``store.access``.
        """
        directory = self.store.directory
        with explained(directory, writing=True):
            self._lock = lock_store(directory)
            self._lock.__enter__()
            try:
                for path in leftover_files(directory):  # a killed writer's; we hold the lock
                    logger.info("removing %s, left by a writer that was killed", path.name)
                    path.unlink(missing_ok=True)
                self.catalog = self.store.catalog(write=True)
                self.remove_orphans()
                self.vectors = VectorFile(directory / VECTORS, self.store.dim)
                self.vectors.open_for_append(self.catalog.meta("rows"))
            except BaseException:
                if self.catalog is not None:
                    self.catalog.close()
                self._lock.__exit__(None, None, None)
                raise
        return self

    def write(self, embedded: Sequence[tuple], vectors: np.ndarray, failed: Sequence[tuple],
              facts: Mapping[str, Facts] | None = None) -> None:
        """Record one batch durably.

        Args:
            embedded: ``(key, size, mtime_ns[, ctime_ns, mode])`` for each row of ``vectors``.
            vectors: their vectors, ``(len(embedded), dim)``.
            failed: ``(key, size, mtime_ns[, ctime_ns, mode], reason)`` for each file that gave none.
            facts: what the decoder learnt of each file by key (content hash, size in pixels, when taken).
        """
        facts = facts or {}
        entries = []
        if len(embedded):
            start = self.vectors.append(vectors)
            entries += [_entry(stat, facts, row=start + i) for i, stat in enumerate(embedded)]
        entries += [_entry(stat, facts, reason=reason) for *stat, reason in failed]
        if entries:
            self.catalog.commit(entries, rows=self.vectors.rows_written)

    def move(self, moves: Sequence[tuple[str, tuple]], removed: Sequence[str] = ()) -> None:
        """Files that moved keep their rows and vectors under their new keys, and files gone leave, in one commit.

        Args:
            moves: ``(old key, (new key, size, mtime_ns, ctime_ns, mode))`` for each moved file; no
                row may hold the new key yet.
            removed: keys of files that left the store's folder.
        """
        if moves or removed:
            self.catalog.commit([], removed_paths=removed, moved=[(old, Entry(*stat)) for old, stat in moves])

    def restore(self, records: Sequence[FileRecord]) -> None:
        """Rows of files that left and came back (an undone move), pointing at the vectors they had.

        Vector files are append-only and never compacted, so a row's vector is still where the
        record says; no network runs again.
        """
        if records:
            self.catalog.restore(records)

    def commit_shard(self, name: str, embedded: Sequence[tuple], failed: Sequence[tuple] = (),
                     facts: Mapping[str, Facts] | None = None) -> None:
        """Commit a shard file written by ``shards.write_shard_file`` with the files whose rows it holds.

        Args:
            name: the shard's name; its file must hold exactly ``len(embedded)`` rows.
            embedded: ``(key, size, mtime_ns, ctime_ns, mode, row)`` for each row of the shard.
            failed: ``(key, size, mtime_ns, ctime_ns, mode, reason)`` for files that gave no vector.

        Raises:
            StoreError: the file is missing or of another size (a rename lost on a network filesystem).
        """
        entries = [_entry(stat, facts or {}, row=row) for *stat, row in embedded]
        if entries:
            path = shard_path(self.store.directory, name)
            size = path.stat().st_size if path.exists() else -1
            if size != len(entries) * 4 * self.store.dim or sorted(e.row for e in entries) != list(range(len(entries))):
                raise StoreError(f"shard {path} holds {size} bytes, not the {len(entries)} rows of its files: "
                                 f"nothing of it was committed; run the same command again")
        entries += [_entry(stat, facts or {}, reason=reason) for *stat, reason in failed]
        if entries:
            self.catalog.commit(entries, shard=(name, len(embedded)) if embedded else None)
            crashpoints.reached("shard.committed")

    def remove_orphans(self) -> int:
        """Delete shard files no catalog row names, and parts of a killed index build; how many shards went."""
        directory = self.store.directory
        gone = orphans(directory, (s.name for s in self.catalog.shards()))
        for path in gone:
            logger.info("removing %s: a shard no catalog row names, left by a run that was killed", path.name)
            path.unlink(missing_ok=True)
        for folder in leftover_builds(directory):
            shutil.rmtree(folder, ignore_errors=True)
        return len(gone)

    def remove(self, keys: Sequence[str]) -> None:
        if keys:
            self.catalog.commit([], rows=self.vectors.rows_written, removed_paths=keys)

    def use_factory(self, factory: str | None) -> None:
        """Force a FAISS index type from now on (None keeps the store's); the next sync rebuilds with it."""
        manifest: Manifest = self.store.manifest
        if factory and factory != manifest.index_factory:
            ann_factory.check_factory(factory, self.store.dim)
            manifest.index_factory = factory
            manifest.write(self.store.directory / MANIFEST)

    def use_id(self) -> None:
        """Give a store made before stores had ids one (journals of actions on its files name it)."""
        manifest: Manifest = self.store.manifest
        if not manifest.id:
            manifest.id = uuid.uuid4().hex
            manifest.write(self.store.directory / MANIFEST)

    def use_model_file(self, path: str | None) -> None:
        """Record where the store's fine-tuned model file is now (its vectors name the model by its digest)."""
        manifest: Manifest = self.store.manifest
        if path and path != manifest.model_file:
            manifest.model_file = path
            manifest.write(self.store.directory / MANIFEST)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.sync and (exc_type is None or issubclass(exc_type, KeyboardInterrupt)):
                sync_index(self.store.directory, self.store.dim, self.store.manifest.index_factory, self.catalog,
                           self.map_parts)
        finally:
            self.vectors.close()
            self.catalog.close()
            self._lock.__exit__(None, None, None)


class Facts(NamedTuple):
    """What the decoder learnt of a file besides its vector: its content hash, its size in pixels, when it was taken."""

    digest: str | None = None
    width: int | None = None
    height: int | None = None
    taken_ns: int | None = None
    blank: bool | None = None


def _entry(stat: Sequence, facts: Mapping[str, Facts], row: int | None = None, reason: str | None = None) -> Entry:
    known = facts.get(stat[0]) or Facts()
    return Entry(*stat, row=row, reason=reason, digest=known.digest, width=known.width, height=known.height,
                 taken_ns=known.taken_ns, blank=None if known.blank is None else int(known.blank))


def sync_index(directory: Path, dim: int, forced_factory: str | None, catalog: Catalog,
               map_parts: ondisk.MapParts | None = None) -> None:
    """Bring ``index.faiss`` up to the catalog: incrementally, or rebuilt when its kind should change.

    Call it holding the store's lock. The build is planned to fit half the RAM
    (``ann_factory.plan_build``). The file is replaced before its generation is recorded, so
    it never reflects less than the catalog says (see ``Store._consistent_index``); a crash
    in between leaves a newer file under an older generation, which readers and the next
    sync handle as an index with changes since.

    An IVF index is built on disk (``ondisk``) when ``map_parts`` is given or the store's index
    already is: never changed in place, it is left behind the catalog while the rows changed
    since are few (``DELTA_MAX_ROWS``, ``DELTA_MAX_FRACTION``), and rebuilt past that.
    """
    generation = catalog.meta("generation")
    index_generation = catalog.meta("index_generation")
    path = directory / INDEX
    if index_generation == generation and path.exists():
        return
    ids, shards, rows = catalog.ids_and_rows()
    stored = ShardSet.of(directory, dim, catalog)
    plan = ann_factory.plan_build(len(ids), dim, forced_factory)
    on_disk = catalog.meta("index_ivfdata")
    if (map_parts is not None or on_disk) and _is_ivf(plan.factory, dim):
        if on_disk and _behind_but_close(catalog, path, plan.factory, len(ids)):
            return
        try:
            return _build_on_disk(directory, dim, plan, catalog, stored, (ids, shards, rows), map_parts or map)
        except InvalidFactoryError as e:  # too few vectors yet to train it
            logger.warning("using an exact index for now: %s", e)
            plan = ann_factory.plan_build(len(ids), dim, ann_factory.EXACT_FACTORY)
    index = None
    if not on_disk and index_generation >= 0 and path.exists() and catalog.meta("index_factory") == plan.factory:
        index = faiss_io.read_index(path, mmap=False)
        # on disk after all, or of another kind: a build killed before it was recorded
        if faiss_io.is_mapped(index) or not _of_factory(index, plan.factory, dim):
            index = None
    if index is None:
        index, factory = _build(plan, stored.rows(shards, rows), ids, _earlier(path, catalog.meta("index_factory"), plan))
    else:
        factory = plan.factory
        changed, removed = catalog.changed_since(index_generation)
        faiss_index.remove(index, np.array([r.id for r in changed] + removed, dtype=np.int64))
        ok = [r for r in changed if r.row is not None]
        if ok:
            vectors = stored.gather(np.array([r.shard for r in ok]), np.array([r.row for r in ok]))
            faiss_index.add(index, vectors, np.array([r.id for r in ok], dtype=np.int64))
    faiss_io.write_index(index, path, crash_point="index")
    catalog.set_meta(index_generation=generation, index_factory=factory, index_ivfdata=None)
    crashpoints.reached("index.recorded")
    ondisk.remove_unused(directory, keep=(on_disk,))  # lists an index used before stay one more build


def _of_factory(index: faiss.Index, factory: str, dim: int) -> bool:
    """Whether ``index`` is what ``factory`` makes (compared as FAISS describes both: "PQ8" is "PQ8x8")."""
    made = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    return faiss_io.describe(index)["factory"] == faiss_io.describe(made)["factory"]


def _is_ivf(factory: str, dim: int) -> bool:
    return faiss.try_extract_index_ivf(faiss.index_factory(dim, factory)) is not None


def _behind_but_close(catalog: Catalog, path: Path, factory: str, total: int) -> bool:
    """Whether an on-disk index of the right kind can stay: few rows changed since it was built."""
    index_generation = catalog.meta("index_generation")
    if index_generation < 0 or not path.exists() or catalog.meta("index_factory") != factory:
        return False
    changed, removed = catalog.changed_since(index_generation)
    return len(changed) + len(removed) <= min(DELTA_MAX_ROWS, DELTA_MAX_FRACTION * total)


def _build_on_disk(directory: Path, dim: int, plan, catalog: Catalog, stored: ShardSet, rows_of, map_parts) -> None:
    """Train (or reuse the trained index of this factory), fill the parts, merge, install, record.

    The trained index is named by its factory (``layout.trained_path``), and nothing else
    records which it is: a crash between writing it and recording anything can't pair a
    catalog with another factory's trained index.
    """
    ids, shards, rows = rows_of
    trained = trained_path(directory, plan.factory)
    if not trained.exists():
        index = ann_build.trained_index(stored.rows(shards, rows), plan.factory, train_size=plan.train_rows or None,
                                          coarse=_earlier_trained(directory, plan))
        faiss_io.write_index(index, trained, crash_point="trained")
    for other in trained_files(directory):
        if other != trained:
            other.unlink(missing_ok=True)
    generation, previous = catalog.meta("generation"), catalog.meta("index_ivfdata")
    name, parts = ondisk.build_ondisk(directory, trained, _pieces(directory, stored, ids, shards, rows), dim,
                                      generation, map_parts)
    catalog.set_meta(index_generation=generation, index_factory=plan.factory, index_ivfdata=name,
                     trained_factory=None)  # what older stores recorded of the trained index
    crashpoints.reached("index.recorded")
    ondisk.remove_unused(directory, keep=(name, previous))
    logger.info("built %s on disk over %d vectors in %d parts", plan.factory, len(ids), len(parts))


def _pieces(directory: Path, stored: ShardSet, ids, shards, rows) -> list[ondisk.Piece]:
    """The rows to index, file by file in (shard, row) order, as ``ondisk.Piece`` s."""
    order = np.lexsort((rows, shards))
    ids, shards, rows = ids[order], shards[order], rows[order]
    bounds = np.flatnonzero(np.diff(shards)) + 1
    pieces = []
    for start, stop in zip([0, *bounds], [*bounds, len(ids)]):
        shard = int(shards[start])
        if shard == 0:
            file, file_rows = directory / VECTORS, stored.vectors_rows
        else:
            file, file_rows = shard_path(directory, stored.shards[shard].name), stored.shards[shard].rows
        pieces.append(ondisk.Piece(os.fspath(file), file_rows, rows[start:stop], ids[start:stop]))
    return pieces


def _earlier_trained(directory: Path, plan):
    """Another factory's trained index kept in ``directory``, for its trained lists where the plan only changes codes."""
    for path, factory in trained_files(directory).items():
        earlier = _earlier(path, factory, plan)
        if earlier is not None:
            return earlier
    return None


def _earlier(path: Path, factory: str | None, plan):
    """The earlier index at ``path`` when the plan only changes its codes, for its trained lists; else None.

    Mapped, so only its centroids are read. An index of the plan's own factory is being rebuilt
    for a reason (``Store.repair``): it is trained afresh.
    """
    if not factory or factory == plan.factory or not path.exists():
        return None
    try:
        return faiss_io.read_index(path)
    except IndexFileError as e:
        logger.debug("training afresh: %s", e)
        return None


def _build(plan, vectors: RowView, ids: np.ndarray, coarse=None):
    """The index ``plan`` describes (keeping the trained lists of ``coarse`` where they fit), or an exact
    one while there are too few vectors to train it."""
    if plan.peak_bytes > plan.budget_bytes:
        logger.warning("building %s may take %.1f GiB, over the budget of %.1f GiB",
                       plan.factory, plan.peak_bytes / 2**30, plan.budget_bytes / 2**30)
    try:
        return (ann_build.build_index(vectors, ids, plan.factory, train_size=plan.train_rows or None, coarse=coarse),
                plan.factory)
    except InvalidFactoryError as e:  # e.g. too few vectors yet to train a forced IVF index
        logger.warning("using an exact index for now: %s", e)
        return ann_build.build_index(vectors, ids, ann_factory.EXACT_FACTORY), ann_factory.EXACT_FACTORY
