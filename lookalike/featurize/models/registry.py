"""Named models: one frozen ``ModelSpec`` per entry, in the spirit of torchvision's ``Weights``
and timm's ``PretrainedCfg``.

A spec says where the weights come from, the preprocessing contract, the graph node whose
output is the embedding (the input of the final classifier), and its dimension. This module
is data: it reads no user's model name (``resolve.py`` does: registry names, ``timm:`` names
and ``.lkft`` files) and builds no network (``backbone.py`` does), so listing is fast and
imports no torch. Imports run one way: registry <- weights <- backbone, registry <- resolve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from ..images.preprocess import INCEPTION_MEAN, INCEPTION_STD, Preprocessing

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "efficientnet_lite0"
POOLED_LOGITS = "pre_logits"  # the layer name of a model whose library pools its own embedding (timm)
MODEL_FILE_SUFFIX = ".lkft"  # a fine-tuned model's file (``lookalike finetune``)
FINETUNED_PREFIX = "finetuned:"  # its name in specs: the prefix and the start of its weights' sha256
FINETUNED_DIGEST_CHARS = 16


@dataclass(frozen=True)
class ModelSpec:
    """One model lookalike knows by name.

    Attributes:
        name: the registry name (``timm:<name>`` for timm models).
        source: where pretrained weights come from: ``"bundled"`` (a Python package),
            ``"torchvision"`` (its weights API), ``"timm"`` (timm's), or anything else for a
            model of your own, which then needs ``weights=PATH``.
        arch: the architecture's name in its source library.
        preprocessing: the input contract of the pretrained weights.
        feature_node: the graph node (torchvision feature-extraction naming) giving the
            embedding; ``None`` where the library's own headless mode is used (timm).
        dim: the embedding dimension at ``feature_node``; ``None`` if known only once built.
        builder: makes the full network (with its classifier) with random weights;
            ``None`` for timm, which builds its own models headless.
    """

    name: str
    source: str
    arch: str
    preprocessing: Preprocessing
    feature_node: str | None
    dim: int | None
    builder: Callable[[], torch.nn.Module] | None = field(default=None, compare=False, repr=False)

    @property
    def default_layer(self) -> str:
        """The layer an embedding taps when none is asked for: ``feature_node``, or timm's pooled pre-logits."""
        return self.feature_node or POOLED_LOGITS


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a spec to the registry; registering a name twice is a bug and raises ``ValueError``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[ModelSpec]:
    """Every registered model, the default first."""
    return sorted(_REGISTRY.values(), key=lambda s: (s.name != DEFAULT_MODEL, s.name))


def finetuned_name(weights_sha256: str) -> str:
    """The name a fine-tuned model goes by in specs and stores, wherever its file lies."""
    return FINETUNED_PREFIX + weights_sha256[:FINETUNED_DIGEST_CHARS]


def is_model_file(name) -> bool:
    """Whether a model name is the path of a ``.lkft`` file."""
    return name is not None and str(name).endswith(MODEL_FILE_SUFFIX)


def is_finetuned_name(name: str) -> bool:
    """Whether a spec's model is a fine-tuned one: ``finetuned:<digest>``, or the path older stores recorded."""
    return name.startswith(FINETUNED_PREFIX) or is_model_file(name)


def registered(name: str) -> ModelSpec | None:
    """The registered model of this name, or None (``resolve.resolve_model`` reads every other kind of name)."""
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    return list(_REGISTRY)


def _build_efficientnet_lite0():
    from .efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0()


def _build_torchvision(arch: str):
    from torchvision.models import get_model

    return get_model(arch, weights=None)


def _torchvision(name: str, dim: int, resize: int, crop: int, interpolation: str = "bilinear", node: str = "flatten"):
    preprocessing = Preprocessing(resize, crop, interpolation)
    register_model(ModelSpec(name, "torchvision", name, preprocessing, node, dim, partial(_build_torchvision, name)))


register_model(
    ModelSpec(
        DEFAULT_MODEL,
        "bundled",
        "efficientnet_lite0",
        Preprocessing(256, 224, "bicubic", INCEPTION_MEAN, INCEPTION_STD),
        "flatten",
        1280,
        _build_efficientnet_lite0,
    )
)

# Preprocessing as in each model's DEFAULT torchvision weights (tests check it against
# ``weights.transforms()``); the node is the input of the last Linear layer.
_torchvision("resnet18", 512, 256, 224)
_torchvision("resnet34", 512, 256, 224)
_torchvision("resnet50", 2048, 232, 224)
_torchvision("resnet101", 2048, 232, 224)
_torchvision("resnet152", 2048, 232, 224)
_torchvision("efficientnet_b0", 1280, 256, 224, "bicubic")
_torchvision("efficientnet_b1", 1280, 255, 240)
_torchvision("efficientnet_b2", 1408, 288, 288, "bicubic")
_torchvision("efficientnet_b3", 1536, 320, 300, "bicubic")
_torchvision("efficientnet_b4", 1792, 384, 380, "bicubic")
_torchvision("efficientnet_v2_s", 1280, 384, 384)
_torchvision("mobilenet_v3_large", 1280, 232, 224, node="classifier.1")
_torchvision("convnext_tiny", 768, 236, 224, node="classifier.1")
_torchvision("convnext_small", 768, 230, 224, node="classifier.1")
_torchvision("convnext_base", 1024, 232, 224, node="classifier.1")
_torchvision("regnet_y_800mf", 784, 232, 224)
_torchvision("regnet_y_1_6gf", 888, 232, 224)
_torchvision("regnet_y_3_2gf", 1512, 232, 224)
_torchvision("densenet121", 1024, 256, 224)
_torchvision("vgg16", 4096, 256, 224, node="classifier.4")  # fc7 after ReLU, the classic recipe
