"""Power cuts at every crash point: the indexer killed at each durable step, then the power cut, then a rerun.

The store lives on the power-cut filesystem (``tests/powercut_fs.py``), SQLite included. The
indexer runs once with every crash point set to pause (``lookalike/crashpoints.py``); at each
pause the test copies the filesystem's durable state: what a kill at that point followed by a
power cut leaves, since a kill syncs nothing (closing a file makes nothing durable: see
``test_powercut_fs.py``); and it reads what the catalog had committed at that moment. One run
so yields every crash state of a run, each occurrence of each point. Then, for each distinct
durable state (most points share one: a state changes only at an fsync):

- mounted afresh, the catalog holds every commit a reader saw before the cut (ids, paths,
  statuses and vector bytes), and nothing else;
- ``lookalike check`` finds catalog, vectors and index consistent (or no store at all, when
  the cut came before the manifest was durable);
- a rerun embeds exactly the files not committed, and the store then equals an
  uninterrupted run's: the same paths, ids, vector bytes and index.

For the local engine (a new store, and ``--reset``), for the sharded on-disk path (a shard
committed, an IVF index trained, filled in parts and merged), and for an older store upgraded
and then repaired. ``tests/test_crash.py`` kills at the same points without cutting the power.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from powercut_fs import PowercutFS, digest
from test_crash import BATCH, assert_same_store, cli, committed, index_in_process, make_images
from test_store import format_1_store

from lookalike.crashpoints import CRASH_EXIT_CODE, PAUSE_FILE_ENV, POINTS
from lookalike.store.layout import MANIFEST
from lookalike.store.shards import write_shard_file
from lookalike.store.store import Store

pytestmark = pytest.mark.slow
EVERY_POINT = ",".join(f"{point}:*=pause" for point in sorted(POINTS))
SHARD_DIM = 32
SHARD_SPEC = {"model": "fake", "layer": "x", "dim": SHARD_DIM, "weights_sha256": "0" * 64, "preprocessing": {},
              "versions": {"a": "1"}}


@dataclasses.dataclass
class State:
    """What a kill at ``point`` then a power cut leaves: the durable files, and what a reader saw committed."""

    point: str
    durable: Path
    live: dict


@pytest.fixture(scope="module")
def env(onnx_cache_dir):
    """The session's ONNX export cache for this module's fixtures and subprocesses too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOKALIKE_CACHE", str(onnx_cache_dir))
        yield


@pytest.fixture(scope="module")
def fs(tmp_path_factory, env):
    base = tmp_path_factory.mktemp("powercut")
    mounted = PowercutFS(base / "empty", base / "mnt").mount()
    yield mounted
    mounted.unmount()


