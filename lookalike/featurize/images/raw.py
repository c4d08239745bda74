"""RAW camera files through rawpy (LibRaw), the ``raw`` extra: the embedded preview where it is large
enough, else the sensor data demosaicked at half size.

A camera stores a full-size or large JPEG preview inside most RAW files; where it is at
least as large as asked (the model's resize, a thumbnail's side) it is what the camera
itself rendered, and reading it is many times faster than developing the sensor data.
Otherwise the sensor data are developed at half size (each 2x2 Bayer block one pixel,
LibRaw's ``half_size``; ``DEVELOP`` says how): still 6 MP from a 24 MP sensor, far more
than a network looks at. Either way the image comes out upright (LibRaw's
``flip``) and the decoder's pixel limit applies to the sensor's size before anything is
unpacked.
"""

from __future__ import annotations

import io
import os
import warnings

from PIL import Image

from ...errors import ImageLoadError
from .formats import RAW_EXTENSIONS, missing_decoder

__all__ = ["RAW_EXTENSIONS", "read_raw"]

# How the sensor data are developed: the camera's white balance, sRGB's transfer curve, and no automatic
# brightening (dcraw's default stretches each picture by its own histogram, so one scene shot darker and
# lighter would drift apart). A sensor that saw sRGB comes back as the photo it saw (tests/raw_files.py).
DEVELOP = {"use_camera_wb": True, "no_auto_bright": True, "gamma": (2.4, 12.92)}
# LibRaw's flip (0, 3, 5, 6) as the transposition that turns the stored picture upright.
_UPRIGHT = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
_ASPECT_TOLERANCE = 0.02  # a preview letterboxed or cropped to another shape is not the photo


def read_raw(path: str, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode a RAW file to an upright RGB image.

    Args:
        path: the file.
        max_pixels: a sensor with more pixels is refused before its data are unpacked.
        draft_size: with it, the embedded preview is used when both its sides are at least
            this large (and it has the photo's shape); without it, the sensor data are always developed.

    Raises:
        ImageLoadError: rawpy is not installed (the reason names the install), or the file is not a RAW
            file LibRaw reads, or it is damaged, or too large.
        MemoryError: LibRaw ran out of memory (not the file's fault).
    """
    extension = os.path.splitext(path)[1].lower()
    missing = missing_decoder(extension if extension in RAW_EXTENSIONS else ".dng")
    if missing:
        raise ImageLoadError(path, missing)
    import rawpy

    try:
        with rawpy.RawPy() as raw:
            raw.open_file(path)
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if width * height > max_pixels:
                raise ImageLoadError(path, f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}")
            image = _preview(raw, width, height, draft_size, max_pixels) if draft_size else None
            if image is None:
                raw.unpack()
                return Image.fromarray(raw.postprocess(half_size=True, output_bps=8, **DEVELOP))
            transpose = _UPRIGHT.get(sizes.flip)
            return image.transpose(transpose) if transpose is not None else image
    except (rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError):  # sic: LibRaw's spelling
        raise MemoryError(f"LibRaw ran out of memory reading {path}") from None
    except rawpy.LibRawIOError:  # LibRaw's word for a file that ends before its data do
        raise ImageLoadError(path, "cannot decode the RAW file: it is truncated or damaged (LibRaw: input/output error)") from None
    except rawpy.LibRawFileUnsupportedError:
        raise ImageLoadError(path, "not a RAW file that LibRaw reads (damaged, or another format under that name)") from None
    except rawpy.LibRawError as e:
        raise ImageLoadError(path, f"cannot decode the RAW file: {_message(e)}") from None


def _preview(raw, width: int, height: int, draft_size: int, max_pixels: int) -> Image.Image | None:
    """The embedded preview as RGB if it is at least ``draft_size`` a side and the photo's shape, else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError, rawpy.LibRawDataError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(thumb.data), formats=("JPEG",))
            except Exception:  # noqa: BLE001 - an unreadable preview: develop the sensor data instead
                return None
    elif thumb.format == rawpy.ThumbFormat.BITMAP and thumb.data.ndim == 3 and thumb.data.shape[2] == 3:
        image = Image.fromarray(thumb.data)
    else:
        return None
    w, h = image.size
    if min(w, h) < draft_size or w * h > max_pixels or abs(w / h - width / height) > _ASPECT_TOLERANCE * width / height:
        return None
    if image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
        try:
            image.load()
        except Exception:  # noqa: BLE001 - a damaged preview: develop the sensor data instead
            return None
    return image.convert("RGB")


def _message(error: Exception) -> str:
    """LibRaw's message without the bytes literal rawpy wraps it in."""
    text = str(error)
    if len(text) > 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        text = text[2:-1]
    return text or type(error).__name__
