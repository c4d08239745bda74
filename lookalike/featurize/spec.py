"""``EmbeddingSpec``: what made a set of vectors, the record a store or a classifier persists.

Two vector sets are comparable only if their specs are equal; library versions and the
runtime (torch or ONNX Runtime) are kept for the record but take no part in equality: a
patch release doesn't change embeddings, and both runtimes run the same network to within
float rounding (the ONNX export is verified against torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .preprocess import Preprocessing

RUNTIME_KEY = "runtime"  # kept inside ``versions``, which stores and model files never compare


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
        runtime: ``"torch"`` or ``"onnxruntime"`` (not compared; ``to_dict`` keeps it in ``versions``).
    """

    model: str
    weights_sha256: str
    layer: str
    dim: int
    preprocessing: Preprocessing
    pooling: str = "avg"
    normalization: str = "l2"
    versions: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    runtime: str = field(default="torch", compare=False)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "layer": self.layer,
            "dim": self.dim,
            "preprocessing": self.preprocessing.to_dict(),
            "pooling": self.pooling,
            "normalization": self.normalization,
            "versions": {**self.versions, RUNTIME_KEY: self.runtime},
        }

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingSpec:
        versions = dict(d.get("versions", {}))
        runtime = d.get(RUNTIME_KEY) or versions.pop(RUNTIME_KEY, "torch")
        fields = {k: v for k, v in d.items() if k not in ("versions", RUNTIME_KEY)}
        return cls(**{**fields, "preprocessing": Preprocessing.from_dict(d["preprocessing"]), "versions": versions,
                      "runtime": runtime})

    def identity(self) -> dict:
        """The fields that decide whether two vector sets are comparable (no versions, no runtime)."""
        d = self.to_dict()
        del d["versions"]
        return d

    def differences(self, other: EmbeddingSpec) -> list[str]:
        """Human-readable fields that differ, e.g. ``["model: resnet50 vs efficientnet_lite0"]``."""
        mine, theirs = self.identity(), other.identity()
        return [f"{key}: {mine[key]} vs {theirs[key]}" for key in mine if mine[key] != theirs[key]]
