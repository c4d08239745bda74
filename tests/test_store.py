"""The store on synthetic vectors: search against brute force, crash leftovers, locking, repair."""

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from test_crash import committed

from lookalike.ann import build as ann_build
from lookalike.ann import factory as ann_factory
from lookalike.ann import faiss_io
from lookalike.ann import index as faiss_index
from lookalike.atomic import write_atomically
from lookalike.errors import StoreError, StoreLockedError
from lookalike.featurize.models.spec import spec_differences
from lookalike.store.manifest import FORMAT_VERSION
from lookalike.store.store import CATALOG, INDEX, MANIFEST, VECTORS, Store
from lookalike.store.vectors import VectorFile

DIM = 16
SPEC = {"model": "fake", "layer": "x", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {"a": "1"}}


def _unit(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write(writer, keys, vectors, failed=()):
    writer.write([(k, 1, 1) for k in keys], vectors, [(k, 1, 1, "bad") for k in failed])


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / ".lookalike", tmp_path, SPEC)


def _brute(truth: dict[str, np.ndarray], queries: np.ndarray, k: int) -> list[list[str]]:
    keys = sorted(truth)
    matrix = np.stack([truth[key] for key in keys])
    scores = queries @ matrix.T
    return [[keys[i] for i in np.argsort(-row, kind="stable")[:k]] for row in scores]


def test_search_matches_brute_force_with_an_index_and_uncommitted_index_changes(store, tmp_path):
    rng = np.random.default_rng(0)
    truth = {}
    with store.writer() as writer:
        first = _unit(rng, 50)
        _write(writer, [f"a{i}.jpg" for i in range(50)], first, failed=["broken.jpg"])
        truth.update({f"a{i}.jpg": v for i, v in enumerate(first)})
    assert (store.directory / INDEX).exists()

    # A second writer commits batches but dies before it updates the index (no __exit__).
    writer = store.writer().__enter__()
    second = _unit(rng, 20)
    _write(writer, [f"b{i}.jpg" for i in range(20)], second)
    changed = _unit(rng, 1)
    _write(writer, ["a3.jpg"], changed)  # a changed file keeps its id, gets a new vector
    writer.remove(["a4.jpg", "a5.jpg"])
    writer.vectors.close(), writer.catalog.close()
    truth.update({f"b{i}.jpg": v for i, v in enumerate(second)})
    truth["a3.jpg"] = changed[0]
    del truth["a4.jpg"], truth["a5.jpg"]

    queries = _unit(rng, 30)
    hits = store.search(queries, k=10)
    expected = _brute(truth, queries, 10)
    for got, want in zip(hits, expected):
        assert [h.path for h in got] == [str(tmp_path / key) for key in want]
        assert [h.rank for h in got] == list(range(1, 11))
    assert len(store) == 68
    assert [r.path for r in store.failures()] == ["broken.jpg"]


def test_a_half_written_batch_is_cut_off_by_the_next_writer(store):
    rng = np.random.default_rng(1)
    with store.writer() as writer:
        _write(writer, ["a.jpg", "b.jpg"], _unit(rng, 2))
    # A process killed after appending vectors but before the catalog commit leaves a tail.
    with open(store.directory / VECTORS, "ab") as f:
        f.write(_unit(rng, 3).tobytes())
    assert store.check().ok
    with store.writer() as writer:
        _write(writer, ["c.jpg"], _unit(rng, 1))
    assert (store.directory / VECTORS).stat().st_size == 3 * DIM * 4
    assert store.check().ok
    np.testing.assert_array_equal(store.get_vectors([store.root / "c.jpg"]), VectorFile(store.directory / VECTORS, DIM).view(3)[2:])


def test_only_one_writer_at_a_time(store):
    code = "import sys; from lookalike.store.store import Store; Store.open(sys.argv[1]).writer(sync=False).__enter__()"
    take = [sys.executable, "-c", code, str(store.directory)]
    with store.writer():
        with pytest.raises(StoreLockedError, match="this process is already writing"):
            store.writer().__enter__()
        # The refused writer must not have dropped the lock (closing any descriptor of a record
        # lock's file drops it): another process is still refused.
        other = subprocess.run(take, capture_output=True, text=True, timeout=60)
        assert other.returncode == 1 and "another lookalike process" in other.stderr
    assert subprocess.run(take, capture_output=True, timeout=60).returncode == 0


