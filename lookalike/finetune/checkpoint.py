"""Epoch checkpoints, so ``--resume`` continues after Ctrl-C or a kill.

After every epoch, ``OUT.lkft.checkpoint`` is replaced whole (never half-written): the
network, the best epoch's weights, the optimizer's moments, and a JSON document with
where the run stands, its history, and a fingerprint of the data and configuration. A
resume under another fingerprint is refused. Like the ``.lkft``, it is a safetensors
file: loading it runs no code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..atomic import write_atomically
from ..errors import CheckpointError

SUFFIX = ".checkpoint"
FORMAT = "lookalike.finetune-checkpoint"


def checkpoint_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


@dataclass
class TrainingState:
    """Where a run stands: the stage and the epochs it completed there, and everything measured so far."""

    stage: int = 0
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # the history row of the best validation loss
    best_weights: dict[str, torch.Tensor] | None = None
    optimizer: dict | None = None  # the current stage's optimizer.state_dict()
    scaler: dict | None = None  # CUDA's GradScaler state


def save_checkpoint(path: Path, weights: dict[str, torch.Tensor], state: TrainingState, fingerprint: dict) -> None:
    """Replace ``path`` with the run's state after an epoch."""
    from safetensors.torch import save

    tensors = {f"model.{k}": _plain(v) for k, v in weights.items()}
    if state.best_weights is not None:
        tensors.update({f"best.{k}": _plain(v) for k, v in state.best_weights.items()})
    groups = None
    if state.optimizer is not None:
        for pid, moments in state.optimizer["state"].items():
            tensors.update({f"opt.{pid}.{k}": _plain(v) for k, v in moments.items() if torch.is_tensor(v)})
        groups = state.optimizer["param_groups"]
    document = {"fingerprint": fingerprint, "stage": state.stage, "epoch": state.epoch, "history": state.history,
                "best": state.best, "optimizer_groups": groups, "scaler": state.scaler}
    write_atomically(path, save(tensors, metadata={"format": FORMAT, "document": json.dumps(document)}))


def load_checkpoint(path: Path, fingerprint: dict) -> tuple[dict[str, torch.Tensor], TrainingState]:
    """The network's weights and the state to continue from.

    Raises:
        CheckpointError: unreadable, or made with another configuration or data set.
    """
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        document = json.loads(metadata["document"]) if metadata.get("format") == FORMAT else None
    except Exception:  # noqa: BLE001 - any failure to read means a bad file; the message says what to do
        document = None
    if document is None:
        raise CheckpointError(f"{path} is damaged or not a lookalike checkpoint: delete it and start over without --resume")
    differences = _differences(document["fingerprint"], fingerprint)
    if differences:
        raise CheckpointError(
            f"{path} was made with other settings or images ({'; '.join(differences[:4])}): resume with the same "
            f"ones, or delete it and start over without --resume"
        )
    state = TrainingState(document["stage"], document["epoch"], document["history"], document["best"],
                          scaler=document.get("scaler"))
    best = _prefixed(tensors, "best.")
    state.best_weights = best or None
    if document["optimizer_groups"] is not None:
        moments: dict[int, dict] = {}
        for name, tensor in _prefixed(tensors, "opt.").items():
            pid, key = name.split(".", 1)
            moments.setdefault(int(pid), {})[key] = tensor
        state.optimizer = {"state": moments, "param_groups": document["optimizer_groups"]}
    return _prefixed(tensors, "model."), state


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous().clone()


def _differences(saved: dict, now: dict) -> list[str]:
    """What changed, by setting ("lr: 0.0001 then, 0.5 now") and for the image list as a whole."""
    saved, now = json.loads(json.dumps(saved)), json.loads(json.dumps(now))
    out = []
    old, new = saved.get("config", {}), now.get("config", {})
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)} then, {new.get(key)} now")
    if saved.get("images") != now.get("images"):
        out.append(f"the images: {len(saved.get('images', []))} then, {len(now.get('images', []))} now, or other ones")
    return out
