"""Indexing real photos: incremental by (path, size, mtime), model mismatch refused, plain-tool files."""

import json
import os
import sqlite3
import time

import numpy as np
import pytest
from conftest import photo, refuse_as_root

from lookalike.errors import StoreMismatchError, TransientError
from lookalike.featurize import Extractor
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store
from lookalike.store.store import CATALOG, INDEX, VECTORS

NAMES = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "coins")


def make_photo_folder(root):
    """Six real photos (one in a subfolder), a hidden folder to skip and a broken file."""
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for i, name in enumerate(NAMES):
        image = photo(name)
        image.thumbnail((400, 400))
        image.save(root / ("sub" if i == 2 else "") / f"{name}.{'png' if i % 2 else 'jpg'}")
    photo("camera").save(root / ".hidden" / "camera.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


@pytest.fixture
def folder(tmp_path):
    return make_photo_folder(tmp_path / "photos")


@pytest.fixture
def recorded(monkeypatch):
    """The paths the CNN is run on, across calls."""
    seen = []
    original = Extractor.embed_paths

    def recording(self, paths, **kwargs):
        paths = list(paths)
        seen.extend(os.path.basename(p) for p in paths)
        return original(self, paths, **kwargs)

    monkeypatch.setattr(Extractor, "embed_paths", recording)
    return seen


def _options():
    return EmbedOptions(device="cpu", workers=0)


def test_an_edited_copy_finds_its_original(folder, tmp_path):
    summary = index_folder(folder, options=_options())
    assert (summary.added, summary.embedded, summary.failed) == (7, 6, 1)
    copy = photo("chelsea")
    w, h = copy.size
    copy = copy.crop((25, 20, w - 15, h - 10)).resize((240, 160))
    copy.save(tmp_path / "copy.jpg", quality=55)

    store = open_store(folder)
    (hits,) = store.search([tmp_path / "copy.jpg"], k=3)
    assert os.path.basename(hits[0].path) == "chelsea.jpg"
    assert hits[0].score > 0.9 and hits[1].score < 0.15  # measured 0.9225 and 0.1289
    assert [r.reason for r in store.failures()] and store.failures()[0].path == "broken.jpg"


def test_reindexing_runs_the_cnn_on_exactly_what_changed(folder, recorded):
    index_folder(folder, options=_options())
    assert len(recorded) == 7
    recorded.clear()

    again = index_folder(folder, options=_options())
    assert recorded == []
    assert (again.unchanged, again.embedded, again.added) == (7, 0, 0)

    photo("rocket").save(folder / "new.jpg")
    (folder / "coffee.png").unlink()
    changed = photo("astronaut").rotate(90)
    changed.thumbnail((400, 400))
    changed.save(folder / "sub" / "astronaut.jpg")
    summary = index_folder(folder, options=_options())
    assert sorted(recorded) == ["astronaut.jpg", "new.jpg"]
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (1, 1, 1, 5)

    store = open_store(folder)
    paths = [p for p, _ in store]
    assert str(folder / "coffee.png") not in paths and str(folder / "new.jpg") in paths
    (hits,) = store.search([folder / "new.jpg"], k=len(store))
    assert all(not h.path.endswith("coffee.png") for h in hits)


def test_another_model_is_refused_naming_both(folder):
    index_folder(folder, options=_options())
    with pytest.raises(StoreMismatchError) as info:
        index_folder(folder, model="resnet18", options=_options())
    assert "efficientnet_lite0" in str(info.value) and "resnet18" in str(info.value)
    assert "--reset" in str(info.value)


def test_store_files_open_with_plain_tools(folder):
    import faiss
    index_folder(folder, options=_options())
    store_dir = folder / ".lookalike"
    store = open_store(folder)
    index = faiss.read_index(str(store_dir / INDEX))
    assert index.ntotal == 6
    with sqlite3.connect(store_dir / CATALOG) as db:
        rows = db.execute("SELECT path, row FROM files WHERE status = 'ok' ORDER BY path").fetchall()
    vectors = np.fromfile(store_dir / VECTORS, dtype=np.float32).reshape(-1, 1280)
    for path, row in rows:
        np.testing.assert_array_equal(vectors[row], store.get_vectors([folder / path])[0])
        # The index answers with the catalog's ids: each vector finds itself first.
        _, ids = index.search(vectors[row : row + 1], 1)
        assert db_id(store_dir, path) == ids[0, 0]


def db_id(store_dir, path):
    with sqlite3.connect(store_dir / CATALOG) as db:
        return db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()[0]


def test_a_bad_index_factory_is_refused_before_any_embedding(folder, recorded):
    from lookalike.errors import InvalidFactoryError

    with pytest.raises(InvalidFactoryError, match="HNSW"):
        index_folder(folder, index_factory="IDMap2,HNSW32", options=_options())
    assert recorded == []


def test_a_forced_index_factory_is_used(folder):
    import faiss
    index_folder(folder, index_factory="IVF2,Flat", options=_options())
    index = faiss.read_index(str(folder / ".lookalike" / INDEX))
    assert faiss.extract_index_ivf(index).nlist == 2
    (hits,) = open_store(folder).search([folder / "chelsea.jpg"], k=1)
    assert hits[0].path.endswith("chelsea.jpg")


def test_reset_deletes_the_store_and_nothing_else(tmp_path):
    folder = make_photo_folder(tmp_path / "victim")
    photos = [p for p in folder.rglob("*") if p.is_file()]
    index_folder(folder, store=folder, options=_options())  # the store shares the photos' folder
    index_folder(folder, store=folder, reset=True, options=_options())
    assert all(p.exists() for p in photos)
    assert len(open_store(folder)) == 6


def test_a_store_refuses_a_second_folder(folder, tmp_path):
    from lookalike.errors import StoreError

    other = tmp_path / "other"
    other.mkdir()
    photo("coins").save(other / "coins.jpg")
    index_folder(folder, store=tmp_path / "store", options=_options())
    with pytest.raises(StoreError, match="give this folder its own --store"):
        index_folder(other, store=tmp_path / "store", options=_options())


def test_a_delete_only_run_does_not_load_the_cnn(folder, monkeypatch):
    import lookalike.featurize

    index_folder(folder, options=_options())
    (folder / "coffee.png").unlink()
    monkeypatch.setattr(lookalike.featurize, "create_extractor", lambda *a, **k: pytest.fail("the CNN was loaded"))
    assert index_folder(folder, options=_options()).removed == 1


def test_reset_rebuilds_a_damaged_store(folder):
    index_folder(folder, options=_options())
    (folder / ".lookalike" / VECTORS).write_bytes(b"")  # vectors lost
    summary = index_folder(folder, reset=True, options=_options())
    assert summary.embedded == 6 and open_store(folder).check().ok


@pytest.fixture
def permissions_enforced(monkeypatch):
    """As root (CI) a chmod 000 file is still readable: refuse to open one without read bits, as for a user."""
    refuse_as_root(monkeypatch, lambda path: os.path.isfile(path) and not os.stat(path).st_mode & 0o444)


@pytest.mark.usefixtures("permissions_enforced")
def test_a_failure_heals_when_its_permissions_are_fixed_and_on_retry_failed(folder, recorded):
    locked = folder / "locked.jpg"
    photo("camera").resize((200, 150)).save(locked)
    os.chmod(locked, 0)
    started = time.time()
    index_folder(folder, options=_options())
    failures = {r.path: r for r in open_store(folder).failures()}
    assert failures["locked.jpg"].reason == "permission denied"
    assert started - 1 <= failures["locked.jpg"].recorded <= time.time()
    size, mtime = locked.stat().st_size, locked.stat().st_mtime_ns

    recorded.clear()
    os.chmod(locked, 0o644)  # only ctime and mode change
    assert (locked.stat().st_size, locked.stat().st_mtime_ns) == (size, mtime)
    summary = index_folder(folder, options=_options())
    assert recorded == ["locked.jpg"] and (summary.retried, summary.embedded, summary.unchanged) == (1, 1, 7)
    assert [r.path for r in open_store(folder).failures()] == ["broken.jpg"]

    recorded.clear()  # broken.jpg has not changed: tried again only when asked
    assert index_folder(folder, options=_options()).embedded == 0 and recorded == []
    summary = index_folder(folder, retry_failed=True, options=_options())
    assert recorded == ["broken.jpg"] and (summary.retried, summary.failed) == (1, 1)


def test_after_an_upgrade_from_format_1_only_failures_are_tried_again(folder, recorded):
    index_folder(folder, options=_options())
    store_dir = folder / ".lookalike"
    with sqlite3.connect(store_dir / CATALOG) as db:  # a store lookalike 0.1 wrote: no ctime, mode, recorded
        for column in ("ctime_ns", "mode", "recorded"):
            db.execute(f"ALTER TABLE files DROP COLUMN {column}")
    manifest = json.loads((store_dir / "manifest.json").read_text())
    (store_dir / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    recorded.clear()
    summary = index_folder(folder, options=_options())
    assert recorded == ["broken.jpg"] and (summary.unchanged, summary.retried) == (6, 1)


class _TransientOnBatch:
    """The real extractor, whose ``embed_paths`` raises ``error`` instead of giving batch ``failing``."""

    def __init__(self, extractor, error: BaseException, failing: int = 2):
        self._extractor, self._error, self._failing = extractor, error, failing

    def __getattr__(self, name):
        return getattr(self._extractor, name)

    def embed_paths(self, paths, **kwargs):
        for number, batch in enumerate(self._extractor.embed_paths(paths, **kwargs), 1):
            if number == self._failing:
                raise self._error
            yield batch


@pytest.mark.parametrize("error", [TransientError("CUDA out of memory"), MemoryError()], ids=["transient", "memory"])
def test_a_transient_error_stops_indexing_records_no_failure_and_a_rerun_resumes(folder, monkeypatch, error):
    from click.testing import CliRunner

    import lookalike.planning
    from lookalike.cli import main

    real = lookalike.planning._extractor
    monkeypatch.setattr(lookalike.planning, "_extractor", lambda *a: _TransientOnBatch(real(*a), error))
    args = ["index", str(folder), "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 75, result.output
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: indexing stopped by a transient error") and "run the same command again" in line
    assert "Traceback" not in result.output
    stopped = open_store(folder)  # batch 1 ([broken.jpg chelsea.jpg]) only; nothing of batch 2 failed
    assert [r.path for r in stopped.failures()] == ["broken.jpg"] and len(stopped) == 1 and stopped.check().ok

    monkeypatch.setattr(lookalike.planning, "_extractor", real)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "5 added" in result.output and "(5 embedded" in result.output
    assert [r.path for r in open_store(folder).failures()] == ["broken.jpg"]


def test_the_summary_times_embedding_apart_from_set_up(folder, monkeypatch):
    """The rate a user reads is the embedding's, not diluted by a first export (here a slow set-up)."""
    from click.testing import CliRunner

    from lookalike import planning
    from lookalike.cli import main

    real = planning._extractor

    def slow_set_up(*args, **kwargs):
        time.sleep(1.5)  # as a first ONNX export would take
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "_extractor", slow_set_up)
    summary = index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    assert 0 < summary.embed_seconds <= summary.seconds - 1.5
    result = CliRunner().invoke(main, ["index", str(folder), "--reset", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if " embedded in " in line]
    seconds = float(line.split(" embedded in ")[1].split("s")[0])
    assert seconds < 1.5 and "s in all)" in line, line
