"""Named models: one frozen ``ModelSpec`` per entry, in the spirit of torchvision's ``Weights``
and timm's ``PretrainedCfg``.

A spec says where the weights come from, the preprocessing contract, the graph node whose
output is the embedding (the input of the final classifier), and its dimension. Building
the network is ``backbone.py``'s job; this module imports no model code (nor torch), so
listing is fast. Imports run one way: registry <- weights <- backbone.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ..errors import MissingDependencyError, UnknownModelError
from .preprocess import INCEPTION_MEAN, INCEPTION_STD, Preprocessing

DEFAULT_MODEL = "efficientnet_lite0"
TIMM_PREFIX = "timm:"


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


def get_model_spec(name: str) -> ModelSpec:
    """Look a model up by name.

    Args:
        name: a registered name, ``timm:<name>`` for any timm model (needs the ``timm`` extra), or
            the path of a ``.lkft`` file (``lookalike finetune``).

    Raises:
        UnknownModelError: the name is unknown; the message suggests close names.
        MissingDependencyError: a ``timm:`` name without timm installed.
        ModelFileError: a ``.lkft`` file that is missing, damaged or was changed.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.endswith(".lkft"):  # a fine-tuned model file from `lookalike finetune`
        from .finetuned import finetuned_spec

        return finetuned_spec(name)
    if name.startswith(TIMM_PREFIX):
        return _timm_spec(name[len(TIMM_PREFIX) :])
    close = difflib.get_close_matches(name, _REGISTRY, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Run `lookalike models` for the list, or use timm:<name> for a timm model."
    )


def import_timm():
    """timm, or a ``MissingDependencyError`` that says how to install it."""
    try:
        import timm
        import timm.data
    except ImportError:
        raise MissingDependencyError("timm models need the timm extra: pip install 'lookalike[timm]'") from None
    return timm


def _timm_spec(arch: str) -> ModelSpec:
    timm = import_timm()
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise UnknownModelError(f"timm has no model {arch!r}.{hint}")
    pretrained_cfg = timm.models.get_pretrained_cfg(arch)
    if pretrained_cfg is not None:
        cfg = timm.data.resolve_data_config({}, pretrained_cfg=pretrained_cfg.to_dict())
    else:  # no pretrained weights: timm's defaults
        cfg = timm.data.resolve_data_config({"input_size": (3, 224, 224)})
    crop = cfg["input_size"][-1]
    crop_mode = cfg.get("crop_mode", "center")
    if crop_mode not in ("center", "squash"):
        crop_mode = "center"  # "border" crops are for training-time evaluation tweaks; centre is the standard
    preprocessing = Preprocessing(
        resize_size=int(crop / cfg["crop_pct"]),  # timm's own rounding: math.floor
        crop_size=crop,
        interpolation=cfg["interpolation"],
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        crop_mode=crop_mode,
    )
    return ModelSpec(TIMM_PREFIX + arch, "timm", arch, preprocessing, None, None)


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
