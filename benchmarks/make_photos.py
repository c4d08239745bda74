"""Write benchmark JPEGs that weigh what camera photos weigh (generated, never committed).

    python benchmarks/make_photos.py /tmp/lookalike-bench-photos/large -n 120 --kind large [--jobs 2]

A real camera JPEG at quality 90 holds about 2-4 MB per 12 MP (0.17-0.33 MB per megapixel):
fine detail and sensor noise everywhere. Scaling a small photo up gives a smooth picture that
decodes faster and weighs a fraction of that, which flatters every decoder. So each photo
here is a collage of crops taken from real photos at their native resolution (never
upscaled), with signal-dependent sensor-like noise added, saved at quality 90 with 4:2:0
chroma subsampling as cameras do; ``bytes_per_mp`` reports what came out.

Sources: scikit-image's bundled photos (CC0 / public domain) and, where the Debian package
``mate-backgrounds`` is installed (``apt-get install mate-backgrounds``, 47 MB; the
benchmark's setup, never the tests'), its nature photographs of up to 4.9 MP, which give
larger tiles. Kinds: ``large`` (4-12 MP: 2560x1920 up to 4000x3000, landscape and
portrait), ``small`` (at most 1 MP, 400-1152 px wide), ``mixed`` (alternating). File i
depends only on i, the kind and the seed, whatever --jobs is.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
DEBIAN = Path("/usr/share/backgrounds/mate/nature")
LARGE = ((2560, 1920), (3264, 2448), (4000, 3000), (3000, 4000), (3264, 2176))
NOISE = 4.5  # sensor noise, in levels at mid-grey: brings the collages to camera JPEG sizes (about 0.24 MB/MP)
VERSION = 3  # bump when the photos change, so that cached sets are made again


@cache
def sources() -> tuple[np.ndarray, ...]:
    """The real photos tiles are cut from, as RGB arrays at their native resolution."""
    from skimage import data

    images = []
    for name in SKIMAGE:
        try:
            images.append(np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB")))
        except Exception:  # noqa: BLE001 - an older scikit-image may not bundle it; use the others
            pass
    images += [np.asarray(Image.open(path).convert("RGB")) for path in sorted(DEBIAN.glob("*.jpg"))]
    if not images:
        raise SystemExit("no source photos: install scikit-image (and optionally mate-backgrounds)")
    return tuple(images)


def collage(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of native-resolution crops from random sources, filling ``width`` x ``height`` exactly."""
    images = sources()
    canvas = np.empty((height, width, 3), np.uint8)
    tallest = max(image.shape[0] for image in images)
    y = 0
    while y < height:
        row = min(int(rng.integers(min(256, tallest), tallest + 1)), height - y)
        fit = [image for image in images if image.shape[0] >= row]
        x = 0
        while x < width:
            image = fit[int(rng.integers(len(fit)))]
            h, w = image.shape[:2]
            tile_w = min(int(rng.integers(max(1, w // 2), w + 1)), width - x)
            top, left = int(rng.integers(0, h - row + 1)), int(rng.integers(0, w - tile_w + 1))
            tile = image[top : top + row, left : left + tile_w]
            canvas[y : y + row, x : x + tile_w] = tile[:, ::-1] if rng.random() < 0.5 else tile
            x += tile_w
        y += row
    return canvas


def sensor_noise(pixels: np.ndarray, rng: np.random.Generator, level: float = NOISE) -> np.ndarray:
    """Shot noise (growing with brightness, per channel) plus read noise (shared by the channels)."""
    x = pixels.astype(np.float32)
    x += rng.standard_normal(x.shape, dtype=np.float32) * (level * np.sqrt(x / 128 + 0.1))
    x += rng.standard_normal(x.shape[:2] + (1,), dtype=np.float32) * (level / 2)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def photo_size(i: int, kind: str, rng: np.random.Generator) -> tuple[int, int]:
    if kind == "large" or (kind == "mixed" and i % 2 == 0):
        return LARGE[(i // (2 if kind == "mixed" else 1)) % len(LARGE)]
    width = int(rng.integers(400, 1153))
    return width, int(width * (3 / 4 if i % 3 else 2 / 3))  # at most 1152x864, under 1 MP


def make_photo(folder: Path, i: int, kind: str = "mixed", seed: int = 0) -> Path:
    rng = np.random.default_rng([seed, i, VERSION])
    width, height = photo_size(i, kind, rng)
    path = folder / f"{i:05}.jpg"
    Image.fromarray(sensor_noise(collage(width, height, rng), rng)).save(path, quality=90, subsampling="4:2:0")
    return path


def make_photos(folder: Path, n: int, kind: str = "mixed", seed: int = 0, jobs: int = 1) -> list[Path]:
    """``n`` photos of ``kind`` in ``folder``; reuses a set made before with the same settings."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "photos.json"
    settings = {"version": VERSION, "kind": kind, "seed": seed, "sources": len(sources())}
    paths = [folder / f"{i:05}.jpg" for i in range(n)]
    try:
        made = json.loads(marker.read_text())
    except (OSError, ValueError):
        made = {}
    if made.get("settings") == settings and made.get("n", 0) >= n and all(p.is_file() for p in paths):
        return paths
    marker.unlink(missing_ok=True)
    if jobs <= 1:
        paths = [make_photo(folder, i, kind, seed) for i in range(n)]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            paths = list(pool.map(make_photo, [folder] * n, range(n), [kind] * n, [seed] * n, chunksize=4))
    marker.write_text(json.dumps({"settings": settings, "n": n}))
    return paths


def bytes_per_mp(paths: list[Path]) -> dict:
    """What the set weighs: mean megapixels, MB per megapixel (mean, min, max) and MB per 12 MP."""
    sizes, pixels = [], []
    for path in paths:
        with Image.open(path) as image:
            pixels.append(image.width * image.height / 1e6)
        sizes.append(path.stat().st_size / 1e6)
    ratios = np.array(sizes) / np.array(pixels)
    return {"files": len(paths), "mean_mp": float(np.mean(pixels)), "mb_per_mp": float(ratios.mean()),
            "mb_per_mp_min": float(ratios.min()), "mb_per_mp_max": float(ratios.max()),
            "mb_per_12mp": float(ratios.mean() * 12)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--kind", choices=("large", "small", "mixed"), default="mixed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    paths = make_photos(args.folder, args.n, args.kind, jobs=args.jobs)
    stats = bytes_per_mp(paths)
    print(f"{len(paths)} {args.kind} photos -> {args.folder}: {stats['mean_mp']:.1f} MP on average, "
          f"{stats['mb_per_mp']:.3f} MB/MP ({stats['mb_per_12mp']:.1f} MB per 12 MP)")


if __name__ == "__main__":
    main()
