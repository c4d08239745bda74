"""Images in, L2-normalised float32 vectors out: the ``Extractor`` interface and ``create_extractor``.

Two runtimes run the same network. ONNX Runtime (``onnx_runtime.py``) is the CPU's: the
network is exported once and cached, and a process that finds the export of a stored spec
in the cache embeds without importing torch. torch (``torch_extractor.py``) runs CUDA, MPS,
reduced precision and ``torch.compile``, and any network the exporter can't take.
``runtime="auto"`` picks ONNX Runtime on the CPU and torch elsewhere; vectors from either
are interchangeable (the export is verified against torch), so the spec records the
runtime without comparing it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from ..errors import LookalikeError, OnnxExportError, SpecMismatchError
from .decode import DEFAULT_MAX_PIXELS, upright_rgb
from .devices import is_cpu
from .failures import Failure
from .registry import DEFAULT_MODEL, ModelSpec, get_model_spec
from .spec import EmbeddingSpec

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnx", "torch")


class Batch(NamedTuple):
    """One batch of results: ``vectors[i]`` belongs to ``keys[i]``; ``failures`` got no vector."""

    keys: list[str]
    vectors: np.ndarray
    failures: list[Failure]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise each row, as ``torch.nn.functional.normalize`` does (eps 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Extractor:
    """Turns images into embeddings with one model. Build it with ``create_extractor``.

    Attributes:
        spec: the ``EmbeddingSpec`` of the vectors it makes.
        runtime: ``"onnxruntime"`` or ``"torch"``.
        batch_size: files per ``Batch`` (the unit decoded, yielded and written).
        forward_batch: images per forward pass of the network.
        num_workers: worker processes for ``embed_paths`` (on ONNX Runtime each decodes and embeds).
    """

    runtime = ""
    # Images per forward pass on a CPU: few enough that a pass's activations stay in the cache
    # (each runtime sets its own; benchmarks/bench_featurize.py sweeps it).
    cpu_forward_batch = 4

    def __init__(self, model_spec: ModelSpec, spec: EmbeddingSpec, *, batch_size: int, forward_batch: int | None,
                 num_workers: int, max_pixels: int):
        check_batch_sizes(batch_size, forward_batch)
        self.model_spec = model_spec
        self.spec = dataclasses.replace(spec, versions=versions(), runtime=self.runtime)
        self.batch_size = batch_size
        self.forward_batch = forward_batch or min(batch_size, self.cpu_forward_batch)
        self.num_workers = num_workers
        self.max_pixels = max_pixels

    @property
    def dim(self) -> int:
        return self.spec.dim

    def close(self) -> None:
        """End any worker processes the extractor started (it still works: they start again on use)."""

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def embed_images(self, images: Iterable[Image.Image]) -> np.ndarray:
        """Embed in-memory PIL images (any mode; EXIF orientation applied).

        Returns float32 (N, dim), L2-normalised, in input order. Large JPEGs embedded through
        ``embed_paths`` decode in draft mode and differ slightly (cosine ~0.995) from the same
        file fully decoded and passed here; ``embed_paths`` is the consistent route for files.

        Raises:
            ValueError: an image is thinner than 1:100.
        """
        preprocess = self.model_spec.preprocessing
        pixels = [preprocess.pixels(upright_rgb(image)) for image in images]
        if not pixels:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self._embed_pixels(np.stack(pixels[i : i + self.batch_size]))
                               for i in range(0, len(pixels), self.batch_size)])

    def embed_paths(self, paths: Iterable[str | os.PathLike], *, num_workers: int | None = None) -> Iterator[Batch]:
        """Embed image files, decoding on worker processes with bounded look-ahead.

        Args:
            paths: image files; each key is the path as given (``os.fspath``).
            num_workers: worker processes (0 works in this process); default as built.

        Yields:
            ``Batch(keys, vectors, failures)`` in input order, one per ``batch_size`` paths.
            Files that can't be decoded are in ``failures`` with a reason, never raised.

        Raises:
            TransientError: trouble that is not a file's (out of memory, an I/O error): nothing
                is recorded for the batch in hand, and a rerun picks its files up again.
        """
        keys = [os.fspath(p) for p in paths]
        if keys:
            yield from self._embed_files(keys, self.num_workers if num_workers is None else num_workers)

    def _embed_files(self, keys: list[str], num_workers: int) -> Iterator[Batch]:
        """``embed_paths`` for a non-empty list of keys, with the number of workers decided."""
        raise NotImplementedError

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """L2-normalised vectors of uint8 pixels (N, 3, H, W)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"Extractor(model={self.spec.model!r}, layer={self.spec.layer!r}, dim={self.dim}, "
                f"device='cpu', runtime={self.runtime!r})")


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
    compile: bool = False,
    jpeg_on_device: bool | None = None,
    runtime: str = "auto",
    forward_batch: int | None = None,
    threads: int | None = None,
) -> Extractor:
    """Build an extractor for a registered model.

    Args:
        name: registry name (see ``list_models()``) or ``timm:<name>``.
        layer: an earlier graph node to tap and average-pool (``list_layers(name)``);
            default is the model's penultimate embedding.
        device: ``"auto"``/None (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
            ``"auto"`` and ``"cuda"`` use every visible GPU, with a copy of the network on each.
        batch_size: images per ``Batch`` that ``embed_paths`` yields (and per GPU forward pass).
        weights: a state dict file instead of the pretrained weights.
        num_workers: processes for ``embed_paths``; on ONNX Runtime each decodes its files and runs its own
            session of ``threads // num_workers`` threads (default one per core); on torch they decode:
            half the cores (at most 4) on a CPU, up to 8 for a GPU.
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
            A batch whose fp16 output overflows is recomputed in fp32.
        max_pixels: larger images are recorded as failures instead of decoded.
        compile: run the network through ``torch.compile`` (a slow first batch, then faster).
        jpeg_on_device: decode JPEGs on the GPU; default: on CUDA, where torchvision has nvJPEG.
        runtime: ``"auto"`` (ONNX Runtime on the CPU in fp32 without compile, else torch),
            ``"onnx"`` or ``"torch"``. The network is exported to ONNX once, verified against torch
            and cached in ``$LOOKALIKE_CACHE`` (default ``~/.cache/lookalike``); where that fails,
            ``auto`` logs one warning and runs on torch.
        forward_batch: images per forward pass on the CPU (default 2 on ONNX Runtime, 4 on torch: a pass that fits the cache).
        threads: the ONNX Runtime network's threads (default: every core), shared out among the workers;
            in this process (no workers), past 8, several sessions of up to 8 threads run batches side by side.

    Raises:
        UnknownModelError, UnknownLayerError, WeightsNotFoundError, InvalidWeightsError,
        MissingDependencyError, LookalikeError (bad device, precision or runtime),
        OnnxExportError (``runtime="onnx"`` for a network that can't be exported).
    """
    spec = get_model_spec(name)
    use_onnx = _wants_onnx(runtime, device, precision, compile, jpeg_on_device)
    check_batch_sizes(batch_size, forward_batch)
    if not use_onnx:
        from .devices import resolve_device
        from .torch_extractor import autocast_dtype

        autocast_dtype(precision, resolve_device(device))  # fail fast, before loading weights
    from .backbone import build_backbone

    backbone = build_backbone(spec, layer=layer, weights=weights)
    embedding = EmbeddingSpec(spec.name, backbone.weights_sha256, backbone.layer, backbone.dim, spec.preprocessing)
    common = dict(batch_size=batch_size, forward_batch=forward_batch, num_workers=num_workers, max_pixels=max_pixels)
    if use_onnx:
        try:
            return _onnx_from_backbone(spec, backbone, embedding, threads=threads, **common)
        except OnnxExportError as e:
            if runtime == "onnx":
                raise OnnxExportError(f"{spec.name} cannot run on ONNX Runtime: {e}. Use --runtime torch (or auto)") from e
            logger.warning("%s runs on torch: its ONNX export failed (%s)", spec.name, e)
    return _torch(spec, backbone, device=device, precision=precision, compile=compile,
                  jpeg_on_device=jpeg_on_device, **common)


