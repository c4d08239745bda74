"""A labelled set unlike ImageNet: scikit-learn's handwritten digits as image folders.

    python benchmarks/make_digits.py OUT [--per-class 30] [--seed 0]

scikit-learn ships 1,797 8x8 grayscale digits (0-16 ink levels, from the UCI "optical
recognition of handwritten digits" set) inside its wheel: no download. Each becomes a
32x32 PNG, dark ink on white, in OUT/<digit>/. ImageNet has nothing like them: pretrained
features miss what tells a 3 from an 8 (shape, not texture), which is where the recipe
table says to fine-tune. Tests make tiny sets with ``make_digits`` at test time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def make_digits(out: str | Path, per_class: int, *, seed: int = 0, classes=range(10), skip: int = 0) -> list[Path]:
    """Write ``per_class`` digits of each class (drawn without replacement, after the first ``skip``); returns the files."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    out, written = Path(out), []
    for c in classes:
        members = rng.permutation(np.flatnonzero(digits.target == c))[skip: skip + per_class]
        if len(members) < per_class:
            raise ValueError(f"digit {c} has only {len(members) + skip} images")
        (out / str(c)).mkdir(parents=True, exist_ok=True)
        for i in members:
            ink = (255 - digits.images[i] * (255 / 16)).round().astype(np.uint8)
            path = out / str(c) / f"{c}_{i:04}.png"
            Image.fromarray(ink).resize((32, 32), Image.Resampling.NEAREST).save(path)
            written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{len(make_digits(args.out, args.per_class, seed=args.seed))} digits in {args.out}")
