"""Files in, batches of uint8 pixels out, without torch: the ONNX Runtime path's decoding.

``embed_pool.py``'s workers run ``decode_batch`` on their files (the torch path's DataLoader
in ``reader.py`` runs the same ``file_pixels`` per file). A file that fails becomes a
``Failure`` beside its batch and never shifts a key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from ...errors import ImageLoadError
from .decode import DEFAULT_MAX_PIXELS, load_image
from .failures import Failure, raise_if_transient
from .preprocess import Preprocessing


class PixelBatch(NamedTuple):
    """One batch, in input order: ``pixels`` (uint8, N x 3 x H x W, or None) row-aligned with ``keys``."""

    keys: list[str]
    pixels: np.ndarray | None
    failures: list[Failure]


def file_pixels(path: str, preprocessing: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray | None, str | None]:
    """(pixels, None) for a usable image, (None, reason) for a bad file.

    Raises:
        TransientError: the failure is not the file's (out of memory, I/O error).
    """
    try:
        image = load_image(path, max_pixels=max_pixels, draft_size=preprocessing.resize_size,
                           alpha=preprocessing.alpha)
        return preprocessing.pixels(image), None
    except ImageLoadError as e:
        return None, e.reason
    except Exception as e:  # noqa: BLE001 - preprocessing trouble is also one file's problem
        raise_if_transient(e, f"preprocessing {path}")
        return None, f"cannot preprocess: {e}"


def decode_batch(paths: Sequence[str], preprocessing: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS) -> PixelBatch:
    """Decode and preprocess ``paths`` (one worker's task)."""
    keys, rows, failures = [], [], []
    for path in paths:
        pixels, reason = file_pixels(path, preprocessing, max_pixels)
        if pixels is None:
            failures.append(Failure(path, reason))
        else:
            keys.append(path)
            rows.append(pixels)
    return PixelBatch(keys, np.stack(rows) if rows else None, failures)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decoded_batches(paths: Sequence[str], preprocessing: Preprocessing, *, batch_size: int,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[PixelBatch]:
    """``decode_batch`` over consecutive ``batch_size`` slices of ``paths``, in order, in this process.

    (With worker processes, ``embed_pool.py`` decodes each file where it is embedded.)
    """
    for i in range(0, len(paths), batch_size):
        yield decode_batch(paths[i : i + batch_size], preprocessing, max_pixels)