def extractor_for_spec(spec: dict, *, weights: str | os.PathLike | None = None, **options) -> Extractor:
    """An extractor that makes vectors the way a stored spec (``EmbeddingSpec.to_dict()``) says.

    On the CPU with ONNX Runtime, an export of that very network (same weights sha256) found
    in the cache is used as it is: neither torch nor the weights file is loaded.

    Args:
        spec: the stored record; its model and layer are rebuilt.
        weights: the weights file it was made with, if not the pretrained weights.
        options: for ``create_extractor`` (device, batch_size, num_workers, runtime...).

    Raises:
        SpecMismatchError: the model built here makes different vectors (other weights or preprocessing).
    """
    stored = EmbeddingSpec.from_dict(spec)
    model_spec = get_model_spec(stored.model)
    if _wants_onnx(options.get("runtime", "auto"), options.get("device"), options.get("precision", "auto"),
                   options.get("compile", False), options.get("jpeg_on_device")) and model_spec.preprocessing == stored.preprocessing:
        cached = _cached_onnx(model_spec, stored, options)
        if cached is not None:
            return cached
    default_layer = model_spec.feature_node or "pre_logits"
    layer = None if stored.layer == default_layer else stored.layer
    extractor = create_extractor(stored.model, layer=layer, weights=weights, **options)
    differences = extractor.spec.differences(stored)
    if differences:
        raise SpecMismatchError(
            f"{stored.model} here makes different vectors than the ones stored ({'; '.join(differences)}): "
            f"install the same weights, or re-embed with --reset / retrain"
        )
    return extractor


