"""Fine-tuned model files (``.lkft``, written by ``lookalike finetune``), read into what featurize needs.

A ``.lkft`` is a safetensors file: tensors ``body.<name>`` (the whole network's state dict,
as the base model's builder names it) and ``head.weight`` / ``head.bias`` (the classifier
over the L2-normalised embedding), and one metadata entry holding a JSON document: the
spec (base model and its weights' sha256, preprocessing, layer), the classes, the head's
scale, the training configuration and the report. Reading never unpickles (safetensors
has no code in it), and a file whose tensors or document changed after it was written is
refused: the metadata also holds a sha256 over both.

``resolve_model("model.lkft")`` returns a ``FinetunedSpec``: the base model's builder
and preprocessing, the fine-tuned layer as its embedding node, and the weights inside, so
``build_backbone`` builds it like any other model and every command takes ``--model X.lkft``.
Its name is ``finetuned:<digest>``, from the weights' sha256, never the file's path: a store
knows the model by what it is, wherever the file lies (``registry.finetuned_name``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import ModelFileError, first_line
from ..images.preprocess import Preprocessing
from .registry import ModelSpec, finetuned_name
from .weights import state_dict_sha256

SOURCE = "finetuned"  # ModelSpec.source of a fine-tuned model
FORMAT = "lookalike.finetuned"
FORMAT_VERSION = 1
BODY, HEAD = "body.", "head."
_AGAIN = "fine-tune again with `lookalike finetune`"


def content_sha256(tensors: dict[str, torch.Tensor], document: str) -> str:
    """The digest a ``.lkft`` carries: its JSON document, then every tensor (name, dtype, shape, bytes) by name."""
    digest = hashlib.sha256(document.encode("utf-8"))
    digest.update(state_dict_sha256(dict(sorted(tensors.items()))).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class FinetunedSpec(ModelSpec):
    """A registry entry for a ``.lkft`` file: the base model's builder, the fine-tuned weights inside.

    ``feature_node`` is the layer the head was trained on, so the default embedding is the
    fine-tuned one; ``dim`` is known only at the base model's own embedding node.
    """

    path: str = ""
    base: str = ""
    state: dict = field(default_factory=dict, compare=False, repr=False)

    def load_weights(self, weights: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
        """The network's state dict, from inside the file (``weights.load_state_dict`` asks here)."""
        if weights is not None:
            raise ModelFileError(f"{self.path} holds its own weights: drop --weights {weights}")
        return dict(self.state)


@dataclass(frozen=True)
class FinetunedModel:
    """A verified ``.lkft`` file: the network's weights, the head, the classes and the document."""

    path: str
    document: dict
    body: dict[str, torch.Tensor]
    head_weight: np.ndarray
    head_bias: np.ndarray

    @property
    def classes(self) -> list[str]:
        return list(self.document["classes"])

    @property
    def name(self) -> str:
        """``finetuned:<digest>``: the model's name in specs, the same wherever the file lies."""
        return finetuned_name(self.document["spec"]["weights_sha256"])

    def spec(self, base: ModelSpec) -> FinetunedSpec:
        """The registry entry that builds the fine-tuned network on ``base``, its base model's entry."""
        meta = self.document["spec"]
        layer = meta["layer"]
        return FinetunedSpec(
            name=self.name,
            source=SOURCE,
            arch=base.arch,
            preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
            feature_node=layer,
            dim=meta["dim"] if layer == base.feature_node else None,  # earlier layers are pooled: probed
            builder=base.builder,
            path=self.path,
            base=base.name,
            state=self.body,
        )

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """The head on L2-normalised embeddings (what ``Extractor`` gives): ``scale * (v W^T + b)``."""
        scale = float(self.document["head"]["scale"])
        return scale * (np.asarray(vectors, dtype=np.float32) @ self.head_weight.T + self.head_bias)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Softmax of ``logits``, columns in ``classes`` order."""
        logits = self.logits(vectors)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def read_finetuned(path: str | os.PathLike) -> FinetunedModel:
    """Read and verify a ``.lkft`` file.

    Raises:
        ModelFileError: missing, not a ``.lkft`` file, damaged, of another format version,
            or changed after it was written (the digest inside does not match).
    """
    path = os.path.abspath(path)
    tensors, metadata = _read_safetensors(Path(path))
    if metadata.get("format") != FORMAT or "document" not in metadata or "sha256" not in metadata:
        raise ModelFileError(f"{path} is a safetensors file but not a lookalike fine-tuned model: {_AGAIN}")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise ModelFileError(
            f"{path} is fine-tuned model format {metadata.get('format_version')}, this lookalike reads "
            f"format {FORMAT_VERSION}: use a matching lookalike version, or {_AGAIN}"
        )
    if content_sha256(tensors, metadata["document"]) != metadata["sha256"]:
        raise ModelFileError(
            f"{path} was changed after it was written (its weights or metadata no longer match the sha256 "
            f"inside): don't trust it; {_AGAIN}"
        )
    document = _document(metadata["document"], path)
    body = {name[len(BODY):]: t for name, t in tensors.items() if name.startswith(BODY)}
    try:
        weight, bias = tensors[HEAD + "weight"].float().numpy(), tensors[HEAD + "bias"].float().numpy()
    except KeyError:
        raise ModelFileError(f"{path} has no classifier head: {_AGAIN}") from None
    if weight.ndim != 2 or weight.shape[0] != len(document["classes"]) or bias.shape != weight.shape[:1]:
        raise ModelFileError(f"{path} has a head of shape {weight.shape} for {len(document['classes'])} classes: {_AGAIN}")
    return FinetunedModel(path, document, body, weight, bias)


def read_identity(path: str | os.PathLike) -> str:
    """The ``finetuned:<digest>`` name of a ``.lkft`` file, from its header alone (no tensor is read).

    Raises:
        ModelFileError: missing, or not a fine-tuned model file.
    """
    from safetensors import safe_open

    path = Path(os.path.abspath(path))
    _check_file(path)
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        return finetuned_name(json.loads(metadata["document"])["spec"]["weights_sha256"])
    except Exception as e:  # noqa: BLE001 - any failure means a file that is not a readable .lkft
        raise ModelFileError(
            f"{path} is not a readable .lkft file (damaged, truncated, or another format: {first_line(e)}): {_AGAIN}"
        ) from None


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder: give the .lkft file `lookalike finetune` wrote")
    if not path.is_file():
        raise ModelFileError(f"no fine-tuned model at {path}: check the path, or run `lookalike finetune` first")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    _check_file(path)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors' own header and offset checks: any failure means a bad file
        raise ModelFileError(
            f"{path} is not a readable .lkft file (damaged, truncated, or another format: {first_line(e)}): {_AGAIN}"
        ) from None
    return tensors, metadata


def _document(text: str, path: str) -> dict:
    try:
        document = json.loads(text)
    except ValueError:
        raise ModelFileError(f"{path} is damaged (its metadata is not JSON): {_AGAIN}") from None
    spec = document.get("spec") if isinstance(document, dict) else None
    required = ("base_model", "layer", "dim", "preprocessing")
    if not isinstance(spec, dict) or any(k not in spec for k in required) or not isinstance(document.get("classes"), list):
        raise ModelFileError(f"{path} is damaged (its metadata lacks the spec or the classes): {_AGAIN}")
    return document
