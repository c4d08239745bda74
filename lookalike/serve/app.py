"""The app: the static page, the JSON API and the error answers, put together behind the guard."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources

from ..errors import (
    DuplicatesError,
    ImageLoadError,
    LookalikeError,
    StoreError,
    UnknownImageError,
    UploadError,
)
from ..featurize import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from ..store.store import Store
from .api import Services, api_router
from .classifier import Labeller
from .embed_queue import EmbedQueue
from .files import StoredFileError
from .gallery import Gallery
from .guard import Guard
from .review import Review
from .session import Session
from .thumbnails import Thumbnails
from .uploads import UploadSpool

logger = logging.getLogger(__name__)

STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


def create_app(
    store: Store,
    *,
    display_path: Callable[[str], str] = str,
    classifier: str | os.PathLike | None = None,
    max_upload_bytes: int = 25_000_000,
    thumbnail_cache_bytes: int = 64 << 20,
    warm_up: bool = True,
    allow_actions: bool = False,
    api_docs: bool = False,
    quarantine: str | os.PathLike | None = None,
    trash: bool = False,
    watcher=None,
):
    """The web app over a store: the page at ``/``, the JSON API under ``/api``, its OpenAPI at ``/openapi.json``.

    Args:
        store: opened with ``lookalike.open_store`` (its embedder turns uploads into vectors,
            with the decoder's pixel limit it was opened with, which thumbnails keep to as well).
        display_path: how paths appear in answers; the CLI shows them as ``query --json`` does.
        classifier: a model file from ``lookalike train``: queries then carry predicted labels.
        max_upload_bytes: the largest upload accepted.
        thumbnail_cache_bytes: memory for thumbnails.
        warm_up: at startup, in the background, load the model and run it once, and touch the
            whole index (see ``Store.keep_warm``), so that the first requests are fast;
            ``/api/info`` says when both are done.
        allow_actions: allow requests that change something (with the session's token) even
            when the server listens beyond loopback (see ``session``).
        api_docs: serve Swagger UI at ``/docs`` and ReDoc at ``/redoc``. Their pages load
            script from a CDN, on the origin that serves the images: off unless asked for.
        quarantine: the folder the review moves resolved duplicates to (``review``); without
            it (or ``trash``) the page can't resolve, only say images are distinct and undo.
        trash: the review sends resolved duplicates to the OS trash instead.
        watcher: a ``lookalike.watch.Watcher`` of the store's folder, run on a thread while the
            app runs (``serve --watch``): new photos show up without a restart. The review's
            writes then go through it, since it holds the store's lock.

    Whether the server is on loopback (which decides the ``Host`` check and whether anything
    may change) is read from the socket ``Server`` binds, never from a host name.

    Returns:
        An ASGI app, for uvicorn (see ``Server``) or any ASGI server.

    Raises:
        StoreError: the store was not opened with ``lookalike.open_store``.
        ModelFileError, ModelMismatchError: the classifier can't be read, or fits another embedding.
        DuplicatesError: both ``quarantine`` and ``trash``, or a quarantine folder the store can't use.
    """
    from fastapi import FastAPI

    if store.embedder is None:
        raise StoreError("open the store with lookalike.open_store, so that uploaded images can be embedded")
    labeller = Labeller(classifier, store.info()["spec"]) if classifier is not None else None
    max_pixels = getattr(getattr(store.embedder, "options", None), "max_pixels", DEFAULT_MAX_PIXELS)
    session = Session(allow_actions=allow_actions)  # a new token for each app, so each server start
    gallery = Gallery(store, display_path, labeller)
    writes = (lambda fn: watcher.call(fn).result()) if watcher is not None else None
    review = Review(store, gallery, quarantine, trash, display_path, writes)
    services = Services(
        gallery=gallery,
        queue=EmbedQueue(store.embedder),
        spool=UploadSpool(max_upload_bytes, frozenset(IMAGE_EXTENSIONS)),
        thumbnails=Thumbnails(thumbnail_cache_bytes, max_pixels),
        max_pixels=max_pixels,
        session=session,
        review=review,
    )

    @asynccontextmanager
    async def lifespan(app):
        folder = services.spool.open()
        services.queue.start(_warm_up_image(folder) if warm_up else None)
        if warm_up:
            threading.Thread(target=services.gallery.warm, name="lookalike-warm-index", daemon=True).start()
        watching = _start_watching(watcher) if watcher is not None else None
        try:
            yield
        finally:
            if watching is not None:
                watcher.stop()
                watching.join(timeout=60)
            services.queue.close()
            services.spool.close()

    app = FastAPI(title="lookalike", version=_version(), lifespan=lifespan,
                  docs_url="/docs" if api_docs else None, redoc_url="/redoc" if api_docs else None,
                  description="Search a lookalike store by image, browse neighbours and near-duplicates.")
    app.include_router(api_router(services))
    _add_page(app)
    _add_error_answers(app)
    guard = Guard(app, max_upload_bytes, session, docs=api_docs)
    guard.services = services  # for tests and embedding applications
    return guard


def _add_page(app) -> None:
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse, Response

    files = resources.files(__package__) / "static"
    page = (files / "index.html").read_text(encoding="utf-8")
    assets = {name: (files / name).read_bytes() for name in STATIC}
    no_cache = {"Cache-Control": "no-cache"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=no_cache)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no static file {name[:80]!r}")
        return Response(assets[name], media_type=STATIC[name], headers=no_cache)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)


def _add_error_answers(app) -> None:
    """Every error is ``{"error": "what went wrong and what to do"}`` with a fitting status."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def answer(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(UploadError)
    async def upload(request, error: UploadError):
        return answer(error.status, str(error))

    @app.exception_handler(UnknownImageError)
    async def unknown(request, error):
        return answer(404, str(error))

    @app.exception_handler(StoredFileError)
    async def stored(request, error: StoredFileError):
        return answer(error.status, str(error))

    @app.exception_handler(ImageLoadError)
    async def unreadable(request, error: ImageLoadError):
        return answer(404, f"the stored file can't be shown: {error.reason}")

    @app.exception_handler(DuplicatesError)
    async def undecided(request, error: DuplicatesError):
        return answer(409, str(error))

    @app.exception_handler(LookalikeError)
    async def library(request, error):
        return answer(409 if isinstance(error, StoreError) else 500, str(error))

    @app.exception_handler(HTTPException)
    async def http(request, error: HTTPException):
        if error.status_code == 404 and error.detail == "Not Found":
            return answer(404, f"nothing at {request.url.path[:200]}: the page is at /, the API is described at /openapi.json")
        return answer(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        problems = [f"{'.'.join(str(part) for part in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in error.errors()]
        return answer(422, "; ".join(problems))

    @app.exception_handler(Exception)
    async def unexpected(request, error):
        logger.exception("%s %s failed", request.method, request.url.path)
        return answer(500, f"internal error ({type(error).__name__}); the server keeps running, see its log")


def _start_watching(watcher) -> threading.Thread:
    """Run the watcher on a thread; if it stops with an error, say so in the log (the server goes on)."""

    def run() -> None:
        try:
            watcher.run()
        except Exception as error:  # noqa: BLE001 - the page still serves what is stored
            logger.warning("watching %s stopped: %s", watcher.root, error)

    thread = threading.Thread(target=run, name="lookalike-watch", daemon=True)
    thread.start()
    return thread


def _warm_up_image(folder) -> str:
    from PIL import Image

    path = os.path.join(folder, "warm-up.jpg")
    Image.new("RGB", (96, 96), (128, 128, 128)).save(path, quality=90)
    return path


def _version() -> str:
    from ..version import __version__

    return __version__
