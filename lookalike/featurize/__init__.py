"""Images in, L2-normalised embeddings out. Knows nothing of FAISS or stores.

    base.py       the interface: Extractor, Batch, normalize_rows
    extractor.py  the factory: create_extractor, extractor_for_spec
    options.py    EmbedOptions, how to run the network
    models/       the registry (data), resolve (the one reader of model names), weights, networks, specs
    runtimes/     ONNX Runtime and torch, the worker pool, devices
    images/       discovering, decoding and preprocessing image files

Names are imported on first use (PEP 562), so that importing a light part (the registry,
decoding, the ONNX Runtime path) never pulls in torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Batch": "base",
    "Extractor": "base",
    "create_extractor": "extractor",
    "extractor_for_spec": "extractor",
    "EmbedOptions": "options",
    "RUNTIMES": "options",
    "DEFAULT_MAX_PIXELS": "images.decode",
    "IMAGE_EXTENSIONS": "images.decode",
    "load_image": "images.decode",
    "discover": "images.discover",
    "Failure": "images.failures",
    "Preprocessing": "images.preprocess",
    "list_layers": "models.backbone",
    "DEFAULT_MODEL": "models.registry",
    "ModelSpec": "models.registry",
    "list_models": "models.registry",
    "register_model": "models.registry",
    "get_model_spec": "models.resolve",
    "resolve_model": "models.resolve",
    "EmbeddingSpec": "models.spec",
    "weights_available": "models.weights",
    "resolve_device": "runtimes.devices",
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
