"""A network's blocks, input to output: the units that ``--unfreeze N`` counts and layer decay rates.

The blocks are read off the base model's module tree, since the tapped body (an FX graph)
keeps the parameter names but not the module types. Containers (``Sequential``,
``ModuleList``, ``ModuleDict``) are opened; anything else is a unit: an MBConv or
residual block, a stem convolution. A normalisation layer joins the convolution before
it (conv + BN is one block), or, after a block, the unit after it (ConvNeXt's
downsampling). Units without parameters are dropped. This gives timm-like groupings for
every registered model: Lite0's stem, 16 MBConv blocks and head convolution; ResNet's
stem and its basic or bottleneck blocks; ConvNeXt's stem, CNBlocks and downsamplers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_PRIMITIVES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Block:
    """One block: the module names it is made of and the parameter names they hold."""

    name: str
    modules: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)

    def owns(self, module_name: str) -> bool:
        return any(module_name == m or module_name.startswith(m + ".") for m in self.modules)


def find_blocks(model: nn.Module, present: set[str] | None = None) -> list[Block]:
    """The blocks of ``model`` (an untapped network), input to output.

    Args:
        model: the full network as its builder makes it.
        present: keep only these parameter names (those of a body cut at an earlier layer);
            blocks left without parameters are dropped.
    """
    units = list(_units(model, ""))
    blocks: list[Block] = []
    pending_norm: list[tuple[str, nn.Module]] = []
    previous: nn.Module | None = None
    for name, module in units:
        if _is_norm(module) and blocks and isinstance(previous, _PRIMITIVES):
            _add(blocks[-1], name, module)
        elif _is_norm(module):
            pending_norm.append((name, module))
        else:
            blocks.append(Block(name))
            for norm_name, norm in pending_norm + [(name, module)]:
                _add(blocks[-1], norm_name, norm)
            pending_norm = []
        previous = module
    if pending_norm:  # a trailing norm with nothing after it
        blocks.append(Block(pending_norm[0][0]))
        for norm_name, norm in pending_norm:
            _add(blocks[-1], norm_name, norm)
    loose = [n for n, _ in model.named_parameters(recurse=False)]  # e.g. a class token on the root
    if loose:
        blocks.insert(0, Block("(root)", [], loose))
    if present is not None:
        for block in blocks:
            block.parameters = [p for p in block.parameters if p in present]
    return [b for b in blocks if b.parameters]


def body_blocks(builder: Callable[[], nn.Module], body: nn.Module, size: int) -> list[Block]:
    """The blocks of a tapped ``body`` (featurize's ``GlobalPool``), read off the base model ``builder`` makes.

    Only parameters the embedding depends on count: a body that runs the model's own
    pre-logits (the bundled model) still holds the ImageNet classifier, which must neither be
    counted by ``--unfreeze`` nor trained. One forward pass on a ``size`` px image tells them apart.
    """
    return find_blocks(builder(), {original_name(n, body) for n in used_parameters(body, size)})


def used_parameters(body: nn.Module, size: int) -> list[str]:
    """Names of ``body``'s parameters its output depends on (autograd's graph, not their values)."""
    named = list(body.named_parameters())
    was_training, wanted = body.training, [p.requires_grad for _, p in named]
    body.eval()  # batch statistics of one image would be meaningless, and must not update
    try:
        for _, p in named:
            p.requires_grad_(True)
        out = body(torch.zeros(1, 3, size, size, device=named[0][1].device if named else "cpu"))
        grads = torch.autograd.grad(out.sum(), [p for _, p in named], allow_unused=True)
    finally:
        for (_, p), flag in zip(named, wanted):
            p.requires_grad_(flag)
        body.train(was_training)
    return [name for (name, _), grad in zip(named, grads) if grad is not None]


def original_name(name: str, body: nn.Module) -> str:
    """A name inside ``body`` (featurize's ``GlobalPool``) as the base model names it.

    featurize holds the tapped graph as ``GlobalPool.body``, and the bundled model's own
    embedding as ``PreLogits.model`` inside that, so the prefix depends on the body's make-up.
    """
    from ..featurize.models.backbone import PreLogits

    prefix = "body.model." if isinstance(getattr(body, "body", None), PreLogits) else "body."
    return name[len(prefix):] if name.startswith(prefix) else name


def _units(module: nn.Module, prefix: str):
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, _CONTAINERS):
            yield from _units(child, full)
        elif any(True for _ in child.parameters()):
            yield full, child


def _add(block: Block, name: str, module: nn.Module) -> None:
    block.modules.append(name)
    block.parameters += [f"{name}.{p}" for p, _ in module.named_parameters()]


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) or (
        "Norm" in type(module).__name__ and not any(True for _ in module.children())
    )
