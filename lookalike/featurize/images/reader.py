"""Files in, uint8 tensors out, for the torch runtime: decoding on DataLoader workers, in order.

A file that fails becomes a ``Failure`` carried beside the batch, so a bad image costs
one record and never shifts which key belongs to which vector. Trouble that is not a
file's (``TransientError``) travels back as ``Decoded.transient`` and the extractor raises
it in the caller's process with its own message. With ``jpeg_on_device``, workers only read
JPEGs (``EncodedJpeg``) for the extractor to decode on the GPU. The ONNX Runtime path reads
with ``batches.py`` instead, which needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from ...errors import TransientError
from .batches import available_cpus, file_pixels
from .decode import DEFAULT_MAX_PIXELS
from .failures import Failure
from .jpeg import EncodedJpeg, read_jpeg
from .preprocess import MAX_ASPECT_RATIO, Preprocessing

__all__ = ["Decoded", "Failure", "ImageFiles", "collate", "default_num_workers", "make_loader"]


class Decoded(NamedTuple):
    """One collated batch, in input order.

    Without JPEGs left to decode, ``pixels`` (uint8, N x 3 x H x W, or None) is row-aligned
    with ``keys``. Otherwise ``jpegs`` holds those still encoded, and ``pixels`` the rows
    of the other keys, in order.
    """

    keys: list[str]
    pixels: torch.Tensor | None
    failures: list[Failure]
    jpeg_bytes: torch.Tensor | None = None
    jpeg_info: list[tuple[str, int, int, int]] = []  # (key, length, orientation, draft_scale)
    transient: str | None = None  # a TransientError's message, raised by the extractor

    @property
    def jpegs(self) -> list[EncodedJpeg]:
        """The JPEGs left to decode, their bytes as views into one tensor."""
        jpegs, start = [], 0
        for key, length, orientation, draft_scale in self.jpeg_info:
            jpegs.append(EncodedJpeg(key, self.jpeg_bytes[start : start + length], orientation, draft_scale))
            start += length
        return jpegs

    def pin_memory(self) -> Decoded:
        """Pin only the pixels (DataLoader's ``pin_memory=True`` calls this), never the JPEG bytes."""
        return self._replace(pixels=None if self.pixels is None else self.pixels.pin_memory())


class ImageFiles(Dataset):
    """Item i is (key, uint8 tensor or EncodedJpeg or None, failure reason or None) for ``paths[i]``."""

    def __init__(
        self,
        paths: Sequence[str],
        preprocessing: Preprocessing,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        jpeg_on_device: bool = False,
    ):
        self.paths = paths
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels
        self.jpeg_on_device = jpeg_on_device

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | EncodedJpeg | None, str | None]:
        """(key, pixels or EncodedJpeg, None), (key, None, reason) for a bad file, or
        (key, None, TransientError) for trouble that is not the file's."""
        path = self.paths[i]
        try:
            if self.jpeg_on_device:
                jpeg = read_jpeg(
                    path, max_pixels=self.max_pixels, draft_size=self.preprocessing.resize_size,
                    max_aspect_ratio=MAX_ASPECT_RATIO,
                )
                if jpeg is not None:
                    return path, jpeg, None
            pixels, reason = file_pixels(path, self.preprocessing, self.max_pixels)
        except TransientError as e:  # returned, not raised: DataLoader would bury it in a traceback
            return path, None, e
        return path, None if pixels is None else torch.from_numpy(pixels), reason


def collate(items: list[tuple[str, torch.Tensor | EncodedJpeg | None, str | None]]) -> Decoded:
    keys = [key for key, pixels, _ in items if pixels is not None]
    tensors = [pixels for _, pixels, _ in items if isinstance(pixels, torch.Tensor)]
    jpegs = [pixels for _, pixels, _ in items if isinstance(pixels, EncodedJpeg)]
    transient = next((str(reason) for _, _, reason in items if isinstance(reason, TransientError)), None)
    failures = [Failure(key, reason) for key, pixels, reason in items if pixels is None and isinstance(reason, str)]
    # One tensor of bytes, so a batch crosses from the worker in one shared-memory segment.
    blob = torch.cat([j.data for j in jpegs]) if jpegs else None
    info = [(j.key, j.data.numel(), j.orientation, j.draft_scale) for j in jpegs]
    return Decoded(keys, torch.stack(tensors) if tensors else None, failures, blob, info, transient)


def default_num_workers(device: torch.device) -> int:
    """Decoding workers for torch: plenty to feed a GPU; on a CPU, leave most cores to the model."""
    cpus = available_cpus()
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
    jpeg_on_device: bool = False,
) -> DataLoader:
    """A DataLoader that decodes ``paths`` in order, with at most ``prefetch_batches`` per worker in flight.

    With ``jpeg_on_device``, JPEGs the device decoder takes are only read (see ``Decoded``).
    """
    dataset = ImageFiles(paths, preprocessing, max_pixels, jpeg_on_device)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_batches if num_workers > 0 else None,
    )