def check_batch_sizes(batch_size: int, forward_batch: int | None) -> None:
    if batch_size < 1:
        raise LookalikeError(f"batch_size must be at least 1, not {batch_size}")
    if forward_batch is not None and forward_batch < 1:
        raise LookalikeError(f"forward_batch must be at least 1, not {forward_batch}")


def versions() -> dict[str, str]:
    """Library versions for the spec's record (package metadata: nothing is imported)."""
    found = {}
    for package in ("lookalike", "torch", "torchvision", "onnxruntime", "timm", "pillow"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _wants_onnx(runtime: str, device, precision: str, compile: bool, jpeg_on_device: bool | None) -> bool:
    """Whether to run on ONNX Runtime; raises where ``runtime="onnx"`` can't honour the other options."""
    if runtime not in RUNTIMES:
        raise LookalikeError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "torch":
        return False
    conflicts = [what for what, bad in (
        (f"device {device}", not is_cpu(device)),
        (f"precision {precision}", precision not in ("auto", "fp32")),
        ("compile", compile),
        ("GPU decoding", bool(jpeg_on_device)),
    ) if bad]
    if runtime == "onnx" and conflicts:
        raise LookalikeError(f"the ONNX runtime runs fp32 on the CPU, not with {', '.join(conflicts)}: use --runtime torch or auto")
    return not conflicts


def _onnx_from_backbone(model_spec, backbone, embedding, *, threads, batch_size, forward_batch, num_workers, max_pixels):
    from .onnx_export import cached_export
    from .onnx_runtime import THREADS_PER_SESSION, OnnxExtractor, default_threads, default_workers, sessions

    workers = default_workers() if num_workers is None else num_workers
    threads = threads or default_threads()
    network = cached_export(backbone, embedding, threads=min(threads, THREADS_PER_SESSION), spinning=False)
    return OnnxExtractor(model_spec, embedding, sessions(network, threads), batch_size=batch_size,
                         forward_batch=forward_batch, num_workers=workers, max_pixels=max_pixels)


def _cached_onnx(model_spec: ModelSpec, stored: EmbeddingSpec, options: dict) -> Extractor | None:
    """An ONNX Runtime extractor from the cached export of ``stored``, or None if there is none."""
    from .onnx_cache import export_key, model_path
    from .onnx_runtime import THREADS_PER_SESSION, OnnxExtractor, default_threads, default_workers, open_network, sessions

    batch_size, forward_batch = options.get("batch_size", 32), options.get("forward_batch")
    check_batch_sizes(batch_size, forward_batch)
    workers = options.get("num_workers")
    workers = default_workers() if workers is None else workers
    threads = options.get("threads") or default_threads()
    key = export_key(stored)
    network = open_network(model_path(stored, key), key, threads=min(threads, THREADS_PER_SESSION), spinning=False)
    if network is None:
        return None
    return OnnxExtractor(model_spec, stored, sessions(network, threads), batch_size=batch_size, forward_batch=forward_batch,
                         num_workers=workers, max_pixels=options.get("max_pixels", DEFAULT_MAX_PIXELS))


def _torch(model_spec, backbone, *, device, precision, compile, jpeg_on_device, **common):
    from .devices import all_devices, resolve_device
    from .torch_extractor import TorchExtractor

    resolved = resolve_device(device)
    return TorchExtractor(model_spec, backbone, device=resolved, precision=precision, compile=compile,
                          jpeg_on_device=jpeg_on_device, devices=all_devices(device, resolved), **common)
