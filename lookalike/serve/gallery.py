"""The gallery: what the web app reads from a store, as JSON-ready rows. It never writes.

Every answer but the duplicates comes from the store's own answers (``similar``, ``stored``,
``info``, ``failures``, and the catalog's lookup of one id), each of which reads one consistent
catalog snapshot, so a ``lookalike index`` committing meanwhile shows up in the next answer,
never half of it. The duplicates are ``dupes.groups.find_groups``'s, the groups ``lookalike
dupes`` shows, kept per store generation: they read the catalog more than once, so a commit
during the computation may show in part, and the next generation computes them again.
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

from ..dupes.groups import Group, Settings, find_groups
from ..errors import UnknownImageError
from ..store.neighbours import Hit
from ..store.store import Store
from .classifier import Labeller
from .files import OpenFile, open_indexed

logger = logging.getLogger(__name__)

_DUPES_CACHED = 8  # (threshold, k) answers kept for the current generation
_CLOSEST = 1e-6  # thresholds nearer 1 than this are 1
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


def dupes_threshold(threshold: float) -> float:
    """``threshold`` rounded so that its distance from 1 keeps two significant digits.

    Fine where near-duplicate thresholds live and coarse where they don't: 0.95, 0.951,
    0.999 and 0.9999 stay, 0.9512 becomes 0.951, 0.512 becomes 0.51; a few hundred values
    in all between -0.99 and 1.
    """
    distance = 1.0 - threshold
    if distance < _CLOSEST:
        return 1.0
    return max(round(1.0 - float(f"{distance:.2g}"), 8), -0.99)


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
        self._dupes: OrderedDict[tuple, list[Group]] = OrderedDict()
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

    def open(self, image_id: int) -> OpenFile:
        """The file of an embedded image, opened only if it is still the file that was indexed (``files.open_indexed``).

        Raises:
            UnknownImageError: no embedded image has this id.
            StoredFileError: the file is gone, changed, or leads out of the indexed folder.
        """
        with self.store.catalog() as catalog:
            record = catalog.by_ids([image_id]).get(image_id)
        self._on_disk(image_id, record.path if record is not None and record.row is not None else None)
        return open_indexed(self.root, record)

    def path_of(self, image_id: int) -> str:
        """Where the embedded image ``image_id`` is on disk.

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
        """The ``k`` nearest other images of a stored one (``Store.similar``: itself left out, k held to the store)."""
        found = self.store.stored(image_id)  # key and vector from one snapshot
        path = self._on_disk(image_id, found[0] if found is not None else None)
        vector = found[1]
        with faiss_threads(1), self._cores() as workers:
            hits = self.store.similar(image_id, k, threshold, workers=workers)
        answer = {"query": {"id": image_id, "path": self.display_path(path)}, **self._rows(hits)}
        return self._with_labels(answer, vector)

    def search(self, vector: np.ndarray, k: int, threshold: float | None = None) -> dict:
        """The ``k`` nearest stored images of a query vector (at most every image the store holds)."""
        with faiss_threads(1), self._cores() as workers:
            hits = self.store.similar(vector, k, threshold, workers=workers)
        return self._with_labels(self._rows(hits), vector)

    def predict(self, vector: np.ndarray, top: int = 3) -> list[dict]:
        """The classifier's ``top`` labels for a vector, most probable first."""
        return self.labeller.predict(vector[None], top)[0] if self.labeller is not None else []

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

    def _rows(self, hits: list[Hit]) -> dict:
        return {"hits": [{"rank": h.rank, "score": round(h.score, 6), "id": h.id, "path": self.display_path(h.path)}
                         for h in hits]}

    def _with_labels(self, answer: dict, vector: np.ndarray) -> dict:
        if self.labeller is not None:
            answer["predicted"] = self.predict(vector)
        return answer

    def dupes(self, threshold: float, k: int, limit: int) -> dict:
        """Near-duplicate groups of the whole store, computed once per store generation and settings.

        The threshold is rounded first (``dupes_threshold``): each new one costs a search of
        every stored image, so only so many different ones can be asked for.
        """
        threshold = dupes_threshold(threshold)
        generation, groups = self.groups(threshold, k)
        return {"threshold": threshold, "k": k, "generation": generation, "total": len(groups),
                "groups": [{"size": len(g.members), "kind": g.kind, "members": [
                    {"id": m.id, "path": self.display_path(m.path), "score": round(m.score, 6), "keep": m.keep,
                     "reason": m.reason, "missing": m.missing} for m in g.members]} for g in groups[:limit]]}

    def groups(self, threshold: float, k: int) -> tuple[int, list[Group]]:
        """The store's generation and the groups ``lookalike dupes`` finds at ``threshold`` (rounded), keeper first; cached."""
        threshold = dupes_threshold(threshold)
        generation = self.store.info()["generation"]
        with self._dupes_lock:  # one computation at a time; the next request finds it cached
            key = (generation, threshold, k)
            if key not in self._dupes:
                with faiss_threads(os.cpu_count() or 1):
                    self._dupes[key] = find_groups(self.store, Settings(threshold=threshold, k=k))
                for stale in [old for old in self._dupes if old[0] != generation]:
                    del self._dupes[stale]
                while len(self._dupes) > _DUPES_CACHED:
                    self._dupes.popitem(last=False)
            self._dupes.move_to_end(key)
            return generation, self._dupes[key]

    def forget_groups(self) -> None:
        """Drop the cached groups: a verdict changed them without a new store generation."""
        with self._dupes_lock:
            self._dupes.clear()

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
