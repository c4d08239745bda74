"""A real server under concurrent use: the CNN off the event loop, uploads batched, an indexer writing meanwhile."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import photo
from serve_helpers import edited_chelsea, jpeg_bytes, photo_folder, working_directory

from lookalike.cli.options import shown
from lookalike.indexing import open_store
from lookalike.serve import BackgroundServer, create_app


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = photo_folder(tmp_path_factory)
    with working_directory(folder):
        yield folder


class Gate:
    """Wraps an embedder: every call waits to be let through, and the batch sizes are recorded."""

    def __init__(self, embed):
        self.embed = embed
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self, paths):
        self.batches.append(len(paths))
        self.entered.set()
        assert self.open.wait(60), "the test never opened the gate"
        return self.embed(paths)


def _id_of(store, path) -> int:
    """A stored image's id: searching by a stored path finds the image itself first."""
    return store.search([path], k=1)[0][0].id


def _wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_uploads_queue_and_batch_while_similar_answers(folder, tmp_path):
    store = open_store(folder, device="cpu")
    gate = store.embedder = Gate(store.embedder)
    query = edited_chelsea(tmp_path / "copy.jpg").read_bytes()
    app = create_app(store, display_path=shown, warm_up=False)
    with BackgroundServer(app) as server, ThreadPoolExecutor(4) as pool:
        def upload():
            return httpx.post(server.url + "api/search", files={"image": ("q.jpg", query, "image/jpeg")}, timeout=60)

        first = pool.submit(upload)
        assert gate.entered.wait(30)
        waiting = [pool.submit(upload) for _ in range(3)]
        _wait_until(lambda: app.services.queue.waiting == 3)
        chelsea = httpx.get(server.url + f"api/similar/{_id_of(store, folder / 'chelsea.jpg')}", timeout=10)  # the CNN is busy: similar still answers
        assert chelsea.status_code == 200 and chelsea.json()["hits"]
        assert not first.done() and not any(f.done() for f in waiting)
        gate.open.set()
        answers = [f.result(timeout=60) for f in (first, *waiting)]
    assert [a.status_code for a in answers] == [200] * 4
    assert {a.json()["hits"][0]["path"] for a in answers} == {"chelsea.jpg"}
    assert gate.batches == [1, 3]  # the three that waited went through the network together


def _indexer(folder) -> subprocess.Popen:
    command = [sys.executable, "-m", "lookalike", "index", str(folder), "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_answers_stay_consistent_while_lookalike_index_commits_and_new_images_appear(folder, tmp_path):
    served = tmp_path / "photos"
    shutil.copytree(folder, served)  # the store moves with its folder
    new = photo("immunohistochemistry")
    new.thumbnail((400, 400))
    new.save(served / "new-stain.jpg")
    for i, name in enumerate(["astronaut", "coffee", "coins", "camera"] * 2):
        image = photo(name).resize((160, 120))
        image.crop((i, i, 160 - i, 120 - i)).save(served / f"extra-{i:02}.jpg")
    store = open_store(served, device="cpu")
    chelsea_id = _id_of(store, served / "chelsea.jpg")
    answers = []
    app = create_app(store, display_path=shown, warm_up=False)
    with working_directory(served), BackgroundServer(app) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        before = http.get("/api/info").json()["embedded"]
        groups_before = http.get("/api/dupes", params={"threshold": 0.8}).json()["total"]  # now cached
        process = _indexer(served)
        try:
            while process.poll() is None:
                info = http.get("/api/info").json()
                similar = http.get(f"/api/similar/{chelsea_id}", params={"k": 4})
                assert similar.status_code == 200, similar.text
                answers.append((info["embedded"], similar.json()["hits"]))
                time.sleep(0.05)
        finally:
            _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors
        after = http.get("/api/info").json()
        groups_after = http.get("/api/dupes", params={"threshold": 0.8}).json()["groups"]
        stain = jpeg_bytes(new.crop((10, 10, new.width - 10, new.height - 10)))
        found = http.post("/api/search", files={"image": ("q.jpg", stain, "image/jpeg")}, data={"k": "3"}).json()["hits"]
    assert (before, after["embedded"]) == (7, 16)
    assert found[0]["path"] == "new-stain.jpg"  # indexed after the server started, found without a restart
    extras = [{m["path"] for m in g["members"]} for g in groups_after if any("extra-" in m["path"] for m in g["members"])]
    assert groups_before == 1 and extras  # the cropped copies form new groups: the cache followed the store
    assert len(answers) >= 3 and [count for count, _ in answers] == sorted(count for count, _ in answers)
    final = open_store(served)
    chelsea = final.get_vectors([served / "chelsea.jpg"])[0]
    for _, hits in answers:  # every answer names stored files with the scores of their committed vectors
        vectors = final.get_vectors([served / h["path"] for h in hits])
        np.testing.assert_allclose([h["score"] for h in hits], vectors @ chelsea, atol=1e-5)
        assert [h["rank"] for h in hits] == [1, 2, 3, 4]
