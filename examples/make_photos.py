"""Rebuild examples/photos from scikit-image's bundled sample photos (all CC0 or public domain).

    python examples/make_photos.py

chelsea-copy.jpg is a near-duplicate of chelsea.jpg: cropped, shrunk and re-encoded.
"""

from pathlib import Path

from PIL import Image
from skimage import data

OUT = Path(__file__).parent / "photos"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "coins")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)())
        image.thumbnail((480, 480))
        image.save(OUT / f"{name}.jpg", quality=85)
    chelsea = Image.fromarray(data.chelsea())
    w, h = chelsea.size
    copy = chelsea.crop((8, 6, w - 4, h - 2)).resize((352, 232), Image.Resampling.LANCZOS)
    copy.save(OUT / "chelsea-copy.jpg", quality=70)


if __name__ == "__main__":
    main()
