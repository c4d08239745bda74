"""What the serve tests share: a store of real photos built once per session, query images, a working directory."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from conftest import photo
from test_indexing import make_photo_folder

from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder


def photo_folder(tmp_path_factory) -> Path:
    """Six real photos, a broken file and a near-duplicate of rocket, indexed; built once, then reused (read-only)."""
    folder = tmp_path_factory.getbasetemp() / "serve-photos"
    if not (folder / ".lookalike" / "manifest.json").exists():
        make_photo_folder(folder)
        copy = photo("rocket")
        copy.thumbnail((400, 400))
        copy.resize((copy.width * 3 // 4, copy.height * 3 // 4)).save(folder / "rocket-copy.jpg", quality=70)
        index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    return folder


def edited_chelsea(path: Path) -> Path:
    """A cropped, shrunk, re-encoded copy of the stored chelsea.jpg: a query that is not in the store."""
    image = photo("chelsea")
    w, h = image.size
    image.crop((25, 20, w - 15, h - 10)).resize((240, 160)).save(path, quality=55)
    return path


def jpeg_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@contextlib.contextmanager
def working_directory(path: Path):
    """Paths in answers are shown relative to the server's working directory, as `query --json` shows them."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
