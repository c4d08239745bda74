"""Transparency: an image with an alpha channel flattened the way a person sees it, and whether what is left is near-blank.

Flattening every transparent image onto white (what lookalike did first, kept as
``alpha="white"`` for stores made then) loses any picture drawn in white: MATE's overlay
wallpapers are white pixels whose picture lives in the alpha channel, and six distinct ones
all became one blank white image, "duplicates" at 1.0000. ``alpha="composite"`` puts the
image on white as before unless black shows clearly more of it (a white or light drawing,
meant for a dark desktop or page): then on black, which turns such an alpha channel into
the picture's luminance. An ordinary transparent logo or cut-out stays on white, unchanged.

``is_near_blank`` is a cheap test of what is left: a picture whose brightness barely varies
(a blank page, a lone dot) says nothing about which other picture it resembles, so it
should never be offered for removal as a duplicate.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

ALPHA_MODES = ("composite", "white")
LEGACY_ALPHA = "white"  # how specs written before ``alpha`` existed flattened transparency
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

# The background is chosen on a copy this small: the choice needs the picture's contrast, not its detail.
_SAMPLE = 64
# Black is chosen when it shows the picture this many times more (in luminance spread) than white, and by
# at least _MIN_GAIN levels, so an ordinary image is never flipped by noise.
_BLACK_GAIN = 2.0
_MIN_GAIN = 2.0
# Luminance spread (standard deviation, in 8-bit levels, on a 64-pixel copy) under which an image is
# near-blank. Real photos measure 12 (the moon) to 116; a blank JPEG 0; one dot on a page 5.8;
# a short line of text in a corner of 800x600 1.5.
NEAR_BLANK_STD = 2.0


def has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency: an alpha channel, or a transparent palette entry or colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def flatten(image: Image.Image, alpha: str = "composite") -> Image.Image:
    """An RGB image of a transparent one, on the background ``alpha`` says (see the module's docstring).

    Args:
        image: any mode with transparency (``has_alpha``).
        alpha: ``"composite"`` (white, or black where that shows the picture) or ``"white"``.
    """
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {', '.join(ALPHA_MODES)}, not {alpha!r}")
    rgba = image.convert("RGBA")
    colour = WHITE if alpha == "white" else background(rgba)
    flat = Image.new("RGB", rgba.size, colour)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def background(rgba: Image.Image) -> tuple[int, int, int]:
    """White, or black where the picture shows clearly more on black than on white (an RGBA image)."""
    small = rgba.resize(_sample_size(rgba.size), Image.Resampling.BOX) if max(rgba.size) > _SAMPLE else rgba
    pixels = np.asarray(small, dtype=np.float32)
    luminance = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # as PIL's "L"
    opacity = pixels[..., 3] / 255.0
    on_black = luminance * opacity
    on_white = on_black + 255.0 * (1.0 - opacity)
    spread_white, spread_black = float(on_white.std()), float(on_black.std())
    return BLACK if spread_black > max(_BLACK_GAIN * spread_white, spread_white + _MIN_GAIN) else WHITE


def blankness(image: Image.Image) -> float:
    """The spread of an image's brightness: the standard deviation of its luminance, in 8-bit levels,
    on a copy at most 64 pixels a side (a transparent image is flattened first, with ``"composite"``)."""
    if has_alpha(image):
        image = flatten(image)
    gray = image.convert("L")
    if max(gray.size) > _SAMPLE:
        gray = gray.resize(_sample_size(gray.size), Image.Resampling.BOX)
    return float(np.asarray(gray, dtype=np.float32).std())


def is_near_blank(image: Image.Image, max_std: float = NEAR_BLANK_STD) -> bool:
    """Whether an image is (nearly) one flat colour, as decoded: a blank page, a lone dot, a white-on-white overlay.

    Such an image resembles every other blank one, so a near-duplicate group of them proves
    nothing: never propose one for removal. Cheap: one downscale and a standard deviation.

    Args:
        image: a decoded image, e.g. ``load_image(path, draft_size=64)``.
        max_std: the luminance spread (``blankness``) under which it counts as blank.
    """
    return blankness(image) < max_std


def _sample_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = _SAMPLE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
