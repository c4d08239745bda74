"""What the serve tests share: a store of real photos built once per session, query images, a working directory,
and an app that counts what reaches it."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from conftest import photo
from test_indexing import make_photo_folder

from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store
from lookalike.serve import create_app


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


class Counted:
    """An ASGI app that records the requests it is handed (path and headers), and passes them on.

    Anything else (``listening_on``) is the wrapped app's, so ``Server`` still tells the guard where it listens.
    """

    def __init__(self, app):
        self.app, self.paths, self.headers = app, [], []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.paths.append(scope["path"])
            self.headers.append({k.decode(): v.decode("latin-1") for k, v in scope["headers"]})
        await self.app(scope, receive, send)

    def __getattr__(self, name):
        return getattr(self.app, name)


def watched_app(folder: Path, **options):
    """An app over ``folder`` that counts its store's searches and what passes its guard, with a test route that changes something.

    Returns:
        ``(guard, searches, done)``: ``guard.app`` is a ``Counted``; ``searches`` the names of the
        store's search methods called; ``done`` the bodies ``/api/test/action`` (POST, PUT, PATCH, DELETE) was given.
    """
    store = open_store(folder, device="cpu")
    searches = []
    for name in ("search", "similar", "knn", "duplicate_groups"):
        real = getattr(store, name)
        setattr(store, name, lambda *a, _real=real, _name=name, **k: searches.append(_name) or _real(*a, **k))
    guard = create_app(store, warm_up=False, **options)
    done = []

    def action(body: dict | None = None) -> dict:  # what a route that resolves duplicates looks like to the guard
        done.append(body)
        return {"done": len(done)}

    guard.app.add_api_route("/api/test/action", action, methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    guard.app = Counted(guard.app)
    return guard, searches, done
