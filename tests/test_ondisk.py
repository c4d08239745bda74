"""On-disk indexes from shards: parts merged on disk against one index, the sharded store, `check`."""

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest
from test_crash import committed

from lookalike.ann import build as ann_build
from lookalike.ann import faiss_io
from lookalike.ann import index as faiss_index
from lookalike.errors import IndexStateError
from lookalike.store import ondisk
from lookalike.store.layout import INDEX, SHARDS
from lookalike.store.shards import shard_path, write_shard_file
from lookalike.store.store import Store

DIM = 32
SPEC = {"model": "fake", "layer": "x", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {"a": "1"}}


def _clustered(rng, n, clusters=40):
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    v = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_four_parts_merged_on_disk_give_the_top_10_of_one_index_with_the_same_quantizer(tmp_path):
    rng = np.random.default_rng(0)
    x = _clustered(rng, 8000)
    ids = np.arange(10_000, 18_000, dtype=np.int64)
    trained = ann_build.trained_index(x, "IVF64,PQ8")
    faiss_io.write_index(trained, tmp_path / "trained.faiss")
    single = faiss_io.read_index(tmp_path / "trained.faiss", mmap=False)
    single.add_with_ids(x, ids)
    files = []
    for k, part in enumerate(np.array_split(np.arange(len(x)), 4)):  # four shard files
        files.append(tmp_path / f"shard{k}.f32")
        x[part].tofile(files[-1])
    pieces = [ondisk.Piece(os.fspath(f), len(p), np.arange(len(p)), ids[p])
              for f, p in zip(files, np.array_split(np.arange(len(x)), 4))]
    name, results = ondisk.build_ondisk(tmp_path, tmp_path / "trained.faiss", pieces, DIM, 1, part_rows=2000)
    assert [r.rows for r in results] == [2000] * 4
    merged = faiss_io.read_index(tmp_path / INDEX)
    assert ondisk.ivfdata_name(merged) == name and faiss_io.is_mapped(merged)
    queries = _clustered(rng, 200)
    _, expected = single.search(queries, 10)
    _, got = faiss_index.search(merged, queries, 10)
    np.testing.assert_array_equal(got, expected)
    assert faiss.extract_index_ivf(merged).nprobe == faiss.extract_index_ivf(single).nprobe > 1
    # outdated ids are skipped while scanning the mapped lists: the same as asking for more and dropping them
    stale = ids[::7]
    _, more = single.search(queries, 10 + len(stale))
    expected = [[i for i in row if i not in set(stale.tolist())][:10] for row in more.tolist()]
    assert faiss_index.search(merged, queries, 10, exclude=stale)[1].tolist() == expected
    # a merged index is never changed in place: FAISS would abort the process
    before = os.stat(tmp_path / name).st_mtime_ns
    with pytest.raises(IndexStateError):
        faiss_index.remove(merged, ids[:3])
    assert os.stat(tmp_path / name).st_mtime_ns == before


def _sharded_store(tmp_path, rng, shards=4, rows=600):
    """A store whose vectors are all in shard files, committed the way the Ray driver commits them."""
    store = Store.create(tmp_path / "store", tmp_path, SPEC, index_factory="IVF32,Flat")
    truth = {}
    with store.writer(sync=False) as writer:
        for s in range(shards):
            x = _clustered(rng, rows)
            name = write_shard_file(store.directory, x)
            keys = [f"s{s}/{i}.jpg" for i in range(rows)]
            writer.commit_shard(name, [(k, 1, 1, 1, 0o644, i) for i, k in enumerate(keys)], [(f"s{s}/bad.jpg", 1, 1, 1, 0o644, "broken")])
            truth.update(zip(keys, x))
    return store, truth


