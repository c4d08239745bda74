"""Thumbnails: stored images re-encoded as small JPEGs, kept in a bounded in-memory cache.

Re-encoding means the browser only ever receives a JPEG we made, whatever the original
file holds, and a page of 50 results costs 50 small files rather than 50 photos. The
cache is keyed by the file's size and modification time as well, so a file changed on
disk gets a new thumbnail (and a new ETag) even before it is indexed again. A transparent
image is shown as a person sees it, flattened as new stores embed it (on white, or on black
where that shows its picture: ``featurize.images.transparency``), so an overlay whose picture
lives in its alpha channel is no blank square, whatever the store's own spec says.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from typing import NamedTuple

from ..errors import ImageLoadError
from ..featurize import DEFAULT_MAX_PIXELS, load_image


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

    def etag(self, path: str, size: int) -> str:
        """The ETag the thumbnail of ``path`` at ``size`` has now, without making it.

        Raises:
            ImageLoadError: the file is gone.
        """
        return self._entity(self._key(path, size))

    def get(self, path: str, size: int) -> Thumbnail:
        """The thumbnail of ``path``, at most ``size`` pixels on its longer side.

        Raises:
            ImageLoadError: the file is gone or can no longer be decoded, with the reason.
        """
        key = self._key(path, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = load_image(path, max_pixels=self.max_pixels, draft_size=size, alpha="composite")
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

    def _key(self, path: str, size: int) -> tuple:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise ImageLoadError(path, "file not found") from None
        except OSError as error:
            raise ImageLoadError(path, error.strerror or str(error)) from None
        return path, size, stat.st_size, stat.st_mtime_ns

    @staticmethod
    def _entity(key: tuple) -> str:
        return '"' + hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest() + '"'
