"""JPEG files decoded on the model's device: nvJPEG batches on a CUDA GPU, with the CPU as fallback.

The reader's workers only read a JPEG's bytes and header (``read_jpeg``); the extractor
decodes a whole batch in one ``torchvision.io.decode_jpeg`` call on the device
(``decode_jpegs``), turns each image upright and resizes it there
(``Preprocessing.resize_tensor``). Anything the device can't take (other formats, CMYK,
files nvJPEG rejects) is decoded by PIL on the CPU exactly as without a GPU, so a bad
file still costs one ``Failure`` with a reason.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import NamedTuple

import torch
from PIL import Image

from .failures import raise_if_transient

logger = logging.getLogger(__name__)

_ORIENTATION = 0x0112


class EncodedJpeg(NamedTuple):
    """A JPEG file read but not decoded.

    Attributes:
        key: the path as given.
        data: the file's bytes, a 1-D uint8 CPU tensor.
        orientation: its EXIF orientation (1 = upright ... 8).
        draft_scale: the DCT scale (1, 2, 4 or 8) the CPU reader would decode it at,
            which ``Preprocessing.resize_tensor`` imitates so both paths give near-equal vectors.
    """

    key: str
    data: torch.Tensor
    orientation: int
    draft_scale: int


def read_jpeg(path: str, *, max_pixels: int, draft_size: int, max_aspect_ratio: int) -> EncodedJpeg | None:
    """Read a JPEG that the device decoder can take, or None: then decode it on the CPU.

    None also covers every kind of bad file, so that the CPU path gives its usual reason;
    a file that doesn't end in the end-of-image marker may be truncated, which nvJPEG, unlike
    PIL, can decode into a half-grey picture.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
                width, height = image.size
                if (
                    image.format != "JPEG"
                    or image.mode not in ("RGB", "L")
                    or width * height > max_pixels
                    or max(width, height) > max_aspect_ratio * min(width, height)
                ):
                    return None
                orientation = image.getexif().get(_ORIENTATION, 1)
                image.draft("RGB", (draft_size, draft_size))
                draft_scale = max(1, round(width / image.size[0]))
    except Exception as e:  # noqa: BLE001 - the CPU path will say what is wrong with it
        raise_if_transient(e, f"reading {path}")
        return None
    if orientation not in range(1, 9):
        orientation = 1
    return EncodedJpeg(path, torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation, draft_scale)


def decode_jpegs(jpegs: list[EncodedJpeg], device: torch.device) -> list[torch.Tensor | None]:
    """Decode to upright uint8 (3, H, W) RGB tensors on ``device``; None where the decoder refused one.

    One batched call first; if it fails, each file alone, so one bad file only costs itself.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        try:
            images = decode_jpeg([j.data for j in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError as e:
            raise_if_transient(e, f"decoding {len(jpegs)} JPEGs on {device}")  # out of memory is no file's fault
            images = []
            for jpeg in jpegs:
                try:
                    images.append(decode_jpeg(jpeg.data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError as e:
                    raise_if_transient(e, f"decoding {jpeg.key} on {device}")
                    logger.debug("%s: decoded on the CPU instead (%s)", jpeg.key, str(e).splitlines()[0] if str(e) else e)
                    images.append(None)
    return [None if image is None else upright(image, jpeg.orientation) for image, jpeg in zip(images, jpegs)]


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a (C, H, W) tensor, as ``PIL.ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def device_decoding_available(device: torch.device) -> bool:
    """Whether torchvision can decode JPEGs on this device (CUDA with nvJPEG)."""
    if device.type != "cuda":
        return False
    try:
        import torchvision.io  # noqa: F401 - registers the image ops

        return hasattr(torch.ops.image, "decode_jpegs_cuda")
    except (ImportError, RuntimeError, AttributeError):
        return False
