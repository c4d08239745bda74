"""The fine-tuning configuration, and what is chosen from the data set's size when left to ``auto``.

Smaller sets get more epochs (each is short) and stronger augmentation (they overfit
sooner); early stopping on the validation loss ends a run that stops improving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import LookalikeError
from ..featurize.images.preprocess import Preprocessing
from ..featurize.models.registry import DEFAULT_MODEL
from .dataset import AUGMENTATIONS, Augmentation

# (fewest training images, epochs, augmentation): the first row whose bound the set reaches.
SIZE_TIERS = ((5000, 5, "light"), (500, 8, "medium"), (0, 12, "strong"))


@dataclass
class FinetuneConfig:
    """Everything that decides what a fine-tune learns (the device and workers don't).

    Attributes:
        model, layer, weights: the base network, the layer the head sits on, a weights file.
        head_epochs: stage 1, the body frozen and the new head trained at ``head_lr``.
        epochs: stage 2, the top ``unfreeze`` blocks trained too; ``None`` chooses by data size.
        unfreeze: blocks from the top trained in stage 2, or "all".
        lr: the head's rate in stage 2; the k-th block below it gets ``lr * layer_decay**k``.
        head_lr: stage 1's rate; ``None`` is 10 x ``lr``.
        weight_decay, label_smoothing: AdamW's decay (not on biases and norms); the loss's smoothing.
        warmup: the share of each stage's steps over which the rate rises linearly, before a cosine decay to 0.
        train_bn: let BatchNorm statistics of trained blocks update (frozen by default).
        val_fraction: stratified share held out for validation and early stopping (0: none).
        patience: stage-2 epochs without a better validation loss before stopping.
        augment: "auto" (by data size), "none", "light", "medium" or "strong". flip: mirror images left-right.
        batch_size, seed: as named; the same seed gives the same weights on a CPU.
        image_size: train (and then embed) at this crop size instead of the model's own, e.g. 96 for
            small images such as digits or icons: several times faster on a CPU. The ``.lkft``
            records it, so every later use resizes the same way.
    """

    model: str = DEFAULT_MODEL
    layer: str | None = None
    weights: str | None = None
    head_epochs: int = 2
    epochs: int | None = None
    unfreeze: int | str = 3
    lr: float = 1e-4
    head_lr: float | None = None
    layer_decay: float = 0.6
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup: float = 0.1
    train_bn: bool = False
    val_fraction: float = 0.2
    patience: int = 3
    augment: str = "auto"
    flip: bool = True
    batch_size: int = 32
    seed: int = 0
    image_size: int | None = None

    def check(self) -> None:
        """Raise ``LookalikeError`` on values no run can use, before anything is loaded."""
        problems = []
        if self.head_epochs < 0 or (self.epochs is not None and self.epochs < 0):
            problems.append("epochs can't be negative")
        if self.head_epochs == 0 and self.epochs == 0:
            problems.append("--head-epochs and --epochs are both 0: nothing would train")
        if not (0 < self.layer_decay <= 1):
            problems.append(f"--layer-decay must be in (0, 1], not {self.layer_decay}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            problems.append("learning rates must be positive")
        if not (0 <= self.val_fraction < 1):
            problems.append(f"--val-fraction must be in [0, 1), not {self.val_fraction}")
        if self.augment != "auto" and self.augment not in AUGMENTATIONS:
            problems.append(f"--augment must be auto, {', '.join(AUGMENTATIONS)}, not {self.augment!r}")
        if self.batch_size < 1 or self.patience < 1:
            problems.append("--batch-size and --patience must be at least 1")
        if self.image_size is not None and self.image_size < 32:
            problems.append(f"--image-size must be at least 32, not {self.image_size}")
        if not (0 <= self.warmup < 1) or not (0 <= self.label_smoothing < 1):
            problems.append("--warmup and --label-smoothing must be in [0, 1)")
        if problems:
            raise LookalikeError("; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Recipe:
    """What a run does, with ``auto`` settled: epochs per stage, the rates, the augmentation, and why."""

    head_epochs: int
    epochs: int
    head_lr: float
    augmentation: Augmentation
    reason: str

    def to_dict(self) -> dict:
        return {"head_epochs": self.head_epochs, "epochs": self.epochs, "head_lr": self.head_lr,
                "augmentation": asdict(self.augmentation), "reason": self.reason}


def choose_recipe(config: FinetuneConfig, n_train: int) -> Recipe:
    """Settle ``epochs=None`` and ``augment="auto"`` from the number of training images."""
    bound, epochs, strength = next(t for t in SIZE_TIERS if n_train >= t[0])
    chosen = []
    if config.epochs is None:
        chosen.append(f"{epochs} epochs")
    if config.augment == "auto":
        chosen.append(f"{strength} augmentation")
    else:
        strength = config.augment
    size = f"{n_train} training images" + (f" (at least {bound})" if bound else " (under 500)")
    reason = f"{' and '.join(chosen)} for {size}" if chosen else "as given"
    augmentation = AUGMENTATIONS[strength]
    if not config.flip:
        augmentation = Augmentation(augmentation.strength, augmentation.min_scale, augmentation.jitter, flip=False)
    head_lr = config.head_lr if config.head_lr is not None else 10 * config.lr
    return Recipe(config.head_epochs, config.epochs if config.epochs is not None else epochs, head_lr, augmentation, reason)


def input_preprocessing(preprocessing: Preprocessing, image_size: int | None) -> Preprocessing:
    """The model's preprocessing, scaled to another crop size (resize and crop in the same proportion)."""
    if image_size is None or image_size == preprocessing.crop_size:
        return preprocessing
    resize = round(preprocessing.resize_size * image_size / preprocessing.crop_size)
    return replace(preprocessing, resize_size=resize, crop_size=image_size)
