"""The torch runtime: decoded batches in, L2-normalised float32 vectors out, on any device.

It owns, in one place, the devices, ``torch.inference_mode()``, autocast, channels_last,
torch.compile, and normalisation of pixels and of vectors. Each GPU gets a replica of the
network (a ``Lane``); a ``LanePool`` runs batches on two threads per GPU, so that one
batch's JPEG decoding and host-to-device copy overlap another's forward pass. On a CPU the
network runs in micro-batches of ``forward_batch`` images, which stay in the CPU's cache.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ImageLoadError, LookalikeError, TransientError
from ..base import Batch, Extractor
from ..images.decode import load_image
from ..images.failures import Failure, raise_if_transient, transient_error
from ..images.jpeg import decode_jpegs, device_decoding_available
from ..images.reader import Decoded, default_num_workers, make_loader
from ..models.backbone import Backbone
from ..models.registry import ModelSpec
from ..models.spec import EmbeddingSpec
from ..options import PRECISIONS, EmbedOptions
from .lanes import Lane, LanePool

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32.

    ``precision="auto"`` is fp16 autocast on CUDA, fp32 elsewhere. Not bf16: its 8-bit
    mantissa moves EfficientNet-Lite0 vectors to cosine ~0.9988 of fp32, fp16's to 0.99997.
    """
    if precision not in PRECISIONS:
        raise LookalikeError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return _DTYPES.get(precision)


