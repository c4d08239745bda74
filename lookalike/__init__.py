"""lookalike: pretrained-CNN embeddings for image similarity search and small-data classifiers.

The public names are imported lazily so that ``lookalike --help`` doesn't pay for torch.
"""

from .errors import LookalikeError

__version__ = "0.1.0"

_FEATURIZE = ("EmbeddingSpec", "Extractor", "create_extractor", "list_layers", "list_models")

__all__ = ["LookalikeError", "__version__", "open_store", *_FEATURIZE]


def __getattr__(name: str):
    if name in _FEATURIZE:
        from . import featurize

        return getattr(featurize, name)
    if name == "open_store":
        from .indexing import open_store

        return open_store
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
