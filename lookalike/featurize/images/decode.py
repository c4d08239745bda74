"""Decode one image file into an RGB PIL image, or raise ``ImageLoadError`` saying why.

Every way a file can be bad (empty, truncated, not an image, too many pixels, no
permission, an exotic mode) ends here as one ``ImageLoadError``, so the reader can
record it and carry on. Trouble that is not the file's (out of memory, an I/O error, an
interrupted read) raises ``TransientError`` instead, and is never recorded.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import ImageLoadError
from ..options import DEFAULT_MAX_PIXELS
from .failures import raise_if_transient

# Only formats people keep photos in: no EPS (Ghostscript) or other exotic parsers.
# JPEG covers MPO (multi-picture camera JPEGs); AVIF is used where this Pillow reads it.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "AVIF")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".avif"}
)

_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION = 0x0112
_BITS_PER_SAMPLE = 258
_BACKGROUND = (255, 255, 255)


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode an image file to RGB with its EXIF orientation applied.

    Args:
        path: the file.
        max_pixels: images with more pixels are refused before decoding. Pillow's own
            decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) still applies above it.
        draft_size: if set, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8)
            that keeps both sides at least this large, which is several times faster.

    Returns:
        An RGB image; animated files give their first frame, transparency is composited on white.

    Raises:
        ImageLoadError: with a short ``reason``, for any file that cannot be used.
        TransientError: reading or decoding failed for a reason that is not the file's.
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
                return upright_rgb(image)
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
        raise_if_transient(e, f"reading {path}")
        raise ImageLoadError(path, f"cannot decode: {e}" if str(e) else f"cannot decode: {type(e).__name__}") from None


@functools.cache
def _readable_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


def upright_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation (as a camera meant the photo to be seen), then ``to_rgb``."""
    if image.getexif().get(_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha over white, high bit depths scaled, not clipped."""
    if image.mode in _HIGH_BIT_DEPTH_MODES or image.mode == "F":
        return _gray_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _gray_to_rgb(image: Image.Image) -> Image.Image:
    """PIL's own convert clips high bit depths at 255, turning most photos white; scale instead.

    Integer images are scaled by their bit depth (TIFF's BitsPerSample, else 16);
    float images in [0, 1] or [0, 255] are taken as such, others stretched to their range.
    """
    pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
    top = pixels.max() if pixels.size else 0.0
    if image.mode == "F":
        full = 1.0 if top <= 1.0 else 255.0
    else:
        full = 2.0 ** _bits_per_sample(image) - 1
    low = 0.0
    if pixels.size and (pixels.min() < 0 or top > full):  # outside any range we know: use its own
        low, full = pixels.min(), max(top, pixels.min() + 1e-12)
    gray = np.clip((pixels - low) * (255.0 / (full - low)), 0, 255).round().astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _bits_per_sample(image: Image.Image) -> int:
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 1 <= bits <= 32 else 16
