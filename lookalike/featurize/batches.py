"""Files in, batches of uint8 pixels out, without torch: decoding on a pool of worker processes.

This is the reader of the ONNX Runtime path (the torch path's DataLoader in ``reader.py``
runs the same ``file_pixels`` per file). Batches come back in input order with at most
``prefetch`` per worker in flight, so memory stays flat however many files there are; a
file that fails becomes a ``Failure`` beside its batch and never shifts a key.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

import numpy as np

from ..errors import ImageLoadError
from .decode import DEFAULT_MAX_PIXELS, load_image
from .failures import Failure, raise_if_transient, transient_error
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
        image = load_image(path, max_pixels=max_pixels, draft_size=preprocessing.resize_size)
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


def decoded_batches(
    paths: Sequence[str],
    preprocessing: Preprocessing,
    *,
    batch_size: int,
    num_workers: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    prefetch: int = 2,
) -> Iterator[PixelBatch]:
    """``decode_batch`` over consecutive ``batch_size`` slices of ``paths``, in order.

    With ``num_workers`` > 0 the slices are decoded on that many processes (forked where the
    platform allows: they start in milliseconds and import nothing), at most ``prefetch``
    slices per worker ahead of the consumer.

    Raises:
        TransientError: a worker hit trouble that is not a file's, or died (killed, out of memory).
    """
    chunks = (paths[i : i + batch_size] for i in range(0, len(paths), batch_size))
    if num_workers <= 0:
        for chunk in chunks:
            yield decode_batch(chunk, preprocessing, max_pixels)
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(num_workers, mp_context=context)
    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(decode_batch, chunk, preprocessing, max_pixels))
            if len(pending) >= num_workers * prefetch:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _result(future) -> PixelBatch:
    try:
        return future.result()
    except BrokenProcessPool as e:
        raise transient_error("a decoding worker process", "it died (killed, perhaps for lack of memory)") from e
