"""Where a store's files are: their names, the store a folder belongs to, and removing them.

    .lookalike/
      manifest.json    format version, embedding spec, metric, forced index factory
      catalog.sqlite   one row per file: stable id, path, size, times, mode, status, reason, vector row
      vectors.f32      float32 rows, append-only, memory-mapped (shard 0)
      shards/          <name>.f32: float32 rows written whole by the Ray engine's workers (shards 1...)
      index.faiss      the FAISS index over the catalog's ids (a cache: rebuilt from the vectors);
                       for an on-disk index, its small head, naming the inverted lists beside it
      index.<gen>.<token>.ivfdata   an on-disk index's inverted lists (written once, never changed)
      index.trained.<factory>.faiss  the trained, empty on-disk index, kept for rebuilds; named by
                       its factory (URL-quoted), so that no record can pair it with another
      .build-<token>/  index parts while an on-disk index is built
      lock             held by the one process writing

The manifest is written last when a store is made and removed first when it is deleted
(durably, before any other file goes), so a folder with a manifest is a whole store, and one
without is not a store at all.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from pathlib import Path

from .. import crashpoints
from ..atomic import fsync_folder, temporary_files
from ..errors import StoreNotFoundError

STORE_DIRNAME = ".lookalike"
STORE_ENV = "LOOKALIKE_STORE"
MANIFEST, CATALOG, VECTORS, INDEX, LOCK = "manifest.json", "catalog.sqlite", "vectors.f32", "index.faiss", "lock"
SHARDS, TRAINED = "shards", "index.trained.faiss"  # TRAINED: older stores' one, its factory recorded apart
IVFDATA_GLOB, BUILD_GLOB, TRAINED_GLOB = "index.*.ivfdata", ".build-*", "index.trained.*.faiss"
STORE_FILES = (MANIFEST, CATALOG, VECTORS, INDEX, TRAINED)


def trained_path(directory: str | os.PathLike, factory: str) -> Path:
    """Where the trained, empty on-disk index of ``factory`` is kept."""
    return Path(directory) / f"index.trained.{urllib.parse.quote(factory, safe='')}.faiss"


def trained_files(directory: str | os.PathLike) -> dict[Path, str | None]:
    """The trained indexes kept in a store, with the factory each was trained for (None: an old unnamed one)."""
    directory = Path(directory)
    found: dict[Path, str | None] = {path: urllib.parse.unquote(path.name[len("index.trained."):-len(".faiss")])
                                     for path in sorted(directory.glob(TRAINED_GLOB))}
    if (directory / TRAINED).exists():
        found[directory / TRAINED] = None
    return found


def find_store(start: str | os.PathLike = ".") -> Path:
    """The store for ``start``: ``$LOOKALIKE_STORE``, else the nearest ``.lookalike/`` upward, as git finds ``.git``.

    Raises:
        StoreNotFoundError: none found; the message says how to make one.
    """
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / STORE_DIRNAME / MANIFEST).is_file():
            return folder / STORE_DIRNAME
    raise StoreNotFoundError(
        f"no lookalike store in {here} or any folder above it: run `lookalike index DIR` first, "
        f"or point --store (or ${STORE_ENV}) at one"
    )


def store_folder(path: str | os.PathLike) -> Path:
    """A store named by its own folder or by the folder it indexes (``DIR`` stands for ``DIR/.lookalike``)."""
    path = Path(path)
    if not (path / MANIFEST).is_file() and (path / STORE_DIRNAME / MANIFEST).is_file():
        return path / STORE_DIRNAME
    return path


def leftover_files(directory: str | os.PathLike) -> list[Path]:
    """Temporary files a killed writer left half-way through replacing the index or the manifest.

    Only call this holding the store's lock: then no live process is writing them.
    """
    directory = Path(directory)
    return temporary_files(directory / INDEX) + temporary_files(directory / MANIFEST) + \
        sorted(directory.glob(".index.trained.*.tmp"))


def leftover_builds(directory: str | os.PathLike) -> list[Path]:
    """Folders of index parts an on-disk build left when its process died (call it holding the lock)."""
    return sorted(p for p in Path(directory).glob(BUILD_GLOB) if p.is_dir())


def remove_store_files(directory: str | os.PathLike, crash_point: str | None = None) -> None:
    """Delete a store's own files, the manifest first (never anything else that shares its folder).

    The manifest's removal is made durable before any other file goes: a crash or a power cut
    leaves a whole store or no store, never a manifest over half a store. ``crash_point``
    names the steps for ``lookalike.crashpoints`` (``NAME.manifest_removed``, ``NAME.files_removed``).
    Only call this holding the store's lock.
    """
    directory = Path(directory)
    if (directory / MANIFEST).exists():
        (directory / MANIFEST).unlink()  # from here on, not a store
        fsync_folder(directory)
    if crash_point:
        crashpoints.reached(f"{crash_point}.manifest_removed")
    for name in STORE_FILES:
        for path in directory.glob(name + "*"):  # with SQLite's -wal/-shm files
            if path.name != LOCK:
                path.unlink(missing_ok=True)
    for path in leftover_files(directory) + sorted(directory.glob(IVFDATA_GLOB)) + list(trained_files(directory)):
        path.unlink(missing_ok=True)
    for folder in [directory / SHARDS, *leftover_builds(directory)]:
        shutil.rmtree(folder, ignore_errors=True)
    if crash_point:
        crashpoints.reached(f"{crash_point}.files_removed")


def sizes_on_disk(directory: Path) -> dict[str, int]:
    """Bytes of each of a store's files that exist (its shards summed under ``shards``)."""
    names = (CATALOG, VECTORS, INDEX, *(p.name for p in trained_files(directory)),
             *(p.name for p in directory.glob(IVFDATA_GLOB)))
    files = {name: (directory / name).stat().st_size for name in names if (directory / name).exists()}
    shard_files = list((directory / SHARDS).glob("*.f32"))
    if shard_files:
        files[SHARDS] = sum(p.stat().st_size for p in shard_files)
    return files
