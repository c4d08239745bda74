"""Images in, L2-normalised embeddings out. Knows nothing of FAISS or stores."""

from .backbone import list_layers
from .decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_image
from .extractor import Batch, Extractor, create_extractor, extractor_for_spec, resolve_device
from .preprocess import Preprocessing
from .reader import Failure
from .registry import DEFAULT_MODEL, ModelSpec, get_model_spec, list_models, register_model
from .spec import EmbeddingSpec
from .weights import weights_available

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MODEL",
    "IMAGE_EXTENSIONS",
    "Batch",
    "EmbeddingSpec",
    "Extractor",
    "Failure",
    "ModelSpec",
    "Preprocessing",
    "create_extractor",
    "extractor_for_spec",
    "get_model_spec",
    "list_layers",
    "list_models",
    "load_image",
    "register_model",
    "resolve_device",
    "weights_available",
]