def test_check_finds_a_missing_index_and_repair_rebuilds_it(store):
    rng = np.random.default_rng(2)
    with store.writer() as writer:
        _write(writer, [f"{i}.jpg" for i in range(10)], _unit(rng, 10))
    (store.directory / INDEX).unlink()
    assert store.check().problems == ["index.faiss is missing"]
    store.repair()
    assert store.check().ok


def test_errors_say_what_to_do(store):
    with pytest.raises(StoreError, match="no vectors yet"):
        store.search(np.zeros((1, DIM), np.float32), k=1)
    with store.writer() as writer:
        _write(writer, ["a.jpg"], _unit(np.random.default_rng(3), 1))
    with pytest.raises(StoreError, match="k=5 is more than the 1 images"):
        store.search(np.zeros((1, DIM), np.float32), k=5)
    with pytest.raises(StoreError, match="8-d"):
        store.search(np.zeros((1, 8), np.float32), k=1)
    with pytest.raises(StoreError, match="open_store"):
        store.search(["elsewhere.jpg"], k=1)
    # the one spec comparer, which indexing checks a store's manifest with
    assert spec_differences(store.manifest.spec, {**SPEC, "model": "resnet50"}) == ["model: fake vs resnet50"]
    assert spec_differences(store.manifest.spec, {**SPEC, "versions": {"a": "2"}}) == []  # versions don't matter


def test_iteration_and_get_vectors_agree(store):
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 5)
    with store.writer() as writer:
        _write(writer, [f"{i}.jpg" for i in range(5)], vectors)
    pairs = list(store)
    assert [p for p, _ in pairs] == [str(store.root / f"{i}.jpg") for i in range(5)]
    np.testing.assert_array_equal(np.stack([v for _, v in pairs]), vectors)
    np.testing.assert_array_equal(store.get_vectors([p for p, _ in pairs[::-1]]), vectors[::-1])


def test_a_short_vector_file_is_refused_not_padded_with_zeros(store):
    with store.writer() as writer:
        _write(writer, ["a.jpg", "b.jpg"], _unit(np.random.default_rng(5), 2))
    with open(store.directory / VECTORS, "r+b") as f:
        f.truncate(DIM * 4)  # lost the second vector
    assert any("holds 1 rows" in p for p in store.check().problems)
    with pytest.raises(StoreError, match="damaged"):
        store.writer().__enter__()
    assert (store.directory / VECTORS).stat().st_size == DIM * 4


def test_a_reader_never_mixes_an_index_file_with_another_snapshot(store, monkeypatch):
    """The writer swaps index.faiss between the reader's generation check and its file read."""

    rng = np.random.default_rng(6)
    with store.writer() as writer:
        _write(writer, [f"a{i}.jpg" for i in range(5)], _unit(rng, 5))
    real_read = faiss_io.read_index
    swapped = {}

    def read_during_a_write(path, *args, **kwargs):
        if not swapped:
            swapped["done"] = True
            with store.writer() as writer:  # commits, removes a file and replaces the index meanwhile
                _write(writer, ["new.jpg"], _unit(rng, 1))
                writer.remove(["a0.jpg"])
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(faiss_io, "read_index", read_during_a_write)
    (hits,) = store.search(_unit(rng, 1), k=5)
    assert len(hits) == 5 and all(not h.path.endswith("a0.jpg") for h in hits)


def test_the_store_moves_with_its_folder(tmp_path):
    import shutil

    root = tmp_path / "photos"
    store = Store.create(root / ".lookalike", root, SPEC)
    with store.writer() as writer:
        _write(writer, ["a.jpg"], _unit(np.random.default_rng(8), 1))
    shutil.move(root, tmp_path / "moved")
    moved = Store.open(tmp_path / "moved" / ".lookalike")
    assert [p for p, _ in moved] == [str(tmp_path / "moved" / "a.jpg")]


def test_check_accepts_an_index_behind_the_catalog_and_catches_one_that_is_wrong(store):
    rng = np.random.default_rng(9)
    with store.writer() as writer:
        _write(writer, [f"a{i}.jpg" for i in range(8)], _unit(rng, 8))
    with store.writer(sync=False) as writer:  # as a killed run leaves it: committed, index not updated
        _write(writer, ["b.jpg", "a1.jpg"], _unit(rng, 2))
        writer.remove(["a2.jpg"])
    written, generation = store.index_lag()
    assert 0 <= written < generation and store.check().ok

    ids, _, vectors = store.vectors()
    wrong = ann_build.build_index(vectors[:5], ids[:5], ann_factory.EXACT_FACTORY)  # leaves out a6, a7 (and b, new)
    faiss_io.write_index(wrong, store.directory / INDEX)
    assert store.check().problems == ["index.faiss holds 5 ids: 2 embedded files are missing from it, 0 of its ids name no "
                             "embedded file"]
    store.repair()
    assert store.check().ok and store.index_lag()[0] == store.index_lag()[1]


