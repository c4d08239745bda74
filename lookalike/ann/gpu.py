"""FAISS on a GPU: whether there is one, and copies of indexes to it and back."""

from __future__ import annotations

import faiss

from ..errors import MissingDependencyError


def gpu_available() -> bool:
    """Whether this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def resolve_gpu(use_gpu: bool | None) -> bool:
    """``None``: a GPU where there is one; ``True`` where there is none raises ``MissingDependencyError``."""
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        raise MissingDependencyError(
            "use_gpu=True, but this faiss has no GPU support or sees no GPU: "
            "pip uninstall faiss-cpu && pip install faiss-gpu, or pass use_gpu=False"
        )
    return bool(use_gpu)


def to_gpu(index: faiss.Index) -> faiss.Index:
    """A copy of a CPU index on GPU 0 (the GPU index keeps its resources alive)."""
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, 0, index)


def to_cpu(index: faiss.Index) -> faiss.Index:
    gpu_index = getattr(faiss, "GpuIndex", None)
    if gpu_index is not None and isinstance(index, gpu_index):
        return faiss.index_gpu_to_cpu(index)
    return index
