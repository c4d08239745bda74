"""Writing ``.lkft`` files (``featurize/models/finetuned.py`` reads them, with the same digest).

The body is saved whole: the base network's state dict with the fine-tuned tensors in
place, named as the base model's builder names them, so ``build_backbone`` loads it like
any weights file and the file needs nothing but the base architecture to be used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..atomic import write_atomically
from ..errors import ModelFileError
from ..featurize.models.finetuned import (
    BODY,
    FORMAT,
    FORMAT_VERSION,
    HEAD,
    content_sha256,
)
from ..featurize.models.registry import ModelSpec
from ..featurize.models.weights import load_state_dict, state_dict_sha256
from .blocks import original_name
from .head import FinetuneNet


def full_state(net: FinetuneNet, base: ModelSpec, weights: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """The base network's state dict with the fine-tuned body's tensors in place, in the builder's order."""
    model: nn.Module = base.builder()
    model.load_state_dict(load_state_dict(base, weights))
    tuned = {original_name(k, net.body): v.detach().to("cpu") for k, v in net.body.state_dict().items()}
    unexpected = model.load_state_dict(tuned, strict=False).unexpected_keys
    if unexpected:
        raise ModelFileError(f"the fine-tuned body has tensors {base.name} lacks ({', '.join(unexpected[:3])})")
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write_lkft(path: str | os.PathLike, body: dict[str, torch.Tensor], net: FinetuneNet, document: dict) -> dict:
    """Write the file atomically; returns ``document`` with the body's ``weights_sha256`` added to its spec.

    ``weights_sha256`` is what an ``EmbeddingSpec`` made from the file records, so a store
    made with ``--model OUT.lkft`` refuses any other weights.
    """
    from safetensors.torch import save

    document = {**document, "spec": {**document["spec"], "weights_sha256": state_dict_sha256(body)},
                "head": {"scale": float(net.head.scale)}}
    tensors = {BODY + k: v.contiguous() for k, v in body.items()}
    tensors[HEAD + "weight"] = net.head.linear.weight.detach().to("cpu", torch.float32).contiguous()
    tensors[HEAD + "bias"] = net.head.linear.bias.detach().to("cpu", torch.float32).contiguous()
    text = json.dumps(document, sort_keys=True)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "document": text,
                "sha256": content_sha256(tensors, text)}
    try:
        write_atomically(Path(path), save(tensors, metadata=metadata))
    except OSError as e:
        raise ModelFileError(f"can't write {path}: {e.strerror or e}") from None
    return json.loads(text)

