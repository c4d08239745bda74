"""Where featurize meets the store: index a folder incrementally, and open a store that can
embed new query images with its own spec."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StoreError, StoreMismatchError, TransientError
from .featurize.base import Extractor
from .featurize.extractor import create_extractor, extractor_for_spec
from .featurize.images.discover import FoundFile, Scan, jpeg_sidecar, scan, skipped_by_type
from .featurize.images.preprocess import Preprocessing
from .featurize.models.registry import DEFAULT_MODEL, is_model_file
from .featurize.models.resolve import model_identity, resolve_model
from .featurize.models.spec import comparable, describe_spec, spec_differences
from .featurize.options import EmbedOptions
from .store.layout import (
    CATALOG,
    LOCK,
    MANIFEST,
    STORE_DIRNAME,
    find_store,
    remove_store_files,
    store_folder,
)
from .store.lock import lock_store
from .store.store import LAST_SCAN, Store
from .store.writer import StoreWriter


@dataclass
class IndexSummary:
    """What one ``index_folder`` run did."""

    store: Path
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    retried: int = 0  # files that had failed, tried again
    failed: int = 0
    embedded: int = 0  # images the CNN ran on
    seconds: float = 0.0  # the whole run
    embed_seconds: float = 0.0  # embedding and writing, without the one-time set-up (a first ONNX export)
    skipped: dict[str, int] = field(default_factory=dict)  # image files of types not read, by extension
    sidecars: int = 0  # RAW files read through the JPEG beside them



def index_folder(
    root: str | os.PathLike,
    *,
    store: str | os.PathLike | None = None,
    model: str | None = None,
    layer: str | None = None,
    weights: str | os.PathLike | None = None,
    reset: bool = False,
    index_factory: str | None = None,
    retry_failed: bool = False,
    options: EmbedOptions | None = None,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    only: list[str] | None = None,
) -> IndexSummary:
    """Index the images under ``root``: embed new and changed files, drop deleted ones.

    A file that failed is tried again once its size, mtime, ctime or mode changes (a chmod
    changes the last two), and always with ``retry_failed``.

    Args:
        root: the folder.
        store: the store folder (default ``root/.lookalike``).
        model, layer, weights: the featurizer; default the store's, else ``efficientnet_lite0``. A
            fine-tuned model (``.lkft``) is known by its weights: the same file from another
            path, or moved, is the same model, and the store records where it is now.
        reset: delete the store first and start over.
        index_factory: force a FAISS index type (factory string) instead of choosing by size.
        retry_failed: try every file that failed before again, changed or not.
        options: how to run the network (``EmbedOptions``: device, batch size, workers, precision...).
        on_start: told how many files will be embedded; on_batch: how many more are done.
        only: index just these files under ``root`` (a CSV's list), removing nothing else.

    Raises:
        StoreMismatchError: the store was built with another model, layer or preprocessing.
        StoreLockedError: another process is indexing into the store.
        TransientError: the featurizer ran out of memory or hit an I/O error that says nothing
            about the file; nothing was recorded against any file, and a rerun resumes.
    """
    started = time.perf_counter()
    run = prepare_run(root, store=store, model=model, layer=layer, weights=weights, reset=reset,
                      index_factory=index_factory, retry_failed=retry_failed, options=options, only=only)
    if on_start:
        on_start(len(run.todo))
    summary = run.summary
    with run.store.writer() as writer:  # with nothing to embed, no CNN runs; the index still catches up
        writer.use_factory(index_factory)
        writer.use_model_file(run.model_file)
        writer.remove(run.removed)
        record_scan(writer, summary)
        if run.todo:
            _embed(run.extractor, run.todo, writer, summary, on_batch)
    summary.seconds = time.perf_counter() - started
    return summary


def record_scan(writer: StoreWriter, summary: IndexSummary) -> None:
    """Remember what this run skipped (``last_scan`` reads it back, for ``lookalike info``)."""
    writer.catalog.set_meta(**{LAST_SCAN: json.dumps({"skipped": summary.skipped, "sidecars": summary.sidecars})})


def last_scan(store: Store) -> dict:
    """What the last indexing run skipped: ``{"skipped": {extension: files}, "sidecars": files}``, or ``{}``
    for a store last indexed before lookalike remembered it (or by the Ray engine). ``Store.info`` has it too."""
    return store.info()["last_index"]


@dataclass
class IndexRun:
    """What an indexing run is to do, whichever engine does it (see ``prepare_run``)."""

    store: Store
    todo: list[FoundFile]  # to embed
    removed: list[str]  # keys to remove
    summary: IndexSummary  # counted so far: added, updated, removed, unchanged, retried
    extractor: Extractor | None  # built when there is something to embed (or a store to make)
    model_file: str | None = None  # a fine-tuned model's file, given now: recorded in the manifest


def prepare_run(root: str | os.PathLike, *, store=None, model=None, layer=None, weights=None, reset=False,
                index_factory=None, retry_failed=False, options: EmbedOptions | None = None, only=None) -> IndexRun:
    """Open (or make) the store and plan a run: what ``index_folder`` does before embedding.

    The Ray engine (``lookalike.scale``) plans its runs with it, so both engines skip, retry and
    remove the same files. Args and Raises as ``index_folder``.
    """
    root = Path(root).resolve()
    store_dir = store_folder(store) if store is not None else root / STORE_DIRNAME
    if reset:
        _remove_store(store_dir)
    existing = _open_existing(store_dir, root)
    if existing is not None:
        layer = _same_model(existing, model, layer)
        if index_factory:
            _check_factory(index_factory, existing.dim)
    found = _files(root, store_dir, only)
    todo, removed, summary = _plan(existing, found, store_dir, retry_failed)
    summary.skipped, summary.sidecars = skipped_by_type(found.skipped), len(found.sidecars)
    if only is not None:
        removed, summary.removed = [], 0
    model_file = os.path.abspath(model) if is_model_file(model) else None
    extractor = None
    if todo or existing is None:
        extractor = _extractor(existing, model, layer, weights, options)
        if index_factory:
            _check_factory(index_factory, extractor.dim)
        spec = extractor.spec.to_dict()
        if existing is None:
            existing = Store.create(store_dir, root, spec, index_factory, os.fspath(weights) if weights else None,
                                    model_file)
        _check_spec(existing, spec)
    return IndexRun(existing, todo, removed, summary, extractor, model_file)


def _files(root: Path, store_dir: Path, only: list[str] | None) -> Scan:
    found = scan(root, skip=store_dir)
    if only is not None:
        wanted = {os.path.abspath(p) for p in only}
        keys = {Path(p).relative_to(root).as_posix() for p in wanted if Path(p).is_relative_to(root)}
        found = Scan([f for f in found.found if os.path.abspath(f.path) in wanted],
                     [k for k in found.skipped if k in keys], {k: v for k, v in found.sidecars.items() if k in keys})
    return found


def _open_existing(store_dir: Path, root: Path) -> Store | None:
    existing = Store.open(store_dir) if (store_dir / MANIFEST).exists() else None
    if existing is not None and existing.root != root:
        raise StoreError(
            f"the store {store_dir} indexes {existing.root}, not {root}: give this folder its own --store, "
            f"or --reset to replace what the store holds"
        )
    return existing


def _embed(extractor, todo: list[FoundFile], writer: StoreWriter, summary: IndexSummary, on_batch) -> None:
    """Run the CNN over ``todo`` and write each batch; a transient error stops the run, recording nothing."""
    by_path = {f.path: f for f in todo}
    started = time.perf_counter()
    try:
        for batch in extractor.embed_paths(list(by_path)):
            embedded = [_stat(by_path[key]) for key in batch.keys]
            failed = [(*_stat(by_path[f.key]), f.reason) for f in batch.failures]
            writer.write(embedded, batch.vectors, failed)
            summary.embedded += len(batch.keys)
            summary.failed += len(batch.failures)
            if on_batch:
                on_batch(len(batch.keys) + len(batch.failures))
    except (TransientError, MemoryError) as e:
        reason = str(e) or type(e).__name__
        raise TransientError(
            f"indexing stopped by a transient error ({reason}), which says nothing about the files: none was marked "
            f"as failed. The {summary.embedded + summary.failed} files done are saved: run the same command again to resume"
        ) from e
    finally:
        extractor.close()  # the workers' memory is free before the index is built
        summary.embed_seconds = time.perf_counter() - started


def _stat(f: FoundFile) -> tuple[str, int, int, int, int]:
    return f.key, f.size, f.mtime_ns, f.ctime_ns, f.mode


def _plan(store: Store | None, found: Scan, store_dir: Path,
          retry_failed: bool = False) -> tuple[list[FoundFile], list[str], IndexSummary]:
    """Which files to embed and which keys to remove.

    New files; embedded files whose size or mtime changed; failed files whose size, mtime,
    ctime or mode changed (a chmod that fixed "permission denied" changes the last two), or
    all of them with ``retry_failed``. A file skipped for want of its decoder keeps what the
    store holds of it (a RAW file embedded before the ``raw`` extra was uninstalled); a RAW
    file now read through its JPEG sidecar is removed, so the shot is stored once.
    """
    files = found.found
    summary = IndexSummary(store=store_dir)
    if store is None:
        summary.added = len(files)
        return files, [], summary
    with store.catalog() as catalog:
        known = {r.path: r for r in catalog.records()}
    todo = []
    for f in files:
        record = known.get(f.key)
        if record is None:
            summary.added += 1
        elif record.status == "failed" and (retry_failed or _stat(f)[1:] != (record.size, record.mtime_ns,
                                                                             record.ctime_ns, record.mode)):
            summary.retried += 1
        elif (record.size, record.mtime_ns) != (f.size, f.mtime_ns):
            summary.updated += 1
        else:
            summary.unchanged += 1
            continue
        todo.append(f)
    present = {f.key for f in files} | set(found.skipped)
    removed = [key for key in known if key not in present]
    summary.removed = len(removed)
    return todo, removed, summary


def _same_model(store: Store, model, layer) -> str | None:
    """Refuse another model or layer than the store's, by name, before anything is loaded; the layer to build.

    A fine-tuned model is compared by its identity (its weights' digest), never by its path.
    """
    spec = store.manifest.spec
    stored = comparable(spec)["model"]
    if (model is not None and model_identity(model) != stored) or (layer is not None and layer != spec["layer"]):
        raise StoreMismatchError(
            f"this store holds vectors from {describe_spec(spec)}, not {model or stored} (layer {layer or 'default'}). "
            f"Use the store's model, or --reset to start over with the new one."
        )
    if model is not None and layer is None and spec["layer"] != resolve_model(model).default_layer:
        return spec["layer"]  # the store's own earlier layer
    return layer


def _extractor(existing: Store | None, model, layer, weights, options: EmbedOptions | None) -> Extractor:
    """The store's own featurizer when no model is named (from the ONNX export cache where it can), else the one
    named, flattening transparency as the store's vectors were (an older store's on white)."""
    if existing is not None and model is None:
        return extractor_for_spec(existing.manifest.spec, weights=weights or existing.manifest.weights,
                                  model_file=existing.manifest.model_file, options=options)
    alpha = Preprocessing.from_dict(existing.manifest.spec["preprocessing"]).alpha if existing is not None else None
    return create_extractor(model or DEFAULT_MODEL, layer=layer, weights=weights, options=options, alpha=alpha)


def _check_spec(store: Store, spec: dict) -> None:
    """Raise ``StoreMismatchError`` naming both sides if ``spec`` made vectors another way than the store's."""
    differences = spec_differences(store.manifest.spec, spec)
    if differences:
        raise StoreMismatchError(
            f"this store holds vectors from {describe_spec(store.manifest.spec)}, not {describe_spec(spec)} "
            f"({'; '.join(differences)}). Use the store's model, or --reset to start over with the new one."
        )


def _check_factory(factory: str, dim: int) -> None:
    from .ann.factory import check_factory  # faiss loads only when there is work for it

    check_factory(factory, dim)


def _remove_store(store_dir: Path) -> None:
    """Delete a store's own files (never anything else that shares its folder), under its lock."""
    if not (store_dir / MANIFEST).exists() and not (store_dir / CATALOG).exists():
        return  # not a store, nor the start of one: never touch files that only share a store's names
    with lock_store(store_dir):  # works on a damaged store too: nothing is opened but the lock
        remove_store_files(store_dir)
    with contextlib.suppress(OSError):
        (store_dir / LOCK).unlink()
        store_dir.rmdir()  # only if nothing else is in it


def open_store(path: str | os.PathLike | None = None, *, options: EmbedOptions | None = None,
               exact: bool = False, **changes) -> Store:
    """Open a store for searching; images outside it are embedded with the store's own spec.

    Args:
        path: the store folder, or the folder it indexes, or a folder inside an indexed tree
            (searched upward as git finds ``.git``); default ``$LOOKALIKE_STORE`` or the current folder.
        options: how to embed query images (``EmbedOptions``; they run in this process unless
            ``workers`` says otherwise).
        exact: ``path`` must be the store or the folder it indexes (no search upward).
        changes: ``EmbedOptions`` fields to change, e.g. ``device="cpu"``.

    Raises:
        StoreNotFoundError: no store there.
    """
    if path is not None:
        folder = store_folder(path)
        store = Store.open(folder if exact or (folder / MANIFEST).is_file() else find_store(path))
    else:
        store = Store.open(find_store("."))
    store.embedder = QueryEmbedder(store, EmbedOptions.of(options, **changes))
    return store


class QueryEmbedder:
    """A store's ``embedder``: images outside the store embedded with its own spec.

    The extractor is built on first use only, so queries of indexed paths never load the model.
    """

    def __init__(self, store: Store, options: EmbedOptions):
        self.store = store
        self.options = options if options.workers is not None else options.replace(workers=0)
        self._extractor: Extractor | None = None

    def __call__(self, paths: list[str]) -> tuple[list[str], np.ndarray, dict[str, str]]:
        """(paths that worked, their vectors row-aligned, {path: failure reason}).

        A RAW file whose JPEG sidecar is stored has that JPEG's vector: indexing read it through the JPEG.
        """
        keys, vectors = self._sidecars(paths)
        aliased = set(keys)
        paths = [p for p in paths if p not in aliased]
        failed = {}
        if paths:
            new_keys, new_vectors, failed = self._embed(paths)
            keys, vectors = keys + new_keys, [*vectors, new_vectors]
        return keys, np.concatenate(vectors) if vectors else np.zeros((0, self.store.dim), np.float32), failed

    def _sidecars(self, paths: list[str]) -> tuple[list[str], list[np.ndarray]]:
        """The RAW files among ``paths`` whose JPEG sidecar is in the store, and the sidecars' vectors."""
        keys, vectors = [], []
        for path in paths:
            jpeg = jpeg_sidecar(path)
            if jpeg is not None:
                try:
                    vectors.append(self.store.get_vectors([jpeg]))
                    keys.append(path)
                except StoreError:  # not stored (yet): the RAW file is read itself
                    continue
        return keys, vectors

    def _embed(self, paths: list[str]) -> tuple[list[str], np.ndarray, dict[str, str]]:
        if self._extractor is None:
            manifest = self.store.manifest
            self._extractor = extractor_for_spec(manifest.spec, weights=manifest.weights, model_file=manifest.model_file,
                                                 options=self.options)
        keys, vectors, failed = [], [], {}
        for batch in self._extractor.embed_paths(paths):
            keys += batch.keys
            vectors.append(batch.vectors)
            failed.update({f.key: f.reason for f in batch.failures})
        return keys, np.concatenate(vectors) if vectors else np.zeros((0, self.store.dim), np.float32), failed
