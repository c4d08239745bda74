"""The ONNX Runtime extractor: the exported network (``onnx_network.py``) run on the CPU, with no torch.

``OnnxExtractor`` is the ``Extractor`` around ``OnnxNetwork`` sessions: files go to torch-free worker
processes that decode and embed them (``embed_pool.py``). In this process (one image, a few
files, no workers), past ``THREADS_PER_SESSION`` threads the network runs as several sessions
side by side, one batch each (a small batch keeps only so many threads busy within one session).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import numpy as np

from ...errors import TransientError
from ..base import Batch, Extractor, normalize_rows
from ..images.batches import PixelBatch, available_cpus, decoded_batches
from ..images.failures import raise_if_transient
from ..models.registry import ModelSpec
from ..models.spec import EmbeddingSpec
from ..options import EmbedOptions
from .lanes import Lane, LanePool
from .onnx_network import OnnxNetwork


class OnnxExtractor(Extractor):
    """Embeds with ONNX Runtime on the CPU. Build it with ``create_extractor(runtime="onnx")``.

    With ``num_workers`` > 0, files (and large pixel arrays) go to that many worker processes,
    each decoding its own files and running its own session of ``threads // num_workers``
    threads (``embed_pool.py``): a core then runs one image from its first byte to its vector,
    and no thread waits on another. The processes start on first use and end with ``close()``
    (or when the extractor is garbage-collected, or at exit). A few files, one image, or
    ``num_workers=0`` run here, on a session of ``threads`` threads in ``len(networks)``
    sessions. Sessions' threads don't spin while they wait: spinning threads take the cores
    that anything else on the machine needs.
    """

    runtime = "onnxruntime"
    cpu_forward_batch = 2  # fastest on this project's 2-core machine (issue #9: 294 images/s, against 274 at 1 and 266 at 4)

    def __init__(self, model_spec: ModelSpec, spec: EmbeddingSpec, networks: list[OnnxNetwork], options: EmbedOptions):
        super().__init__(model_spec, spec, options,
                         num_workers=default_workers() if options.workers is None else options.workers)
        self.networks = networks
        self.network = networks[0]
        self.device = "cpu"
        self.threads = sum(n.threads for n in networks)
        self._pool = None
        self._pool_finalizer = None

    def close(self) -> None:
        """End the worker processes, if any started; the extractor still works (they start again on use)."""
        if self._pool_finalizer is not None:
            self._pool_finalizer()
        self._pool = self._pool_finalizer = None

    def _pool_of(self, workers: int):
        from .embed_pool import EmbedPool

        if self._pool is not None and self._pool.workers != workers:
            self.close()
        if self._pool is None:
            self._pool = EmbedPool(self.network.source, workers=workers, threads=max(1, self.threads // workers),
                                   forward_batch=self.forward_batch, preprocessing=self.model_spec.preprocessing,
                                   max_pixels=self.max_pixels, dim=self.dim)
            self._pool_finalizer = weakref.finalize(self, self._pool.close)
        return self._pool

    def _embed_files(self, keys: list[str], num_workers: int) -> Iterator[Batch]:
        from .embed_pool import TASK_IMAGES

        if num_workers > 0 and len(keys) > TASK_IMAGES:  # a handful of files is done before processes would start
            try:
                for done in self._pool_of(num_workers).embed_files(keys, self.batch_size):
                    vectors = done.pixels if done.pixels is not None else np.zeros((0, self.dim), dtype=np.float32)
                    yield Batch(done.keys, vectors, done.failures)
            except TransientError:
                self.close()  # a worker may have died: the next call starts afresh
                raise
            return
        decoded = decoded_batches(keys, self.model_spec.preprocessing, batch_size=self.batch_size, max_pixels=self.max_pixels)
        if len(self.networks) == 1:
            yield from (self._embed_batch(batch) for batch in decoded)
            return
        # A pool per call, its threads ended after it: threads left waiting in a process that later
        # forks (torch's DataLoader does) have crashed the forked child.
        pool = LanePool([Lane("cpu", network) for network in self.networks], threads_per_lane=1)
        try:
            yield from pool.map_in_order(lambda batch, lane: self._embed_batch(batch, lane.module), decoded)
        finally:
            pool.shutdown()

    def _embed_batch(self, decoded: PixelBatch, network: OnnxNetwork | None = None) -> Batch:
        if decoded.pixels is None:
            return Batch(decoded.keys, np.zeros((0, self.dim), dtype=np.float32), decoded.failures)
        return Batch(decoded.keys, self._embed_here(decoded.pixels, network), decoded.failures)

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        from .embed_pool import TASK_IMAGES

        if self.num_workers > 1 and len(pixels) > TASK_IMAGES:
            try:
                return self._pool_of(self.num_workers).embed_pixels(pixels)
            except TransientError:
                self.close()
                raise
        return self._embed_here(pixels)

    def _embed_here(self, pixels: np.ndarray, network: OnnxNetwork | None = None) -> np.ndarray:
        try:
            features = (network or self.network).run(pixels, self.forward_batch)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is turned into TransientError
            raise_if_transient(e, f"running {self.spec.model} on {len(pixels)} images")
            raise
        return normalize_rows(features)


def default_threads() -> int:
    """The network's threads: every core this process may use (shared out among the workers)."""
    return available_cpus()


def default_workers() -> int:
    """Worker processes: one per core, each decoding its files and running the network on one thread."""
    return available_cpus()
