"""Decode one image file into an RGB PIL image, or raise ``ImageLoadError`` saying why.

Every way a file can be bad (empty, truncated, not an image, too many pixels, no
permission, an exotic mode) ends here as one ``ImageLoadError``, so the reader can
record it and carry on.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError

# Well under PIL's decompression-bomb limit (about 89.5 MP), above a 48 MP phone photo.
DEFAULT_MAX_PIXELS = 50_000_000

# Only formats people keep photos in: no EPS (Ghostscript) or other exotic parsers.
# JPEG covers MPO (multi-picture camera JPEGs); AVIF is used where this Pillow reads it.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "AVIF")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".avif"}
)

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_BACKGROUND = (255, 255, 255)


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode an image file to RGB with its EXIF orientation applied.

    Args:
        path: the file.
        max_pixels: images with more pixels are refused before decoding.
        draft_size: if set, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8)
            that keeps both sides at least this large, which is several times faster.

    Returns:
        An RGB image; animated files give their first frame, transparency is composited on white.

    Raises:
        ImageLoadError: with a short ``reason``, for any file that cannot be used.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path, formats=_readable_formats()) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageLoadError(
                        path, f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}"
                    )
                if draft_size and image.format in ("JPEG", "MPO"):
                    image.draft("RGB", (draft_size, draft_size))
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except ImageLoadError:
        raise
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, f"not an image in a supported format ({', '.join(_readable_formats())})") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, f"refused as a decompression bomb: {e}") from None
    except Exception as e:  # noqa: BLE001 - a bad file must cost one line, never the run
        raise ImageLoadError(path, f"cannot decode: {e}" if str(e) else f"cannot decode: {type(e).__name__}") from None


@functools.cache
def _readable_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha over white, 16-bit and float scaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        return _gray_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _gray_to_rgb(image: Image.Image) -> Image.Image:
    """PIL's own convert clips 16-bit values at 255, turning most photos white; scale instead."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if pixels.size and np.nanmax(pixels) <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0
    gray = np.clip(np.nan_to_num(pixels * scale), 0, 255).round().astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
