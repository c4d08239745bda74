"""The upload spool: a multipart upload checked and written to a private file, for the CNN to read.

The store's embedder reads files, exactly as ``lookalike query FILE`` does, so an upload
gives the same vector as the same file given to ``query``. Each upload gets its own file
in a folder only this process can read (mode 0700), deleted as soon as it is embedded.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path, PurePath

from ..errors import UploadError

TOO_LARGE_FLAG = "lookalike.body_too_large"  # set in the ASGI scope by the guard when it cut a body short
_FIELD_BYTES = 64 * 1024
_CHUNK = 1 << 20


def megabytes(size: int) -> str:
    return f"{size / 1e6:.3g} MB"


class UploadSpool:
    """Receives uploaded images into private temporary files.

    Args:
        max_bytes: the largest image accepted (default 25 MB).
        extensions: file name endings kept on the temporary file (lower case, with the dot).
    """

    def __init__(self, max_bytes: int = 25_000_000, extensions: frozenset[str] = frozenset()):
        self.max_bytes = max_bytes
        self.extensions = extensions
        self.directory: Path | None = None

    def open(self) -> Path:
        """Make the private folder (mode 0700); the server calls it on start."""
        self.directory = Path(tempfile.mkdtemp(prefix="lookalike-serve-"))
        return self.directory

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    @asynccontextmanager
    async def receive(self, request):
        """The upload in field ``image`` as a private file, with the form's other fields; deleted on exit.

        Yields:
            (path, fields): the file, and the other form fields as strings.

        Raises:
            UploadError: no ``image`` field, an empty or too large file, or a malformed form.
        """
        from starlette.datastructures import UploadFile
        from starlette.requests import ClientDisconnect

        try:
            form = await request.form(max_files=1, max_fields=16, max_part_size=_FIELD_BYTES)
        except ClientDisconnect:
            if request.scope.get(TOO_LARGE_FLAG):
                raise UploadError(f"the upload is over the limit of {megabytes(self.max_bytes)}", 413) from None
            raise
        except Exception as error:  # starlette's MultiPartException, python-multipart's parser errors
            raise UploadError(f"not a valid multipart/form-data upload: {error}", 400) from None
        try:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise UploadError("send the image as a multipart/form-data file field named 'image'", 400)
            fields = {name: value for name, value in form.items() if isinstance(value, str)}
            path = self.directory / (uuid.uuid4().hex + self._suffix(image.filename))
            try:
                await self._copy(image, path)
                yield path, fields
            finally:
                path.unlink(missing_ok=True)
        finally:
            await form.close()

    async def _copy(self, image, path: Path) -> None:
        size = 0
        with open(path, "wb") as out:
            while chunk := await image.read(_CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    raise UploadError(f"the upload is over the limit of {megabytes(self.max_bytes)}", 413)
                out.write(chunk)
        if size == 0:
            raise UploadError("the upload is empty (0 bytes)", 400)

    def _suffix(self, filename: str | None) -> str:
        suffix = PurePath(filename or "").suffix.lower()
        return suffix if suffix in self.extensions else ""
