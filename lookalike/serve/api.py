"""The JSON API: info, failures, search by upload, similar, dupes, thumbnails, originals, predict, session;
and the review's actions: resolve duplicate groups, say images are distinct, undo.

Files are only ever named by catalog id, a non-negative integer: a request can't name a
path, so it can't reach outside the store, and a file is served only while it is the file
that was indexed (``files``). Only the review's three POSTs change anything (``review``).
Who may call what is the guard's business (``guard``, ``session``), decided before a
request gets here.
"""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ..errors import UploadError
from .embed_queue import EmbedQueue
from .files import FileBody
from .gallery import Gallery
from .guard import LOOPBACK_FLAG
from .review import Decision, Review
from .session import TOKEN_HEADER, Session
from .thumbnails import Thumbnails, thumbnail_size
from .uploads import UploadSpool

MAX_K = 1000
ImageId = Annotated[int, Path(ge=0, le=2**63 - 1, description="An image's id, from search, similar or dupes results.")]
_UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary"},
                   "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
                   "threshold": {"type": "number", "minimum": -1, "maximum": 1}}}}}}}
_PREDICT_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary"},
                   "top": {"type": "integer", "minimum": 1, "default": 3}}}}}}}


@dataclass
class Services:
    """What the endpoints share."""

    gallery: Gallery
    queue: EmbedQueue
    spool: UploadSpool
    thumbnails: Thumbnails
    max_pixels: int
    session: Session
    review: Review


class GroupDecision(BaseModel):
    """A group as the user left it."""

    keeper: int = Field(ge=0, description="The id of the image to keep: the rules' keeper or another member.")
    remove: list[int] = Field(default_factory=list, max_length=100_000,
                              description="Ids of members to move away; only duplicates of the keeper itself go.")


class Resolution(BaseModel):
    """Groups to resolve, as ``/api/dupes`` showed them."""

    threshold: float = Field(gt=-1, le=1)
    k: int = Field(10, ge=2, le=100)
    generation: int = Field(description="The store generation /api/dupes answered with: a newer store is refused.")
    groups: list[GroupDecision] = Field(min_length=1, max_length=100_000)


class Distinct(BaseModel):
    """Images the user says are not duplicates of one another."""

    ids: list[int] = Field(min_length=2, max_length=1_000)


def api_router(services: Services) -> APIRouter:
    """The ``/api`` routes over ``services``."""
    router = APIRouter(prefix="/api")
    gallery = services.gallery

    @router.get("/info", summary="The store's info, the classifier's, the upload limits, and whether the startup warm-up is done")
    def info() -> dict:
        return {**gallery.info(), "limits": {"max_upload_bytes": services.spool.max_bytes,
                                             "max_pixels": services.max_pixels, "max_k": MAX_K},
                "warm": {"model": services.queue.warmed.is_set(), "index": gallery.warmed.is_set()}}

    @router.get("/failures", summary="Files that could not be indexed, with the reason for each")
    def failures(limit: Annotated[int, Query(ge=1, le=1_000_000)] = 1000) -> dict:
        return gallery.failures(limit)

    @router.post("/search", summary="The stored images nearest an uploaded one", openapi_extra=_UPLOAD_DOC)
    async def search(request: Request) -> dict:
        async with services.spool.receive(request) as (path, fields):
            k = _form_number(fields, "k", int, 10, 1, MAX_K)
            threshold = _form_number(fields, "threshold", float, None, -1, 1)
            vector = await asyncio.wrap_future(services.queue.submit(path))
        return await run_in_threadpool(gallery.search, vector, k, threshold)

    @router.get("/similar/{image_id}", summary="The nearest other images of a stored one")
    def similar(image_id: ImageId, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                threshold: Annotated[float | None, Query(ge=-1, le=1)] = None) -> dict:
        return gallery.similar(image_id, k, threshold)

    @router.get("/dupes", summary="Groups of near-duplicate images")
    def dupes(threshold: Annotated[float, Query(gt=-1, le=1)] = 0.95, k: Annotated[int, Query(ge=2, le=100)] = 10,
              limit: Annotated[int, Query(ge=1, le=100_000)] = 100) -> dict:
        return {**gallery.dupes(threshold, k, limit), "resolve_to": services.review.where()}

    @router.post("/dupes/resolve", summary="Move (or trash) the members of groups that duplicate their keeper, journal first")
    def resolve(resolution: Resolution) -> dict:
        decisions = [Decision(g.keeper, g.remove) for g in resolution.groups]
        return services.review.resolve(resolution.threshold, resolution.k, resolution.generation, decisions)

    @router.post("/distinct", summary="Say these images are not duplicates of one another (as `lookalike distinct`)")
    def distinct(body: Distinct) -> dict:
        return services.review.distinct(body.ids)

    @router.post("/undo", summary="Undo the last action (as `lookalike undo`)")
    def undo() -> dict:
        return services.review.undo()

    @router.get("/thumbs/{image_id}", summary="A JPEG thumbnail, re-encoded and cached (size rounded up to 32, 64, 128, 256, 384, 512, 768 or 1024)",
                response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(image_id: ImageId, request: Request, size: Annotated[int, Query(ge=16, le=1024)] = 256) -> Response:
        size = thumbnail_size(size)
        cache = {"Cache-Control": "private, max-age=60"}
        with gallery.open(image_id) as opened:
            etag = services.thumbnails.etag(opened, size)
            if etag in request.headers.get("if-none-match", ""):
                return Response(status_code=304, headers={"ETag": etag, **cache})
            made = services.thumbnails.get(opened, size)
        return Response(made.jpeg, media_type="image/jpeg", headers={"ETag": made.etag, **cache})

    @router.get("/images/{image_id}", summary="The original file, if it is still the file that was indexed",
                response_class=Response, responses={200: {"content": {"image/*": {}, "application/octet-stream": {}}}})
    def original(image_id: ImageId) -> Response:
        opened = gallery.open(image_id)
        media_type = mimetypes.guess_type(opened.name)[0] or ""
        return FileBody(opened, media_type if media_type.startswith("image/") else "application/octet-stream", opened.name)

    @router.get("/session", summary="This server start's token, which requests that change something send as X-Lookalike-Token")
    def session(request: Request) -> dict:
        return {"token": services.session.token, "header": TOKEN_HEADER,
                "actions": services.session.actions_allowed(request.scope.get(LOOPBACK_FLAG, False))}

    @router.post("/predict", summary="The classifier's labels for an uploaded image (with --classifier)",
                 openapi_extra=_PREDICT_DOC)
    async def predict(request: Request) -> dict:
        if gallery.labeller is None:
            raise HTTPException(404, "no classifier: start the server with --classifier MODEL to use /api/predict")
        async with services.spool.receive(request) as (path, fields):
            top = _form_number(fields, "top", int, 3, 1, MAX_K)
            vector = await asyncio.wrap_future(services.queue.submit(path))
        return {"predicted": gallery.predict(vector, top)}

    return router


def _form_number(fields: dict[str, str], name: str, kind: type, default, low, high):
    """A number from a form field, checked against its range; ``default`` when absent or blank."""
    text = fields.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise UploadError(f"{name} must be {'an integer' if kind is int else 'a number'}, not {text[:40]!r}", 422) from None
    if not low <= value <= high:
        raise UploadError(f"{name} must be between {low} and {high}, not {text[:40]}", 422)
    return value
