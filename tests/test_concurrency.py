"""Readers while a writer works, in the interleavings that break a store that gets them wrong.

Each test forces its interleaving: the indexer subprocess pauses at named crash points
(``LOOKALIKE_CRASH=...=pause``) while the test queries, or the reader's own file read is
hooked to let a writer commit in between. Answers are checked against brute force over
what the catalog has committed at that moment, read with plain sqlite3 and numpy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from test_crash import BATCH, index_in_process, lookalike_subprocess, make_images

from lookalike.ann import faiss_io
from lookalike.crashpoints import PAUSE_FILE_ENV
from lookalike.store.store import CATALOG, VECTORS, Store

DIM = 1280
K = 4


def committed_vectors(store: Path) -> tuple[dict[int, str], dict[int, np.ndarray], int, int]:
    """({id: path}, {id: vector}) of the embedded files the catalog has committed, its generation and index generation."""
    with sqlite3.connect(store / CATALOG) as db:
        rows = db.execute("SELECT id, path, row FROM files WHERE status = 'ok'").fetchall()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    vectors = np.fromfile(store / VECTORS, dtype=np.float32).reshape(-1, DIM)
    return ({i: p for i, p, _ in rows}, {i: vectors[r] for i, _, r in rows},
            meta["generation"], meta["index_generation"])


def brute_force(ids_vectors: dict[int, np.ndarray], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(sorted(ids_vectors))
    scores = queries.astype(np.float64) @ np.stack([ids_vectors[i] for i in ids]).astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), ids[order]


def assert_answers_from_committed_state(store: Path, queries: np.ndarray) -> tuple[int, int]:
    paths, vectors, generation, index_generation = committed_vectors(store)
    want_scores, want_ids = brute_force(vectors, queries, K)
    hits = Store.open(store).search(queries, k=K)
    assert [[h.id for h in row] for row in hits] == want_ids.tolist()
    np.testing.assert_allclose([[h.score for h in row] for row in hits], want_scores, atol=1e-5)
    assert all(h.path.endswith(paths[h.id]) for row in hits for h in row)
    return generation, index_generation


@pytest.mark.slow
def test_queries_while_indexing_into_an_indexed_store_answer_from_what_is_committed(tmp_path):
    """The written index plus the changes since, at every commit of a run that adds, removes and changes files."""
    folder, store = tmp_path / "photos", tmp_path / "store"
    make_images(folder, range(8))
    index_in_process(folder, store)
    _, before, _, _ = committed_vectors(store)
    paths = {p: i for i, p in committed_vectors(store)[0].items()}
    (folder / "01.jpg").unlink()  # removed: the index still holds it
    (folder / "06.jpg").unlink()
    photo("astronaut").resize((80, 60)).save(folder / "02.jpg")  # changed: the index holds its old vector
    photo("coins").resize((80, 60)).save(folder / "05.jpg")
    make_images(folder, range(20, 24))  # added: only brute force finds them
    # Queries that a stale entry would answer wrongly: the old vectors of what changed or went.
    stale = np.stack([before[paths[name]] for name in ("01.jpg", "06.jpg", "02.jpg", "05.jpg")])

    pause = tmp_path / "paused"
    process = lookalike_subprocess(
        "index", folder, "--store", store, *BATCH,
        env={"LOOKALIKE_CRASH": "catalog.after_commit:*=pause,index.renamed=pause", PAUSE_FILE_ENV: str(pause)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []
    try:
        while process.poll() is None:
            if not pause.exists():
                time.sleep(0.005)
                continue
            point = pause.read_text().split()[0]
            _, fresh, _, _ = committed_vectors(store)
            queries = np.vstack([stale, *(fresh[paths.get(n, -1)] for n in ("02.jpg", "05.jpg") if paths.get(n, -1) in fresh)])
            seen.append((point, *assert_answers_from_committed_state(store, queries)))
            pause.unlink()  # resume the indexer
    except BaseException:
        process.kill()  # paused for good: the test failed while the indexer waited
        raise
    finally:
        stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 0, stderr[-2000:]
    # commit 1 removes two files, then three batches of two; then the index is replaced
    assert [p for p, _, _ in seen] == ["catalog.after_commit"] * 4 + ["index.renamed"]
    # the written index plus changes since answered every time; at the last pause the file is new
    # and the catalog still names the old generation
    assert all(0 <= written < generation for _, generation, written in seen), "the written index was not used"
    assert_answers_from_committed_state(store, stale)


def test_a_reader_holding_the_old_index_when_a_writer_commits_does_not_mix_it_with_the_new_catalog(tmp_path, monkeypatch):
    """The reader reads index.faiss, then the writer commits and replaces it, then the reader opens its snapshot."""
    rng = np.random.default_rng(11)
    unit = lambda n: (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(rng.standard_normal((n, 16)).astype(np.float32))  # noqa: E731
    spec = {"model": "fake", "layer": "x", "dim": 16, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {}}
    store = Store.create(tmp_path / ".lookalike", tmp_path, spec)
    first = unit(10)
    with store.writer() as writer:
        writer.write([(f"a{i}.jpg", 1, 1) for i in range(10)], first, [])
    query = unit(1)
    newcomer, changed = unit(1), unit(1)
    newcomer[0], changed[0] = query[0], (query[0] + 0.2 * changed[0]) / np.linalg.norm(query[0] + 0.2 * changed[0])
    real_read = faiss_io.read_index
    committed = []

    def read_then_let_a_writer_commit(path, *args, **kwargs):
        index = real_read(path, *args, **kwargs)  # the reader has the old index in hand
        if not committed:
            committed.append(True)
            with store.writer() as writer:  # commits, then replaces index.faiss on exit
                writer.write([("new.jpg", 1, 1)], newcomer, [])
                writer.write([("a3.jpg", 2, 2)], changed, [])
                writer.remove(["a4.jpg"])
        return index

    monkeypatch.setattr(faiss_io, "read_index", read_then_let_a_writer_commit)
    (hits,) = store.search(query, k=3)
    assert committed, "the interleaving did not happen"
    assert [h.path.rsplit("/", 1)[1] for h in hits[:2]] == ["new.jpg", "a3.jpg"]
    np.testing.assert_allclose([h.score for h in hits[:2]], [1.0, float(changed[0] @ query[0])], atol=1e-5)
    assert "a4.jpg" not in {h.path.rsplit("/", 1)[1] for h in hits}


def test_a_lock_outlives_no_process_that_held_it(tmp_path):
    """A child forked by the lock's holder does not inherit it: when the holder dies, the lock is free."""
    import sys

    store = Store.create(tmp_path / ".lookalike", tmp_path, {"model": "fake", "layer": "x", "dim": 4,
                                                              "weights_sha256": "0", "preprocessing": {}, "versions": {}})
    code = ("import os, sys, time; from lookalike.store.lock import lock_store\n"
            "with lock_store(sys.argv[1]):\n"
            "    if os.fork() == 0:\n        time.sleep(30); os._exit(0)\n"
            "    print('held', flush=True); sys.stdin.readline(); os._exit(0)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(store.directory)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    child = None
    try:
        assert holder.stdout.readline() == "held\n"
        from lookalike.errors import StoreLockedError

        with pytest.raises(StoreLockedError, match=rf"another lookalike process \(process {holder.pid}\)"):
            store.writer().__enter__()
        child = int(Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()[0])
        holder.stdin.write("go\n")
        holder.stdin.flush()
        holder.wait(timeout=10)
        assert Path(f"/proc/{child}").exists(), "the forked child is still alive"
        with store.writer(sync=False):  # the holder is gone: its child holds nothing
            pass
    finally:
        holder.kill()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
