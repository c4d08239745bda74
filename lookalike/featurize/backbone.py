"""The headless network: a pretrained model cut at its embedding node (or an earlier ``layer``)
and globally average-pooled, so that it maps normalised images (N, 3, H, W) to vectors (N, D).

Features are taken through the libraries' own APIs: torchvision's
``create_feature_extractor`` (also for the bundled model) and timm's ``num_classes=0`` or
its FX feature extractor for earlier layers.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidWeightsError, LookalikeError, MissingDependencyError, UnknownLayerError, WeightsNotFoundError
from .registry import ModelSpec
from .weights import load_state_dict, state_dict_sha256


@dataclass
class Backbone:
    """A built embedding network. ``module`` maps normalised (N, 3, H, W) to (N, dim)."""

    module: nn.Module
    dim: int
    layer: str
    weights_sha256: str


class GlobalPool(nn.Module):
    """Wraps a feature extractor: the tapped output, average-pooled over space (or tokens)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if isinstance(out, dict):
            (out,) = out.values()
        if out.ndim == 4:
            out = out.mean(dim=(2, 3))
        elif out.ndim == 3:  # (N, tokens, C) from transformer layers
            out = out.mean(dim=1)
        return out.flatten(1)


def build_backbone(spec: ModelSpec, layer: str | None = None, weights: str | os.PathLike | None = None) -> Backbone:
    """Build a spec's pretrained network, headless, in eval mode on the CPU.

    Args:
        spec: the registry entry.
        layer: a graph node to tap instead of the embedding node (see ``list_layers``).
        weights: a state dict file to use instead of the pretrained weights.

    Raises:
        WeightsNotFoundError, InvalidWeightsError, UnknownLayerError, MissingDependencyError.
    """
    if spec.source == "timm":
        model = _timm_model(spec, weights, headless=layer is None)
    else:
        model = _classifier(spec)
        state = load_state_dict(spec, weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise InvalidWeightsError(f"the weights don't fit {spec.name}: {str(e).splitlines()[0]} {_first_key_error(e)}") from e
    model.eval()
    sha = state_dict_sha256(model.state_dict())
    node = layer or spec.feature_node
    body = model if node is None else _tap(spec, model, node)
    module = GlobalPool(body).eval()
    dim = spec.dim if layer is None and spec.dim else _probe_dim(module, spec, node)
    return Backbone(module, dim, node or "pre_logits", sha)


def list_layers(spec: ModelSpec) -> list[str]:
    """The modules of a model, input to output, whose outputs ``layer=`` can tap (built without weights).

    ``layer=`` also takes any graph node torchvision's ``get_graph_node_names`` reports.
    """
    model = _timm_model(spec, None, headless=False, pretrained=False) if spec.source == "timm" else _classifier(spec)
    modules = {name for name, _ in model.named_modules() if name}
    return [name for name in _node_names(spec, model.eval()) if name in modules]


def import_timm():
    try:
        import timm
        import timm.data
    except ImportError:
        raise MissingDependencyError("timm models need the timm extra: pip install 'lookalike[timm]'") from None
    return timm


def _classifier(spec: ModelSpec) -> nn.Module:
    """The full network with its classification head and random weights."""
    if spec.builder is None:
        raise LookalikeError(f"model {spec.name} has no builder: register it with ModelSpec(builder=...)")
    return spec.builder()


def _timm_model(spec: ModelSpec, weights, headless: bool, pretrained: bool = True) -> nn.Module:
    timm = import_timm()
    kwargs = {"num_classes": 0} if headless else {}
    if weights is not None:
        if not os.path.isfile(weights):
            raise WeightsNotFoundError(f"weights file {weights} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(weights)}
    try:
        return timm.create_model(spec.arch, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        if weights is not None:
            raise InvalidWeightsError(f"cannot load {weights} into {spec.name}: {e}") from e
        raise WeightsNotFoundError(
            f"timm could not load pretrained weights for {spec.arch} ({e}). timm downloads them from the "
            f"Hugging Face Hub into its cache (HF_HOME, default ~/.cache/huggingface/hub); offline, copy that cache "
            f"from a machine with internet, or pass weights=PATH to a .pth or .safetensors file."
        ) from e


def _tap(spec: ModelSpec, model: nn.Module, node: str) -> nn.Module:
    if spec.source == "timm":
        from timm.models import create_feature_extractor
    else:
        from torchvision.models.feature_extraction import create_feature_extractor
    names = _node_names(spec, model)
    if node not in names:
        close = difflib.get_close_matches(node, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownLayerError(
            f"{spec.name} has no layer {node!r}.{hint} Run `lookalike layers {spec.name}` to list them."
        )
    return create_feature_extractor(model, return_nodes={node: "features"})


def _node_names(spec: ModelSpec, model: nn.Module) -> list[str]:
    """Graph nodes and the modules holding them (a module's output is its last node), input to output."""
    if spec.source == "timm":
        from timm.models import get_graph_node_names
    else:
        from torchvision.models.feature_extraction import get_graph_node_names
    _, eval_nodes = get_graph_node_names(model)
    last_use = {}
    for i, node in enumerate(n for n in eval_nodes if n != "x"):
        parts = node.split(".")
        for depth in range(1, len(parts) + 1):
            last_use[".".join(parts[:depth])] = i
    return sorted(last_use, key=lambda name: (last_use[name], -name.count(".")))


@torch.inference_mode()
def _probe_dim(module: nn.Module, spec: ModelSpec, node: str | None) -> int:
    """Run two blank images through; a node whose output isn't one row per image (a weight) is refused."""
    size = spec.preprocessing.crop_size
    out = module(torch.zeros(2, 3, size, size))
    if out.ndim != 2 or out.shape[0] != 2:
        raise UnknownLayerError(
            f"layer {node!r} of {spec.name} is not a per-image activation (it gives shape {tuple(out.shape)} "
            f"for 2 images); pick a module output from `lookalike layers {spec.name}`"
        )
    return out.shape[1]


def _first_key_error(e: RuntimeError) -> str:
    lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
    return lines[0][:300] if lines else ""
