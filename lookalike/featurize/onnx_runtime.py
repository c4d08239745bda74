"""The ONNX Runtime path: an exported network run on the CPU, with no torch in the process.

``OnnxNetwork`` wraps one InferenceSession: uint8 pixels in (the normalisation is part of
the graph), pooled features out, run in micro-batches small enough to stay in the CPU's
cache. ``OnnxExtractor`` is the ``Extractor`` around it: files decode on a torch-free
process pool (``batches.py``) while the network runs here on the cores it was given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .batches import available_cpus, decoded_batches
from .extractor import Batch, Extractor, normalize_rows
from .failures import raise_if_transient
from .registry import ModelSpec
from .spec import EmbeddingSpec

KEY_PROPERTY = "lookalike.export_key"  # in the model's metadata: written last, so a truncated file lacks it


class OnnxNetwork:
    """One ONNX Runtime session on the CPU.

    Args:
        model: the .onnx file or its bytes.
        threads: intra-op threads (the cores the network may use).
        spinning: let idle threads spin for work; off when decoding workers need those cores.
        expect_key: refuse (``ValueError``) a model whose metadata names another export key.

    Raises:
        ValueError, or ONNX Runtime's errors: the file is missing, damaged or not this export.
    """

    def __init__(self, model: str | os.PathLike | bytes, *, threads: int, spinning: bool = False, expect_key: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are no use to a user
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.threads = threads
        meta = self.session.get_modelmeta().custom_metadata_map
        if expect_key is not None and meta.get(KEY_PROPERTY) != expect_key:
            raise ValueError(f"the export is incomplete or of another network (key {meta.get(KEY_PROPERTY)!r})")
        (self._input,) = [i.name for i in self.session.get_inputs()]

    def run(self, pixels: np.ndarray, forward_batch: int) -> np.ndarray:
        """Features (N, D), float32, for uint8 pixels (N, 3, H, W), ``forward_batch`` images at a time."""
        chunks = [self.session.run(None, {self._input: pixels[i : i + forward_batch]})[0]
                  for i in range(0, len(pixels), forward_batch)]
        return np.concatenate(chunks).astype(np.float32, copy=False)


def open_network(path: Path, key: str, *, threads: int, spinning: bool) -> OnnxNetwork | None:
    """The cached export at ``path`` if it exists and is whole; None if missing or damaged."""
    if not path.is_file():
        return None
    try:
        return OnnxNetwork(path, threads=threads, spinning=spinning, expect_key=key)
    except Exception:  # noqa: BLE001 - truncated, corrupt, or someone else's: export again
        return None


class OnnxExtractor(Extractor):
    """Embeds with ONNX Runtime on the CPU. Build it with ``create_extractor(runtime="onnx")``.

    ``threads`` is how many cores the network uses; ``num_workers`` decoding processes
    share the machine with it (ONNX Runtime's threads don't spin then, leaving them the cores).
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        model_spec: ModelSpec,
        spec: EmbeddingSpec,
        network: OnnxNetwork,
        *,
        batch_size: int,
        forward_batch: int,
        num_workers: int,
        max_pixels: int,
    ):
        super().__init__(model_spec, spec, batch_size=batch_size, forward_batch=forward_batch,
                         num_workers=num_workers, max_pixels=max_pixels)
        self.network = network
        self.device = "cpu"
        self.threads = network.threads

    def _embed_files(self, keys: list[str], num_workers: int) -> Iterator[Batch]:
        for decoded in decoded_batches(keys, self.model_spec.preprocessing, batch_size=self.batch_size,
                                       num_workers=num_workers, max_pixels=self.max_pixels):
            if decoded.pixels is None:
                yield Batch(decoded.keys, np.zeros((0, self.dim), dtype=np.float32), decoded.failures)
            else:
                yield Batch(decoded.keys, self._embed_pixels(decoded.pixels), decoded.failures)

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        try:
            features = self.network.run(pixels, self.forward_batch)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is turned into TransientError
            raise_if_transient(e, f"running {self.spec.model} on {len(pixels)} images")
            raise
        return normalize_rows(features)


def default_threads() -> int:
    """The network's threads: every core this process may use (decoding workers share them)."""
    return available_cpus()
