"""Labelled images for fine-tuning: checked once, split, augmented with seeded randomness.

Every random choice (the order of an epoch, each image's crop, flip and colour) comes from
a generator seeded by (seed, stage, epoch, image), never from global state: a run is
reproducible whatever the number of decoding workers, and a resumed run draws exactly
what the interrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..errors import DatasetError, ImageLoadError
from ..featurize.images.decode import DEFAULT_MAX_PIXELS, load_image
from ..featurize.images.preprocess import Preprocessing


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation: a random resized crop, a horizontal flip, light colour jitter.

    Attributes:
        strength: the name it was chosen by ("none", "light", "medium", "strong").
        min_scale: the smallest share of the image a crop keeps.
        jitter: brightness, contrast and saturation vary by up to this factor either way.
        flip: mirror half the images left-right (off for text, digits, anything with a handedness).
    """

    strength: str
    min_scale: float
    jitter: float
    flip: bool = True

    def __call__(self, image: Image.Image, size: int, interpolation: str, rng: np.random.Generator) -> torch.Tensor:
        """The augmented (3, size, size) uint8 tensor of an RGB image."""
        top, left, height, width = _crop_box(image.width, image.height, self.min_scale, rng)
        image = F.resized_crop(image, top, left, height, width, [size, size],
                               interpolation=InterpolationMode(interpolation), antialias=True)
        if self.flip and rng.random() < 0.5:
            image = F.horizontal_flip(image)
        if self.jitter:
            low, high = 1 - self.jitter, 1 + self.jitter
            image = F.adjust_brightness(image, rng.uniform(low, high))
            image = F.adjust_contrast(image, rng.uniform(low, high))
            image = F.adjust_saturation(image, rng.uniform(low, high))
        return F.pil_to_tensor(image)


AUGMENTATIONS = {
    "none": Augmentation("none", 1.0, 0.0, flip=False),  # the images as the model evaluates them
    "light": Augmentation("light", 0.7, 0.1),
    "medium": Augmentation("medium", 0.5, 0.15),
    "strong": Augmentation("strong", 0.35, 0.2),
}


def _crop_box(width: int, height: int, min_scale: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (aspect 3:4 to 4:3), drawn from ``rng``."""
    area = width * height
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    side = min(width, height)  # a central square, as torchvision falls back to
    return (height - side) // 2, (width - side) // 2, side, side


class LabelledImages(Dataset):
    """Item i: (uint8 image tensor, class index). Augmented (``augment`` set) or as the model evaluates.

    ``epoch`` (stage, epoch) seeds the augmentation; set it before each epoch's loader starts.
    """

    def __init__(self, paths: Sequence[str], targets: Sequence[int], preprocessing: Preprocessing, *,
                 augment: Augmentation | None = None, seed: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths, self.targets = list(paths), list(targets)
        self.preprocessing, self.augment, self.seed, self.max_pixels = preprocessing, augment, seed, max_pixels
        self.epoch = (0, 0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pre = self.preprocessing
        try:
            image = load_image(self.paths[i], max_pixels=self.max_pixels, draft_size=pre.resize_size)
        except ImageLoadError as e:  # it was readable when checked: it changed during the run
            raise DatasetError(f"{e.path} can no longer be read ({e.reason}): restore it, or restart without it") from None
        if self.augment is None or self.augment.strength == "none":
            return pre(image), self.targets[i]
        rng = np.random.default_rng([self.seed, *self.epoch, i])
        return self.augment(image, pre.crop_size, pre.interpolation, rng), self.targets[i]


def epoch_order(n: int, seed: int, stage: int, epoch: int) -> list[int]:
    """The shuffled order of an epoch: the same for the same (seed, stage, epoch), run or resumed."""
    return np.random.default_rng([seed, stage, epoch, n]).permutation(n).tolist()


def loader(dataset: LabelledImages, order: Sequence[int], batch_size: int, workers: int) -> DataLoader:
    """Batches of (uint8 N x 3 x H x W, targets) in ``order``, decoded on ``workers`` processes."""
    return DataLoader(dataset, batch_size=batch_size, sampler=list(order), num_workers=workers,
                      persistent_workers=False, drop_last=False)


def stratified_split(targets: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation): ``fraction`` of each class, at least one, never its last image."""
    targets = np.asarray(targets)
    if fraction <= 0:
        return list(range(len(targets))), []
    rng = np.random.default_rng([seed, len(targets)])
    train, val = [], []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, round(fraction * len(members))))
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return sorted(train), sorted(val)


def check_images(paths: Sequence[str], preprocessing: Preprocessing, max_pixels: int,
                 workers: int) -> tuple[list[int], list[tuple[str, str]]]:
    """Decode every image once: (indices that can be used, (path, reason) for those that can't)."""
    probe = _Probe(list(paths), preprocessing, max_pixels)
    batches = DataLoader(probe, batch_size=16, num_workers=workers, collate_fn=list)
    good, bad = [], []
    for batch in batches:
        for i, reason in batch:
            if reason is None:
                good.append(i)
            else:
                bad.append((paths[i], reason))
    return good, bad


class _Probe(Dataset):
    def __init__(self, paths: list[str], preprocessing: Preprocessing, max_pixels: int):
        self.paths, self.preprocessing, self.max_pixels = paths, preprocessing, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str | None]:
        try:
            self.preprocessing(load_image(self.paths[i], max_pixels=self.max_pixels,
                                          draft_size=self.preprocessing.resize_size))
        except ImageLoadError as e:
            return i, e.reason
        except ValueError as e:  # thinner than the preprocessing allows
            return i, f"cannot preprocess: {e}"
        return i, None
