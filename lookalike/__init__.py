"""lookalike: pretrained-CNN embeddings for image similarity search and small-data classifiers.

The public doors, in a few names (imported lazily, so that ``lookalike --help`` doesn't pay for torch):

    index_folder(root, ...)   embed the images under a folder into its store (incremental)
    open_store(path)          a store to search: search, similar, duplicate_groups, check, export
    create_extractor(name)    images in, L2-normalised vectors out, without a store
    EmbedOptions(...)         how the network runs: device, batch size, workers, runtime...
"""

from .errors import LookalikeError
from .version import __version__

_WHERE = {
    "index_folder": "indexing",
    "open_store": "indexing",
    "IndexSummary": "indexing",
    "Store": "store.store",
    "Hit": "store.neighbours",
    "EmbedOptions": "featurize.options",
    "create_extractor": "featurize.extractor",
    "Extractor": "featurize.base",
    "EmbeddingSpec": "featurize.models.spec",
    "list_models": "featurize.models.registry",
    "list_layers": "featurize.models.backbone",
}

__all__ = ["LookalikeError", "__version__", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
