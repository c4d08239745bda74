"""Lanes: a device with its copy of the network, and the threads that run batches on them.

Each thread is bound to one lane for its life (on CUDA with its own stream), so that one
batch's decoding and copying overlap another's forward pass, and several GPUs work at once.
On a CPU with many cores, ONNX Runtime sessions are lanes too (device ``"cpu"``): several
sessions of a few threads each keep more cores busy on small batches than one session of
many threads. torch is imported only for CUDA lanes.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple


class Lane(NamedTuple):
    """One device (a ``torch.device``, or ``"cpu"`` for ONNX Runtime) and the copy of the network on it."""

    device: Any
    module: Any


def _is_cuda(device) -> bool:
    return getattr(device, "type", device) == "cuda"


class LanePool:
    """Threads bound to lanes (and on CUDA a stream each) that run ``fn(item, lane)``.

    ``map_in_order`` keeps at most one item more than there are threads in flight, so
    memory stays bounded, and yields results in input order.
    """

    def __init__(self, lanes: list[Lane], threads_per_lane: int):
        self.threads_per_lane = threads_per_lane
        self.threads = len(lanes) * threads_per_lane
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for lane in lanes:
            for _ in range(threads_per_lane):
                self._free.put(lane)
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(self.threads, initializer=self._bind, thread_name_prefix="lookalike-embed")
        # Start every thread now: one started mid-run would take its lane only then (its first
        # batch on a GPU pays seconds for cuDNN set-up), and some lanes would sit idle.
        everyone = threading.Barrier(self.threads)
        for future in [self._executor.submit(everyone.wait) for _ in range(self.threads)]:
            future.result()

    def _bind(self) -> None:
        lane = self._local.lane = self._free.get()
        self._local.stream = None
        if _is_cuda(lane.device):
            import torch

            self._local.stream = torch.cuda.Stream(lane.device)

    def _run(self, fn: Callable, item):
        if self._local.stream is None:
            return fn(item, self._local.lane)
        import torch

        with torch.cuda.stream(self._local.stream):
            return fn(item, self._local.lane)

    def shutdown(self) -> None:
        """End the threads (a pool kept for an extractor's lifetime never needs this)."""
        self._executor.shutdown(wait=True)

    def map_in_order(self, fn: Callable, items: Iterable) -> Iterator:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(self._executor.submit(self._run, fn, item))
                if len(pending) > self.threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            for future in pending:  # let running ones finish before the caller moves on
                if not future.cancelled():
                    future.exception()
