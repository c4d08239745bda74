"""The gallery: what the web app reads from a store, as JSON-ready rows. It never writes.

Every answer comes from the store's reads (``search``, ``get_vectors``, ``vectors``,
``info``, ``failures``, and the catalog's lookup of one id, for which ``Store`` has no call
of its own), each of which reads one consistent catalog snapshot, so a ``lookalike index``
committing meanwhile shows up in the next answer, never half of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

import numpy as np

from ..errors import StoreError, UnknownImageError
from ..index.store import Hit, Store
from .classifier import Labeller

logger = logging.getLogger(__name__)

_DUPES_CACHED = 8  # (threshold, k) answers kept for the current generation
_thread = threading.local()


@contextlib.contextmanager
def faiss_threads(count: int) -> Iterator[None]:
    """FAISS's OpenMP team size for searches on this thread (OpenMP keeps the setting per thread).

    A request searches one vector: its parallelism comes from concurrent requests, and an
    OpenMP team per request only fights them for the same cores (one query over 20k vectors
    on a busy 2-core machine: 56 ms with 2 threads, 16 ms with 1). So requests search with one
    OpenMP thread; a request alone shares its scan among threads that sleep while they wait
    instead (see ``Gallery._cores``); only duplicate grouping, which searches thousands of
    rows per call, takes an OpenMP team of them all.
    """
    import faiss

    before = getattr(_thread, "faiss", None)
    faiss.omp_set_num_threads(count)
    _thread.faiss = count
    try:
        yield
    finally:
        if before is not None and before != count:
            faiss.omp_set_num_threads(before)
            _thread.faiss = before


class Gallery:
    """A store seen through the API: neighbours, duplicate groups, info and failures, paths as users see them.

    Args:
        store: a store opened with ``lookalike.open_store`` (searching by vector needs nothing more).
        display_path: how a path is shown; the CLI passes the one ``query --json`` prints with.
        labeller: a classifier for the queries' predicted labels, or None.
    """

    def __init__(self, store: Store, display_path: Callable[[str], str] = str, labeller: Labeller | None = None):
        self.store = store
        self.display_path = display_path
        self.labeller = labeller
        self.root = str(store.root)  # resolved once: the root does not move while serving
        self._dupes: OrderedDict[tuple, dict] = OrderedDict()
        self._dupes_lock = threading.Lock()
        self.warmed = threading.Event()  # set once ``warm`` is done
        self._searching = 0  # searches in flight
        self._searching_lock = threading.Lock()

    def warm(self) -> None:
        """Touch the whole index now and keep each new one warm (``Store.keep_warm``); sets ``warmed`` when done."""
        try:
            self.store.keep_warm()
        except Exception:  # noqa: BLE001 - searches still work, only slower at first; they will say what is wrong
            logger.warning("warming up the index failed", exc_info=True)
        finally:
            self.warmed.set()

    def file(self, image_id: int) -> str:
        """The file of an embedded image, on disk.

        Raises:
            UnknownImageError: no embedded image has this id.
        """
        with self.store.catalog() as catalog:
            record = catalog.by_ids([image_id]).get(image_id)
        return self._on_disk(image_id, record.path if record is not None and record.row is not None else None)

    def _on_disk(self, image_id: int, key: str | None) -> str:
        # Catalog keys are relative to the root; refuse anything else rather than serve it.
        if key is None or PurePosixPath(key).is_absolute() or ".." in PurePosixPath(key).parts:
            raise UnknownImageError(f"no embedded image has id {image_id}: ids come from search, similar and dupes results")
        return os.path.join(self.root, key)

    def similar(self, image_id: int, k: int, threshold: float | None = None) -> dict:
        """The ``k`` nearest other images of a stored one (itself left out, as ``lookalike query`` does)."""
        found = self.store.stored(image_id)  # key and vector from one snapshot
        path = self._on_disk(image_id, found[0] if found is not None else None)
        vector = found[1]
        hits = [h for h in self._neighbours(vector, k + 1) if h.id != image_id][:k]
        hits = [h._replace(rank=rank) for rank, h in enumerate(hits, 1)]
        answer = {"query": {"id": image_id, "path": self.display_path(path)}, **self._rows(hits, threshold)}
        return self._with_labels(answer, vector)

    def search(self, vector: np.ndarray, k: int, threshold: float | None = None) -> dict:
        """The ``k`` nearest stored images of a query vector."""
        return self._with_labels(self._rows(self._neighbours(vector, k), threshold), vector)

    def predict(self, vector: np.ndarray, top: int = 3) -> list[dict]:
        """The classifier's ``top`` labels for a vector, most probable first."""
        return self.labeller.predict(vector[None], top)[0] if self.labeller is not None else []

    def _neighbours(self, vector: np.ndarray, k: int) -> list[Hit]:
        """Up to ``k`` hits: a k over the store's size asks for all of them instead of failing."""
        with faiss_threads(1), self._cores() as workers:
            try:
                return self.store.search(vector[None], k, workers=workers)[0]
            except StoreError:
                total = len(self.store)  # a full count: only paid on this rare path
                if not 0 < total < k:
                    raise
                return self.store.search(vector[None], total, workers=workers)[0]

    @contextlib.contextmanager
    def _cores(self) -> Iterator[int]:
        """Threads for one search: every core while no other search runs, else one.

        Concurrent requests already keep the cores busy; a lone one would leave all but one
        idle (at 1M 1280-d vectors, one query took 20 ms on one core, 10 ms shared by two).
        """
        with self._searching_lock:
            self._searching += 1
            alone = self._searching == 1
        try:
            yield (os.cpu_count() or 1) if alone else 1
        finally:
            with self._searching_lock:
                self._searching -= 1

    def _rows(self, hits: list[Hit], threshold: float | None) -> dict:
        kept = [h for h in hits if threshold is None or h.score >= threshold]
        return {"hits": [{"rank": h.rank, "score": round(h.score, 6), "id": h.id, "path": self.display_path(h.path)}
                         for h in kept]}

    def _with_labels(self, answer: dict, vector: np.ndarray) -> dict:
        if self.labeller is not None:
            answer["predicted"] = self.predict(vector)
        return answer

    def dupes(self, threshold: float, k: int, limit: int) -> dict:
        """Near-duplicate groups of the whole store, computed once per store generation and settings."""
        from ..index.dupes import duplicate_groups

        generation = self.store.info()["generation"]
        with self._dupes_lock:  # one computation at a time; the next request finds it cached
            key = (generation, threshold, k)
            if key not in self._dupes:
                ids, keys, vectors = self.store.vectors()
                paths = dict(zip(ids.tolist(), (os.path.join(self.root, key) for key in keys)))
                search = lambda queries, n: self.store.knn(queries, min(n, len(ids)))
                with faiss_threads(os.cpu_count() or 1):
                    groups = duplicate_groups(vectors, ids, search, threshold=threshold, k=min(k, max(len(ids), 2)))
                self._dupes[key] = {"groups": [[{"id": i, "path": self.display_path(paths[i]), "score": round(s, 6)}
                                                for i, s in zip(g.ids, g.scores)] for g in groups]}
                for stale in [old for old in self._dupes if old[0] != generation]:
                    del self._dupes[stale]
                while len(self._dupes) > _DUPES_CACHED:
                    self._dupes.popitem(last=False)
            self._dupes.move_to_end(key)
            groups = self._dupes[key]["groups"]
        return {"threshold": threshold, "k": k, "generation": generation, "total": len(groups),
                "groups": [{"size": len(g), "members": g} for g in groups[:limit]]}

    def info(self) -> dict:
        """The store's info, paths as users see them, and the classifier's."""
        details = dict(self.store.info())
        details["classifier"] = self.labeller.describe() if self.labeller is not None else None
        return details

    def failures(self, limit: int) -> dict:
        """The files that could not be indexed, with reasons, in path order."""
        records = self.store.failures()
        return {"total": len(records), "failures": [{"path": self.display_path(os.path.join(self.root, r.path)),
                                                     "reason": r.reason, "recorded": r.recorded_utc}
                                                    for r in records[:limit]]}
