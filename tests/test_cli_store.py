"""The store through the command line: end to end, errors as one line, SIGKILL, concurrent queries."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import photo
from lookalike.cli import main
from lookalike.index.store import CATALOG, MANIFEST
from lookalike.indexing import index_folder, open_store
from test_indexing import make_photo_folder

LOOKALIKE = Path(sys.executable).with_name("lookalike")
needs_entry_point = pytest.mark.skipif(not LOOKALIKE.exists(), reason="the lookalike console script is not installed")


def _cli(*args, cwd=None):
    if cwd:
        os.chdir(cwd)
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_photo_folder(tmp_path / "photos")


def test_index_then_query_an_edited_copy(folder, tmp_path):
    result = _cli("index", folder, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "7 added, 0 updated, 0 removed, 0 unchanged, 1 failed" in result.output

    copy = photo("coffee").resize((300, 200)).crop((10, 10, 290, 190))
    copy.save(tmp_path / "copy.jpg", quality=50)
    os.chdir(folder / "sub")  # the store is found upward, like .git
    result = _cli("query", tmp_path / "copy.jpg", "-k", "3", "--json", "--html", tmp_path / "sheet.html")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["path"].endswith("coffee.png") and rows[0]["rank"] == 1
    assert rows[0]["score"] > rows[1]["score"]
    sheet = (tmp_path / "sheet.html").read_text()
    assert sheet.count("data:image/jpeg;base64,") == 4

    result = _cli("query", folder / "chelsea.jpg", "-k", "2", "--csv")
    first = result.stdout.splitlines()[1].split(",")  # an indexed path reuses its vector and skips itself
    assert first[1] == "1" and not first[3].endswith("chelsea.jpg")

    assert "1 files failed" in _cli("failures").stderr
    assert "consistent" in _cli("check").output
    details = json.loads(_cli("info", "--json").output)
    assert (details["embedded"], details["failed"], details["spec"]["model"]) == (6, 1, "efficientnet_lite0")


def test_dupes_groups_the_near_duplicate(folder):
    copy = photo("rocket")
    copy.thumbnail((400, 400))
    copy.resize((copy.width * 3 // 4, copy.height * 3 // 4)).save(folder / "rocket-copy.jpg", quality=70)
    assert _cli("index", folder, "--device", "cpu", "--workers", "0").exit_code == 0
    result = _cli("dupes", "--threshold", "0.8", "--json", "--store", folder / ".lookalike")
    groups = json.loads(result.stdout)
    assert [sorted(Path(m["path"]).name for m in g) for g in groups] == [["rocket-copy.jpg", "rocket.png"]]


def test_export_npy_holds_vectors_with_their_paths(folder, tmp_path):
    index_folder(folder, extractor_options={"device": "cpu", "num_workers": 0})
    result = _cli("export", tmp_path / "out.npy", "--store", folder / ".lookalike")
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "out.npy")
    paths = json.loads((tmp_path / "out.npy.paths.json").read_text())
    store = open_store(folder)
    np.testing.assert_array_equal(vectors, store.get_vectors(paths))


def test_export_parquet_holds_vectors_with_their_paths(folder, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    index_folder(folder, extractor_options={"device": "cpu", "num_workers": 0})
    result = _cli("export", tmp_path / "out.parquet", "--format", "parquet", "--store", folder / ".lookalike")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    vectors = np.array(table["vector"], dtype=np.float32)
    np.testing.assert_array_equal(vectors, open_store(folder).get_vectors(table["path"]))


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("none", ["query", "x.jpg"], "no lookalike store"),
        ("empty", ["query", "photos/chelsea.jpg"], "no vectors yet"),
        ("indexed", ["query", "photos/chelsea.jpg", "-k", "50"], "k=50 is more than the 6 images"),
        ("indexed", ["query", "photos/broken.jpg"], "cannot read query image"),
        ("indexed", ["query", "nowhere.jpg"], "no such file"),
        ("indexed", ["index", "photos", "--model", "resnet18"], "not resnet18"),
    ],
)
def test_errors_are_one_line_and_a_nonzero_exit(folder, tmp_path, monkeypatch, setup, args, message):
    monkeypatch.delenv("LOOKALIKE_STORE", raising=False)
    if setup == "empty":
        empty = tmp_path / "empty"
        empty.mkdir()
        index_folder(empty, store=folder / ".lookalike", extractor_options={"device": "cpu"})
    elif setup == "indexed":
        index_folder(folder, extractor_options={"device": "cpu", "num_workers": 0})
    if setup != "none":
        monkeypatch.setenv("LOOKALIKE_STORE", str(folder / ".lookalike"))
    result = _cli(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output + result.stderr


def _make_many(folder: Path, n: int) -> None:
    """n distinct real-photo crops."""
    folder.mkdir()
    sources = [photo(name) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    for i in range(n):
        image = sources[i % 4]
        w, h = image.size
        image.crop((i * 7 % 60, i * 5 % 40, w - i * 3 % 50, h - i * 11 % 30)).resize((160, 120)).save(folder / f"{i:03}.jpg")


def _generation(store_dir: Path) -> int:
    try:
        with sqlite3.connect(store_dir / CATALOG, timeout=5) as db:
            return db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
    except (sqlite3.Error, TypeError):
        return -1


def _spawn(folder: Path, store_dir: Path, capture: bool = False) -> subprocess.Popen:
    command = [LOOKALIKE, "index", folder, "--store", store_dir, "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([str(c) for c in command], stdout=output, stderr=output, text=True)


def _wait_for_generation(store_dir: Path, target: int, process: subprocess.Popen) -> None:
    """Until the indexer has committed ``target`` batches, exited, or two minutes passed."""
    deadline = time.monotonic() + 120
    while _generation(store_dir) < target and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.slow
@needs_entry_point
def test_sigkill_at_any_moment_loses_nothing_committed(tmp_path):
    folder = tmp_path / "many"
    _make_many(folder, 20)
    (folder / "bad.jpg").write_text("not an image")
    index_folder(folder, store=tmp_path / "baseline", extractor_options={"device": "cpu", "num_workers": 0})
    baseline = open_store(tmp_path / "baseline")

    store_dir = tmp_path / "killed"
    for target in (0, 2, 6):  # before the first commit, after the second batch, later
        process = _spawn(folder, store_dir)
        _wait_for_generation(store_dir, target, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert subprocess.run([str(LOOKALIKE), "index", str(folder), "--store", str(store_dir), "--device", "cpu"],
                          capture_output=True, timeout=300).returncode == 0

    resumed = open_store(store_dir)
    assert resumed.check() == []
    paths = [p for p, _ in baseline]
    assert [p for p, _ in resumed] == paths
    np.testing.assert_allclose(resumed.get_vectors(paths), baseline.get_vectors(paths), atol=1e-5)
    assert [(f.path, f.reason) for f in resumed.failures()] == [(f.path, f.reason) for f in baseline.failures()]
    assert _cli("check", "--store", store_dir).output.startswith("consistent")


@pytest.mark.slow
@needs_entry_point
def test_a_query_during_indexing_answers_from_a_consistent_state(tmp_path):
    folder = tmp_path / "many"
    _make_many(folder, 24)
    store_dir = tmp_path / "store"
    process = _spawn(folder, store_dir)
    answers = []
    from lookalike import create_extractor

    query = create_extractor(device="cpu").embed_images([photo("chelsea").resize((160, 120))])
    try:
        while process.poll() is None:
            if _generation(store_dir) < 1 or not (store_dir / MANIFEST).exists():
                time.sleep(0.05)
                continue
            (hits,) = open_store(store_dir).search(query, k=1)
            answers.append(hits[0])
    finally:
        process.wait(timeout=300)
    assert process.returncode == 0 and len(answers) >= 3
    final = open_store(store_dir)
    for hit in answers:  # every answer names a stored file with the score of its committed vector
        np.testing.assert_allclose(hit.score, float(final.get_vectors([hit.path])[0] @ query[0]), atol=1e-5)


@pytest.mark.slow
@needs_entry_point
def test_ctrl_c_keeps_what_was_done_and_says_how_to_resume(tmp_path):
    folder = tmp_path / "many"
    _make_many(folder, 16)
    store_dir = tmp_path / "store"
    process = _spawn(folder, store_dir, capture=True)
    _wait_for_generation(store_dir, 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the indexer finished before the interrupt arrived")
    assert process.returncode == 1
    assert "interrupted: what was indexed is saved" in stderr and "Traceback" not in stderr
    interrupted = open_store(store_dir)
    assert interrupted.check() == []  # the index was brought up to what was committed
    kept = len(interrupted)
    assert 0 < kept < 16
    summary = index_folder(folder, store=store_dir, extractor_options={"device": "cpu", "num_workers": 0})
    assert (summary.unchanged, summary.added, len(open_store(store_dir))) == (kept, 16 - kept, 16)
