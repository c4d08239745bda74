"""The file formats lookalike reads, by extension, and through what: Pillow, pillow-heif, pillow-jxl-plugin or rawpy.

Pillow reads the everyday formats itself, AVIF included (Pillow 11.3 and later). HEIF
(an iPhone's HEIC) comes through pillow-heif and JPEG XL through pillow-jxl-plugin, both
dependencies, registered here as Pillow plugins the first time a file is opened. RAW camera
files come through rawpy (LibRaw), the ``raw`` extra; without it a RAW file is a failure whose
reason says what to install, and ``index`` counts RAW files among the types it did not read.
"""

from __future__ import annotations

import functools
import importlib.util

from PIL import Image

# Only formats people keep photos in: no EPS (Ghostscript) or other exotic parsers.
# JPEG covers MPO (multi-picture camera JPEGs).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "AVIF", "HEIF", "JXL")

PILLOW_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".avif"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
JXL_EXTENSIONS = frozenset({".jxl"})
# Adobe DNG, Canon CR2/CR3, Nikon NEF/NRW, Sony ARW, Fujifilm RAF, Olympus ORF, Panasonic RW2, Pentax PEF, Samsung SRW.
RAW_EXTENSIONS = frozenset({".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw"})
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg"})  # what a camera writes beside a RAW file

IMAGE_EXTENSIONS = PILLOW_EXTENSIONS | HEIF_EXTENSIONS | JXL_EXTENSIONS | RAW_EXTENSIONS

# Image types people keep that lookalike never reads (layered, vector, HDR, icon and older RAW
# formats): ``index`` counts them as skipped, so that they are not missing without a word.
UNREAD_EXTENSIONS = frozenset(
    {".psd", ".psb", ".xcf", ".kra", ".svg", ".svgz", ".ai", ".eps", ".ico", ".icns", ".jp2", ".j2k", ".jpf",
     ".jpx", ".exr", ".hdr", ".tga", ".dds", ".crw", ".3fr", ".iiq", ".x3f", ".erf", ".kdc", ".dcr", ".mrw",
     ".mos", ".sr2", ".srf", ".rwl"}
)

RAW_INSTALL = "pip install 'lookalike[raw]'"
# The decoders beyond Pillow: extensions, module, what to install, and what to call the files.
_DECODERS = (
    (HEIF_EXTENSIONS, "pillow_heif", "pip install pillow-heif", "HEIF"),
    (JXL_EXTENSIONS, "pillow_jxl", "pip install pillow-jxl-plugin", "JPEG XL"),
    (RAW_EXTENSIONS, "rawpy", RAW_INSTALL, "RAW"),
)


@functools.cache
def installed(module: str) -> bool:
    """Whether a decoder's module can be imported (looked up, not imported)."""
    return importlib.util.find_spec(module) is not None


def missing_install(extension: str) -> tuple[str, str] | None:
    """(what the files are, what to install) when this extension's decoder is not installed, e.g.
    ``("RAW", "pip install 'lookalike[raw]'")``; None when it is, or when Pillow reads it.

    Args:
        extension: lower-case, with its dot (``".cr2"``).
    """
    for extensions, module, install, kind in _DECODERS:
        if extension in extensions and not installed(module):
            return kind, install
    return None


def missing_decoder(extension: str) -> str | None:
    """Why files with this extension can't be read here, naming what to install; None when they can."""
    missing = missing_install(extension)
    if missing is None:
        return None
    kind, install = missing
    return f"a {kind} file ({extension}): reading it needs {install}"


def readable_extensions() -> frozenset[str]:
    """The extensions of the files this installation can decode."""
    return frozenset(e for e in IMAGE_EXTENSIONS if missing_decoder(e) is None)


@functools.cache
def readable_formats() -> tuple[str, ...]:
    """Pillow's format names that ``load_image`` opens: ``FORMATS`` less those this Pillow lacks, plugins registered."""
    Image.init()
    if installed("pillow_heif"):
        from pillow_heif import register_heif_opener

        register_heif_opener()
    if installed("pillow_jxl"):
        import pillow_jxl  # noqa: F401 - registers the JXL format with Pillow
    return tuple(f for f in FORMATS if f in Image.OPEN)
