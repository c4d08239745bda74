"""Resident files: mapped and read through once, kept while unchanged, let go when no longer wanted."""

import os
import threading

import numpy as np
import pytest
from smaps import mapped_kib

from lookalike.store.resident import ResidentFiles
from lookalike.store.store import CATALOG, VECTORS, Store

pytestmark = pytest.mark.skipif(os.name != "posix", reason="files are kept resident on POSIX systems only")

DIM = 16
SPEC = {"model": "fake", "layer": "x", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {"a": "1"}}


def _file(path, kib: int):
    path.write_bytes(os.urandom(kib * 1024))
    return path.resolve()


def _write(store, vectors):
    with store.writer() as writer:  # in a function: ``writer`` (which holds the store) goes when it returns
        writer.write([(f"{i}.jpg", 1, 1) for i in range(len(vectors))], vectors, [])


def test_held_files_are_mapped_whole_until_let_go(tmp_path):
    a, b, empty = _file(tmp_path / "a", 256), _file(tmp_path / "b", 64), _file(tmp_path / "empty", 0)
    resident = ResidentFiles()

    assert resident.hold([a, b, empty, tmp_path / "missing"]) == (256 + 64) * 1024
    assert mapped_kib(a) == 256 and mapped_kib(b) == 64
    assert resident.hold([a, b]) == 0  # unchanged: nothing read again

    with open(a, "ab") as grown:
        grown.write(os.urandom(32 * 1024))
    os.replace(_file(tmp_path / "b.new", 8), b)  # replaced by another file under the name
    assert resident.hold([a, b]) == (288 + 8) * 1024
    assert mapped_kib(a) == 288 and mapped_kib(b) == 8

    resident.hold([b])
    assert mapped_kib(a) == 0 and resident.held == {b: 8 * 1024}
    resident.close()
    assert mapped_kib(b) == 0 and resident.held == {}


def test_only_the_length_asked_for_is_held(tmp_path):
    """A writer may cut off an uncommitted tail: a page mapped past the new end would kill a reader that touches it."""
    path = _file(tmp_path / "vectors.f32", 64)
    resident = ResidentFiles()

    assert resident.hold([path], lengths={path: 16 * 1024}) == 16 * 1024
    assert mapped_kib(path) == 16 and resident.held == {path: 16 * 1024}
    with open(path, "r+b") as file:
        file.truncate(20 * 1024)  # the tail past what was asked for goes: nothing held reads it
    assert resident.hold([path], lengths={path: 16 * 1024}) == 0
    assert resident.hold([path], lengths={path: 1 << 30}) == 20 * 1024  # never past the end of the file


def test_a_warm_store_keeps_its_catalog_and_vectors_mapped(tmp_path):
    store = Store.create(tmp_path / ".lookalike", tmp_path, SPEC)
    rng = np.random.default_rng(0)
    _write(store, rng.standard_normal((5000, DIM)).astype(np.float32))
    vectors, catalog = (store.directory / VECTORS).resolve(), (store.directory / CATALOG).resolve()
    assert mapped_kib(vectors) == 0

    store.warm()

    assert mapped_kib(vectors) >= 0.97 * vectors.stat().st_size / 1024
    assert mapped_kib(catalog) >= 0.97 * catalog.stat().st_size / 1024
    hits = store.search(rng.standard_normal((1, DIM)).astype(np.float32), k=3)  # searches read as before
    assert len(hits[0]) == 3

    store.keep_warm()
    _write(store, rng.standard_normal((3000, DIM)).astype(np.float32))  # appended: a larger file, and a new index
    store.search(rng.standard_normal((1, DIM)).astype(np.float32), k=3)  # maps the new index: warmed in the background
    for thread in [t for t in threading.enumerate() if t.name == "lookalike-warm-index"]:
        thread.join(30)
    assert store._resident.held[vectors] == vectors.stat().st_size == 8000 * 4 * DIM  # every committed row
    assert mapped_kib(vectors) >= 0.97 * vectors.stat().st_size / 1024
    del store
    assert mapped_kib(vectors) == 0  # gone with the store