def format_1_store(directory, root, spec=SPEC, seed=10) -> Store:
    """A store with an index, two embedded files and a failure, as lookalike 0.1 wrote it: no ctime, mode,
    recorded or shard column, no shards table, format 1 in its manifest (written atomically)."""
    store = Store.create(directory, root, spec)
    with store.writer() as writer:
        x = np.random.default_rng(seed).standard_normal((2, int(spec["dim"]))).astype(np.float32)  # as _unit makes them
        _write(writer, ["a.jpg", "b.jpg"], x / np.linalg.norm(x, axis=1, keepdims=True), failed=["bad.jpg"])
    with contextlib.closing(sqlite3.connect(store.directory / CATALOG, isolation_level=None)) as db:
        db.execute("DROP INDEX files_digest")
        for column in ("ctime_ns", "mode", "recorded", "shard", "digest", "width", "height", "taken_ns", "blank"):
            db.execute(f"ALTER TABLE files DROP COLUMN {column}")
        db.execute("DROP TABLE shards")
        db.execute("DROP TABLE verdicts")
    manifest = json.loads((store.directory / MANIFEST).read_text())
    write_atomically(store.directory / MANIFEST, json.dumps({**manifest, "format_version": 1}).encode())
    return store


def test_a_store_of_format_1_is_upgraded_in_place(tmp_path):
    store = format_1_store(tmp_path / ".lookalike", tmp_path)
    manifest = json.loads((store.directory / MANIFEST).read_text())
    upgraded = Store.open(store.directory)
    assert upgraded.manifest.format_version == 4
    assert json.loads((store.directory / MANIFEST).read_text())["format_version"] == 4
    (failure,) = upgraded.failures()
    assert (failure.path, failure.reason, failure.ctime_ns, failure.recorded) == ("bad.jpg", "bad", None, None)
    assert len(upgraded) == 2 and upgraded.check().ok
    assert sorted(np.round(v, 6).tolist() for _, v in upgraded) == sorted(np.round(_unit(np.random.default_rng(10), 2), 6).tolist())

    (store.directory / MANIFEST).write_text(json.dumps({**manifest, "format_version": 5}))
    with pytest.raises(StoreError, match="store format 5.*--reset"):
        Store.open(store.directory)


_UPGRADE_AND_REPAIR = "import sys; from lookalike.store.store import Store; Store.open(sys.argv[1]).repair()"


@pytest.mark.parametrize("point", ["upgrade.catalog", "repair.marked"])
def test_a_kill_while_upgrading_or_repairing_then_a_rerun_equals_a_run_never_killed(point, tmp_path):
    reference = format_1_store(tmp_path / "reference", tmp_path).directory
    Store.open(reference).repair()  # opening a format-1 store upgrades it
    store = format_1_store(tmp_path / "store", tmp_path).directory
    killed = subprocess.run([sys.executable, "-c", _UPGRADE_AND_REPAIR, str(store)], capture_output=True, text=True,
                            env={**os.environ, "LOOKALIKE_CRASH": point}, timeout=120)
    assert killed.returncode == 86, killed.stderr  # crashpoints.CRASH_EXIT_CODE
    manifest_format = json.loads((store / MANIFEST).read_text())["format_version"]
    assert manifest_format == (1 if point == "upgrade.catalog" else FORMAT_VERSION)  # the manifest is upgraded last
    assert Store.open(store).check().ok  # upgraded, if need be, again
    Store.open(store).repair()
    assert committed(store, DIM) == committed(reference, DIM)
    assert Store.open(store).check().ok and Store.open(store).index_lag() == Store.open(reference).index_lag()
    assert sorted(faiss_io.ids(faiss_io.read_index(store / INDEX)).tolist()) == [1, 2]


