"""A run's plan: the store opened (or made) for a folder, and which files to embed, retry and remove.

Both engines plan with ``prepare_run`` (``indexing.index_folder`` here, ``scale.index_with_ray``
on a cluster), so they skip, retry and remove the same files. Nothing is written here but a
new store, and a store is deleted (``--reset``) only once the featurizer that replaces its
vectors has been built: a typo in a model, layer or weights name loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LookalikeError, StoreError, StoreMismatchError
from .featurize.base import Extractor
from .featurize.extractor import create_extractor, extractor_for_spec
from .featurize.images.discover import FoundFile, Scan, UnreadableFolder, scan, skipped_by_type
from .featurize.images.facts import file_digest, read_facts
from .featurize.images.preprocess import Preprocessing
from .featurize.models.registry import DEFAULT_MODEL, is_model_file
from .featurize.models.resolve import model_identity, resolve_model
from .featurize.models.spec import comparable, describe_spec, spec_differences
from .featurize.options import EmbedOptions
from .store.access import explained
from .store.layout import (
    CATALOG,
    LOCK,
    MANIFEST,
    STORE_DIRNAME,
    remove_store_files,
    store_folder,
)
from .store.lock import lock_store
from .store.store import LAST_SCAN, Store


@dataclass
class IndexSummary:
    """What one ``index_folder`` run did."""

    store: Path
    added: int = 0
    moved: int = 0  # files found at a new path with the same bytes: they kept their vectors
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    retried: int = 0  # files that had failed, tried again
    failed: int = 0
    embedded: int = 0  # images the CNN ran on
    seconds: float = 0.0  # the whole run
    embed_seconds: float = 0.0  # embedding and writing, without the one-time set-up (a first ONNX export)
    unsettled: int = 0  # files changed too recently to read (``settled_for``): the next run takes them
    stopped: bool = False  # asked to stop between batches (``should_stop``): the next run takes the rest
    skipped: dict[str, int] = field(default_factory=dict)  # image files of types not read, by extension
    sidecars: int = 0  # RAW files read through the JPEG beside them



@dataclass
class IndexRun:
    """What an indexing run is to do, whichever engine does it (see ``prepare_run``)."""

    store: Store
    todo: list[FoundFile]  # to embed
    removed: list[str]  # keys to remove
    summary: IndexSummary  # counted so far: added, updated, removed, unchanged, retried
    extractor: Extractor | None  # built when there is something to embed (or a store to make)
    model_file: str | None = None  # a fine-tuned model's file, given now: recorded in the manifest
    unreadable: list[UnreadableFolder] = field(default_factory=list)  # folders to record as failed
    moved: list[tuple[str, tuple]] = field(default_factory=list)  # (old key, new stat row): same bytes, new path
    unhashed: list[FoundFile] = field(default_factory=list)  # stored files whose content hash isn't recorded yet


def prepare_run(root: str | os.PathLike, *, store=None, model=None, layer=None, weights=None, reset=False,
                index_factory=None, retry_failed=False, options: EmbedOptions | None = None, only=None,
                settled_for: float | None = None) -> IndexRun:
    """Open (or make) the store and plan a run: what ``index_folder`` does before embedding.

    With ``reset``, the featurizer is built first (a bad model, layer or weights file raises
    with the store untouched), then the store's own files are deleted. Args and Raises as
    ``index_folder``.
    """
    root = Path(root).resolve()
    store_dir = store_folder(store) if store is not None else root / STORE_DIRNAME
    extractor = None
    if reset:
        extractor = _extractor(None, model, layer, weights, options)
        if index_factory:
            _check_factory(index_factory, extractor.dim)
        _remove_store(store_dir)
    existing = _open_existing(store_dir, root)
    if existing is not None:
        layer = _same_model(existing, model, layer)
        if index_factory:
            _check_factory(index_factory, existing.dim)
    unreadable: list[UnreadableFolder] = []
    found = _files(root, store_dir, only, unreadable)
    # a file still being written is read once it has rested (``settled_for``), never half-copied
    recent = time.time_ns() - int(settled_for * 1e9) if settled_for is not None else None
    todo, removed, summary, unhashed = _plan(existing, found, unreadable, store_dir, retry_failed, recent)
    summary.skipped, summary.sidecars = skipped_by_type(found.skipped), len(found.sidecars)
    if only is not None:
        removed, summary.removed = [], 0
    moved = _moves(existing, todo, removed, summary) if existing is not None else []
    model_file = os.path.abspath(model) if is_model_file(model) else None
    if extractor is None and (todo or existing is None):
        extractor = _extractor(existing, model, layer, weights, options)
        if index_factory:
            _check_factory(index_factory, extractor.dim)
    if extractor is not None:
        spec = extractor.spec.to_dict()
        if existing is None:
            existing = Store.create(store_dir, root, spec, index_factory, os.fspath(weights) if weights else None,
                                    model_file)
        _check_spec(existing, spec)
    return IndexRun(existing, todo, removed, summary, extractor, model_file, unreadable, moved, unhashed)


def record_scan(writer, summary: IndexSummary) -> None:
    """Remember what this run skipped (``Store.info()["last_index"]`` reads it back, for ``lookalike info``)."""
    writer.catalog.set_meta(**{LAST_SCAN: json.dumps({"skipped": summary.skipped, "sidecars": summary.sidecars})})


def record_facts(writer, run: IndexRun) -> None:
    """Record what the store lacks of files indexed by an older lookalike (content hash, pixel size, date)."""
    if not run.unhashed:
        return
    found = [(f.key, read_facts(f.path)) for f in run.unhashed]
    writer.catalog.set_facts([(key, *facts) for key, facts in found if facts is not None])


def record_unreadable(writer, run: IndexRun) -> None:
    """Record each folder that could not be listed as a failure (``lookalike failures`` lists it),
    once: a folder already recorded with the same reason is left as it is."""
    with run.store.catalog() as catalog:
        known = catalog.by_paths([f.key for f in run.unreadable])
    new = [f for f in run.unreadable if (r := known.get(f.key)) is None or r.reason != f.reason]
    if new:
        writer.write([], None, [(f.key, 0, f.mtime_ns, f.ctime_ns, f.mode, f.reason) for f in new])
        run.summary.failed += len(new)


def _files(root: Path, store_dir: Path, only: list[str] | None, unreadable: list[UnreadableFolder]) -> Scan:
    found = scan(root, skip=store_dir, unreadable=unreadable)
    for folder in unreadable:
        if folder.key == "./":
            raise LookalikeError(f"cannot read the folder {root}: {folder.reason}")
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



def stat_row(f: FoundFile) -> tuple[str, int, int, int, int]:
    return f.key, f.size, f.mtime_ns, f.ctime_ns, f.mode


def _plan(store: Store | None, found: Scan, unreadable: list[UnreadableFolder], store_dir: Path,
          retry_failed: bool = False, recent_ns: int | None = None) -> tuple[list[FoundFile], list[str], IndexSummary]:
    """Which files to embed and which keys to remove.

    New files; embedded files whose size or mtime changed; failed files whose size, mtime,
    ctime or mode changed (a chmod that fixed "permission denied" changes the last two), or
    all of them with ``retry_failed``. A folder recorded as unreadable and read now is removed
    from the catalog, uncounted: its files are counted instead. A file to embed that was modified
    after ``recent_ns`` is left for a later run (counted ``unsettled``), and stays in the store.
    A file skipped for want of its decoder keeps what the store holds of it (a RAW file
    embedded before the ``raw`` extra was uninstalled); a RAW file now read through its JPEG
    sidecar is removed, so the shot is stored once.
    """
    files = found.found
    summary = IndexSummary(store=store_dir)
    if store is None:
        settled = [f for f in files if recent_ns is None or f.mtime_ns <= recent_ns]
        summary.added, summary.unsettled = len(settled), len(files) - len(settled)
        return settled, [], summary, []
    with store.catalog() as catalog:
        known = {r.path: r for r in catalog.records()}
    todo, unhashed = [], []
    for f in files:
        record = known.get(f.key)
        changed = record is None or (record.size, record.mtime_ns) != (f.size, f.mtime_ns) or record.status == "failed"
        if recent_ns is not None and f.mtime_ns > recent_ns and changed:
            summary.unsettled += 1
            continue
        if record is None:
            summary.added += 1
        elif record.status == "failed" and (retry_failed or stat_row(f)[1:] != (record.size, record.mtime_ns,
                                                                             record.ctime_ns, record.mode)):
            summary.retried += 1
        elif (record.size, record.mtime_ns) != (f.size, f.mtime_ns):
            summary.updated += 1
        else:
            summary.unchanged += 1
            if record.status == "ok" and record.digest is None:
                unhashed.append(f)
            continue
        todo.append(f)
    present = {f.key for f in files} | {f.key for f in unreadable} | set(found.skipped)
    removed = [key for key in known if key not in present]
    summary.removed = sum(not key.endswith("/") for key in removed)
    return todo, removed, summary, unhashed


def _moves(store: Store, todo: list[FoundFile], removed: list[str], summary: IndexSummary) -> list[tuple[str, tuple]]:
    """Files that left one path and appeared at another with the same size and content hash: moved, not new.

    Only a new file the size of a removed one is read (to hash it). ``todo``, ``removed`` and the
    summary's counts lose the moved files, which keep their rows and vectors under their new paths.
    """
    with store.catalog() as catalog:
        gone = [r for r in catalog.by_paths(removed).values() if r.status == "ok" and r.digest is not None]
    by_size: dict[int, list] = {}
    for record in gone:
        by_size.setdefault(record.size, []).append(record)
    moved = []
    for f in list(todo):
        candidates = by_size.get(f.size)
        if not candidates or f.key in {r.path for r in gone}:
            continue
        try:
            digest = file_digest(f.path)
        except OSError:
            continue
        match = next((r for r in candidates if r.digest == digest), None)
        if match is None:
            continue
        candidates.remove(match)
        moved.append((match.path, stat_row(f)))
        todo.remove(f)
        removed.remove(match.path)
        summary.added -= 1
        summary.removed -= 1
        summary.moved += 1
    return moved


def _same_model(store: Store, model, layer) -> str | None:
    """Refuse another model or layer than the store's, by name, before anything is loaded; the layer to build.

    A fine-tuned model is compared by its identity (its weights' digest), never by its path.
    """
    spec = store.manifest.spec
    stored = comparable(spec)["model"]
    if (model is not None and model_identity(model) != stored) or (layer is not None and layer != spec["layer"]):
        raise StoreMismatchError(
            f"this store holds vectors from {describe_spec(spec)}, not {model or stored} (layer {layer or 'default'})")
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
            f"({'; '.join(differences)})")


def _check_factory(factory: str, dim: int) -> None:
    from .ann.factory import check_factory  # faiss loads only when there is work for it

    check_factory(factory, dim)


def _remove_store(store_dir: Path) -> None:
    """Delete a store's own files (never anything else that shares its folder), under its lock.

    The manifest goes first, durably (``reset.manifest_removed``): a crash or a power cut part-way
    leaves no store that a later command trusts, only files the next ``index`` deletes.
    """
    if not (store_dir / MANIFEST).exists() and not (store_dir / CATALOG).exists():
        return  # not a store, nor the start of one: never touch files that only share a store's names
    with explained(store_dir, writing=True), lock_store(store_dir):  # a damaged store too: only the lock is opened
        remove_store_files(store_dir, crash_point="reset")
    with contextlib.suppress(OSError):
        (store_dir / LOCK).unlink()
        store_dir.rmdir()  # only if nothing else is in it
