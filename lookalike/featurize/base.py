"""The extractor interface: ``Extractor`` (images in, L2-normalised float32 vectors out), ``Batch``
and ``normalize_rows``. The runtimes (``runtimes/``) implement it; ``extractor.py`` builds one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import NamedTuple

import numpy as np
from PIL import Image

from .images.decode import upright_rgb
from .images.failures import Failure
from .models.registry import ModelSpec
from .models.spec import EmbeddingSpec
from .options import EmbedOptions


class Batch(NamedTuple):
    """One batch of results: ``vectors[i]`` belongs to ``keys[i]``; ``failures`` got no vector.

    ``facts`` holds, by key, what decoding learnt of each file read (``images.facts.FileFacts``:
    content hash, pixel size, EXIF date), where the runtime collects it.
    """

    keys: list[str]
    vectors: np.ndarray
    failures: list[Failure]
    facts: dict | None = None


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise each row, as ``torch.nn.functional.normalize`` does (eps 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Extractor:
    """Turns images into embeddings with one model. Build it with ``create_extractor``.

    Attributes:
        spec: the ``EmbeddingSpec`` of the vectors it makes.
        runtime: ``"onnxruntime"`` or ``"torch"``.
        options: the ``EmbedOptions`` it was built with.
        batch_size: files per ``Batch`` (the unit decoded, yielded and written).
        forward_batch: images per forward pass of the network.
        num_workers: worker processes for ``embed_paths`` (on ONNX Runtime each decodes and embeds).
    """

    runtime = ""
    # Images per forward pass on a CPU: few enough that a pass's activations stay in the cache
    # (each runtime sets its own; benchmarks/bench_featurize.py sweeps it).
    cpu_forward_batch = 4

    def __init__(self, model_spec: ModelSpec, spec: EmbeddingSpec, options: EmbedOptions, *, num_workers: int):
        self.model_spec = model_spec
        self.spec = dataclasses.replace(spec, versions=versions(), runtime=self.runtime)
        self.options = options
        self.batch_size = options.batch_size
        self.forward_batch = options.forward_batch or min(options.batch_size, self.cpu_forward_batch)
        self.num_workers = num_workers
        self.max_pixels = options.max_pixels

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
        pixels = [preprocess.pixels(upright_rgb(image, preprocess.alpha)) for image in images]
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


def versions() -> dict[str, str]:
    """Library versions for the spec's record (package metadata: nothing is imported)."""
    found = {}
    for package in ("lookalike", "torch", "torchvision", "onnxruntime", "timm", "pillow"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
