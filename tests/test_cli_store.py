"""The store through the command line: end to end, errors as one line, Ctrl-C.

Kills at every step are in test_crash.py, queries during indexing in test_concurrency.py.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import photo
from test_crash import BATCH, lookalike_subprocess, make_images
from test_indexing import make_photo_folder

from lookalike.cli import main
from lookalike.crashpoints import PAUSE_FILE_ENV
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store


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

    failures = _cli("failures")
    assert "1 files failed" in failures.stderr and "broken.jpg: " in failures.stdout and "[recorded 20" in failures.stdout
    (failure,) = json.loads(_cli("failures", "--json").stdout)
    assert failure["path"].endswith("broken.jpg") and failure["recorded"].endswith("+00:00")
    assert "consistent" in _cli("check").output
    details = json.loads(_cli("info", "--json").output)
    assert (details["embedded"], details["failed"], details["spec"]["model"]) == (6, 1, "efficientnet_lite0")


def test_dupes_groups_the_near_duplicate(folder):
    copy = photo("rocket")
    copy.thumbnail((400, 400))
    copy.resize((copy.width * 3 // 4, copy.height * 3 // 4)).save(folder / "rocket-copy.jpg", quality=70)
    assert _cli("index", folder, "--device", "cpu", "--workers", "0").exit_code == 0
    result = _cli("dupes", "--threshold", "0.8", "--json", "--store", folder / ".lookalike")
    groups = json.loads(result.stdout)["groups"]
    assert [sorted(Path(m["path"]).name for m in g["members"]) for g in groups] == [["rocket-copy.jpg", "rocket.png"]]


def test_export_npy_holds_vectors_with_their_paths(folder, tmp_path):
    index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    result = _cli("export", tmp_path / "out.npy", "--store", folder / ".lookalike")
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "out.npy")
    paths = json.loads((tmp_path / "out.npy.paths.json").read_text())
    store = open_store(folder)
    np.testing.assert_array_equal(vectors, store.get_vectors(paths))


def test_export_parquet_holds_vectors_with_their_paths(folder, tmp_path):
    import pyarrow.parquet as pq  # the dev extra has it: a missing one fails
    index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    result = _cli("export", tmp_path / "out.parquet", "--format", "parquet", "--store", folder / ".lookalike")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out.parquet").to_pydict()
    vectors = np.array(table["vector"], dtype=np.float32)
    np.testing.assert_array_equal(vectors, open_store(folder).get_vectors(table["path"]))


def test_k_past_the_store_gives_every_other_image_and_never_the_query_itself(folder):
    """One policy for k over the store's size (clamped) and for the query image (left out), by id."""
    index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    result = _cli("query", folder / "chelsea.jpg", "-k", "50", "--json", "--store", folder)
    assert result.exit_code == 0, result.output
    paths = [row["path"] for row in json.loads(result.stdout)]
    indexed = len(open_store(folder))
    assert len(paths) == indexed - 1 and not any(p.endswith("/chelsea.jpg") or p == "chelsea.jpg" for p in paths)


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("none", ["query", "x.jpg"], "no lookalike store"),
        ("empty", ["query", "photos/chelsea.jpg"], "no vectors yet"),
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
        index_folder(empty, store=folder / ".lookalike", options=EmbedOptions(device="cpu"))
    elif setup == "indexed":
        index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    if setup != "none":
        monkeypatch.setenv("LOOKALIKE_STORE", str(folder / ".lookalike"))
    result = _cli(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_done_and_says_how_to_resume(tmp_path):
    """SIGINT lands at a known step (after the 2nd commit); an indexer that ignored it would finish with 0 and fail here."""
    folder, store_dir, pause = tmp_path / "many", tmp_path / "store", tmp_path / "paused"
    make_images(folder, range(16))
    # A shell starts background jobs with SIGINT ignored, and children inherit that: give the
    # indexer the default, as a terminal's foreground process has, so only lookalike can ignore it.
    process = lookalike_subprocess("index", folder, "--store", store_dir, *BATCH,
                                   env={"LOOKALIKE_CRASH": "catalog.after_commit:2=pause", PAUSE_FILE_ENV: str(pause)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not pause.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pause.exists(), "the indexer never reached its second commit"
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pause.unlink()  # it ignored the interrupt: let it run on, and fail below
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, f"exit {process.returncode}: the interrupt was ignored\n{stderr[-2000:]}"
    assert "interrupted: the store keeps every batch committed so far: 4 images embedded, 0 failed" in stderr
    assert "Traceback" not in stderr
    interrupted = open_store(store_dir)
    assert interrupted.check().ok and interrupted.index_lag()[0] == interrupted.index_lag()[1]  # index caught up
    assert len(interrupted) == 4  # the two committed batches
    summary = index_folder(folder, store=store_dir, options=EmbedOptions(device="cpu", workers=0))
    assert (summary.unchanged, summary.added, len(open_store(store_dir))) == (4, 12, 16)


@pytest.mark.parametrize("bad, message", [
    (["--model", "resnet1"], "unknown model 'resnet1'"),
    (["--layer", "nosuchlayer"], "has no layer 'nosuchlayer'"),
    (["--model", "resnet18"], "weights for resnet18 are not cached"),  # offline, no weights in the hub cache
], ids=["model typo", "layer typo", "weights missing"])
def test_reset_checks_the_new_featurizer_before_it_deletes_anything(folder, bad, message):
    index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    before = (folder / ".lookalike" / "catalog.sqlite").read_bytes()
    result = _cli("index", folder, "--reset", *bad, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert (folder / ".lookalike" / "catalog.sqlite").read_bytes() == before and len(open_store(folder)) == 6


def test_an_unreadable_folder_is_a_failure_with_its_reason_until_it_can_be_read(folder, monkeypatch):
    """As root nothing is unreadable: refuse listing the folder as the kernel would refuse a user."""
    hidden = folder / "locked"
    hidden.mkdir()
    photo("astronaut").resize((96, 96)).save(hidden / "inside.jpg")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(hidden):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = _cli("index", folder, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "2 failed" in result.stdout  # broken.jpg, and the folder
    listed = json.loads(_cli("failures", "--json", "--store", folder).stdout)
    assert {"path": "photos/locked/", "reason": "folder not read (Permission denied): the images in it are not indexed"} \
        in [{"path": row["path"], "reason": row["reason"]} for row in listed]
    again = _cli("index", folder, "--device", "cpu", "--workers", "0")  # still locked: recorded once
    assert "0 failed" in again.stdout and "0 removed" in again.stdout
    monkeypatch.setattr(os, "scandir", real_scandir)
    opened = _cli("index", folder, "--device", "cpu", "--workers", "0")
    assert "1 added" in opened.stdout and "0 removed" in opened.stdout, opened.stdout
    assert [r.path for r in open_store(folder).failures()] == ["broken.jpg"]


@pytest.mark.parametrize("command", [["query", "photos/chelsea.jpg"], ["dupes"], ["failures"]])
def test_json_and_csv_together_is_a_usage_error(folder, command):
    index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    result = _cli(*command, "--json", "--csv", "--store", folder)
    assert result.exit_code == 2 and "--json and --csv can't be used together" in result.stderr
    assert result.stdout == ""


def test_ctrl_c_exits_130_saying_what_was_kept(folder, monkeypatch):
    """Interrupted before its first batch: no image was indexed, and the message says so."""
    from lookalike import planning

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(planning, "_extractor", interrupted)
    result = _cli("index", folder, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 130 and "interrupted: nothing was saved" in result.stderr
    monkeypatch.undo()
    index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    from lookalike.dupes import groups

    monkeypatch.setattr(groups, "_near_groups", interrupted)
    result = _cli("dupes", "--store", folder)
    assert result.exit_code == 130 and result.stderr.strip().splitlines()[-1] == "Error: interrupted"
