"""The one writer of a store: durable batches and removals, then the index brought up to date.

Each batch's vectors are appended and fsynced before the catalog commits the rows that
point at them, so a crash leaves at most a tail of rows no catalog row names, which the
next writer cuts off. The index is replaced whole after, and the catalog records which
generation it reflects; readers add by brute force what changed since.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import crashpoints
from ..errors import InvalidFactoryError
from . import faiss_index
from .catalog import Catalog, Entry
from .layout import INDEX, MANIFEST, VECTORS, leftover_files
from .lock import lock_store
from .manifest import Manifest
from .vectors import RowView, VectorFile

logger = logging.getLogger(__name__)

NO_INDEX = -1  # index_generation while no index is written, or one is to be rebuilt


class StoreWriter:
    """Appends batches and removals, each durable on return; syncs the index on exit.

    ``store`` is anything with ``directory``, ``dim``, ``manifest`` and ``catalog()`` (a ``Store``).
    """

    def __init__(self, store, sync: bool = True):
        self.store = store
        self.sync = sync
        self.catalog: Catalog | None = None
        self.vectors: VectorFile | None = None

    def __enter__(self) -> "StoreWriter":
        self._lock = lock_store(self.store.directory)
        self._lock.__enter__()
        try:
            for path in leftover_files(self.store.directory):  # a killed writer's; we hold the lock
                logger.info("removing %s, left by a writer that was killed", path.name)
                path.unlink(missing_ok=True)
            self.catalog = self.store.catalog()
            self.vectors = VectorFile(self.store.directory / VECTORS, self.store.dim)
            self.vectors.open_for_append(self.catalog.meta("rows"))
        except BaseException:
            if self.catalog is not None:
                self.catalog.close()
            self._lock.__exit__(None, None, None)
            raise
        return self

    def write(self, embedded: Sequence[tuple], vectors: np.ndarray, failed: Sequence[tuple]) -> None:
        """Record one batch durably.

        Args:
            embedded: ``(key, size, mtime_ns[, ctime_ns, mode])`` for each row of ``vectors``.
            vectors: their vectors, ``(len(embedded), dim)``.
            failed: ``(key, size, mtime_ns[, ctime_ns, mode], reason)`` for each file that gave none.
        """
        entries = []
        if len(embedded):
            start = self.vectors.append(vectors)
            entries += [Entry(*stat, row=start + i) for i, stat in enumerate(embedded)]
        entries += [Entry(*stat, reason=reason) for *stat, reason in failed]
        if entries:
            self.catalog.commit(entries, rows=self.vectors.rows_written)

    def remove(self, keys: Sequence[str]) -> None:
        if keys:
            self.catalog.commit([], rows=self.vectors.rows_written, removed_paths=keys)

    def use_factory(self, factory: str | None) -> None:
        """Force a FAISS index type from now on (None keeps the store's); the next sync rebuilds with it."""
        manifest: Manifest = self.store.manifest
        if factory and factory != manifest.index_factory:
            faiss_index.check_factory(factory, self.store.dim)
            manifest.index_factory = factory
            manifest.write(self.store.directory / MANIFEST)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.sync and (exc_type is None or issubclass(exc_type, KeyboardInterrupt)):
                sync_index(self.store.directory, self.store.dim, self.store.manifest.index_factory, self.catalog)
        finally:
            self.vectors.close()
            self.catalog.close()
            self._lock.__exit__(None, None, None)


def sync_index(directory: Path, dim: int, forced_factory: str | None, catalog: Catalog) -> None:
    """Bring ``index.faiss`` up to the catalog: incrementally, or rebuilt when its kind should change.

    Call it holding the store's lock. The build is planned to fit half the RAM
    (``faiss_index.plan_build``). The file is replaced before its generation is recorded, so
    it never reflects less than the catalog says (see ``Store._consistent_index``); a crash
    in between leaves a newer file under an older generation, which readers and the next
    sync handle as an index with changes since.
    """
    generation = catalog.meta("generation")
    index_generation = catalog.meta("index_generation")
    path = directory / INDEX
    if index_generation == generation and path.exists():
        return
    ids, rows = catalog.ids_and_rows()
    stored = VectorFile(directory / VECTORS, dim).view(catalog.meta("rows"))
    plan = faiss_index.plan_build(len(ids), dim, forced_factory)
    if index_generation < 0 or not path.exists() or catalog.meta("index_factory") != plan.factory:
        index, factory = _build(plan, RowView(stored, rows), ids)
    else:
        factory = plan.factory
        index = faiss_index.read_index(path, mmap=False)
        changed, removed = catalog.changed_since(index_generation)
        faiss_index.remove(index, np.array([r.id for r in changed] + removed, dtype=np.int64))
        ok = [r for r in changed if r.row is not None]
        if ok:
            faiss_index.add(index, np.stack([stored[r.row] for r in ok]), np.array([r.id for r in ok], dtype=np.int64))
    faiss_index.write_index(index, path, crash_point="index")
    catalog.set_meta(index_generation=generation, index_factory=factory)
    crashpoints.reached("index.recorded")


def _build(plan, vectors: RowView, ids: np.ndarray):
    """The index ``plan`` describes, or an exact one while there are too few vectors to train it."""
    if plan.peak_bytes > plan.budget_bytes:
        logger.warning("building %s may take %.1f GiB, over the budget of %.1f GiB",
                       plan.factory, plan.peak_bytes / 2**30, plan.budget_bytes / 2**30)
    try:
        return faiss_index.build_index(vectors, ids, plan.factory, train_size=plan.train_rows or None), plan.factory
    except InvalidFactoryError as e:  # e.g. too few vectors yet to train a forced IVF index
        logger.warning("using an exact index for now: %s", e)
        return faiss_index.build_index(vectors, ids, faiss_index.EXACT_FACTORY), faiss_index.EXACT_FACTORY
