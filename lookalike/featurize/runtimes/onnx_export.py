"""Exporting a built network to ONNX: once per network, verified against torch, cached.

The exported graph takes uint8 pixels and normalises them itself (``Preprocessing.normalize``
traced into the graph), then runs the headless, pooled network; L2 normalisation stays
outside, in numpy, as on the torch path. Every new export is run by ONNX Runtime on a fixed
input and compared with torch: each row's cosine must be at least ``MIN_COSINE``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import OnnxExportError
from ..images.failures import raise_if_transient
from ..images.preprocess import Preprocessing
from ..models.backbone import Backbone
from ..models.spec import EmbeddingSpec
from . import onnx_cache
from .onnx_network import KEY_PROPERTY, OnnxNetwork, open_network

logger = logging.getLogger(__name__)

MIN_COSINE = 0.99999


class PixelsIn(nn.Module):
    """uint8 (N, 3, H, W) in, the network's pooled features out: normalisation inside the graph."""

    def __init__(self, network: nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.network = network
        self.preprocessing = preprocessing

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocessing.normalize(pixels))


def cached_export(backbone: Backbone, spec: EmbeddingSpec, *, threads: int, spinning: bool) -> OnnxNetwork:
    """The network of ``spec`` on ONNX Runtime: from the cache, or exported, verified and cached now.

    Raises:
        OnnxExportError: the network can't be exported or its export disagrees with torch
            (remembered in the cache, so the next run doesn't try again).
    """
    key = onnx_cache.export_key(spec)
    path = onnx_cache.model_path(spec, key)
    network = open_network(path, key, threads=threads, spinning=spinning)
    if network is not None:
        return network
    failed = onnx_cache.read_failure(path)
    if failed is not None:
        raise OnnxExportError(f"{failed} (an earlier export failed; delete {onnx_cache.failure_note(path)} to try again)")
    with onnx_cache.export_lock(path):
        network = open_network(path, key, threads=threads, spinning=spinning)  # another process may have made it
        if network is not None:
            return network
        logger.info("exporting %s to ONNX (once; cached in %s)", spec.model, path.parent)
        try:
            data = export(backbone.module, spec.preprocessing, key)
            verify(data, backbone.module, spec.preprocessing)
        except Exception as e:  # noqa: BLE001 - exporters fail in many ways; each means "run on torch"
            raise_if_transient(e, f"exporting {spec.model} to ONNX")  # never remembered as the network's fault
            reason = _one_line(e)
            _remember(onnx_cache.failure_note(path), reason.encode())
            raise OnnxExportError(reason) from e
        if not _remember(path, data):
            return OnnxNetwork(data, threads=threads, spinning=spinning, expect_key=key)
    return OnnxNetwork(path, threads=threads, spinning=spinning, expect_key=key)


def export(module: nn.Module, preprocessing: Preprocessing, key: str) -> bytes:
    """The ONNX bytes of ``module`` (eval mode, CPU) behind ``PixelsIn``, with a dynamic batch size."""
    wrapper = PixelsIn(module, preprocessing).eval()
    example = torch.zeros((2, 3, preprocessing.crop_size, preprocessing.crop_size), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65536)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's advice is for model authors, not our users
        program = torch.onnx.export(
            wrapper, (example,), None, dynamo=True, verbose=False, opset_version=onnx_cache.OPSET,
            input_names=["pixels"], output_names=["features"], dynamic_shapes={"pixels": {0: batch}},
        )
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = KEY_PROPERTY, key
    return model.SerializeToString()


def verify(data: bytes, module: nn.Module, preprocessing: Preprocessing) -> float:
    """The least row cosine between ONNX Runtime and torch on a fixed input; raises below ``MIN_COSINE``."""
    pixels = fixed_pixels(preprocessing.crop_size)
    with torch.inference_mode():
        expected = module(preprocessing.normalize(torch.from_numpy(pixels))).float().numpy()
    got = OnnxNetwork(data, threads=torch.get_num_threads()).run(pixels, forward_batch=len(pixels))
    if got.shape != expected.shape:
        raise ValueError(f"the export gives shape {got.shape}, torch {expected.shape}")
    norms = np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
    tiny = norms < 1e-12  # an all-zero row (a dead layer on this input): compare values instead
    if tiny.any() and not np.allclose(got[tiny], expected[tiny], atol=1e-5):
        raise ValueError("the export gives non-zero features where torch gives zeros")
    cosines = (expected * got).sum(1)[~tiny] / norms[~tiny]
    least = float(cosines.min()) if cosines.size else 1.0
    if not least >= MIN_COSINE:  # also catches NaN
        raise ValueError(f"the export disagrees with torch (row cosine {least:.6f} < {MIN_COSINE})")
    return least


def fixed_pixels(size: int) -> np.ndarray:
    """Three deterministic test images: noise, a smooth colour gradient, and blocky shapes."""
    rng = np.random.default_rng(20240901)
    noise = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    gradient = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, ramp[::-1]) / 2, np.outer(ramp, ramp) / 255])
    blocks = np.kron(rng.integers(0, 256, (3, 8, 8)), np.ones((size // 8 + 1, size // 8 + 1)))[:, :size, :size]
    return np.stack([noise, gradient.round().astype(np.uint8), blocks.astype(np.uint8)])


def _remember(path: Path, data: bytes) -> bool:
    """Write to the cache; False (with a warning) where the cache can't be written."""
    try:
        onnx_cache.save(path, data)
        return True
    except OSError as e:
        logger.warning("cannot write the ONNX cache %s (%s): it will be exported again next time", path.parent, e.strerror or e)
        return False


def _one_line(error: BaseException) -> str:
    """The telling line of an exporter's error: its "Exception summary" names the operator or guard."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        lines = lines[lines.index("## Exception summary") + 1 :]
    if not lines:
        return type(error).__name__
    match = re.match(r"<class '(?:[\w.]+\.)?(\w+)'>: (.*)", lines[0])
    line = f"{match[1]}: {match[2]}" if match else f"{type(error).__name__}: {lines[0]}"
    return line[:240]
