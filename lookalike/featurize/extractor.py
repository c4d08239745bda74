"""The extractor: decoded batches in, L2-normalised float32 vectors out.

It owns, in one place, the device, ``torch.inference_mode()``, autocast, channels_last,
normalisation of pixels and of vectors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from importlib import metadata
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import LookalikeError, SpecMismatchError
from .backbone import Backbone, build_backbone
from .decode import DEFAULT_MAX_PIXELS, upright_rgb
from .reader import Failure, default_num_workers, make_loader
from .registry import DEFAULT_MODEL, ModelSpec, get_model_spec
from .spec import EmbeddingSpec

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Batch(NamedTuple):
    """One batch of results: ``vectors[i]`` belongs to ``keys[i]``; ``failures`` got no vector."""

    keys: list[str]
    vectors: np.ndarray
    failures: list[Failure]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA, then MPS, then CPU. An explicit device must exist.

    Raises:
        LookalikeError: the device asked for is not available here.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise LookalikeError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from e
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LookalikeError(f"device {device!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise LookalikeError(f"device {device!r} asked for, but only cuda:0..cuda:{count - 1} exist")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise LookalikeError(f"device {device!r} asked for, but MPS is not available here; use --device cpu")
    elif resolved.type != "cpu":
        raise LookalikeError(f"device {device!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return resolved


def _check_arguments(batch_size: int, precision: str, device: torch.device) -> torch.dtype | None:
    """Validate before any model is built; returns the autocast dtype, or None for plain fp32.

    ``precision="auto"`` is bf16 (fp16 where unsupported) on CUDA, fp32 elsewhere.
    """
    if batch_size < 1:
        raise LookalikeError(f"batch_size must be at least 1, not {batch_size}")
    if precision not in PRECISIONS:
        raise LookalikeError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _DTYPES.get(precision)


class Extractor:
    """Turns images into embeddings with one model. Build it with ``create_extractor``."""

    def __init__(
        self,
        model_spec: ModelSpec,
        backbone: Backbone,
        *,
        device: torch.device,
        batch_size: int = 32,
        num_workers: int | None = None,
        precision: str = "auto",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.autocast_dtype = _check_arguments(batch_size, precision, device)
        self.model_spec = model_spec
        self.device = device
        self.batch_size = batch_size
        self.num_workers = default_num_workers(device) if num_workers is None else num_workers
        self.max_pixels = max_pixels
        self.module = _to_device(backbone.module, device)
        self.spec = EmbeddingSpec(
            model=model_spec.name,
            weights_sha256=backbone.weights_sha256,
            layer=backbone.layer,
            dim=backbone.dim,
            preprocessing=model_spec.preprocessing,
            versions=_versions(),
        )

    @property
    def dim(self) -> int:
        return self.spec.dim

    def embed_images(self, images: Iterable[Image.Image]) -> np.ndarray:
        """Embed in-memory PIL images (any mode; EXIF orientation applied).

        Returns float32 (N, dim), L2-normalised, in input order. Large JPEGs embedded through
        ``embed_paths`` decode in draft mode and differ slightly (cosine ~0.995) from the same
        file fully decoded and passed here; ``embed_paths`` is the consistent route for files.

        Raises:
            ValueError: an image is thinner than 1:100.
        """
        preprocess = self.model_spec.preprocessing
        pixels = [preprocess(upright_rgb(image)) for image in images]
        if not pixels:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [self._forward(torch.stack(pixels[i : i + self.batch_size])) for i in range(0, len(pixels), self.batch_size)]
        return np.concatenate(chunks)

    def embed_paths(self, paths: Iterable[str | os.PathLike], *, num_workers: int | None = None) -> Iterator[Batch]:
        """Embed image files, decoding on worker processes with bounded look-ahead.

        Args:
            paths: image files; each key is the path as given (``os.fspath``).
            num_workers: decoding processes (0 decodes in this process); default as built.

        Yields:
            ``Batch(keys, vectors, failures)`` in input order, one per ``batch_size`` paths.
            Files that can't be decoded are in ``failures`` with a reason, never raised.
        """
        keys = [os.fspath(p) for p in paths]
        if not keys:
            return
        loader = make_loader(
            keys,
            self.model_spec.preprocessing,
            batch_size=self.batch_size,
            num_workers=self.num_workers if num_workers is None else num_workers,
            pin_memory=self.device.type == "cuda",
            max_pixels=self.max_pixels,
        )
        for decoded in loader:
            if decoded.pixels is None:
                vectors = np.zeros((0, self.dim), dtype=np.float32)
            else:
                vectors = self._forward(decoded.pixels)
            yield Batch(decoded.keys, vectors, decoded.failures)

    @torch.inference_mode()
    def _forward(self, pixels: torch.Tensor) -> np.ndarray:
        x = pixels.to(self.device, non_blocking=True)
        x = self.model_spec.preprocessing.normalize(x).contiguous(memory_format=torch.channels_last)
        # No autocast context at all in fp32: older torch refuses one for MPS even when disabled.
        autocast = torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast:
            out = self.module(x)
        return F.normalize(out.float(), dim=1).cpu().numpy()

    def __repr__(self) -> str:
        return f"Extractor(model={self.spec.model!r}, layer={self.spec.layer!r}, dim={self.dim}, device='{self.device}')"


def create_extractor(
    name: str = DEFAULT_MODEL,
    layer: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    *,
    weights: str | os.PathLike | None = None,
    num_workers: int | None = None,
    precision: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Extractor:
    """Build an extractor for a registered model.

    Args:
        name: registry name (see ``list_models()``) or ``timm:<name>``.
        layer: an earlier graph node to tap and average-pool (``list_layers(name)``);
            default is the model's penultimate embedding.
        device: ``"auto"``/None (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        batch_size: images per forward pass.
        weights: a state dict file instead of the pretrained weights.
        num_workers: decoding processes for ``embed_paths``; default depends on the device.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        max_pixels: larger images are recorded as failures instead of decoded.

    Raises:
        UnknownModelError, UnknownLayerError, WeightsNotFoundError, InvalidWeightsError,
        MissingDependencyError, LookalikeError (bad device or precision).
    """
    spec = get_model_spec(name)
    resolved = resolve_device(device)
    _check_arguments(batch_size, precision, resolved)  # fail fast, before loading weights
    backbone = build_backbone(spec, layer=layer, weights=weights)
    return Extractor(
        spec, backbone, device=resolved, batch_size=batch_size, num_workers=num_workers, precision=precision, max_pixels=max_pixels
    )


def extractor_for_spec(spec: dict, *, weights: str | os.PathLike | None = None, **options) -> Extractor:
    """An extractor that makes vectors the way a stored spec (``EmbeddingSpec.to_dict()``) says.

    Args:
        spec: the stored record; its model and layer are rebuilt.
        weights: the weights file it was made with, if not the pretrained weights.
        options: for ``create_extractor`` (device, batch_size, num_workers...).

    Raises:
        SpecMismatchError: the model built here makes different vectors (other weights or preprocessing).
    """
    stored = EmbeddingSpec.from_dict(spec)
    default_layer = get_model_spec(stored.model).feature_node or "pre_logits"
    layer = None if stored.layer == default_layer else stored.layer
    extractor = create_extractor(stored.model, layer=layer, weights=weights, **options)
    differences = extractor.spec.differences(stored)
    if differences:
        raise SpecMismatchError(
            f"{stored.model} here makes different vectors than the ones stored ({'; '.join(differences)}): "
            f"install the same weights, or re-embed with --reset / retrain"
        )
    return extractor


def _to_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to the device in channels_last, which convolutions run faster in; some graphs (5-D) refuse it."""
    try:
        return module.to(device, memory_format=torch.channels_last).eval()
    except RuntimeError:
        return module.to(device).eval()


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("lookalike", "torch", "torchvision", "timm", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
