"""One exported network on ONNX Runtime: ``OnnxNetwork`` wraps an InferenceSession on the CPU.

uint8 pixels go in (the normalisation is part of the graph) and pooled features come out,
run in micro-batches small enough to stay in the CPU's cache. No torch is imported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

KEY_PROPERTY = "lookalike.export_key"  # in the model's metadata: written last, so a truncated file lacks it
# Threads one session gets before the network is split into more sessions. Not measured
# beyond 2 cores here; 8 is where small-batch CNN inference is commonly found to stop scaling.
THREADS_PER_SESSION = 8


class OnnxNetwork:
    """One ONNX Runtime session on the CPU.

    Args:
        model: the .onnx file or its bytes.
        threads: intra-op threads (the cores the network may use).
        spinning: let idle threads spin for work; off where other work (decoding, other processes) needs the cores.
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
        self.source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
        self.session = ort.InferenceSession(self.source, options, providers=["CPUExecutionProvider"])
        self.threads, self.spinning = threads, spinning
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


def sessions(network: OnnxNetwork, threads: int) -> list[OnnxNetwork]:
    """``network`` and as many more sessions of the same model as ``threads`` calls for, sharing them out."""
    count = -(-threads // THREADS_PER_SESSION)
    if count == 1:
        return [network]
    each = max(1, threads // count)
    return [OnnxNetwork(network.source, threads=each, spinning=network.spinning) for _ in range(count)]
