"""A store over real small files with chosen vectors, for the duplicate tests: no network runs.

``make_store(root, files)`` writes each file (distinct bytes unless told to copy another) and
commits it with the vector given, its content hash, and its pixel size, through the store's
own writer, as indexing does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from lookalike.featurize.images.facts import file_digest
from lookalike.store.store import Store
from lookalike.store.writer import Facts

DIM = 8
SPEC = {"model": "fake", "layer": "x", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}}


def unit(*values: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def at_cosine(base: np.ndarray, cosine: float, axis: int) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to the unit vector ``base``, leaning towards ``axis``."""
    other = np.zeros(DIM, dtype=np.float32)
    other[axis] = 1.0
    other -= other @ base * base
    other /= np.linalg.norm(other)
    return (cosine * base + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def make_store(root: Path, files: dict[str, dict]) -> Store:
    """``files``: key -> {"vector": ..., "copy_of": key, "pixels": (w, h), "bytes": n, "mtime": s, "blank": bool}."""
    root.mkdir(parents=True, exist_ok=True)
    for n, (key, spec) in enumerate(files.items()):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if "copy_of" in spec:
            shutil.copyfile(root / spec["copy_of"], path)
        else:
            path.write_bytes(bytes([n % 251]) * spec.get("bytes", 1000 + n) + key.encode())
        if "mtime" in spec:
            os.utime(path, ns=(spec["mtime"] * 10**9, spec["mtime"] * 10**9))
    store = Store.create(root / ".lookalike", root, SPEC)
    embedded, vectors, facts = [], [], {}
    for key, spec in files.items():
        path = root / key
        info = path.stat()
        embedded.append((key, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode))
        vectors.append(spec["vector"])
        width, height = spec.get("pixels", (100, 100))
        facts[key] = Facts(file_digest(path), width, height, spec.get("taken"), spec.get("blank"))
    with store.writer() as writer:
        writer.write(embedded, np.stack(vectors), [], facts=facts)
    return store


def where(root: Path, elsewhere: Path, key: str) -> list[str]:
    """Where a file of the store is now: "source", "dest", both, or neither."""
    found = []
    if (root / key).exists():
        found.append("source")
    if (elsewhere / key).exists():
        found.append("dest")
    return found
