"""Fault injection: `python -m lookalike index` killed at every durable step, then `check` and a rerun.

Each case runs the indexer in a true subprocess with ``LOOKALIKE_CRASH`` naming a crash
point (see ``lookalike/crashpoints.py``), so it dies there by ``os._exit``, as under ``kill -9``.
Then, from what the killed run committed (read with plain sqlite3 and numpy):

- ``lookalike check`` finds catalog, vectors and index consistent (or no store at all, when
  the kill came before its manifest was written);
- the rerun embeds exactly the files not committed: at most the batch in flight again;
- nothing committed is lost, changed or duplicated (same ids, same vector bytes, one row each);
- paths, ids, vectors and failures equal an uninterrupted run's exactly (the CNN is
  deterministic on a CPU, whatever the batch it is in).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import alive, photo

from lookalike.cli import main
from lookalike.crashpoints import CRASH_EXIT_CODE, PAUSE_FILE_ENV
from lookalike.store.store import CATALOG, INDEX, MANIFEST, SHARDS, VECTORS, Store

BATCH = ["--batch-size", "2", "--workers", "0", "--device", "cpu"]
DIM = 1280
pytestmark = pytest.mark.slow


def make_images(folder: Path, names: range, bad: str | None = None, size=(96, 72)) -> None:
    """Distinct small real-photo crops ``NN.jpg``; ``bad`` is a text file with an image's name."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [photo(name) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    for i in names:
        image = sources[i % 4]
        w, h = image.size
        image.crop((i * 7 % 60, i * 5 % 40, w - i * 3 % 50, h - i * 11 % 30)).resize(size).save(folder / f"{i:02}.jpg")
    if bad:
        (folder / bad).write_text("not an image")


def lookalike_subprocess(*args, env: dict | None = None, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "lookalike", *map(str, args)]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, text=True, **kwargs)


