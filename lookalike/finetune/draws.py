"""The network's own random draws (stochastic depth, dropout), taken from a generator the run seeds.

torchvision's ``StochasticDepth`` (EfficientNet B0-B4 and V2, ConvNeXt), timm's ``DropPath``
and ``nn.Dropout`` (VGG's fc7 tap) draw their masks from torch's global random state, which
a run neither seeds nor checkpoints: two runs with the same seed, or a resumed run and an
uninterrupted one, would train on other masks. ``seed_draws`` replaces them, in place, by
modules that draw masks the same way (torchvision's formula: keep with probability
``1 - p``, scale the survivors by ``1 / (1 - p)``) from ``Draws``: a ``torch.Generator``
per device, all seeded alike, so that a mask is drawn where its input is (a mask made on
the CPU and copied to a GPU would wait for the GPU at every block). The trainer reseeds
them before every epoch from (seed, stage, epoch), as ``dataset`` does the data order and
each image's augmentation; checkpoints fall between epochs, so a resumed run re-derives the
generators of the epoch it continues with and needs no generator state saved.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DRAWS_KEY = 0x64726F70  # "drop": keeps these seeds apart from the data order's and the augmentations'


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    """The generator's seed for an epoch: the same for the same (seed, stage, epoch), run or resumed."""
    return int(np.random.default_rng([seed, stage, epoch, DRAWS_KEY]).integers(2**63))


class Draws:
    """Where the masks come from: one seed, and a generator per device, made on first use and seeded with it."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.generators: dict[torch.device, torch.Generator] = {}

    def reseed(self, seed: int) -> None:
        self.seed = seed
        for generator in self.generators.values():
            generator.manual_seed(seed)

    def on(self, device: torch.device) -> torch.Generator:
        """The generator that draws on ``device``."""
        if device not in self.generators:
            self.generators[device] = torch.Generator(device=device)
            self.generators[device].manual_seed(self.seed)
        return self.generators[device]


class SeededDrop(nn.Module):
    """Zero each row (``mode="row"``: stochastic depth), the whole batch (``"batch"``) or each element
    (``"element"``: dropout) with probability ``p`` in training; survivors are scaled by 1 / (1 - p)
    unless ``scale`` is False (timm's ``scale_by_keep=False``)."""

    def __init__(self, p: float, mode: str, draws: Draws, scale: bool = True):
        super().__init__()
        if mode not in ("row", "batch", "element"):
            raise ValueError(f"mode must be row, batch or element, not {mode!r}")
        self.p, self.mode, self.scale = float(p), mode, scale
        self.draws = draws  # not a parameter or buffer: the state dict is the original module's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = {"row": [x.shape[0]] + [1] * (x.ndim - 1), "batch": [1] * x.ndim, "element": list(x.shape)}[self.mode]
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep, generator=self.draws.on(x.device))
        if keep > 0.0 and self.scale:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def seed_draws(module: nn.Module, draws: Draws) -> list[str]:
    """Replace ``module``'s random layers by ``SeededDrop`` drawing from ``draws``; returns the names replaced.

    A traced body (featurize's FX graph) calls its leaf modules by name, so a replaced module
    is the one it calls.
    """
    from torchvision.ops import StochasticDepth

    replaced = []
    for name, child in list(module.named_modules()):
        seeded = _seeded(child, draws, StochasticDepth) if name else None
        if seeded is not None:
            parent, _, leaf = name.rpartition(".")
            seeded.train(child.training)
            setattr(module.get_submodule(parent) if parent else module, leaf, seeded)
            replaced.append(name)
    return replaced


def _seeded(child: nn.Module, draws: Draws, StochasticDepth: type) -> SeededDrop | None:
    if isinstance(child, StochasticDepth):
        return SeededDrop(child.p, child.mode, draws)
    if type(child) is nn.Dropout:
        return SeededDrop(child.p, "element", draws)
    if type(child).__name__ == "DropPath" and hasattr(child, "drop_prob"):  # timm's (timm.layers.DropPath)
        return SeededDrop(child.drop_prob, "row", draws, scale=getattr(child, "scale_by_keep", True))
    return None
