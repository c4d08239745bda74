"""Worker processes that each decode their files and run their own copy of the network.

On a CPU, one ONNX Runtime session per core, one thread each, runs the network faster than
one session whose threads share the cores (no threads wait on each other between the
layers of a small batch): on this project's 2-core machine, 2 processes of 1 thread made
about 1.2x the images/s of 1 process of 2 spinning threads (benchmarks/bench_featurize.py
measures both). Each worker also decodes the files it embeds, so decoding and the network
never compete for a core: a core is busy with one image from its first byte to its vector.

Only file paths (or pixels) go to a worker and only vectors come back. Tasks are a few
images each, so that the last batch of a run keeps every core busy; results come back in
input order with a bounded number in flight, so memory stays flat.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from ..images.batches import PixelBatch, decode_batch
from ..images.failures import Failure, raise_if_transient, transient_error
from ..images.preprocess import Preprocessing

TASK_IMAGES = 4  # files per task: small enough that the last ones even out across the workers
PIXEL_TASK_MAX = 16  # pixels per task at most (2.4 MB at 224 px): about 4 tasks a worker, fewer round trips
IN_FLIGHT_PER_WORKER = 4

_network = None  # this worker's OnnxNetwork (set by _start_worker)
_settings: dict = {}


def _start_worker(source, threads: int, forward_batch: int, preprocessing: Preprocessing, max_pixels: int,
                  parent: int | None) -> None:
    """Open the worker's own session; on Linux, die with the parent (a ``kill -9`` leaves no orphans)."""
    global _network
    if parent is not None:
        _die_with_parent(parent)
    from .onnx_network import OnnxNetwork

    _network = OnnxNetwork(source, threads=threads, spinning=False)
    _settings.update(forward_batch=forward_batch, preprocessing=preprocessing, max_pixels=max_pixels)


def _die_with_parent(parent: int) -> None:
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl in this C library: no death signal to ask for
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _vectors(pixels: np.ndarray) -> np.ndarray:
    from ..base import normalize_rows

    try:
        features = _network.run(pixels, _settings["forward_batch"])
    except Exception as e:  # noqa: BLE001 - only out-of-memory is turned into TransientError
        raise_if_transient(e, f"running the network on {len(pixels)} images")
        raise
    return normalize_rows(features)


def _embed_files(paths: Sequence[str]) -> tuple[list[str], np.ndarray | None, list[Failure]]:
    decoded = decode_batch(paths, _settings["preprocessing"], _settings["max_pixels"])
    return decoded.keys, None if decoded.pixels is None else _vectors(decoded.pixels), decoded.failures


def _embed_pixels(pixels) -> np.ndarray:
    """Vectors of an array, or of rows ``start:stop`` of the parent's shared copy ``(path, shape, start, stop)``."""
    if isinstance(pixels, tuple):
        path, shape, start, stop = pixels
        pixels = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)[start:stop]
    return _vectors(pixels)


@contextlib.contextmanager
def _shared(pixels: np.ndarray) -> Iterator[str | None]:
    """A path the workers can map ``pixels`` from, for as long as the block lasts; None where there is none.

    On Linux an anonymous memory file (``memfd``), reached through ``/proc/<pid>/fd``: it costs
    one copy here instead of a pickle and a pipe per task, and goes away with this process,
    however it ends.
    """
    if not hasattr(os, "memfd_create") or not os.path.isdir(f"/proc/{os.getpid()}/fd"):
        yield None
        return
    fd = os.memfd_create("lookalike-pixels", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as out:
            out.write(np.ascontiguousarray(pixels).data)
        yield f"/proc/{os.getpid()}/fd/{fd}"
    finally:
        os.close(fd)


class EmbedPool:
    """``workers`` processes, each decoding and embedding with a session of ``threads`` threads.

    The processes start on first use (forked on Linux, where they share the parent's pages)
    and live until ``close()``; a pool that is garbage-collected or left at exit is closed then.

    Raises (from its methods):
        TransientError: a worker died (killed, out of memory) or hit trouble that is not a file's.
    """

    def __init__(self, source, *, workers: int, threads: int, forward_batch: int, preprocessing: Preprocessing,
                 max_pixels: int, dim: int):
        self.workers, self.threads, self.dim = workers, threads, dim
        # A death signal comes when the thread that forked the worker ends, so only workers forked by the
        # main thread (at the first task, in the thread that made the pool) ask for one.
        linux_main = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self._executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker,
            initargs=(source, threads, forward_batch, preprocessing, max_pixels, os.getpid() if linux_main else None))

    def embed_files(self, paths: Sequence[str], batch_size: int) -> Iterator[PixelBatch]:
        """``(keys, vectors, failures)`` per ``batch_size`` consecutive paths, in order (vectors may be None)."""
        step = min(TASK_IMAGES, batch_size)  # a task never straddles two batches

        def tasks():
            for batch in range(0, len(paths), batch_size):
                end = min(batch + batch_size, len(paths))
                for start in range(batch, end, step):
                    yield paths[start : min(start + step, end)], start + step >= end  # (files, last of its batch)

        keys, rows, failures = [], [], []
        for (done_keys, vectors, done_failures), last in self._in_order(_embed_files, tasks()):
            keys += done_keys
            failures += done_failures
            if vectors is not None:
                rows.append(vectors)
            if last:
                yield PixelBatch(keys, np.concatenate(rows) if rows else None, failures)
                keys, rows, failures = [], [], []

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """L2-normalised vectors of uint8 pixels (N, 3, H, W), shared out among the workers."""
        step = min(PIXEL_TASK_MAX, max(TASK_IMAGES, len(pixels) // (4 * self.workers)))
        starts = range(0, len(pixels), step)
        with _shared(pixels) as path:
            tasks = (((path, pixels.shape, i, i + step) if path else pixels[i : i + step], None) for i in starts)
            done = [vectors for vectors, _ in self._in_order(_embed_pixels, tasks)]
        return np.concatenate(done) if done else np.zeros((0, self.dim), dtype=np.float32)

    def _in_order(self, fn, tasks) -> Iterator[tuple]:
        """``(fn(payload), tag)`` for each ``(payload, tag)`` of ``tasks``, in order, a bounded number in flight."""
        pending: deque = deque()
        try:
            for payload, tag in tasks:
                pending.append((self._executor.submit(fn, payload), tag))
                if len(pending) >= self.workers * IN_FLIGHT_PER_WORKER:
                    yield self._result(*pending.popleft())
            while pending:
                yield self._result(*pending.popleft())
        finally:
            for future, _ in pending:
                future.cancel()

    @staticmethod
    def _result(future, tag) -> tuple:
        try:
            return future.result(), tag
        except BrokenProcessPool as e:
            raise transient_error("an embedding worker process", "it died (killed, perhaps for lack of memory)") from e

    def close(self) -> None:
        """End the worker processes (waiting for the tasks they are running)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
