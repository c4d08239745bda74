"""Write N real-photo JPEGs of mixed sizes for benchmarks (never committed: they are generated).

    python benchmarks/make_photos.py /tmp/lookalike-bench-photos -n 500 [--jobs 4]

Sources are scikit-image's bundled photos (CC0 / public domain). Half the files are at
least 1920x1080 (up to 4000x3000), the rest between 400 and 1280 px wide; crops and flips
vary the content. File i depends only on i and the seed, whatever --jobs is.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
LARGE = ((1920, 1080), (2560, 1440), (3024, 4032), (4000, 3000))


@cache
def _sources() -> tuple[Image.Image, ...]:
    from skimage import data

    images = []
    for name in SOURCES:
        try:
            images.append(Image.fromarray(getattr(data, name)()).convert("RGB"))
        except Exception:  # noqa: BLE001 - an older scikit-image may not bundle it; use the others
            pass
    if not images:
        raise SystemExit("scikit-image ships none of the source photos here")
    return tuple(images)


def make_photo(folder: Path, i: int, seed: int = 0) -> Path:
    rng = np.random.default_rng([seed, i])
    images = _sources()
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
    return path


def make_photos(folder: Path, n: int, seed: int = 0, jobs: int = 1) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if jobs <= 1:
        return [make_photo(folder, i, seed) for i in range(n)]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(make_photo, [folder] * n, range(n), [seed] * n, chunksize=16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    paths = make_photos(args.folder, args.n, jobs=args.jobs)
    print(f"{len(paths)} photos -> {args.folder}")


if __name__ == "__main__":
    main()