def crash_at(point: str, folder: Path, store: Path, *extra) -> subprocess.CompletedProcess:
    """``lookalike index`` in a fresh process that dies at ``point`` ("name:N": the N-th time it gets there)."""
    process = lookalike_subprocess("index", folder, "--store", store, *BATCH, *extra, env={"LOOKALIKE_CRASH": point},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def index_in_process(folder: Path, store: Path, *extra) -> tuple[int, str]:
    """``lookalike index`` through the CLI code in this process: (files the CNN ran on, output)."""
    result = cli("index", folder, "--store", store, *BATCH, *extra)
    assert result.exit_code == 0, result.output
    embedded, failed = re.search(r"(\d+) failed \((\d+) embedded", result.stdout).group(2, 1)
    return int(embedded) + int(failed), result.stdout


def committed(store: Path, dim: int = DIM) -> dict[str, tuple]:
    """What the catalog holds, read with plain sqlite3 (read-only) and numpy: path -> (id, status, reason, vector bytes).

    A vector its file does not hold (shard 0 shorter than the committed rows, a shard file
    missing or short) reads as "missing", so that a comparison names it.
    """
    if not (store / CATALOG).exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{store / CATALOG}?mode=ro", uri=True)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        sharded = any(column[1] == "shard" for column in db.execute("PRAGMA table_info(files)"))  # not before format 3
        rows = db.execute(f"SELECT path, id, status, reason, {'shard' if sharded else '0'}, row FROM files").fetchall()
        count = db.execute("SELECT value FROM meta WHERE key = 'rows'").fetchone()[0]
        shards = dict(db.execute("SELECT id, name FROM shards")) if "shards" in tables else {}
    files = {0: store / VECTORS, **{i: store / SHARDS / f"{name}.f32" for i, name in shards.items()}}
    data = {i: np.fromfile(path, dtype=np.float32) if path.exists() else np.zeros(0, np.float32) for i, path in files.items()}
    data[0] = data[0][: count * dim]

    def vector(shard: int, row: int | None):
        if row is None:
            return None
        found = data[shard][row * dim:(row + 1) * dim]
        return found.tobytes() if len(found) == dim else "missing"

    return {path: (id_, status, reason, vector(shard, row)) for path, id_, status, reason, shard, row in rows}


def assert_same_store(got: Path, want: Path) -> None:
    """Same paths, ids, statuses, reasons and vector bytes as the uninterrupted store, each vector stored once."""
    assert committed(got) == committed(want)
    assert (got / VECTORS).stat().st_size == (want / VECTORS).stat().st_size, \
        "a vector appended twice, or a dead tail kept"
    assert Store.open(got).check().ok
    written, generation = Store.open(got).index_lag()
    assert written == generation and (got / INDEX).exists()
    assert Store.open(got).info()["index_factory"] == Store.open(want).info()["index_factory"]
    assert sorted(p.name for p in got.iterdir() if p.name.endswith(".tmp")) == [], "a temporary file was left"


def crash_check_rerun(point: str, folder: Path, store: Path, reference: Path, rerun_embeds: int, *extra) -> None:
    """Kill at ``point``, then check, then rerun, asserting everything the module docstring lists."""
    killed = crash_at(point, folder, store, *extra)
    assert killed.returncode == CRASH_EXIT_CODE, f"{point}: exit {killed.returncode}\n{killed.stderr[-2000:]}"
    before = committed(store)

    checked = cli("check", "--store", store)
    if (store / MANIFEST).exists():
        assert checked.exit_code == 0 and checked.output.startswith("consistent"), checked.output
    else:  # killed before the manifest: there is no store, and check says so
        assert checked.exit_code == 1 and "not a lookalike store" in checked.output
    assert committed(store) == before, "check changed what was committed"

    trusted = before if (store / MANIFEST).exists() else {}  # no manifest: nothing there is a store's
    embedded, _ = index_in_process(folder, store, *extra)
    # Exactly the files not yet committed in their final form (same id, status, reason, vector bytes)
    # run through the CNN again; the expected count says that is at most the batch in flight.
    pending = {path for path, entry in committed(reference).items() if trusted.get(path) != entry}
    assert embedded == len(pending) == rerun_embeds, f"{point}: the rerun embedded {embedded} files, " \
        f"{len(pending)} were not committed, {rerun_embeds} expected"
    assert_same_store(store, reference)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Nine files, batches of two: [00 01] [02 03] [04 05] [06 07] [08]; 05 is not an image."""
    folder = tmp_path_factory.mktemp("crash") / "photos"
    make_images(folder, range(9))
    (folder / "05.jpg").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(photos, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("uninterrupted") / "store"
    assert index_in_process(photos, store)[0] == 9
    return store


# (point, the files the rerun must embed): nine files in batches of two, the 5th batch a single file.
FRESH = [
    ("create.catalog", 9),  # no manifest yet: no store; the rerun makes it over the leftover catalog
    ("manifest.written", 9),  # the store's first manifest is written beside, not in place
    ("manifest.renamed", 9),  # an empty store
    ("vectors.before_fsync:2", 7),  # batch 1 committed; batch 2's vectors a dead tail
    ("vectors.after_fsync:3", 5),  # batches 1-2 committed; batch 3 fsynced, never committed
    ("catalog.before_commit:2", 7),  # batch 2's transaction open: rolled back
    ("catalog.after_commit:2", 5),  # batch 2 committed, nothing in flight
    ("index.written", 0),  # a whole index.faiss under a temporary name
    ("index.renamed", 0),  # in place, its generation not recorded
    ("index.recorded", 0),
]


@pytest.mark.parametrize(("point", "rerun_embeds"), FRESH, ids=[p for p, _ in FRESH])
def test_a_kill_while_indexing_a_new_store(point, rerun_embeds, photos, uninterrupted, tmp_path):
    crash_check_rerun(point, photos, tmp_path / "store", uninterrupted, rerun_embeds)


def _changed_copy(base: Path, to: Path) -> Path:
    """A copy of the indexed folder and its store, then one file removed, one changed, the failed one
    fixed and two added."""
    shutil.copytree(base, to)
    folder = to / "photos"
    (folder / "00.jpg").unlink()
    photo("rocket").resize((80, 60)).save(folder / "02.jpg")  # another size: not the file indexed
    photo("coffee").resize((80, 60)).save(folder / "05.jpg")
    make_images(folder, range(9, 11))
    return folder


@pytest.fixture(scope="module")
def indexed(photos, tmp_path_factory) -> Path:
    """A store with a written index, beside a copy of the folder it indexes."""
    base = tmp_path_factory.mktemp("indexed")
    shutil.copytree(photos, base / "photos")
    index_in_process(base / "photos", base / "store")
    return base


@pytest.fixture(scope="module")
def updated(indexed, tmp_path_factory) -> dict[str, Path]:
    """The changed copy indexed without interruption: as it is, and with a forced IVF index."""
    stores = {}
    for name, extra in (("update", ()), ("refactor", ("--index-factory", "IVF2,Flat"))):
        base = tmp_path_factory.mktemp(name) / "copy"
        folder = _changed_copy(indexed, base)
        assert index_in_process(folder, base / "store", *extra)[0] == 4
        stores[name] = base / "store"
    return stores


# The changed copy: commit 1 removes 00.jpg; batches [02 05] and [09 10] follow. A written index
# exists, so the index is updated in place (read, remove, add), not built.
UPDATE = [
    ("catalog.before_commit:1", 4),  # the removal rolled back
    ("index.written", 0),
    ("index.renamed", 0),
]
# The same with --index-factory IVF2,Flat: the manifest is updated first, then the index rebuilt.
REFACTOR = [("manifest.written", 4), ("manifest.renamed", 4)]


@pytest.mark.parametrize(("scenario", "point", "rerun_embeds"),
                         [("update", *case) for case in UPDATE] + [("refactor", *case) for case in REFACTOR],
                         ids=[f"update-{p}" for p, _ in UPDATE] + [f"refactor-{p}" for p, _ in REFACTOR])
def test_a_kill_while_updating_an_indexed_store(scenario, point, rerun_embeds, indexed, updated, tmp_path):
    folder = _changed_copy(indexed, tmp_path / "copy")
    extra = ("--index-factory", "IVF2,Flat") if scenario == "refactor" else ()
    crash_check_rerun(point, folder, tmp_path / "copy" / "store", updated[scenario], rerun_embeds, *extra)
    if scenario == "refactor":
        assert Store.open(tmp_path / "copy" / "store").manifest.index_factory == "IVF2,Flat"


@pytest.mark.parametrize("point", ["reset.manifest_removed", "reset.files_removed"])
def test_a_kill_while_resetting_a_store_leaves_no_store_that_a_later_command_trusts(point, indexed, uninterrupted,
                                                                                    tmp_path):
    shutil.copytree(indexed, tmp_path / "copy")
    folder, store = tmp_path / "copy" / "photos", tmp_path / "copy" / "store"
    killed = crash_at(point, folder, store, "--reset")
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    assert not (store / MANIFEST).exists()
    for command in ("check", "info"):
        refused = cli(command, "--store", store)
        assert refused.exit_code == 1 and "not a lookalike store" in refused.output, refused.output
    assert index_in_process(folder, store)[0] == 9  # a store made afresh: nothing left behind is trusted
    assert_same_store(store, uninterrupted)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_a_sigkilled_indexers_workers_die_with_it_and_a_rerun_succeeds_at_once(tmp_path):
    """Workers left behind would hold hundreds of MB each for ever; and the store must not stay locked."""
    folder = tmp_path / "photos"
    make_images(folder, range(12))
    store, pause = tmp_path / "store", tmp_path / "paused"
    process = lookalike_subprocess("index", folder, "--store", store, "--batch-size", "2", "--workers", "2",
                                   "--device", "cpu", env={"LOOKALIKE_CRASH": "catalog.after_commit:2=pause",
                                                           PAUSE_FILE_ENV: str(pause)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not pause.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pause.exists(), f"the indexer never reached its second commit: {process.communicate()[1][-2000:]}"
        workers = _children(process.pid)
        assert len(workers) >= 2, "the indexer runs two workers"
    finally:
        process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL

    with Store.open(store).writer(sync=False):  # at once: no worker holds the lock, alive or not
        pass
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)], "workers outlived the SIGKILLed indexer"
    embedded, _ = index_in_process(folder, store)
    assert embedded == 8  # batches 1 and 2 were committed before the kill
    assert len(Store.open(store)) == 12 and Store.open(store).check().ok
