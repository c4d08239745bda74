"""Which device runs the network, decided without importing torch where no GPU can exist.

Importing torch costs about two seconds on a small machine, more than embedding a query
image. So ``auto`` first asks the operating system whether a GPU could be there (NVIDIA or
AMD device nodes, Apple silicon); only then is torch imported to ask CUDA or MPS.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from typing import TYPE_CHECKING

from ...errors import LookalikeError

if TYPE_CHECKING:
    import torch

AUTO = ("auto", None)


def gpu_possible() -> bool:
    """False only where no CUDA, ROCm or MPS device can be visible to torch (then it need not be imported)."""
    if "torch" in sys.modules:  # already paid for: ask it
        return resolve_device("auto").type != "cpu"
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return os.path.exists("/dev/kfd")  # ROCm ignores CUDA_VISIBLE_DEVICES
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd") or os.path.exists("/proc/driver/nvidia")


def is_cpu(device) -> bool:
    """Whether a device argument (str, torch.device or None) means the CPU, importing torch only if it must."""
    if device in AUTO:
        return not gpu_possible()
    return str(device) == "cpu"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA, then MPS, then CPU. An explicit device must exist.

    Raises:
        LookalikeError: the device asked for is not available here.
    """
    import torch

    if device in AUTO:
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


def all_devices(requested: str | torch.device | None, resolved: torch.device) -> list[torch.device]:
    """Every visible GPU for ``auto``/``cuda`` (one lane each); otherwise just the one asked for."""
    import torch

    if resolved.type == "cuda" and resolved.index is None and str(requested or "auto") in ("auto", "cuda"):
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [resolved]
