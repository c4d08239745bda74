"""Tiny labelled sets for the training and fine-tuning tests, made at test time: texture crops and handwritten digits."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

TEXTURES = Path(__file__).parent / "data" / "textures"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# Small enough for a 2-core CI machine: one head epoch, one epoch with the top block, batches of 4.
# Used with 3 images a class: 2 to train on, 1 to validate; 64 px crops are 12 times cheaper than Lite0's 224.
TINY = {"head_epochs": 1, "epochs": 1, "unfreeze": 1, "batch_size": 4, "val_fraction": 0.34, "image_size": 64}
TINY_ARGS = ["--head-epochs", "1", "--epochs", "1", "--unfreeze", "1", "--batch-size", "4", "--val-fraction", "0.34",
             "--image-size", "64", "--device", "cpu", "--workers", "0"]


def textures(root: Path, per_class: int = 4, classes=("brick", "grass", "gravel")) -> Path:
    """``per_class`` of the committed texture crops of each class, copied under ``root``."""
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((TEXTURES / name).glob("*.png"))[:per_class]:
            shutil.copy(path, root / name / path.name)
    return root


def digits(root: Path, per_class: int, classes=range(10), seed: int = 0, skip: int = 0) -> Path:
    """scikit-learn's 8x8 handwritten digits as 32x32 PNG folders (see benchmarks/make_digits.py)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from make_digits import make_digits
    finally:
        sys.path.remove(str(BENCHMARKS))
    make_digits(root, per_class, seed=seed, classes=classes, skip=skip)
    return root


def held_out_textures(folder: Path) -> dict[str, str]:
    """New patches of the texture photos, at positions the committed crops don't use: {path: class}."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("brick", "grass", "gravel"):
        path = folder / f"new_{name}.png"
        Image.fromarray(getattr(data, name)()).crop((384, 384, 512, 512)).rotate(90).save(path)
        out[str(path)] = name
    return out