def sweep(fs: PowercutFS, command: list[str], workdir: Path, store: Path, dim: int,
          stop_after: str | None = None) -> list[State]:
    """Run ``command``, pausing at every crash point; the distinct states a power cut there leaves.

    It runs to its end, or is killed at ``stop_after``'s pause once that state is saved.
    """
    workdir.mkdir()
    pause = workdir / "paused"
    process = subprocess.Popen(command, env={**os.environ, "LOOKALIKE_CRASH": EVERY_POINT, PAUSE_FILE_ENV: str(pause)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    states, seen = [], set()
    deadline = time.monotonic() + 300
    for pauses in range(10_000):
        while not pause.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if not pause.exists():
            break
        point = " ".join(pause.read_text().split())
        durable = fs.snapshot(workdir / f"{pauses:03}")
        live = committed(store, dim)
        key = (digest(durable), repr(sorted(live.items())))
        if key not in seen:
            seen.add(key)
            states.append(State(point, durable, live))
        if stop_after and point.startswith(stop_after):
            process.kill()
            process.communicate(timeout=60)
            return states
        pause.unlink()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, f"the swept run failed: {err[-3000:]}"
    return states


def after_the_cut(fs: PowercutFS, state: State, store: Path, dim: int, removing: bool = False) -> None:
    """Mount what a power cut at ``state`` leaves; it must hold every commit a reader saw before the cut.

    ``removing``: the store was being deleted, and files whose removal was not yet durable come back.
    """
    work = state.durable.with_name(state.durable.name + "-mounted")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(state.durable, work)
    fs.replace_backing(work)
    if not removing:
        found = committed(store, dim)
        assert found == state.live, f"{state.point}: the power cut lost or changed committed files: " \
            f"{sorted(set(found.items()) ^ set(state.live.items()))[:4]}"


def check_cli(store: Path, point: str) -> None:
    checked = cli("check", "--store", store)
    if (store / MANIFEST).exists():
        assert checked.exit_code == 0 and checked.output.startswith("consistent"), f"{point}: {checked.output}"
    else:  # cut before the manifest was durable: no store, and check says so
        assert checked.exit_code == 1 and "not a lookalike store" in checked.output, f"{point}: {checked.output}"


def resume_locally(state: State, folder: Path, store: Path, reference: Path, *extra) -> None:
    """``lookalike index`` again: exactly the files not committed go through the CNN; then the store equals ``reference``."""
    check_cli(store, state.point)
    before = committed(store) if (store / MANIFEST).exists() else {}  # no manifest: nothing in it is trusted
    embedded, _ = index_in_process(folder, store, *extra)
    pending = {path for path, entry in committed(reference).items() if before.get(path) != entry}
    assert embedded == len(pending), f"{state.point}: the rerun embedded {embedded} files, {len(pending)} were not committed"
    assert_same_store(store, reference)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Five files in batches of two, [00 01] [02 03] [04]; 03 is not an image."""
    folder = tmp_path_factory.mktemp("powercut-photos") / "photos"
    make_images(folder, range(5))
    (folder / "03.jpg").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def uninterrupted(photos, tmp_path_factory, env) -> Path:
    store = tmp_path_factory.mktemp("powercut-uninterrupted") / "store"
    assert index_in_process(photos, store)[0] == 5
    return store


def test_a_power_cut_at_each_step_of_indexing_a_new_store(fs, photos, uninterrupted, tmp_path):
    fs.replace_backing(tmp_path / "empty")
    store = fs.mountpoint / "store"
    command = [sys.executable, "-m", "lookalike", "index", str(photos), "--store", str(store), *BATCH]
    states = sweep(fs, command, tmp_path / "states", store, 1280)
    assert len(states) >= 8, [s.point for s in states]  # each batch's vectors, then its commit, and more
    for state in states:
        after_the_cut(fs, state, store, 1280)
        resume_locally(state, photos, store, uninterrupted)


def test_a_power_cut_during_a_reset_leaves_no_store_a_later_command_trusts(fs, photos, uninterrupted, tmp_path):
    fs.replace_backing(tmp_path / "empty")
    store = fs.mountpoint / "store"
    index_in_process(photos, store)
    command = [sys.executable, "-m", "lookalike", "index", str(photos), "--store", str(store), "--reset", *BATCH]
    states = sweep(fs, command, tmp_path / "states", store, 1280, stop_after="reset.files_removed")
    assert [s.point for s in states] == ["reset.manifest_removed 1", "reset.files_removed 1"]
    for state in states:
        after_the_cut(fs, state, store, 1280, removing=True)
        assert not (store / MANIFEST).exists(), state.point  # its other files may be back: nothing trusts them
        resume_locally(state, photos, store, uninterrupted)


# The store's own steps, with synthetic vectors and no CNN: a Ray driver's run without Ray (a
# shard committed, then an IVF index trained, filled in parts and merged on disk), and an older
# store upgraded, then repaired. Each driver is run swept in a subprocess, and again in this one.
_SHARDED = """
import numpy as np
from lookalike.store.shards import write_shard_file
from lookalike.store.store import Store

def run(path):
    store = Store.open(path)
    x = np.random.default_rng(9).standard_normal((50, {dim}), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with store.writer(map_parts=map) as writer:
        with store.catalog() as catalog:
            done = "late/0.jpg" in catalog.by_paths(["late/0.jpg"])
        if not done:  # as a rerun plans it: only what was not committed
            name = write_shard_file(store.directory, x)
            writer.commit_shard(name, [(f"late/{{i}}.jpg", 1, 1, 1, 0o644, i) for i in range(50)])
""".format(dim=SHARD_DIM)
_UPGRADE_AND_REPAIR = """
from lookalike.store.store import Store

def run(path):
    Store.open(path).repair()  # opening a format-1 store upgrades it
"""


def in_a_subprocess(driver: str, store: Path) -> list[str]:
    return [sys.executable, "-c", f"{driver}\nimport sys\nrun(sys.argv[1])", str(store)]


def in_this_process(driver: str, store: Path) -> None:
    namespace: dict = {}
    exec(driver, namespace)
    namespace["run"](store)


def sharded_store(directory: Path, root: Path) -> Store:
    """Two shards of 400 rows and a failure each, committed as the Ray driver commits them; no index yet."""
    store = Store.create(directory, root, SHARD_SPEC, index_factory="IVF8,Flat")
    rng = np.random.default_rng(4)
    with store.writer(sync=False) as writer:
        for s in range(2):
            x = rng.standard_normal((400, SHARD_DIM), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            writer.commit_shard(write_shard_file(store.directory, x), [(f"s{s}/{i}.jpg", 1, 1, 1, 0o644, i) for i in range(400)],
                                [(f"s{s}/bad.jpg", 1, 1, 1, 0o644, "broken")])
    return store


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """Each driver's store, run without interruption."""
    base = tmp_path_factory.mktemp("powercut-references")
    sharded_store(base / "sharded", base)
    in_this_process(_SHARDED, base / "sharded")
    format_1_store(base / "upgraded", base, SHARD_SPEC)
    in_this_process(_UPGRADE_AND_REPAIR, base / "upgraded")
    return {"sharded": base / "sharded", "upgraded": base / "upgraded"}


def assert_same_synthetic_store(store: Path, reference: Path, point: str) -> None:
    assert committed(store, SHARD_DIM) == committed(reference, SHARD_DIM), point
    opened, expected = Store.open(store), Store.open(reference)
    assert opened.manifest.format_version == expected.manifest.format_version, point
    assert opened.check().ok and len(opened) == len(expected), point
    written, generation = opened.index_lag()
    assert written == generation and opened.info()["index_factory"] == expected.info()["index_factory"], point
    assert not list(store.glob(".build-*")) and not list(store.glob(".*.tmp")), point


@pytest.mark.parametrize("driver", ["sharded", "upgraded"])
def test_a_power_cut_at_each_step_of_a_sharded_build_an_upgrade_and_a_repair(driver, fs, references, tmp_path):
    fs.replace_backing(tmp_path / "empty")
    store = fs.mountpoint / "store"
    if driver == "sharded":
        sharded_store(store, fs.mountpoint)
    else:
        format_1_store(store, fs.mountpoint, SHARD_SPEC)
    before = committed(store, SHARD_DIM)
    fs.power_cut()  # what the writer in this process committed is durable
    assert committed(store, SHARD_DIM) == before
    code = _SHARDED if driver == "sharded" else _UPGRADE_AND_REPAIR
    states = sweep(fs, in_a_subprocess(code, store), tmp_path / "states", store, SHARD_DIM)
    points = {s.point.split()[0] for s in states}
    expected = {"catalog.after_commit", "ondisk.ivfdata_written", "index.recorded"} if driver == "sharded" else \
        {"upgrade.catalog", "repair.marked", "index.recorded"}
    assert expected <= points, points
    for state in states:
        after_the_cut(fs, state, store, SHARD_DIM)
        check_cli(store, state.point)  # an orphan shard is no inconsistency: the next writer deletes it
        in_this_process(code, store)
        assert_same_synthetic_store(store, references[driver], state.point)


def test_a_kill_then_a_power_cut_that_keeps_the_new_index_finds_the_lists_it_names(fs, references, tmp_path):
    """A real kill during a rebuild, then a cut that keeps the new index.faiss's rename (not yet synced), as a
    filesystem may that persists changes in another order than they were made: readers trust the file (its
    generation is older, not wrong), so the .ivfdata it names must be there."""
    fs.replace_backing(tmp_path / "empty")
    store = fs.mountpoint / "store"
    with sharded_store(store, fs.mountpoint).writer(map_parts=map):
        pass  # an on-disk index, recorded; the driver's 50 rows are over the delta it tolerates: a rebuild
    killed = subprocess.run(in_a_subprocess(_SHARDED, store), env={**os.environ, "LOOKALIKE_CRASH": "index.renamed"},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    live = committed(store, SHARD_DIM)
    fs.power_cut(keep=["store/index.faiss"])
    assert committed(store, SHARD_DIM) == live and len(live) == 852
    check_cli(store, "index.renamed, its rename kept")
    in_this_process(_SHARDED, store)
    assert_same_synthetic_store(store, references["sharded"], "index.renamed, its rename kept")
