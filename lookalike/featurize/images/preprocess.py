"""The preprocessing contract of a model: resize, crop, then normalise.

Geometry runs on decoded PIL images (in the reader's workers) and yields uint8 pixels, a
quarter of float32's bytes to move; normalisation runs in float inside the network's own
process (in the ONNX graph, or on the torch device). ``pixels`` does the geometry with PIL
and numpy alone, so the ONNX Runtime path never imports torch; it performs the very PIL
calls torchvision's ``resize`` and ``center_crop`` make for a PIL image, so the result
equals torchvision's ``weights.transforms()`` and timm's eval transform on the same image
(the tests check both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .transparency import ALPHA_MODES, LEGACY_ALPHA

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# torchvision's InterpolationMode values and the PIL filters its PIL kernels use for them.
PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}

# Resizing the short side of a 10000x1 strip to 256 px would need gigabytes; nothing that
# thin is a photo a CNN can read anyway.
MAX_ASPECT_RATIO = 100


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input.

    Attributes:
        resize_size: the shorter side is resized to this (``crop_mode="center"``).
        crop_size: the square side fed to the network.
        interpolation: ``"bilinear"``, ``"bicubic"``, ``"nearest"`` (or another of torchvision's modes).
        mean, std: per-channel normalisation of pixels scaled to [0, 1].
        antialias: antialias when downscaling (PIL always does).
        crop_mode: ``"center"`` (resize the shorter side, keeping the aspect ratio) or
            ``"squash"`` (resize both sides to ``resize_size``); a centre crop follows either.
        alpha: how a transparent image is flattened before all that (``transparency.flatten``):
            ``"composite"`` (on white, or on black where that shows the picture) or ``"white"``,
            which specs written before this field existed did: ``from_dict`` reads a record
            without it as ``"white"``, and ``to_dict`` writes it only when it is not ``"white"``,
            so such a record stays byte for byte what it was (and so does its ONNX export's key).
    """

    resize_size: int
    crop_size: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    antialias: bool = True
    crop_mode: str = "center"
    alpha: str = "composite"

    def __post_init__(self):
        if self.interpolation not in PIL_FILTERS:
            raise ValueError(f"interpolation must be one of {', '.join(PIL_FILTERS)}, not {self.interpolation!r}")
        if self.crop_mode not in ("center", "squash"):
            raise ValueError(f"crop_mode must be 'center' or 'squash', not {self.crop_mode!r}")
        if self.alpha not in ALPHA_MODES:
            raise ValueError(f"alpha must be one of {', '.join(ALPHA_MODES)}, not {self.alpha!r}")

    def pixels(self, image: Image.Image) -> np.ndarray:
        """Resize and crop an RGB image with PIL; returns uint8 pixels of shape (3, crop, crop).

        Raises:
            ValueError: the image is thinner than 1:``MAX_ASPECT_RATIO``.
        """
        width, height = image.size
        _check_aspect(width, height)
        out_h, out_w = self._resized_size(height, width)
        if (out_h, out_w) != (height, width):
            image = image.resize((out_w, out_h), resample=PIL_FILTERS[self.interpolation])
        image = image.crop(_centre_crop_box(self.crop_size, out_h, out_w))
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """``pixels`` as a uint8 torch tensor of shape (3, crop, crop)."""
        import torch

        return torch.from_numpy(self.pixels(image))

    def resize_tensor(self, image: torch.Tensor, draft_scale: int = 1) -> torch.Tensor:
        """``__call__`` for a uint8 (3, H, W) tensor on any device, e.g. a JPEG decoded on a GPU.

        The horizontal and the vertical pass run in float32 and round to uint8 in between,
        as PIL does, so the result is within a level of PIL's on the same pixels.
        ``draft_scale`` > 1 first averages blocks of that many pixels a side, standing in for
        the JPEG DCT scaling that the CPU reader's draft mode decodes at.

        Raises:
            ValueError: the image is thinner than 1:``MAX_ASPECT_RATIO``.
        """
        import torch
        import torch.nn.functional as nnf
        from torchvision.transforms.v2 import functional as F

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
        """uint8 (N, 3, H, W) -> float32, scaled to [0, 1] and standardised per channel.

        The ONNX export folds this very function into its graph, so both runtimes normalise alike.
        """
        import torch

        x = batch.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["alpha"] == LEGACY_ALPHA:
            del d["alpha"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**{"alpha": LEGACY_ALPHA, **d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


def _centre_crop_box(crop: int, height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's centre crop of a PIL image as one PIL crop box: a side shorter than the
    crop is padded with black evenly (the odd pixel after), a longer one cut at its rounded middle."""
    top = -((crop - height) // 2) if crop > height else int(round((height - crop) / 2.0))
    left = -((crop - width) // 2) if crop > width else int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def _check_aspect(width: int, height: int) -> None:
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(f"{width}x{height} is thinner than the 1:{MAX_ASPECT_RATIO} aspect ratio allowed")
