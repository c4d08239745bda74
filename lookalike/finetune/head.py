"""The network being fine-tuned: the tapped body (as featurize builds it) and a new head.

The body's random layers (stochastic depth, dropout) are replaced by ones that draw from
the net's own generators (``draws``), which the trainer reseeds every epoch.

The head classifies the L2-normalised embedding, ``scale * (x W^T + b)``: the vector
every other command stores and searches, so ``predict`` runs it on ``Extractor`` output
(``FinetunedModel.logits``) and the classical classifiers see the same geometry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..featurize.images.preprocess import Preprocessing
from .blocks import Block, original_name
from .draws import Draws, epoch_seed, seed_draws

HEAD_SCALE = 16.0  # logits of unit vectors need a temperature; 16 is the usual cosine-classifier value


class EmbeddingHead(nn.Module):
    """A linear classifier over the L2-normalised embedding; starts at zero (every class equally likely)."""

    def __init__(self, dim: int, classes: int, scale: float = HEAD_SCALE):
        super().__init__()
        self.scale = scale
        self.linear = nn.Linear(dim, classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(F.normalize(x.float(), dim=1))


class FinetuneNet(nn.Module):
    """Body + head. ``train()`` keeps BatchNorm statistics frozen except where ``bn_trainable`` allows;
    the body's stochastic depth and dropout draw from ``draws`` (see ``seed_epoch``)."""

    def __init__(self, body: nn.Module, head: EmbeddingHead, preprocessing: Preprocessing):
        super().__init__()
        self.body = body
        self.head = head
        self.preprocessing = preprocessing  # normalises uint8 batches as the base model expects
        self.bn_trainable: set[str] = set()  # body module names whose running statistics may update
        self.draws = Draws()
        self.random_layers = seed_draws(body, self.draws)  # names of the layers that draw from it

    def seed_epoch(self, seed: int, stage: int, epoch: int) -> None:
        """Reseed the body's random layers for an epoch: the same draws for the same (seed, stage, epoch)."""
        self.draws.reseed(epoch_seed(seed, stage, epoch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def train(self, mode: bool = True) -> "FinetuneNet":
        super().train(mode)
        if mode:
            for name, module in _batch_norms(self.body):
                if name not in self.bn_trainable:
                    module.eval()  # normalise with the pretrained statistics, and don't update them
        return self

    def set_bn_trainable(self, blocks: list[Block], train_bn: bool) -> None:
        """Let the batch norms of these (unfrozen) blocks update their statistics, if ``train_bn``."""
        self.bn_trainable = {
            name for name, _ in _batch_norms(self.body)
            if train_bn and any(b.owns(original_name(name, self.body)) for b in blocks)
        }


def _batch_norms(module: nn.Module):
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
