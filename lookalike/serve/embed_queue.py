"""The embed queue: one thread runs the CNN on uploads, off the event loop, batching those that wait together.

The network is not made to be called from several threads at once, and on a CPU two
calls at once would only fight for the same cores. So uploads queue; whatever arrived
while a batch ran goes through the network together as the next batch. The event loop
and the threads answering ``/api/similar`` never wait on the CNN.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from pathlib import Path

from ..errors import ServeError, UploadError
from ..store.store import Embedder

logger = logging.getLogger(__name__)

_STOP = object()


class EmbedQueue:
    """Embeds image files on one worker thread, in batches of whatever waits.

    Args:
        embed: the store's embedder (``store.embedder`` after ``lookalike.open_store``).
        max_batch: at most this many files per call to ``embed``.
    """

    def __init__(self, embed: Embedder, max_batch: int = 16):
        self.embed = embed
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.warmed = threading.Event()  # set once the warm-up image went through the model

    def start(self, warm_up: str | Path | None = None) -> None:
        """Start the worker; with ``warm_up`` (an image file), it first loads the model and runs it once."""
        self._thread = threading.Thread(target=self._run, args=(warm_up,), name="lookalike-embed", daemon=True)
        self._thread.start()

    def submit(self, path: str | Path) -> Future:
        """Queue a file; the future gives its vector, or raises ``UploadError`` with the decoder's reason."""
        future: Future = Future()
        if self._closed:
            future.set_exception(ServeError("the server is stopping"))
        else:
            self._queue.put((str(path), future))
        return future

    @property
    def waiting(self) -> int:
        """Uploads queued behind the batch in flight."""
        return self._queue.qsize()

    def close(self, timeout: float = 2) -> None:
        """Stop after the batch in flight (waiting ``timeout`` for it: the thread is a daemon); what waits fails."""
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, warm_up) -> None:
        if warm_up is not None:
            try:
                self.embed([str(warm_up)])
            except Exception:  # noqa: BLE001 - the first upload will say what is wrong
                if not self._closed:
                    logger.warning("warming up the model failed", exc_info=True)
            self.warmed.set()
        while True:
            item = self._queue.get()
            batch, stop = [], item is _STOP
            while not stop:
                batch.append(item)
                if len(batch) == self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                stop = item is _STOP
            if batch:
                self._embed_batch(batch)
            if stop:
                break
        self._fail_waiting()

    def _embed_batch(self, batch: list[tuple[str, Future]]) -> None:
        batch = [(path, future) for path, future in batch if future.set_running_or_notify_cancel()]
        try:
            keys, vectors, failed = self.embed([path for path, _ in batch])
        except Exception as error:  # noqa: BLE001 - every upload of the batch hears of it, the server lives on
            logger.exception("embedding %d uploads failed", len(batch))
            for _, future in batch:
                future.set_exception(error)
            return
        found = dict(zip(keys, vectors))
        for path, future in batch:
            if path in found:
                future.set_result(found[path])
            else:
                reason = failed.get(path, "the model gave no vector")
                future.set_exception(UploadError(f"not a usable image: {reason}", 422))

    def _fail_waiting(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[1].set_exception(ServeError("the server is stopping"))
