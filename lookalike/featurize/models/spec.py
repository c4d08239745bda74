"""``EmbeddingSpec``: what made a set of vectors, the record a store or a classifier persists.

Two vector sets are comparable only if their specs are equal; library versions and the
runtime (torch or ONNX Runtime) are kept for the record but take no part in equality: a
patch release doesn't change embeddings, and both runtimes run the same network to within
float rounding (the ONNX export is verified against torch). A fine-tuned model is compared
by its weights, never by where its file lay (older stores recorded the path).

``spec_differences`` is the one comparer: stores, classifier files and extractors all use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..images.preprocess import Preprocessing
from .registry import finetuned_name, is_finetuned_name

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
        return comparable(self.to_dict())

    def differences(self, other: EmbeddingSpec) -> list[str]:
        """Human-readable fields that differ, e.g. ``["model: resnet50 vs efficientnet_lite0"]``."""
        return spec_differences(self.to_dict(), other.to_dict())


def comparable(spec: dict) -> dict:
    """A spec dict as it is compared: as JSON (tuples are lists), without versions or runtime, and a
    fine-tuned model named by its weights (``finetuned:<digest>``) even where an older store kept its path."""
    d = json.loads(json.dumps(spec))
    d.pop("versions", None)
    d.pop(RUNTIME_KEY, None)
    if isinstance(d.get("model"), str) and is_finetuned_name(d["model"]) and d.get("weights_sha256"):
        d["model"] = finetuned_name(d["weights_sha256"])
    return d


def spec_differences(a: dict, b: dict) -> list[str]:
    """Fields on which two spec dicts differ, e.g. ``["model: resnet50 vs efficientnet_lite0"]`` (see ``comparable``)."""
    a, b = comparable(a), comparable(b)
    return [f"{key}: {a.get(key)} vs {b.get(key)}" for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


def describe_spec(spec: dict) -> str:
    """A spec in a few words: model, layer and dimension."""
    return f"{spec.get('model')} (layer {spec.get('layer')}, {spec.get('dim')}-d)"
