"""Images in, L2-normalised embeddings out. Knows nothing of FAISS or stores.

Names are imported on first use (PEP 562), so that importing a light part (the registry,
decoding, the ONNX Runtime path) never pulls in torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "list_layers": "backbone",
    "DEFAULT_MAX_PIXELS": "decode",
    "IMAGE_EXTENSIONS": "decode",
    "load_image": "decode",
    "resolve_device": "devices",
    "Batch": "extractor",
    "Extractor": "extractor",
    "RUNTIMES": "extractor",
    "create_extractor": "extractor",
    "extractor_for_spec": "extractor",
    "Failure": "failures",
    "Preprocessing": "preprocess",
    "DEFAULT_MODEL": "registry",
    "ModelSpec": "registry",
    "get_model_spec": "registry",
    "list_models": "registry",
    "register_model": "registry",
    "EmbeddingSpec": "spec",
    "weights_available": "weights",
}

__all__ = [*_WHERE]  # noqa: PLE0604, PLE0605 - the names above, imported on first use


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
