"""Write N real-photo JPEGs of mixed sizes for benchmarks (never committed: they are generated).

    python benchmarks/make_photos.py /tmp/bench-photos -n 500

Sources are scikit-image's bundled photos (CC0 / public domain). Half the files are at
least 1920x1080, the rest between 400 and 1280 px wide; crops and flips vary the content.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

SOURCES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
LARGE = ((1920, 1080), (2560, 1440), (3024, 4032), (4000, 3000))


def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in SOURCES]
    paths = []
    for i in range(n):
        image = images[i % len(images)]
        w, h = image.size
        left, top = rng.integers(0, w // 5), rng.integers(0, h // 5)
        crop = image.crop((int(left), int(top), int(left + w * 0.8), int(top + h * 0.8)))
        if i % 2 == 0:
            size = LARGE[(i // 2) % len(LARGE)]
        else:
            width = int(rng.integers(400, 1281))
            size = (width, int(width * crop.height / crop.width))
        if i % 3 == 0:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{i:05}.jpg"
        crop.resize(size, Image.Resampling.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("-n", type=int, default=500)
    args = parser.parse_args()
    paths = make_photos(args.folder, args.n)
    print(f"{len(paths)} photos -> {args.folder}")


if __name__ == "__main__":
    main()
