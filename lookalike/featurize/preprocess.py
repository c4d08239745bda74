"""The preprocessing contract of a model: resize, crop, then normalise.

Geometry runs on decoded PIL images in the reader's workers and yields uint8 tensors
(a quarter of float32's bytes to move to the device); normalisation runs in float on the
device inside the extractor. Split this way, the result equals torchvision's
``weights.transforms()`` and timm's eval transform applied to the same image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# Resizing the short side of a 10000x1 strip to 256 px would need gigabytes; nothing that
# thin is a photo a CNN can read anyway.
MAX_ASPECT_RATIO = 100


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input.

    Attributes:
        resize_size: the shorter side is resized to this (``crop_mode="center"``).
        crop_size: the square side fed to the network.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        mean, std: per-channel normalisation of pixels scaled to [0, 1].
        antialias: antialias when downscaling (PIL always does).
        crop_mode: ``"center"`` (resize the shorter side, keeping the aspect ratio) or
            ``"squash"`` (resize both sides to ``resize_size``); a centre crop follows either.
    """

    resize_size: int
    crop_size: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    antialias: bool = True
    crop_mode: str = "center"

    def __post_init__(self):
        InterpolationMode(self.interpolation)  # raises ValueError on an unknown mode
        if self.crop_mode not in ("center", "squash"):
            raise ValueError(f"crop_mode must be 'center' or 'squash', not {self.crop_mode!r}")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Resize and crop an RGB image; returns a uint8 tensor of shape (3, crop, crop).

        Raises:
            ValueError: the image is thinner than 1:``MAX_ASPECT_RATIO``.
        """
        width, height = image.size
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ValueError(f"{width}x{height} is thinner than the 1:{MAX_ASPECT_RATIO} aspect ratio allowed")
        mode = InterpolationMode(self.interpolation)
        size = [self.resize_size, self.resize_size] if self.crop_mode == "squash" else [self.resize_size]
        image = F.resize(image, size, interpolation=mode, antialias=self.antialias)
        return F.pil_to_tensor(F.center_crop(image, [self.crop_size]))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float32, scaled to [0, 1] and standardised per channel."""
        x = batch.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})
