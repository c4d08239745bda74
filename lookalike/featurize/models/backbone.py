"""The headless network: a pretrained model cut at its embedding node (or an earlier ``layer``)
and globally average-pooled, so that it maps normalised images (N, 3, H, W) to vectors (N, D).

Features are taken through the libraries' own APIs: torchvision's
``create_feature_extractor``, timm's ``num_classes=0`` or its FX feature extractor for
earlier layers, and the bundled model's ``forward_head(pre_logits=True)`` for its embedding
(importing ``torchvision.models`` for its feature extractor would cost more than a second).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import (
    InvalidWeightsError,
    LookalikeError,
    UnknownLayerError,
    WeightsNotFoundError,
)
from .registry import ModelSpec
from .resolve import import_timm
from .weights import load_state_dict, state_dict_sha256


@dataclass
class Backbone:
    """A built embedding network. ``module`` maps normalised (N, 3, H, W) to (N, dim)."""

    module: nn.Module
    dim: int
    layer: str
    weights_sha256: str


class GlobalPool(nn.Module):
    """Wraps a feature extractor: its tapped output averaged over ``pool_dims`` (space, or tokens)."""

    def __init__(self, body: nn.Module, pool_dims: tuple[int, ...] = ()):
        super().__init__()
        self.body = body
        self.pool_dims = pool_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _output(self.body(x))
        if self.pool_dims:
            out = out.mean(dim=self.pool_dims)
        return out.reshape(out.shape[0], -1)


class PreLogits(nn.Module):
    """A model's pooled pre-logits through its own ``forward_head(..., pre_logits=True)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


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
    if layer is None and spec.source == "bundled":
        body = PreLogits(model)  # its own API gives the same node's output, without torchvision.models' import
    else:
        body = model if node is None else _tap(spec, model, node)
    if layer is None and spec.dim:
        return Backbone(GlobalPool(body).eval(), spec.dim, node, sha)
    pool_dims, dim = _probe(body, spec, node or spec.default_layer)
    return Backbone(GlobalPool(body, pool_dims).eval(), dim, node or spec.default_layer, sha)


def list_layers(spec: ModelSpec) -> list[str]:
    """The graph nodes and modules ``layer=`` can tap, input to output (the model is built without weights)."""
    model = _timm_model(spec, None, headless=False, pretrained=False) if spec.source == "timm" else _classifier(spec)
    return _node_names(spec, model.eval())


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
    for i, node in enumerate(n for n in eval_nodes if n != "x" and not _is_parameter(model, n)):
        parts = node.split(".")
        for depth in range(1, len(parts) + 1):
            last_use[".".join(parts[:depth])] = i
    return sorted(last_use, key=lambda name: (last_use[name], -name.count(".")))


def _is_parameter(model: nn.Module, node: str) -> bool:
    """FX names a weight read ``a.b.a_b_weight``: a graph node, but no activation to tap."""
    parent, _, leaf = node.rpartition(".")
    try:
        module = model.get_submodule(parent)
    except AttributeError:
        return False
    prefix = parent.replace(".", "_") + "_"
    names = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
    return any(leaf == prefix + name for name in names)


def _output(out) -> torch.Tensor:
    if isinstance(out, dict):
        (out,) = out.values()
    return out


@torch.inference_mode()
def _probe(body: nn.Module, spec: ModelSpec, node: str) -> tuple[tuple[int, ...], int]:
    """Which output dims to average over, and the vector size left.

    Two input sizes tell spatial dims (they change) from channels, whatever the layout:
    NCHW, NHWC (ConvNeXt blocks, Swin) or tokens. Models of one fixed input size fall back
    to NCHW / (N, tokens, C).
    """
    size = spec.preprocessing.crop_size
    try:
        out = _output(body(torch.zeros(2, 3, size, size)))
    except Exception as e:  # noqa: BLE001 - whatever breaks, the answer is "pick another layer"
        raise UnknownLayerError(f"layer {node!r} of {spec.name} cannot be tapped: {e}") from e
    if out.ndim < 2 or out.shape[0] != 2:
        raise UnknownLayerError(
            f"layer {node!r} of {spec.name} is not a per-image activation (it gives shape {tuple(out.shape)} "
            f"for 2 images); pick another from `lookalike layers {spec.name}`"
        )
    try:
        larger = _output(body(torch.zeros(2, 3, size + 32, size + 32)))
        pool_dims = tuple(d for d in range(1, out.ndim) if larger.shape[d] != out.shape[d])
    except Exception:  # noqa: BLE001 - fixed-size models refuse other sizes
        pool_dims = _guess_spatial_dims(out.shape)
    kept = [out.shape[d] for d in range(1, out.ndim) if d not in pool_dims]
    if len(kept) != 1:
        raise UnknownLayerError(
            f"layer {node!r} of {spec.name} gives shape {tuple(out.shape)}, which doesn't average to one "
            f"vector per image; pick another from `lookalike layers {spec.name}`"
        )
    return pool_dims, kept[0]


def _guess_spatial_dims(shape: torch.Size) -> tuple[int, ...]:
    """For a square input, the two spatial sides are equal: that tells NCHW from NHWC."""
    if len(shape) == 4:
        return (1, 2) if shape[1] == shape[2] and shape[2] != shape[3] else (2, 3)
    return (1,) if len(shape) == 3 else ()


def _first_key_error(e: RuntimeError) -> str:
    lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
    return lines[0][:300] if lines else ""
