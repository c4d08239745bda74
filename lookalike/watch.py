"""The watcher: a store kept current as files under its folder are added, changed, moved or deleted.

It holds the store's write lock for as long as it runs (a second ``index`` or ``watch`` is
refused), starts with one incremental pass (so what changed while it was down is caught),
then listens to the operating system (``watchdog``: inotify on Linux, FSEvents on macOS).
Events are gathered until none has come for ``settle`` seconds, then one incremental pass
takes them all: a copy of 10,000 photos is one run, not 10,000. A pass leaves any file
modified within the last ``settle`` seconds for the next one, so a file still being copied
is never embedded half-written. Stopping (Ctrl-C, SIGTERM, ``stop``) happens between
batches; a kill loses at most the batch in flight, and the next start catches up.

Other writes to the store in the same process (``serve --watch`` resolving duplicates) go
through ``call``: they run on the watcher's thread between passes, under the lock it holds.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from .errors import MissingDependencyError, StoreLockedError
from .featurize.options import EmbedOptions
from .indexing import IndexSummary, index_folder
from .store.layout import STORE_DIRNAME, store_folder
from .store.lock import hold_store

logger = logging.getLogger(__name__)

DEFAULT_SETTLE_S = 2.0
POLL_S = 0.2  # how often the loop looks at the clock while it waits


class Watcher:
    """Watches ``root`` and indexes what changes into its store (``store``, default ``root/.lookalike``).

    Args:
        root: the folder.
        store: the store folder (or the folder it indexes).
        settle: seconds without an event before a pass, and the least age of a file it reads.
        options: how to run the network (``EmbedOptions``); model, layer, weights: as ``index_folder``.
        on_pass: told each pass's ``IndexSummary``, and whether it was the first (the catch-up).
        on_batch: told each committed batch's number of files (as ``index_folder``).
    """

    def __init__(self, root: str | os.PathLike, *, store: str | os.PathLike | None = None,
                 settle: float = DEFAULT_SETTLE_S, options: EmbedOptions | None = None, model: str | None = None,
                 layer: str | None = None, weights: str | os.PathLike | None = None,
                 on_pass: Callable[[IndexSummary, bool], None] | None = None,
                 on_batch: Callable[[int], None] | None = None):
        self.root = Path(root).resolve()
        self.model, self.layer, self.weights = model, layer, weights
        self.store = store_folder(store) if store is not None else self.root / STORE_DIRNAME
        self.settle = settle
        self.options = options
        self.on_pass, self.on_batch = on_pass, on_batch
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._last_event = 0.0
        self.ready = threading.Event()  # set once the catch-up pass is done and events are listened to
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._calls_lock = threading.Lock()
        self._closed = False  # no more calls: the watcher has stopped

    def call(self, fn: Callable[[], object]) -> Future:
        """Run ``fn`` on the watcher's thread between passes, holding the store's lock; its result comes in the future.

        The way for code in the same process to write to a store the watcher holds: any other
        writer would be refused. Calls made after the watcher stops fail with ``StoreLockedError``.
        """
        future: Future = Future()
        with self._calls_lock:
            if self._closed:
                future.set_exception(StoreLockedError(f"the watcher of {self.store} has stopped: nothing was written"))
            else:
                self._calls.put((fn, future))
        return future

    def stop(self) -> None:
        """Ask the watcher to stop (between batches); ``run`` returns soon after."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Index now, then on every settled burst of changes, until ``stop``.

        Raises:
            MissingDependencyError: watchdog is not installed.
            StoreLockedError: another process writes to the store.
        """
        try:
            self._watch()
        finally:
            self._close_calls()  # a call waiting now fails: it never waits for a watcher that is gone

    def _watch(self) -> None:
        observer = _observer()
        self.store.mkdir(parents=True, exist_ok=True)
        with hold_store(self.store):
            self._pass(first=True)
            observer.schedule(_Handler(self), str(self.root), recursive=True)
            observer.start()
            try:
                self.ready.set()
                while not self._stop.is_set():
                    self._run_calls()
                    if self._due():
                        self._changed.clear()
                        summary = self._pass(first=False)
                        if summary.unsettled or summary.stopped:  # come back for what is still being written
                            self._note()
                    self._stop.wait(POLL_S)
            finally:
                observer.stop()
                observer.join()

    def _pending(self):
        """The calls waiting, taken off the queue one by one."""
        while True:
            try:
                yield self._calls.get_nowait()
            except queue.Empty:
                return

    def _run_calls(self) -> None:
        for fn, future in self._pending():
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
                    future.set_exception(error)

    def _close_calls(self) -> None:
        with self._calls_lock:
            self._closed = True
        for _, future in self._pending():
            if future.set_running_or_notify_cancel():
                future.set_exception(StoreLockedError(f"the watcher of {self.store} has stopped: nothing was written"))

    def _due(self) -> bool:
        return self._changed.is_set() and time.monotonic() - self._last_event >= self.settle

    def _note(self) -> None:
        self._last_event = time.monotonic()
        self._changed.set()

    def _pass(self, first: bool) -> IndexSummary:
        summary = index_folder(self.root, store=self.store, model=self.model, layer=self.layer, weights=self.weights,
                               options=self.options, on_batch=self.on_batch, settled_for=self.settle,
                               should_stop=self._stop.is_set)
        self.model = self.layer = self.weights = None  # the store knows them now
        if self.on_pass:
            self.on_pass(summary, first)
        return summary

    def event(self, path: str) -> None:
        """A change under the root (``_Handler`` calls it; changes inside the store are ignored)."""
        if os.path.realpath(path).startswith(os.path.realpath(self.store)):
            return
        self._note()


class _Handler:
    """The watchdog event handler: every kind of change marks the watcher due."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher

    def dispatch(self, event) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reading a file changes nothing
        self.watcher.event(event.src_path)
        dest = getattr(event, "dest_path", "")
        if dest:
            self.watcher.event(dest)


def _observer():
    try:
        from watchdog.observers import Observer
    except ImportError:
        raise MissingDependencyError("lookalike watch needs watchdog: pip install watchdog") from None
    return Observer()
