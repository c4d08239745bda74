"""The preprocessing contract of a model: resize, crop, then normalise.

Geometry runs on decoded PIL images in the reader's workers and yields uint8 tensors
(a quarter of float32's bytes to move to the device); normalisation runs in float on the
device inside the extractor. Split this way, the result equals torchvision's
``weights.transforms()`` and timm's eval transform applied to the same image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as nnf
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
        _check_aspect(*image.size)
        mode = InterpolationMode(self.interpolation)
        size = [self.resize_size, self.resize_size] if self.crop_mode == "squash" else [self.resize_size]
        image = F.resize(image, size, interpolation=mode, antialias=self.antialias)
        return F.pil_to_tensor(F.center_crop(image, [self.crop_size]))

    def resize_tensor(self, image: torch.Tensor, draft_scale: int = 1) -> torch.Tensor:
        """``__call__`` for a uint8 (3, H, W) tensor on any device, e.g. a JPEG decoded on a GPU.

        The horizontal and the vertical pass run in float32 and round to uint8 in between,
        as PIL does, so the result is within a level of PIL's on the same pixels.
        ``draft_scale`` > 1 first averages blocks of that many pixels a side, standing in for
        the JPEG DCT scaling that the CPU reader's draft mode decodes at.

        Raises:
            ValueError: the image is thinner than 1:``MAX_ASPECT_RATIO``.
        """
        height, width = image.shape[-2:]
        _check_aspect(width, height)
        x = image[None].float()
        if draft_scale > 1:
            x = nnf.pad(x, (0, -width % draft_scale, 0, -height % draft_scale), mode="replicate")
            x = nnf.avg_pool2d(x, draft_scale).round_()
            height, width = x.shape[-2:]
        out_h, out_w = self._resized_size(height, width)
        if self.interpolation == "nearest":
            x = nnf.interpolate(x, size=(out_h, out_w), mode="nearest")
        else:
            antialias = self.antialias and (out_h < height or out_w < width)
            for size in ((height, out_w), (out_h, out_w)):  # horizontal pass first, as PIL mostly does
                x = nnf.interpolate(x, size=size, mode=self.interpolation, antialias=antialias, align_corners=False)
                x = x.round_().clamp_(0, 255)
        return F.center_crop(x[0].to(torch.uint8), [self.crop_size])

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize, computed as torchvision does for a PIL image."""
        if self.crop_mode == "squash":
            return self.resize_size, self.resize_size
        if width <= height:
            return int(self.resize_size * height / width), self.resize_size
        return self.resize_size, int(self.resize_size * width / height)

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


def _check_aspect(width: int, height: int) -> None:
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(f"{width}x{height} is thinner than the 1:{MAX_ASPECT_RATIO} aspect ratio allowed")