def test_a_sharded_store_builds_on_disk_and_a_fresh_process_searches_it_moved(tmp_path):
    rng = np.random.default_rng(1)
    store, truth = _sharded_store(tmp_path, rng)
    with store.writer(map_parts=map):
        pass
    assert store.check().ok
    assert list(store.directory.glob("index.*.ivfdata")) and not list(store.directory.glob(".build-*"))
    assert len(store.failures()) == 4
    keys = sorted(truth)
    query = truth[keys[7]]
    exact = [keys[i] for i in np.argsort(-(np.stack([truth[k] for k in keys]) @ query))[:10]]
    got = [os.path.relpath(h.path, tmp_path) for h in store.search(query[None], k=10)[0]]
    assert got[0] == keys[7] and len(set(got) & set(exact)) >= 9
    np.testing.assert_array_equal(store.get_vectors([tmp_path / keys[5]])[0], truth[keys[5]])
    # moved, opened by a fresh process from elsewhere: the lists are found beside index.faiss
    moved = tmp_path / "moved"
    os.rename(store.directory, moved)
    np.save(tmp_path / "q.npy", query[None])
    code = ("import json,sys,numpy as np; from lookalike.store.store import Store; s=Store.open(sys.argv[1]);"
            "print(json.dumps([h.id for h in s.search(np.load(sys.argv[2]), k=10)[0]]))")
    out = subprocess.run([sys.executable, "-c", code, str(moved), str(tmp_path / "q.npy")], cwd="/",
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(out) == [h.id for h in Store.open(moved).search(query[None], k=10)[0]]


def test_check_reports_orphans_and_damaged_shards_and_a_writer_removes_orphans(tmp_path):
    rng = np.random.default_rng(2)
    store, _ = _sharded_store(tmp_path, rng, shards=2, rows=50)
    orphan = write_shard_file(store.directory, _clustered(rng, 5))  # a killed run's shard
    (store.directory / SHARDS / ".x.tmp").write_bytes(b"partial")
    problems = store.check().problems
    assert any("2 files no catalog row names" in p for p in problems)
    with store.catalog() as catalog:
        damaged = catalog.shards()[0].name
    with open(shard_path(store.directory, damaged), "r+b") as f:
        f.truncate(100)
    assert any(f"shard {damaged}.f32 holds 100 bytes" in p for p in store.check().problems)
    with store.writer(sync=False):
        pass
    assert not shard_path(store.directory, orphan).exists() and not (store.directory / SHARDS / ".x.tmp").exists()


def test_check_reports_lists_shorter_than_the_index_says_instead_of_dying_on_them(tmp_path):
    store, _ = _sharded_store(tmp_path, np.random.default_rng(6), shards=2, rows=300)
    with store.writer(map_parts=map):
        pass
    (lists,) = store.directory.glob("index.*.ivfdata")
    size = lists.stat().st_size
    with open(lists, "r+b") as f:
        f.truncate(size // 2)  # reading the mapped lists past their end would be a SIGBUS
    (problem,) = store.check().problems
    assert f"{lists.name} holds {size // 2} bytes" in problem and "damaged" in problem
    assert store.check(repair=True).ok and store.check().ok


def test_an_on_disk_index_stays_while_few_rows_change_and_searches_stay_exact(tmp_path):
    rng = np.random.default_rng(3)
    store, truth = _sharded_store(tmp_path, rng, shards=2, rows=800)
    with store.writer(map_parts=map):
        pass
    index_file = os.stat(store.directory / INDEX).st_ino
    new, moved = _clustered(rng, 3), _clustered(rng, 1)
    with store.writer() as writer:  # the local engine adds to shard 0, changes and removes one: under the delta
        writer.write([(f"n{i}.jpg", 1, 1) for i in range(3)], new, [])
        writer.write([("s1/1.jpg", 2, 2)], moved, [])
        writer.remove(["s0/0.jpg"])
    assert os.stat(store.directory / INDEX).st_ino == index_file  # not rebuilt, not changed in place
    old = truth["s1/1.jpg"]
    truth.update({f"n{i}.jpg": v for i, v in enumerate(new)}, **{"s1/1.jpg": moved[0]})
    del truth["s0/0.jpg"]
    assert store.check().ok
    keys = sorted(truth)
    matrix = np.stack([truth[k] for k in keys])
    for query in [*new, old]:  # the changed file's old vector in the index must not answer for it
        got = [os.path.relpath(h.path, tmp_path) for h in store.search(query[None], k=5)[0]]
        assert got[0] == keys[int(np.argmax(matrix @ query))]
    assert "s0/0.jpg" not in {os.path.relpath(h.path, tmp_path) for h in store.search(truth["s0/1.jpg"][None], k=50)[0]}


_ONE_MORE_RUN = """
import sys, numpy as np
from lookalike.store.shards import write_shard_file
from lookalike.store.store import Store
store = Store.open(sys.argv[1])
x = np.random.default_rng(9).standard_normal((50, {dim}), dtype=np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
with store.writer(map_parts=map) as writer:  # a Ray driver's run, without Ray: one shard, then the index
    if sys.argv[2:] == ["factory"]:
        writer.use_factory("IVF16,Flat")
    with store.catalog() as catalog:
        done = bool(catalog.by_paths(["late/0.jpg"]))
    if not done:  # as a rerun plans it: only what was not committed
        name = write_shard_file(store.directory, x)
        writer.commit_shard(name, [(f"late/{{i}}.jpg", 1, 1, 1, 0o644, i) for i in range(50)])
""".format(dim=DIM)


def _one_more_run(store: Store, *args, point: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOOKALIKE_CRASH": point} if point else None
    return subprocess.run([sys.executable, "-c", _ONE_MORE_RUN, str(store.directory), *args], env=env, timeout=120,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The sharded store of the kill test, and its run without a kill."""
    base = tmp_path_factory.mktemp("ondisk-uninterrupted")
    store, _ = _sharded_store(base, np.random.default_rng(4), shards=2, rows=400)
    assert _one_more_run(store).returncode == 0
    return store.directory


@pytest.mark.parametrize("point", ["shard.written", "shard.renamed", "shard.committed", "trained.written",
                                   "trained.renamed", "ondisk.parts_written", "ondisk.ivfdata_written",
                                   "index.written", "index.renamed", "index.recorded"])
def test_a_kill_at_each_sharded_step_leaves_a_store_that_a_rerun_makes_whole(point, uninterrupted, tmp_path):
    store, truth = _sharded_store(tmp_path, np.random.default_rng(4), shards=2, rows=400)
    killed = _one_more_run(store, point=point)
    assert killed.returncode == 86, killed.stderr  # crashpoints.CRASH_EXIT_CODE: it died at the point
    assert not [p for p in store.check().problems if "no catalog row names" not in p]  # an orphan at most
    assert _one_more_run(store).returncode == 0
    assert store.check().ok and len(store) == 850
    assert not list(store.directory.glob(".build-*")) and len(list(store.directory.glob("index.*.ivfdata"))) <= 2
    # the same paths, ids and vector bytes as the run that was never killed, and the same index
    assert committed(store.directory, DIM) == committed(uninterrupted, DIM)
    assert store.index_lag()[0] == store.index_lag()[1]
    assert faiss_io.describe(faiss_io.read_index(store.directory / INDEX))["nlist"] == 32
    key = sorted(truth)[3]
    assert os.path.relpath(store.search(truth[key][None], k=1)[0][0].path, tmp_path) == key


def test_a_trained_index_is_never_taken_for_another_factorys(tmp_path):
    """A run switching to IVF16, killed once its trained index is in place; then an IVF32 rebuild must train 32 lists."""
    store, _ = _sharded_store(tmp_path, np.random.default_rng(5), shards=2, rows=400)  # forced IVF32,Flat
    with store.writer(map_parts=map):
        pass
    killed = _one_more_run(store, "factory", point="trained.renamed")
    assert killed.returncode == 86, killed.stderr
    with Store.open(store.directory).writer(map_parts=map) as writer:
        writer.use_factory("IVF32,Flat")  # back, before anything was recorded of IVF16
    Store.open(store.directory).repair()
    index = faiss_io.read_index(store.directory / INDEX)
    assert faiss_io.describe(index)["nlist"] == 32 and Store.open(store.directory).info()["index_factory"] == "IVF32,Flat"
    assert Store.open(store.directory).check().ok
