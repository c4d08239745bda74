"""Where featurize meets the store: index a folder incrementally (``index_folder``, on the plan
``planning.prepare_run`` makes), and open a store that embeds new query images with its own spec."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from .errors import StoreError, TransientError
from .featurize.base import Extractor
from .featurize.extractor import extractor_for_spec
from .featurize.images.discover import FoundFile, jpeg_sidecar
from .featurize.images.facts import read_facts
from .featurize.options import EmbedOptions
from .planning import (
    IndexRun,
    IndexSummary,
    prepare_run,
    record_facts,
    record_scan,
    record_unreadable,
    stat_row,
)
from .store.layout import MANIFEST, find_store, store_folder
from .store.store import Store
from .store.writer import StoreWriter

__all__ = ["IndexRun", "IndexSummary", "QueryEmbedder", "index_folder", "open_store", "prepare_run"]


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
    settled_for: float | None = None,
    should_stop: Callable[[], bool] | None = None,
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
        settled_for: leave files modified within this many seconds for a later run (a copy in progress).
        should_stop: asked after each batch; True ends the run there, keeping every batch written.

    Raises:
        StoreMismatchError: the store was built with another model, layer or preprocessing.
        StoreLockedError: another process is indexing into the store.
        TransientError: the featurizer ran out of memory or hit an I/O error that says nothing
            about the file; nothing was recorded against any file, and a rerun resumes.
    """
    started = time.perf_counter()
    run = prepare_run(root, store=store, model=model, layer=layer, weights=weights, reset=reset,
                      index_factory=index_factory, retry_failed=retry_failed, options=options, only=only,
                      settled_for=settled_for)
    if on_start:
        on_start(len(run.todo))
    summary = run.summary
    with run.store.writer() as writer:  # with nothing to embed, no CNN runs; the index still catches up
        writer.use_factory(index_factory)
        writer.use_model_file(run.model_file)
        writer.move(run.moved)
        writer.remove(run.removed)
        record_unreadable(writer, run)
        record_facts(writer, run)
        record_scan(writer, summary)
        if run.todo:
            _embed(run.extractor, run.todo, writer, summary, on_batch, should_stop)
    summary.seconds = time.perf_counter() - started
    return summary


def _embed(extractor, todo: list[FoundFile], writer: StoreWriter, summary: IndexSummary, on_batch,
           should_stop: Callable[[], bool] | None = None) -> None:
    """Run the CNN over ``todo`` and write each batch; a transient error stops the run, recording nothing."""
    by_path = {f.path: f for f in todo}
    started = time.perf_counter()
    try:
        for batch in extractor.embed_paths(list(by_path)):
            embedded = [stat_row(by_path[key]) for key in batch.keys]
            failed = [(*stat_row(by_path[f.key]), f.reason) for f in batch.failures]
            writer.write(embedded, batch.vectors, failed, facts=_facts(batch, by_path))
            summary.embedded += len(batch.keys)
            summary.failed += len(batch.failures)
            if on_batch:
                on_batch(len(batch.keys) + len(batch.failures))
            if should_stop is not None and should_stop():
                summary.stopped = True
                break
    except (TransientError, MemoryError) as e:
        reason = str(e) or type(e).__name__
        raise TransientError(
            f"indexing stopped by a transient error ({reason}), which says nothing about the files: none was marked "
            f"as failed. The {summary.embedded + summary.failed} files done are saved: run the same command again to resume"
        ) from e
    finally:
        extractor.close()  # the workers' memory is free before the index is built
        summary.embed_seconds = time.perf_counter() - started


def _facts(batch, by_path: dict[str, FoundFile]) -> dict:
    """The facts of a batch's embedded files by catalog key; read afresh for a file its runtime did not report."""
    known = batch.facts or {}
    found = {}
    for key in batch.keys:
        facts = known.get(key) or read_facts(key)
        if facts is not None:
            found[by_path[key].key] = facts
    return found


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
