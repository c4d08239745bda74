"""The one place a user's model name is read: a registry name, ``timm:NAME``, or a ``.lkft`` file.

Every command and library call that takes a model name comes through ``resolve_model``.
A fine-tuned model's name is its file's path only at the door: inside, it is
``finetuned:<digest>`` (``registry.finetuned_name``), so the same file given as ``./ft.lkft``,
``/abs/ft.lkft`` or from its new folder after a move is the same model (``model_identity``).
"""

from __future__ import annotations

import difflib
import os

from ...errors import MissingDependencyError, ModelFileError, UnknownModelError
from ..images.preprocess import Preprocessing
from .registry import (
    ModelSpec,
    is_finetuned_name,
    is_model_file,
    registered,
    registered_names,
)

TIMM_PREFIX = "timm:"


def resolve_model(name: str | os.PathLike) -> ModelSpec:
    """The ``ModelSpec`` a user's model name stands for.

    Args:
        name: a registered name (``lookalike models``), ``timm:<name>`` for any timm model (needs
            the ``timm`` extra), or the path of a ``.lkft`` file (``lookalike finetune``).

    Raises:
        UnknownModelError: the name is unknown; the message suggests close names.
        MissingDependencyError: a ``timm:`` name without timm installed.
        ModelFileError: a ``.lkft`` file that is missing, damaged or was changed; or a
            ``finetuned:<digest>`` name, which says what a model is but not where its file is.
    """
    name = os.fspath(name)
    spec = registered(name)
    if spec is not None:
        return spec
    if is_model_file(name):
        from .finetuned import read_finetuned

        model = read_finetuned(name)
        return model.spec(resolve_model(model.document["spec"]["base_model"]))
    if is_finetuned_name(name):
        raise ModelFileError(f"{name} is a fine-tuned model known by its digest: give the path of its .lkft file")
    if name.startswith(TIMM_PREFIX):
        return _timm_spec(name[len(TIMM_PREFIX) :])
    close = difflib.get_close_matches(name, registered_names(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Run `lookalike models` for the list, or use timm:<name> for a timm model."
    )


def model_identity(name: str | os.PathLike) -> str:
    """The name a store records for a user's model name, read without building anything.

    A registry or ``timm:`` name is itself; a ``.lkft`` path is ``finetuned:<digest>``, read from
    the file's header, so two paths of the same file (or of a moved copy) give the same identity.

    Raises:
        ModelFileError: a ``.lkft`` path with no readable model file there.
    """
    name = os.fspath(name)
    if is_model_file(name) and registered(name) is None:
        from .finetuned import read_identity

        return read_identity(name)
    return name


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


get_model_spec = resolve_model  # the name earlier versions exported
