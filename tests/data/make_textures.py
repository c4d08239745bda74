"""Rebuild tests/data/textures: 12 patches each of three CC0 texture photos from scikit-image.

    python tests/data/make_textures.py

brick (CC0Textures Bricks25), grass (linolafett, DeviantArt, CC0), gravel (CC0Textures
Gravel04). Patches are 128 px crops at seeded positions, some mirrored, so a raw-pixel
classifier can't match them by position: the classes differ in texture, not layout.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).parent / "textures"
PER_CLASS = 12
SIZE = 128


def main() -> None:
    rng = np.random.default_rng(0)
    for name in ("brick", "grass", "gravel"):
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(getattr(data, name)())
        for i in range(PER_CLASS):
            x, y = rng.integers(0, image.width - SIZE, size=2)
            patch = image.crop((int(x), int(y), int(x) + SIZE, int(y) + SIZE))
            if i % 2:
                patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            patch.save(folder / f"{name}_{i:02}.png", optimize=True)


if __name__ == "__main__":
    main()
