"""DNG files written offline from a real photo's pixels, with tifffile: a camera's RAW file as LibRaw reads it.

The photo's sRGB pixels are linearised and laid out as an RGGB Bayer mosaic at twice the
size, each photo pixel a 2x2 block, so that LibRaw's half-size development gives back that
photo. The colour matrix says the sensor sees linear sRGB. A preview, when asked for, is the
photo itself, stored as DNG stores it: IFD 0 is the preview (NewSubFileType 1) and the sensor
data sit in a SubIFD, uncompressed (LibRaw's BITMAP) or as a JPEG (what cameras write).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

# XYZ (D65) -> linear sRGB: the DNG ColorMatrix1 of a sensor that sees linear sRGB.
_XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                         [-0.9692660, 1.8760108, 0.0415560],
                         [0.0556434, -0.2040259, 1.0572252]])
_COMPRESSION, _STRIP_BYTE_COUNTS = 259, 279


def mosaic(photo: Image.Image) -> np.ndarray:
    """The photo as 16-bit linear RGGB sensor data at twice its size."""
    srgb = np.asarray(photo.convert("RGB"), dtype=np.float64) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    big = linear.repeat(2, 0).repeat(2, 1)
    out = np.empty(big.shape[:2])
    out[0::2, 0::2] = big[0::2, 0::2, 0]
    out[0::2, 1::2] = big[0::2, 1::2, 1]
    out[1::2, 0::2] = big[1::2, 0::2, 1]
    out[1::2, 1::2] = big[1::2, 1::2, 2]
    return np.round(out * 65535).astype(np.uint16)


def write_dng(path: Path, photo: Image.Image, *, orientation: int = 1, preview: str | None = None) -> Path:
    """Write ``photo`` as a DNG at ``path``.

    Args:
        orientation: the TIFF orientation tag (6: stored on its side, turn 90 degrees clockwise to view);
            the photo is stored as given.
        preview: None, ``"bitmap"`` (uncompressed RGB) or ``"jpeg"`` (quality 95): the photo at full size.
    """
    ratio = [v for x in _XYZ_TO_SRGB.flatten() for v in (int(round(x * 10000)), 10000)]
    dng = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 2, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "lookalike test sensor", True),  # UniqueCameraModel
        (50721, "2i", 9, ratio, True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (271, "s", 0, "lookalike", True),  # Make
        (272, "s", 0, "test", True),  # Model
        (274, "H", 1, orientation, True),  # Orientation
    ]
    cfa = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50714, "H", 1, 0, True),  # BlackLevel
        (50717, "H", 1, 65535, True),  # WhiteLevel
    ]
    sensor = mosaic(photo)
    rgb = np.asarray(photo.convert("RGB"))
    jpeg = _jpeg(photo) if preview == "jpeg" else None
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(sensor, photometric=32803, subfiletype=0, extratags=dng + cfa)
        else:
            if jpeg is not None:
                rgb = _room_for(rgb, len(jpeg))
            tif.write(rgb, photometric="rgb", subfiletype=1, subifds=1, rowsperstrip=rgb.shape[0], extratags=dng)
            tif.write(sensor, photometric=32803, subfiletype=0, extratags=cfa)
    if jpeg is not None:
        _make_strip_a_jpeg(path, jpeg)
    return path


def _jpeg(photo: Image.Image) -> bytes:
    buffer = io.BytesIO()
    photo.convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _room_for(rgb: np.ndarray, size: int) -> np.ndarray:
    """The preview's pixels, taller if need be, so its one strip has room for ``size`` bytes."""
    height, width, _ = rgb.shape
    rows = max(height, -(-size // (width * 3)))
    return np.pad(rgb, ((0, rows - height), (0, 0), (0, 0)))


def _make_strip_a_jpeg(path: Path, jpeg: bytes) -> None:
    """tifffile writes JPEG strips only with imagecodecs: write the JPEG's bytes over the preview's
    uncompressed strip, and patch its Compression (to 7, JPEG) and StripByteCounts in place."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset = page.dataoffsets[0]
        compression = page.tags[_COMPRESSION].valueoffset
        counts = page.tags[_STRIP_BYTE_COUNTS]
        count_at, count_type = counts.valueoffset, counts.dtype
        order = tif.byteorder
    data = bytearray(path.read_bytes())
    data[offset : offset + len(jpeg)] = jpeg
    data[compression : compression + 2] = (7).to_bytes(2, "little" if order == "<" else "big")
    width = 4 if count_type in (4, 16) else 2  # LONG (or LONG8) or SHORT
    data[count_at : count_at + width] = len(jpeg).to_bytes(width, "little" if order == "<" else "big")
    path.write_bytes(bytes(data))
