"""Decode one image file into an RGB PIL image, or raise ``ImageLoadError`` saying why.

Every way a file can be bad (empty, truncated, not an image, too many pixels, no
permission, an exotic mode) ends here as one ``ImageLoadError``, so the reader can
record it and carry on. Trouble that is not the file's (out of memory, an I/O error, an
interrupted read) raises ``TransientError`` instead, and is never recorded.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import ImageLoadError, first_line
from ..options import DEFAULT_MAX_PIXELS
from .failures import raise_if_transient
from .formats import FORMATS, IMAGE_EXTENSIONS, RAW_EXTENSIONS, missing_decoder, readable_formats
from .jxl import is_jxl, jxl_size
from .raw import read_raw
from .transparency import flatten, has_alpha

__all__ = ["DEFAULT_MAX_PIXELS", "FORMATS", "IMAGE_EXTENSIONS", "load_image", "to_rgb", "upright_rgb"]

_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION = 0x0112
_BITS_PER_SAMPLE = 258


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None,
               alpha: str = "composite") -> Image.Image:
    """Decode an image file to RGB with its EXIF orientation applied.

    Reads what ``formats`` lists: Pillow's formats (AVIF included), HEIF and JPEG XL through
    their plugins, RAW camera files through rawpy (``raw.py``).

    Args:
        path: the file.
        max_pixels: images with more pixels are refused before decoding. Pillow's own
            decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) still applies above it.
        draft_size: if set, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8)
            that keeps both sides at least this large, which is several times faster; a RAW
            file's embedded preview is used if it is at least this large.
        alpha: how transparency is flattened (``transparency.flatten``): ``"composite"`` or ``"white"``.

    Returns:
        An RGB image; animated files give their first frame, a multi-image HEIF its primary image.

    Raises:
        ImageLoadError: with a short ``reason``, for any file that cannot be used.
        TransientError: reading or decoding failed for a reason that is not the file's.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        extension = os.path.splitext(path)[1].lower()
        if extension in RAW_EXTENSIONS:
            return to_rgb(read_raw(path, max_pixels=max_pixels, draft_size=draft_size), alpha)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            _check_jxl_size(path, max_pixels)  # its plugin decodes the whole file as Pillow opens it
            with Image.open(path, formats=readable_formats()) as image:
                _check_size(path, *image.size, max_pixels)
                if draft_size and image.format in ("JPEG", "MPO"):
                    image.draft("RGB", (draft_size, draft_size))
                image.load()
                return upright_rgb(image, alpha)
    except ImageLoadError:
        raise
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory") from None
    except UnidentifiedImageError:
        missing = missing_decoder(os.path.splitext(path)[1].lower())
        raise ImageLoadError(path, missing or f"not an image in a supported format ({', '.join(readable_formats())}), "
                                              f"or a damaged one") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, f"refused as a decompression bomb: {e}") from None
    except Exception as e:  # noqa: BLE001 - a bad file must cost one line, never the run
        raise_if_transient(e, f"reading {path}")
        raise ImageLoadError(path, f"cannot decode: {_said(e)}") from None


def _said(error: Exception) -> str:
    """A decoder's message in one line, without pillow-jxl-plugin's advice on building libjxl."""
    return first_line(error).split(". Please build")[0]


def _check_size(path: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageLoadError(path, f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}")


def _check_jxl_size(path: str, max_pixels: int) -> None:
    """Refuse a JPEG XL file (known by its first bytes, whatever its name) over the limit, from its header."""
    if "JXL" not in readable_formats():
        return
    with open(path, "rb") as fp:
        if not is_jxl(fp.read(12)):
            return
        size = jxl_size(fp)
    if size is None:
        raise ImageLoadError(path, "a damaged JPEG XL file (its header cannot be read)")
    _check_size(path, *size, max_pixels)


def upright_rgb(image: Image.Image, alpha: str = "composite") -> Image.Image:
    """Apply EXIF orientation (as a camera meant the photo to be seen), then ``to_rgb``.

    HEIF and JPEG XL decoders turn the picture upright themselves (and pillow-heif resets the
    EXIF tag); a JPEG XL's EXIF orientation is never applied again (the codestream's rules,
    ISO/IEC 18181-2), unless the file holds a JPEG, which is decoded as a JPEG.
    """
    if not _decoder_oriented(image) and image.getexif().get(_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    return to_rgb(image, alpha)


def _decoder_oriented(image: Image.Image) -> bool:
    return getattr(image, "format", None) == "JXL" and not getattr(image, "jpeg", False)


def to_rgb(image: Image.Image, alpha: str = "composite") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: transparency flattened as ``alpha`` says, high bit depths scaled, not clipped."""
    if image.mode in _HIGH_BIT_DEPTH_MODES or image.mode == "F":
        return _gray_to_rgb(image)
    if has_alpha(image):
        return flatten(image, alpha)
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
