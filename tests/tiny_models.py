"""Small registered models for tests of the ONNX export cache: one that exports in a second,
and one that can't be exported (``torch.special.zeta`` has no ONNX function)."""

from __future__ import annotations

import torch
from torch import nn

from lookalike.featurize import ModelSpec, Preprocessing
from lookalike.featurize.models import registry

TINY, UNEXPORTABLE = "tiny", "unexportable"


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


class Zeta(nn.Module):
    """A network whose output goes through ``torch.special.zeta``, which no ONNX exporter translates."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        features = self.pool(torch.sigmoid(self.conv(x))).flatten(1)
        return self.fc(torch.special.zeta(features + 2, torch.ones_like(features)))


def register() -> None:
    """Add both to the registry (idempotent; tests patch the registry so it is restored after)."""
    for name, builder, node in ((TINY, tiny_cnn, "3"), (UNEXPORTABLE, Zeta, "special_zeta")):
        if name not in registry._REGISTRY:
            registry.register_model(ModelSpec(name, "mine", name, Preprocessing(40, 32), node, 8, builder))


def save_weights(path, name: str = TINY, seed: int = 0):
    """Random weights for ``name``, saved to ``path``; returns the model they belong to."""
    torch.manual_seed(seed)
    model = (tiny_cnn() if name == TINY else Zeta()).eval()
    torch.save(model.state_dict(), path)
    return model
