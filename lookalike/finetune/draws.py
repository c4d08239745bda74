"""The network's own random draws (stochastic depth, dropout), taken from a generator the run seeds.

torchvision's ``StochasticDepth`` (EfficientNet B0-B4 and V2, ConvNeXt), timm's ``DropPath``
and ``nn.Dropout`` (VGG's fc7 tap) draw their masks from torch's global random state, which
a run neither seeds nor checkpoints: two runs with the same seed, or a resumed run and an
uninterrupted one, would train on other masks. ``seed_draws`` replaces them, in place, by
modules that draw the same masks (torchvision's formula: keep with probability ``1 - p``,
scale the survivors by ``1 / (1 - p)``) from one CPU ``torch.Generator``. The trainer
reseeds it before every epoch from (seed, stage, epoch), as ``dataset`` does the data
order and each image's augmentation; checkpoints fall between epochs, so a resumed run
re-derives the generator of the epoch it continues with and needs none saved. The masks
are drawn on the CPU and moved to the input's device: the same on every device, and small
(one number per image for stochastic depth).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DRAWS_KEY = 0x64726F70  # "drop": keeps these seeds apart from the data order's and the augmentations'


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    """The generator's seed for an epoch: the same for the same (seed, stage, epoch), run or resumed."""
    return int(np.random.default_rng([seed, stage, epoch, DRAWS_KEY]).integers(2**63))


class SeededDrop(nn.Module):
    """Zero each row (``mode="row"``: stochastic depth), the whole batch (``"batch"``) or each element
    (``"element"``: dropout) with probability ``p`` in training; survivors are scaled by 1 / (1 - p)
    unless ``scale`` is False (timm's ``scale_by_keep=False``)."""

    def __init__(self, p: float, mode: str, generator: torch.Generator, scale: bool = True):
        super().__init__()
        if mode not in ("row", "batch", "element"):
            raise ValueError(f"mode must be row, batch or element, not {mode!r}")
        self.p, self.mode, self.scale = float(p), mode, scale
        self.generator = generator  # not a parameter or buffer: the state dict is the original module's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = {"row": [x.shape[0]] + [1] * (x.ndim - 1), "batch": [1] * x.ndim, "element": list(x.shape)}[self.mode]
        mask = torch.empty(shape).bernoulli_(keep, generator=self.generator)
        if keep > 0.0 and self.scale:
            mask.div_(keep)
        return x * mask.to(x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def seed_draws(module: nn.Module, generator: torch.Generator) -> list[str]:
    """Replace ``module``'s random layers by ``SeededDrop`` on ``generator``; returns the names replaced.

    A traced body (featurize's FX graph) calls its leaf modules by name, so a replaced module
    is the one it calls.
    """
    from torchvision.ops import StochasticDepth

    replaced = []
    for name, child in list(module.named_modules()):
        seeded = _seeded(child, generator, StochasticDepth) if name else None
        if seeded is not None:
            parent, _, leaf = name.rpartition(".")
            seeded.train(child.training)
            setattr(module.get_submodule(parent) if parent else module, leaf, seeded)
            replaced.append(name)
    return replaced


def _seeded(child: nn.Module, generator: torch.Generator, StochasticDepth: type) -> SeededDrop | None:
    if isinstance(child, StochasticDepth):
        return SeededDrop(child.p, child.mode, generator)
    if type(child) is nn.Dropout:
        return SeededDrop(child.p, "element", generator)
    if type(child).__name__ == "DropPath" and hasattr(child, "drop_prob"):  # timm's (timm.layers.DropPath)
        return SeededDrop(child.drop_prob, "row", generator, scale=getattr(child, "scale_by_keep", True))
    return None
