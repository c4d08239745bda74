"""The watcher keeps a store current: a burst of copies is one run, a slow copy is read once whole, deletes and
renames are followed, a kill mid-batch is caught up on the next start, and the store's lock is held throughout."""

import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from test_crash import make_images

from lookalike.errors import StoreLockedError
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store
from lookalike.store.store import Store
from lookalike.watch import Watcher

OPTIONS = EmbedOptions(device="cpu", workers=0, batch_size=16)
SETTLE = 0.6


class Running:
    """A watcher on a thread, with the passes it made."""

    def __init__(self, folder):
        self.passes = []
        self.watcher = Watcher(folder, settle=SETTLE, options=OPTIONS, on_pass=lambda s, first: self.passes.append(s))
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.watcher.ready.wait(120), "the catch-up pass never finished"
        return self

    def __exit__(self, *exc):
        self.watcher.stop()
        self.thread.join(60)

    def until(self, condition, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"not within {timeout} s; passes: {self.passes}")


def aged(folder, seconds=60):
    """Files written a while ago, as a library's are (a watcher leaves files younger than its settle time)."""
    then = time.time_ns() - seconds * 10**9
    for path in folder.rglob("*.jpg"):
        os.utime(path, ns=(then, then))


def paths(folder):
    with open_store(folder).catalog() as catalog:
        return {r.path: r.status for r in catalog.records()}


def test_a_burst_of_copies_is_one_run_and_all_are_searchable_soon_after(tmp_path):
    folder, source = tmp_path / "photos", tmp_path / "source"
    make_images(folder, range(2))
    make_images(source, range(2, 202))
    aged(folder)
    with Running(folder) as running:
        assert len(running.passes) == 1 and running.passes[0].added == 2
        for path in sorted(source.iterdir()):
            shutil.copy(path, folder / path.name)
        copied = time.monotonic()
        done = running.until(lambda: len(paths(folder)) == 202)
        with pytest.raises(StoreLockedError, match="another lookalike process|this process is already writing"):
            index_folder(folder, options=OPTIONS)  # the watcher holds the store's lock between its runs too
    embedding = [s for s in running.passes[1:] if s.embedded]
    assert sum(s.embedded for s in embedding) == 200 and len(embedding) <= 2  # one run (two if a copy outlasted settle)
    assert done - copied <= SETTLE + sum(s.seconds for s in embedding) + 5  # the settle, then the run itself
    (hit,) = open_store(folder).search([folder / "150.jpg"], k=1)
    assert hit[0].path.endswith("150.jpg")


