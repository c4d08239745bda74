"""``EmbeddingSpec``: what made a set of vectors, the record a store or a classifier persists.

Two vector sets are comparable only if their specs are equal; library versions are kept
for the record but take no part in equality (a patch release doesn't change embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .preprocess import Preprocessing


@dataclass(frozen=True)
class EmbeddingSpec:
    """How vectors were made.

    Attributes:
        model: registry name (``efficientnet_lite0``, ``resnet50``, ``timm:vit_small_patch16_224``...).
        weights_sha256: digest of the state dict actually loaded.
        layer: the graph node tapped (``flatten`` etc. for the default embedding).
        dim: vector length.
        preprocessing: resize, crop, interpolation, mean and std.
        pooling: how a feature map became a vector (global average).
        normalization: vectors are L2-normalised, so inner product is cosine similarity.
        versions: library versions at extraction time (not compared).
    """

    model: str
    weights_sha256: str
    layer: str
    dim: int
    preprocessing: Preprocessing
    pooling: str = "avg"
    normalization: str = "l2"
    versions: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "layer": self.layer,
            "dim": self.dim,
            "preprocessing": self.preprocessing.to_dict(),
            "pooling": self.pooling,
            "normalization": self.normalization,
            "versions": dict(self.versions),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingSpec":
        return cls(**{**d, "preprocessing": Preprocessing.from_dict(d["preprocessing"]), "versions": d.get("versions", {})})

    def differences(self, other: "EmbeddingSpec") -> list[str]:
        """Human-readable fields that differ, e.g. ``["model: resnet50 vs efficientnet_lite0"]``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]} vs {theirs[key]}" for key in mine if key != "versions" and mine[key] != theirs[key]]
