"""What indexing learns of a file besides its vector: its content hash, its size in pixels and when it was taken.

The hash is SHA-256 of the file's bytes (OpenSSL's, fast where the CPU has SHA instructions,
faster than BLAKE2b on this project's machine). ``Batch.facts`` lets a runtime report them
from the bytes its decoder read; none does yet, so indexing reads each embedded file once
more (``read_facts``, mostly from the page cache); rows the Ray engine writes get theirs at
the next run, which fills in what a store lacks. The store keeps these facts so that duplicates
can be told exact from near, keepers chosen by pixels or date, and moved files recognised by
their bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import NamedTuple

from PIL import Image

_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011


class FileFacts(NamedTuple):
    """A file's content hash (hex SHA-256), the image's width and height as seen upright, when it was taken
    (EXIF DateTimeOriginal as Unix nanoseconds, None without one), and whether it shows next to nothing."""

    digest: str
    width: int | None = None
    height: int | None = None
    taken_ns: int | None = None
    blank: bool | None = None


def digest_of(data: bytes) -> str:
    """The content hash the store records: SHA-256 of the bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """``digest_of`` a file's bytes, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def image_facts(image: Image.Image, digest: str) -> FileFacts:
    """The facts of an opened image (its header is enough: nothing is decoded here)."""
    width, height = image.size
    exif = image.getexif()
    if exif.get(0x0112, 1) in (5, 6, 7, 8):  # turned a quarter: as a person sees it
        width, height = height, width
    return FileFacts(digest, width, height, taken_ns(exif))


def taken_ns(exif) -> int | None:
    """EXIF DateTimeOriginal as Unix nanoseconds (its offset applied where the camera wrote one, else as UTC)."""
    try:
        inner = exif.get_ifd(_EXIF_IFD)
        text = inner.get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME_ORIGINAL)
        if not text:
            return None
        when = datetime.datetime.strptime(str(text).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
        offset = inner.get(_OFFSET_TIME_ORIGINAL)
        zone = datetime.timezone.utc
        if offset and len(str(offset)) >= 6 and str(offset)[0] in "+-":
            sign = 1 if str(offset)[0] == "+" else -1
            zone = datetime.timezone(sign * datetime.timedelta(hours=int(str(offset)[1:3]), minutes=int(str(offset)[4:6])))
        return int(when.replace(tzinfo=zone).timestamp() * 1e9)
    except (ValueError, TypeError, KeyError, AttributeError):  # a malformed date is no date
        return None


def read_facts(path: str | os.PathLike) -> FileFacts | None:
    """The facts of a file read afresh (for rows written before the store kept them); None if it can't be opened."""
    try:
        digest = file_digest(path)
        with Image.open(path) as image:
            return image_facts(image, digest)
    except Exception:  # noqa: BLE001 - an unreadable file has no facts; indexing records why elsewhere
        try:
            return FileFacts(file_digest(path))
        except OSError:
            return None