def test_a_file_copied_slowly_is_read_once_when_it_is_whole(tmp_path):
    folder = tmp_path / "photos"
    make_images(folder, range(1))
    aged(folder)
    make_images(tmp_path / "source", range(1, 2), size=(320, 240))
    data = (tmp_path / "source" / "01.jpg").read_bytes()
    with Running(folder) as running:
        with open(folder / "slow.jpg", "wb") as out:
            for start in range(0, len(data), len(data) // 5 + 1):  # 5 chunks, each within the settle time of the last
                out.write(data[start : start + len(data) // 5 + 1])
                out.flush()
                time.sleep(SETTLE / 3)
        running.until(lambda: paths(folder).get("slow.jpg") == "ok")
        time.sleep(SETTLE * 2)
    assert paths(folder)["slow.jpg"] == "ok"  # never recorded as a broken, half-copied JPEG
    assert sum(s.embedded for s in running.passes[1:]) == 1 and sum(s.failed for s in running.passes) == 0, running.passes


def test_deletes_and_renames_are_followed_and_a_rename_keeps_its_vector(tmp_path):
    folder = tmp_path / "photos"
    make_images(folder, range(4))
    aged(folder)
    with Running(folder) as running:
        vector = open_store(folder).get_vectors([folder / "01.jpg"])[0]
        os.unlink(folder / "00.jpg")
        (folder / "sub").mkdir()
        os.rename(folder / "01.jpg", folder / "sub" / "renamed.jpg")
        running.until(lambda: set(paths(folder)) == {"02.jpg", "03.jpg", "sub/renamed.jpg"})
    assert any(s.moved == 1 for s in running.passes) and sum(s.embedded for s in running.passes[1:]) == 0
    np.testing.assert_array_equal(open_store(folder).get_vectors([folder / "sub" / "renamed.jpg"])[0], vector)


def test_a_watcher_killed_mid_batch_catches_up_when_it_starts_again(tmp_path):
    folder = tmp_path / "photos"
    make_images(folder, range(10))
    aged(folder)
    command = [sys.executable, "-m", "lookalike", "watch", str(folder), "--settle", "0.5", "--batch-size", "2",
               "--workers", "0", "--device", "cpu"]
    killed = subprocess.run(command, env={**os.environ, "LOOKALIKE_CRASH": "vectors.after_fsync:3"}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 86, killed.stderr  # died with a batch written but not committed
    assert len(Store.open(folder / ".lookalike")) == 4
    make_images(tmp_path / "later", range(10, 12))  # and more came while it was down
    aged(tmp_path / "later")
    for path in (tmp_path / "later").iterdir():
        os.rename(path, folder / path.name)
    with Running(folder) as running:
        assert running.passes[0].added == 8 and running.passes[0].embedded == 8
    make_images(tmp_path / "fresh", range(12))
    index_folder(tmp_path / "fresh", options=OPTIONS)
    watched, fresh = open_store(folder), open_store(tmp_path / "fresh")
    assert watched.check().ok and len(watched) == 12
    names = sorted(p.name for p in folder.glob("*.jpg"))
    np.testing.assert_allclose(watched.get_vectors([folder / n for n in names]),
                               fresh.get_vectors([tmp_path / "fresh" / n for n in names]), atol=1e-5)


def test_a_write_from_elsewhere_in_the_process_runs_on_the_watcher_s_thread_under_its_lock(tmp_path):
    folder = tmp_path / "photos"
    make_images(folder, range(3))
    aged(folder)
    with Running(folder) as running:
        store = open_store(folder)  # made by the watcher's first pass
        with pytest.raises(StoreLockedError):
            with store.writer(sync=False):  # any other writer is refused while the watcher holds the store
                pass

        def write():
            with store.writer(sync=False) as writer:
                writer.catalog.set_meta(note="written through the watcher")
            return threading.current_thread()

        assert running.watcher.call(write).result(timeout=30) is running.thread
        with pytest.raises(ValueError, match="told"):
            running.watcher.call(lambda: (_ for _ in ()).throw(ValueError("told"))).result(timeout=30)
    with store.catalog() as catalog:
        assert catalog.meta("note") == "written through the watcher"
    with pytest.raises(StoreLockedError, match="has stopped"):  # after the watcher stops, a call is refused, not lost
        running.watcher.call(write).result(timeout=5)


def test_serve_watch_resolves_duplicates_through_the_watcher_that_holds_the_store(tmp_path):
    from fastapi.testclient import TestClient

    from lookalike.serve import create_app
    from lookalike.serve.review import Decision, Review

    folder = tmp_path / "photos"
    make_images(folder, range(3))
    shutil.copy(folder / "01.jpg", folder / "01-copy.jpg")
    aged(folder)
    index_folder(folder, options=OPTIONS)
    watcher = Watcher(folder, settle=SETTLE, options=OPTIONS)
    app = create_app(open_store(folder, device="cpu"), warm_up=False, quarantine=tmp_path / "q", watcher=watcher)
    with TestClient(app, base_url="http://127.0.0.1"):  # the app's start runs the watcher, as `serve --watch` does
        assert watcher.ready.wait(120), "the watcher's catch-up pass never finished"
        store, gallery = app.services.gallery.store, app.services.gallery
        alone = Review(store, gallery, quarantine=tmp_path / "q")  # a writer beside the watcher's
        generation, (group,) = gallery.groups(0.95, 10)
        decision = [Decision(group.keeper.id, [m.id for m in group.members[1:]])]
        with pytest.raises(StoreLockedError):
            alone.resolve(0.95, 10, generation, decision)
        moved = app.services.review.resolve(0.95, 10, generation, decision)["moved"]
    assert len(moved) == 1 and len(list((tmp_path / "q").iterdir())) == 1 and len(paths(folder)) == 3
