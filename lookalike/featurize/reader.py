"""Files in, uint8 tensors out: decoding and resizing on DataLoader workers, in order.

A file that fails becomes a ``Failure`` carried beside the batch, so a bad image costs
one record and never shifts which key belongs to which vector.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ImageLoadError
from .decode import DEFAULT_MAX_PIXELS, load_image
from .preprocess import Preprocessing


class Failure(NamedTuple):
    """A file that yielded no vector, and why."""

    key: str
    reason: str


class Decoded(NamedTuple):
    """One collated batch: ``pixels`` (uint8, N x 3 x H x W, or None) row-aligned with ``keys``."""

    keys: list[str]
    pixels: torch.Tensor | None
    failures: list[Failure]


class ImageFiles(Dataset):
    """Item i is (key, uint8 tensor or None, failure reason or None) for ``paths[i]``."""

    def __init__(self, paths: Sequence[str], preprocessing: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths = paths
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | None, str | None]:
        path = self.paths[i]
        try:
            image = load_image(path, max_pixels=self.max_pixels, draft_size=self.preprocessing.resize_size)
            return path, self.preprocessing(image), None
        except ImageLoadError as e:
            return path, None, e.reason
        except Exception as e:  # noqa: BLE001 - preprocessing trouble is also one file's problem
            return path, None, f"cannot preprocess: {e}"


def collate(items: list[tuple[str, torch.Tensor | None, str | None]]) -> Decoded:
    keys = [key for key, pixels, _ in items if pixels is not None]
    tensors = [pixels for _, pixels, _ in items if pixels is not None]
    failures = [Failure(key, reason) for key, pixels, reason in items if pixels is None]
    return Decoded(keys, torch.stack(tensors) if tensors else None, failures)


def default_num_workers(device: torch.device) -> int:
    """Decoding workers: plenty to feed a GPU; on a CPU, leave most cores to the model."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return min(8, cpus)
    return max(1, min(4, cpus // 2))


def make_loader(
    paths: Sequence[str],
    preprocessing: Preprocessing,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
    prefetch_batches: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DataLoader:
    """A DataLoader that decodes ``paths`` in order, with at most ``prefetch_batches`` per worker in flight."""
    dataset = ImageFiles(paths, preprocessing, max_pixels)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_batches if num_workers > 0 else None,
    )
