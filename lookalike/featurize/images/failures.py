"""Why a file got no vector: its own fault (a ``Failure``, recorded) or the machine's (transient).

A truncated JPEG stays truncated, so recording it spares the next run the work. An
out-of-memory error, an I/O error or an interrupted read says nothing about the file: it
must never be recorded as the file's failure, or the file would be skipped until it
changes. Those raise ``TransientError`` instead, and indexing stops keeping what it committed.
"""

from __future__ import annotations

import errno
from typing import NamedTuple

from ...errors import TransientError, first_line

# OSErrors that come from the disk, the network file system or the kernel, not the file's bytes.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EINTR, errno.EAGAIN, errno.ENOMEM, errno.ETIMEDOUT, errno.ESTALE})

# How the allocators word running out: torch's CPU and CUDA allocators, ONNX Runtime's arena.
_OUT_OF_MEMORY = ("out of memory", "not enough memory", "failed to allocate memory", "can't allocate memory")


class Failure(NamedTuple):
    """A file that yielded no vector, and why."""

    key: str
    reason: str


def transient_reason(error: BaseException) -> str | None:
    """A few words if ``error`` is the machine's trouble rather than the file's, else None."""
    if isinstance(error, TransientError):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, InterruptedError) or (isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS):
        return f"{error.strerror or type(error).__name__} (errno {error.errno})" if error.errno else "interrupted"
    runtime_error = isinstance(error, RuntimeError) or type(error).__module__.startswith("onnxruntime")
    if runtime_error and any(words in str(error).lower() for words in _OUT_OF_MEMORY):
        return "out of memory: " + first_line(error)
    return None


def transient_error(what: str, reason: str) -> TransientError:
    """The error to raise, saying what failed, why, and that rerunning resumes."""
    return TransientError(
        f"{what} failed: {reason}. This is not the file's fault, so it was not recorded as a failure; "
        f"what was done so far is kept: free memory or fix the disk, then run again to resume"
    )


def raise_if_transient(error: BaseException, what: str) -> None:
    """Raise ``TransientError`` (from ``error``) if it is transient; otherwise return."""
    if isinstance(error, TransientError):
        raise error
    reason = transient_reason(error)
    if reason is not None:
        raise transient_error(what, reason) from error
