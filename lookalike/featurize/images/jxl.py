"""JPEG XL headers: an image's size read from its first bytes, before anything is decoded.

pillow-jxl-plugin decodes a whole file the moment Pillow opens it, so the decoder's pixel
limit could only apply after the work (and the memory) it is there to refuse. ``jxl_size``
reads the width and height from the codestream's SizeHeader (ISO/IEC 18181-1, section
D.2), inside a bare codestream or the ISO BMFF container (18181-2), without libjxl.
"""

from __future__ import annotations

from typing import BinaryIO

CODESTREAM = b"\xff\x0a"
CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
_HEADER_BYTES = 32  # the SizeHeader takes at most 2 + 8 bytes; read a little more
_MAX_BOXES = 64


def is_jxl(head: bytes) -> bool:
    """Whether a file's first 12 bytes are JPEG XL's (a bare codestream or a container)."""
    return head.startswith(CODESTREAM) or head.startswith(CONTAINER)


def jxl_size(fp: BinaryIO) -> tuple[int, int] | None:
    """(width, height) of the JPEG XL file open at ``fp`` (read from its start), or None if its header is unreadable.

    The size is the stored one, before the orientation is applied (the pixel count is the same).
    """
    fp.seek(0)
    head = fp.read(len(CONTAINER))
    if head.startswith(CODESTREAM):
        fp.seek(0)
        codestream = fp.read(_HEADER_BYTES)
    elif head == CONTAINER:
        codestream = _codestream_start(fp)
    else:
        return None
    if not codestream.startswith(CODESTREAM):
        return None
    try:
        return _size_header(_Bits(codestream[2:]))
    except IndexError:  # the header is cut short
        return None


def _codestream_start(fp: BinaryIO) -> bytes:
    """The first bytes of the codestream inside a container: a ``jxlc`` box, or the ``jxlp`` boxes in order."""
    found = b""
    for _ in range(_MAX_BOXES):
        header = fp.read(8)
        if len(header) < 8:
            break
        size, kind = int.from_bytes(header[:4], "big"), header[4:]
        body = size - 8
        if size == 1:
            body = int.from_bytes(fp.read(8), "big") - 16
        elif size == 0:
            body = None  # the box runs to the end of the file
        if kind == b"jxlc":
            return fp.read(_HEADER_BYTES)
        if kind == b"jxlp":
            fp.read(4)  # the part's index
            part = fp.read(min(_HEADER_BYTES, body - 4) if body is not None else _HEADER_BYTES)
            found += part
            if len(found) >= _HEADER_BYTES or body is None:
                return found
            fp.seek(body - 4 - len(part), 1)
            continue
        if body is None or body < 0:
            break
        fp.seek(body, 1)
    return found


class _Bits:
    """A reader of bits, least significant first, as JPEG XL packs them."""

    def __init__(self, data: bytes):
        self.data, self.position = data, 0

    def read(self, count: int) -> int:
        value = 0
        for i in range(count):
            byte = self.data[(self.position + i) >> 3]
            value |= ((byte >> ((self.position + i) & 7)) & 1) << i
        self.position += count
        return value

    def u32_size(self) -> int:
        """U32(Bits(9), Bits(13), Bits(18), Bits(30)), the distribution of a side minus one."""
        return self.read((9, 13, 18, 30)[self.read(2)])


def _size_header(bits: _Bits) -> tuple[int, int]:
    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else bits.u32_size() + 1
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = _RATIOS[ratio]
        return height * numerator // denominator, height
    width = (bits.read(5) + 1) * 8 if small else bits.u32_size() + 1
    return width, height
