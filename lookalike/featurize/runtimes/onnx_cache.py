"""The ONNX export cache: where an exported network lives, and the key that names it.

A network is exported once per everything that changes its graph: the spec's identity
(model, weights sha256, layer, dim, preprocessing, pooling), the export settings and the
versions of the libraries that write and run it. The key is computed from a stored spec and
the installed versions (read from package metadata, never by importing torch), so a fresh
process can find the export of a store's network and run it without torch.

Files are replaced atomically, so a reader sees a whole export or none; exporting holds a
lock, so two processes asking at once export it once. An export that failed leaves a
``.failed`` note with the reason, so later runs fall back to torch without trying again
(delete the note, or upgrade a library, to retry).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from ...atomic import write_atomically
from ..models.spec import EmbeddingSpec

CACHE_ENV = "LOOKALIKE_CACHE"
EXPORT_FORMAT = 1  # bump whenever the exported graph changes: wrapper, opset, exporter options
OPSET = 18
_PACKAGES = ("lookalike", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime")


def cache_root() -> Path:
    """``$LOOKALIKE_CACHE``, default ``~/.cache/lookalike`` (or ``$XDG_CACHE_HOME/lookalike``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike"


def onnx_folder() -> Path:
    return cache_root() / "onnx"


def installed_versions(model: str) -> dict[str, str]:
    """Versions of the packages that write or run an export (timm's only for a timm model)."""
    found = {}
    for package in _PACKAGES + (("timm",) if model.startswith("timm:") else ()):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "none"
    return found


def export_key(spec: EmbeddingSpec) -> str:
    """The cache key of a spec's network on the installed libraries."""
    record = {"format": EXPORT_FORMAT, "opset": OPSET, "spec": spec.identity(), "versions": installed_versions(spec.model)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


def model_path(spec: EmbeddingSpec, key: str | None = None) -> Path:
    """Where the export of ``spec`` lives (whether or not it exists yet)."""
    return onnx_folder() / f"{_file_name(spec.model)}-{key or export_key(spec)}.onnx"


def _file_name(model: str) -> str:
    """A model's name as a file name: a .lkft's model is its absolute path, so keep it short."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)[-80:]


def _spec_note(model: str, preprocessing: dict, weights_file: Path) -> Path:
    """Where the default spec of ``model`` read from ``weights_file`` is remembered (see ``remembered_spec``)."""
    stat = weights_file.stat()
    record = {"format": EXPORT_FORMAT, "model": model, "preprocessing": preprocessing, "file": str(weights_file.resolve()),
              "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "versions": installed_versions(model)}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
    return onnx_folder() / f"{_file_name(model)}-{key}.spec.json"


def remembered_spec(model: str, preprocessing: dict, weights_file: Path) -> EmbeddingSpec | None:
    """The spec an earlier export of ``model``'s default network from this very weights file had, or None.

    What a new store's first run needs to find that export (the weights' digest is of the
    loaded state dict, which only torch can read): with it, the run imports no torch at all.
    The note is keyed by the file's path, size and mtime and the installed versions, as the export is.
    """
    try:
        return EmbeddingSpec.from_dict(json.loads(_spec_note(model, preprocessing, weights_file).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_spec(model: str, preprocessing: dict, weights_file: Path, spec: EmbeddingSpec) -> None:
    """Keep ``spec`` for ``remembered_spec``; a cache that can't be written only costs torch's import next time."""
    with contextlib.suppress(OSError):
        save(_spec_note(model, preprocessing, weights_file), json.dumps(spec.to_dict(), sort_keys=True).encode())


def failure_note(path: Path) -> Path:
    return path.with_suffix(".failed")


def read_failure(path: Path) -> str | None:
    """The reason an earlier export of this network failed, if one did."""
    try:
        return failure_note(path).read_text().strip() or "unknown reason"
    except OSError:
        return None


def save(path: Path, data: bytes) -> None:
    """Write an export (or a failure note) whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


@contextlib.contextmanager
def export_lock(path: Path) -> Iterator[None]:
    """Hold the lock of one export while making it, waiting if another process holds it.

    Where no lock can be taken (a read-only cache), export anyway: the atomic write still
    leaves one whole file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