def test_search_shared_among_workers_matches_brute_force_with_uncommitted_index_changes(tmp_path):
    store = Store.create(tmp_path / ".lookalike", tmp_path, SPEC, index_factory="IVF4,Flat")  # nprobe 4: exact
    rng = np.random.default_rng(7)
    truth = {f"a{i}.jpg": v for i, v in enumerate(_unit(rng, 400))}
    with store.writer() as writer:
        _write(writer, list(truth), np.stack(list(truth.values())))
    assert faiss_io.describe(faiss_io.read_index(store.directory / INDEX))["nlist"] == 4
    writer = store.writer().__enter__()  # commits, then dies before it updates the index
    truth["a3.jpg"] = _unit(rng, 1)[0]
    _write(writer, ["a3.jpg"], truth["a3.jpg"][None])
    writer.remove(["a4.jpg"])
    writer.vectors.close(), writer.catalog.close()
    del truth["a4.jpg"]

    queries = np.vstack([_unit(rng, 20), truth["a3.jpg"][None]])
    expected = _brute(truth, queries, 10)
    for query, want in zip(queries, expected):
        hits = store.search(query[None], k=10, workers=2)[0]
        assert [h.path for h in hits] == [str(tmp_path / key) for key in want]
        assert hits == store.search(query[None], k=10)[0]


def test_warm_maps_the_whole_index_and_keep_warm_each_new_one(tmp_path):
    from smaps import mapped_kib

    store = Store.create(tmp_path / ".lookalike", tmp_path, SPEC, index_factory="IVF64,Flat")  # a search probes 16
    rng = np.random.default_rng(8)
    with store.writer() as writer:
        _write(writer, [f"a{i}.jpg" for i in range(20_000)], _unit(rng, 20_000))  # 1.3 MB of codes
    path = (store.directory / INDEX).resolve()
    assert Store(store.directory, store.manifest).warm() is True  # another Store: its own mapping
    assert mapped_kib(path) == 0  # which is gone with it

    assert store.warm() is True
    assert mapped_kib(path) >= 0.97 * path.stat().st_size / 1024

    store.keep_warm()
    with store.writer() as writer:  # a new index file: a new mapping, warmed in the background once searched
        _write(writer, [f"b{i}.jpg" for i in range(2_000)], _unit(rng, 2_000))
    store.search(_unit(rng, 1), k=5)
    deadline = time.monotonic() + 30
    while mapped_kib(path) < 0.97 * path.stat().st_size / 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mapped_kib(path) >= 0.97 * path.stat().st_size / 1024


def test_warm_without_an_index_says_so(store):
    assert store.warm() is False


def test_stored_gives_the_key_and_vector_of_an_id_and_none_without_one(store):
    rng = np.random.default_rng(9)
    with store.writer() as writer:
        _write(writer, ["a.jpg", "b.jpg"], _unit(rng, 2), failed=["bad.jpg"])
    with store.writer() as writer:
        _write(writer, ["b.jpg"], _unit(rng, 1))  # a changed file: its new row
    with store.catalog() as catalog:
        ids = {r.path: r.id for r in catalog.records()}

    for key in ("a.jpg", "b.jpg"):
        found_key, vector = store.stored(ids[key])
        assert found_key == key
        np.testing.assert_array_equal(vector, store.get_vectors([store.root / key])[0])
    assert store.stored(ids["bad.jpg"]) is None and store.stored(10**9) is None


def test_changing_only_the_codes_keeps_the_trained_lists(tmp_path):
    """A new default or --index-factory that changes only the codes re-adds the vectors without k-means."""
    import faiss

    store = Store.create(tmp_path / ".lookalike", tmp_path, SPEC, index_factory="IVF8,Flat")
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 600)
    with store.writer() as writer:
        _write(writer, [f"{i}.jpg" for i in range(600)], vectors)
    # Centroids no k-means would find (8 of the stored vectors): a retrained index can't have them.
    planted = faiss_io.read_index(store.directory / INDEX, mmap=False)
    ivf = faiss.extract_index_ivf(planted)
    ivf.quantizer.reset()
    ivf.quantizer.add(vectors[:8])
    ivf.reset()
    faiss_index.add(planted, vectors, np.arange(1, 601))
    faiss_io.write_index(planted, store.directory / INDEX)

    with store.writer() as writer:
        writer.use_factory("IVF8,SQfp16")
        _write(writer, ["new.jpg"], _unit(rng, 1))

    index = faiss_io.read_index(store.directory / INDEX)
    assert faiss_io.describe(index)["factory"] == "IVF8,SQfp16" and index.ntotal == 601
    np.testing.assert_array_equal(faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, 8), vectors[:8])
    assert store.check().ok
    hits = store.search(vectors[100:101], k=1)
    assert hits[0][0].id == 101 and abs(hits[0][0].score - 1.0) < 1e-6

    store.repair()  # a rebuild of the same kind is trained afresh: the planted centroids go
    index = faiss_io.read_index(store.directory / INDEX)
    assert not np.array_equal(faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, 8), vectors[:8])
