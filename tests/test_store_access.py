"""Honest errors: permission denied, a read-only filesystem, a lock held and damage are told apart.

Each gets its own advice, and only damage mentions ``--reset`` (which deletes the store).
Readers open the catalog read-only, so they work on a store they may not write and on a
read-only filesystem. The store lives on the power-cut filesystem (``tests/powercut_fs.py``),
which applies permission bits to root too (the suite runs as root, where ``chmod`` stops
nothing) and can be mounted read-only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from powercut_fs import PowercutFS

from lookalike.atomic import fsync_folder
from lookalike.cli import main
from lookalike.errors import StoreDamagedError, StoreLockedError, StorePermissionError, StoreReadOnlyError
from lookalike.store import catalog as catalog_module
from lookalike.store.layout import CATALOG, MANIFEST
from lookalike.store.store import Store

DIM = 16
SPEC = {"model": "fake", "layer": "x", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {"a": "1"}}
N = 40


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    base = tmp_path_factory.mktemp("access")
    mounted = PowercutFS(base / "empty", base / "mnt").mount()
    yield mounted
    mounted.unmount()


def make_store(directory: Path, root: Path) -> Store:
    """A store of ``N`` synthetic vectors with an index, closed by its writer."""
    store = Store.create(directory, root, SPEC)
    x = np.random.default_rng(0).standard_normal((N, DIM), dtype=np.float32)
    with store.writer() as writer:
        writer.write([(f"{i}.jpg", 1, 1) for i in range(N)], x / np.linalg.norm(x, axis=1, keepdims=True), [])
    return store


@pytest.fixture
def store(fs, tmp_path) -> Path:
    """A store on the mount (its root, empty, beside it on the local disk)."""
    fs.replace_backing(tmp_path / "durable", read_only=False)
    (tmp_path / "photos").mkdir()
    return make_store(fs.mountpoint / "store", tmp_path / "photos").directory


def _failed(result, *words) -> str:
    assert result.exit_code == 1, result.output
    for word in words:
        assert word in result.output, result.output
    return result.output


def _readers_work(store: Path) -> None:
    info = cli("info", "--store", store)
    assert info.exit_code == 0 and f"{N} embedded" in info.output, info.output
    dupes = cli("dupes", "--store", store, "--threshold", "0.999")
    assert dupes.exit_code == 0, dupes.output


def _chmod_all(folder: Path, files: int, folders: int) -> None:
    for path in folder.rglob("*"):
        os.chmod(path, folders if path.is_dir() else files)
    os.chmod(folder, folders)


def test_a_store_this_user_may_not_write_says_so_and_is_still_read(store, tmp_path):
    _chmod_all(store, 0o444, 0o555)  # another user's store, as this user sees it
    output = _failed(cli("index", tmp_path / "photos", "--store", store), "permission denied", "may not write")
    assert "--reset" not in output and "damaged" not in output
    _readers_work(store)
    with pytest.raises(StorePermissionError):
        Store.open(store).repair()
    _chmod_all(store, 0o644, 0o755)
    assert Store.open(store).check().ok and len(Store.open(store)) == N


def test_a_store_this_user_may_not_read_says_so(store):
    os.chmod(store / CATALOG, 0)
    output = _failed(cli("info", "--store", store), "permission denied", "may not read")
    assert "--reset" not in output and "damaged" not in output
    os.chmod(store / MANIFEST, 0)
    _failed(cli("check", "--store", store), "permission denied")
    os.chmod(store / MANIFEST, 0o644)
    os.chmod(store / CATALOG, 0o644)
    assert Store.open(store).check().ok


def test_a_store_on_a_read_only_filesystem_is_read_but_not_written(fs, store, tmp_path):
    fsync_folder(store)  # the write-ahead log's removal by the last writer, durable before the remount
    fs.replace_backing(fs.backing, read_only=True)
    assert not (store / f"{CATALOG}-wal").exists()  # SQLite can't make one here: the catalog is read as it is
    _readers_work(store)
    output = _failed(cli("index", tmp_path / "photos", "--store", store), "read-only filesystem", "remount")
    assert "--reset" not in output and "permission" not in output
    with pytest.raises(StoreReadOnlyError):
        Store.open(store).repair()


_KILLED_AFTER_A_COMMIT = """
import os, sys
import numpy as np
from lookalike.store.store import Store
writer = Store.open(sys.argv[1]).writer(sync=False).__enter__()
writer.write([("late.jpg", 1, 1)], np.ones((1, {dim}), np.float32) / {dim} ** 0.5, [])
os._exit(0)  # its commit is in the write-ahead log, never merged into the database file
""".format(dim=DIM)


def test_a_read_only_store_is_read_with_the_commits_its_write_ahead_log_holds(fs, store):
    subprocess.run([sys.executable, "-c", _KILLED_AFTER_A_COMMIT, str(store)], check=True, timeout=120)
    fs.replace_backing(fs.backing, read_only=True)
    assert (store / f"{CATALOG}-wal").stat().st_size > 0
    assert len(Store.open(store)) == N + 1 and cli("info", "--store", store).exit_code == 0


def test_a_catalog_locked_by_another_program_says_locked(store, tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "BUSY_TIMEOUT_S", 0.2)
    with contextlib.closing(sqlite3.connect(store / CATALOG, isolation_level=None)) as holder:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")  # as a backup tool or an sqlite3 shell might hold it
        holder.execute("UPDATE meta SET value = value WHERE key = 'generation'")
        for command in (("info",), ("index", tmp_path / "photos")):
            output = _failed(cli(*command, "--store", store), "is locked by another process", "wait")
            assert "--reset" not in output and "damaged" not in output
        with pytest.raises(StoreLockedError):
            len(Store.open(store))
        holder.execute("ROLLBACK")
    assert Store.open(store).check().ok


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_catalog_says_damaged_and_only_it_mentions_reset(damage, tmp_path):
    store = make_store(tmp_path / "store", tmp_path).directory
    data = (store / CATALOG).read_bytes()
    (store / CATALOG).write_bytes(b"this is not a database " * 400 if damage == "garbage" else data[:len(data) // 3])
    for command in (("info",), ("dupes",), ("index", tmp_path)):
        _failed(cli(*command, "--store", store), "is damaged", "--reset")
    with pytest.raises(StoreDamagedError):
        Store.open(store).info()
