"""Thumbnails: stored images re-encoded as small JPEGs, kept in a bounded in-memory cache.

Re-encoding means the browser only ever receives a JPEG we made, whatever the original
file holds, and a page of 50 results costs 50 small files rather than 50 photos. Thumbnails
are made from a file opened and checked as it was indexed (``files.open_indexed``), and the
cache is keyed by its real path, size and modification time. Sizes are rounded up to a
fixed ladder (``SIZES``), so that no run of requests for odd sizes can fill the cache with
copies or keep the decoder busy.
A transparent image is shown as a person sees it, flattened as new stores embed it (on
white, or on black where that shows its picture: ``featurize.images.transparency``), so an
overlay whose picture lives in its alpha channel is no blank square, whatever the store's spec says.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import threading
from collections import OrderedDict
from typing import NamedTuple

from ..featurize import DEFAULT_MAX_PIXELS, load_image
from .files import OpenFile

SIZES = (32, 64, 128, 256, 384, 512, 768, 1024)  # a thumbnail's longer side, in pixels


def thumbnail_size(asked: int) -> int:
    """The rung of ``SIZES`` a request for ``asked`` pixels gets: the next one up (the largest at most)."""
    return SIZES[min(bisect.bisect_left(SIZES, asked), len(SIZES) - 1)]


class Thumbnail(NamedTuple):
    jpeg: bytes
    etag: str


class Thumbnails:
    """Makes and caches thumbnails.

    Args:
        max_bytes: the cache's budget; the least recently used thumbnails go first.
        max_pixels: larger originals are refused, as the indexer refuses them.
        quality: JPEG quality of the thumbnails.
    """

    def __init__(self, max_bytes: int = 64 << 20, max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = 82):
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.quality = quality
        self._cache: OrderedDict[tuple, Thumbnail] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def etag(self, opened: OpenFile, size: int) -> str:
        """The ETag of the thumbnail of ``opened`` at ``size``, without making it."""
        return self._entity((*opened.key, size))

    def get(self, opened: OpenFile, size: int) -> Thumbnail:
        """The thumbnail of an open stored file, at most ``size`` pixels on its longer side.

        Raises:
            ImageLoadError: the file can no longer be decoded, with the reason.
        """
        key = (*opened.key, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = load_image(opened.path, max_pixels=self.max_pixels, draft_size=size, alpha="composite")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=self.quality)
        thumbnail = Thumbnail(buffer.getvalue(), self._entity(key))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = thumbnail
                self._bytes += len(thumbnail.jpeg)
            while self._bytes > self.max_bytes and self._cache:
                _, dropped = self._cache.popitem(last=False)
                self._bytes -= len(dropped.jpeg)
        return thumbnail

    @staticmethod
    def _entity(key: tuple) -> str:
        return '"' + hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest() + '"'