class TorchExtractor(Extractor):
    """Embeds with torch on a CPU, CUDA GPUs or MPS. Build it with ``create_extractor``."""

    runtime = "torch"
    cpu_forward_batch = 4  # fastest for torch on this project's 2-core machine (issue #9: 114 images/s, 52 at 32)

    def __init__(self, model_spec: ModelSpec, backbone: Backbone, options: EmbedOptions, *, device: torch.device,
                 devices: Sequence[torch.device] | None = None):
        self.autocast_dtype = autocast_dtype(options.precision, device)
        if options.forward_batch is None and device.type != "cpu":
            options = options.replace(forward_batch=options.batch_size)
        spec = EmbeddingSpec(model_spec.name, backbone.weights_sha256, backbone.layer, backbone.dim, model_spec.preprocessing)
        super().__init__(model_spec, spec, options,
                         num_workers=default_num_workers(device) if options.workers is None else options.workers)
        self.devices = list(devices) if devices else [device]
        self.device = self.devices[0]
        self.compiled = options.compile
        self.jpeg_on_device = device_decoding_available(device) if options.gpu_decode is None else options.gpu_decode
        self.module = _to_device(backbone.module, self.device)
        modules = [self.module] + [_to_device(copy.deepcopy(self.module), d) for d in self.devices[1:]]
        if options.compile:
            modules = [torch.compile(m) for m in modules]
        self._lanes = [Lane(d, m) for d, m in zip(self.devices, modules)]
        self._warm = not options.compile
        self._warm_lock = threading.Lock()
        self.threads_per_gpu = 2  # on an H200, 4 were no faster
        self._pool: LanePool | None = None

    def _embed_files(self, keys: list[str], num_workers: int) -> Iterator[Batch]:
        """On a GPU, JPEGs are decoded there in batches (nvJPEG) unless built with
        ``jpeg_on_device=False``; other files, and JPEGs it refuses, on the CPU."""
        loader = make_loader(
            keys,
            self.model_spec.preprocessing,
            batch_size=self.batch_size,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            max_pixels=self.max_pixels,
            jpeg_on_device=self.jpeg_on_device,
        )
        self._warm_up()
        try:
            yield from self.lane_pool().map_in_order(self._embed_batch, loader)
        except RuntimeError as e:
            if "DataLoader worker" in str(e):  # it died: killed (by the kernel's OOM killer?) or crashed
                raise transient_error("a decoding worker process", f"it died ({str(e).splitlines()[0]})") from e
            raise

    def lane_pool(self) -> LanePool:
        """The threads that run batches: ``threads_per_gpu`` per GPU, one on a CPU; kept for reuse,
        since a new thread pays again for its CUDA stream, cuDNN handle and convolution plans."""
        with self._warm_lock:
            threads = self.threads_per_gpu if self.device.type == "cuda" else 1
            if self._pool is None or self._pool.threads_per_lane != threads:
                self._pool = LanePool(self._lanes, threads)
            return self._pool

    def _embed_batch(self, decoded: Decoded, lane: Lane) -> Batch:
        if decoded.transient:
            raise TransientError(decoded.transient)
        keys, pixels, failures = decoded.keys, decoded.pixels, list(decoded.failures)
        if decoded.jpeg_info:
            keys, pixels, more = self._decode_on_device(decoded, lane.device)
            failures += more
        if pixels is None:
            return Batch(keys, np.zeros((0, self.dim), dtype=np.float32), failures)
        return Batch(keys, self._forward(pixels, lane), failures)

    def _decode_on_device(self, decoded: Decoded, device: torch.device) -> tuple[list[str], torch.Tensor | None, list[Failure]]:
        """Decode a batch's JPEGs on the device and put every row in key order; the CPU takes what it refuses."""
        preprocess = self.model_spec.preprocessing
        jpegs = decoded.jpegs
        images = decode_jpegs(jpegs, device)
        done, failures = {}, []
        for jpeg, image in zip(jpegs, images):
            try:
                if image is not None:
                    done[jpeg.key] = preprocess.resize_tensor(image, jpeg.draft_scale)
                else:
                    cpu_image = load_image(jpeg.key, max_pixels=self.max_pixels, draft_size=preprocess.resize_size)
                    done[jpeg.key] = preprocess(cpu_image).to(device)
            except ImageLoadError as e:
                failures.append(Failure(jpeg.key, e.reason))
            except Exception as e:  # noqa: BLE001 - as in the reader: one file's problem, unless it is the machine's
                raise_if_transient(e, f"preprocessing {jpeg.key} on {device}")
                failures.append(Failure(jpeg.key, f"cannot preprocess: {e}"))
        rows = iter(decoded.pixels.to(device, non_blocking=True)) if decoded.pixels is not None else iter(())
        encoded = {jpeg.key for jpeg in jpegs}
        keys, pixels = [], []
        for key in decoded.keys:
            row = done.get(key) if key in encoded else next(rows)
            if row is not None:
                keys.append(key)
                pixels.append(row)
        return keys, torch.stack(pixels) if pixels else None, failures

    def _warm_up(self) -> None:
        """Compile each replica on a full dummy batch before the threads share it (once)."""
        with self._warm_lock:
            if self._warm:
                return
            crop = self.model_spec.preprocessing.crop_size
            for lane in self._lanes:
                logger.info("compiling %s on %s (first batch only)", self.spec.model, lane.device)
                self._forward(torch.zeros((self.forward_batch, 3, crop, crop), dtype=torch.uint8), lane)
            self._warm = True

    def _embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._forward(torch.from_numpy(pixels))

    def _forward(self, pixels: torch.Tensor, lane: Lane | None = None) -> np.ndarray:
        """L2-normalised vectors of uint8 pixels, ``forward_batch`` images per pass."""
        try:
            chunks = [self._forward_chunk(pixels[i : i + self.forward_batch], lane)
                      for i in range(0, len(pixels), self.forward_batch)]
        except Exception as e:  # noqa: BLE001 - only out-of-memory is turned into TransientError
            raise_if_transient(e, f"running {self.spec.model} on {len(pixels)} images on {self.device}")
            raise
        return np.concatenate(chunks)

    @torch.inference_mode()
    def _forward_chunk(self, pixels: torch.Tensor, lane: Lane | None) -> np.ndarray:
        device, module = lane or self._lanes[0]
        n = len(pixels)
        if self.compiled and n < self.forward_batch:  # one shape, so torch.compile never recompiles
            pixels = torch.cat([pixels, pixels.new_zeros((self.forward_batch - n, *pixels.shape[1:]))])
        x = pixels.to(device, non_blocking=True)
        x = self.model_spec.preprocessing.normalize(x).contiguous(memory_format=torch.channels_last)
        # No autocast context at all in fp32: older torch refuses one for MPS even when disabled.
        autocast = torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast:
            out = module(x)[:n]
        vectors = F.normalize(out.float(), dim=1).cpu().numpy()
        if self.autocast_dtype == torch.float16 and not np.isfinite(vectors).all():
            logger.warning("fp16 overflowed in %s: this batch is recomputed in fp32", self.spec.model)
            vectors = F.normalize(module(x)[:n].float(), dim=1).cpu().numpy()
        return vectors

    def __repr__(self) -> str:
        devices = ", ".join(str(d) for d in self.devices)
        return f"Extractor(model={self.spec.model!r}, layer={self.spec.layer!r}, dim={self.dim}, device='{devices}', runtime='torch')"


def _to_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to the device in channels_last, which convolutions run faster in; some graphs (5-D) refuse it."""
    try:
        return module.to(device, memory_format=torch.channels_last).eval()
    except RuntimeError:
        return module.to(device).eval()
