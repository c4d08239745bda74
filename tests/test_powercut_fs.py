"""The power-cut filesystem keeps only what was fsynced, and each durable step of the store is durable on return.

The first tests check the filesystem itself against what it promises (``tests/powercut_fs.py``):
unsynced writes, names and renames are lost at a cut, synced ones kept, SQLite's commits
survive with ``synchronous=FULL`` and not without, permissions bite as root. The others call
each durable primitive of the store, cut the power the moment it returns, and look: a step
that says "durable" and is not fails here, whatever order the rest of a run would sync in.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from powercut_fs import PowercutFS

from lookalike.ann import build as ann_build
from lookalike.ann import faiss_io
from lookalike.atomic import make_folder, write_atomically
from lookalike.store import ondisk
from lookalike.store.layout import CATALOG, MANIFEST, VECTORS, remove_store_files
from lookalike.store.shards import shard_path, write_shard_file
from lookalike.store.vectors import VectorFile

DIM = 8


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    """One mount for the module; each test works in its own folder of it."""
    base = tmp_path_factory.mktemp("powercut")
    mounted = PowercutFS(base / "durable", base / "mnt").mount()
    yield mounted
    mounted.unmount()


def _sync_folder(path: Path) -> None:
    """A folder's fsync, written out here: these tests must not lean on the code they test."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.fixture
def folder(fs, request) -> Path:
    """A durable, empty folder on the mount for this test."""
    path = fs.mountpoint / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir()
    _sync_folder(fs.mountpoint)
    return path


def _write(path: Path, data: bytes, sync: bool) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def test_a_cut_keeps_synced_data_under_synced_names_and_nothing_else(fs, folder):
    _write(folder / "synced", b"kept", sync=True)
    _write(folder / "named only", b"contents never synced", sync=False)
    _sync_folder(folder)
    _write(folder / "unnamed", b"synced, under a name never synced", sync=True)
    with open(folder / "synced", "ab") as handle:
        handle.write(b" and an unsynced tail")
    os.mkdir(folder / "sub")
    fs.power_cut()
    assert sorted(os.listdir(folder)) == ["named only", "synced"]
    assert (folder / "synced").read_bytes() == b"kept" and (folder / "named only").read_bytes() == b""


def test_a_rename_is_durable_only_once_its_folder_is_fsynced_unless_the_cut_keeps_it(fs, folder):
    _write(folder / "old", b"old", sync=True)
    _write(folder / ".new.tmp", b"new", sync=True)
    _sync_folder(folder)
    os.replace(folder / ".new.tmp", folder / "old")
    fs.power_cut()
    assert (folder / "old").read_bytes() == b"old" and (folder / ".new.tmp").exists()

    os.replace(folder / ".new.tmp", folder / "old")
    (folder / "other").write_bytes(b"")
    fs.power_cut(keep=[f"{folder.name}/old"])  # the new entry reached the disk; the old name's removal and "other" not
    assert (folder / "old").read_bytes() == b"new" and sorted(os.listdir(folder)) == [".new.tmp", "old"]


_SQLITE = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=" + sys.argv[2])
db.execute("CREATE TABLE t (x)")
fd = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY); os.fsync(fd)  # the database file's name
db.execute("INSERT INTO t VALUES (1)")
db.execute("BEGIN")
db.execute("INSERT INTO t VALUES (2)")
os._exit(0)  # killed inside the second transaction
"""


@pytest.mark.parametrize(("synchronous", "survives"), [("FULL", True), ("OFF", False)])
def test_sqlite_commits_survive_a_cut_only_when_sqlite_syncs(fs, folder, synchronous, survives):
    subprocess.run([sys.executable, "-c", _SQLITE, os.fspath(folder / "db.sqlite"), synchronous], check=True, timeout=60)
    live_uri = f"file:{folder / 'db.sqlite'}?mode=ro"  # read-only: a reader that closes last must not checkpoint
    with contextlib.closing(sqlite3.connect(live_uri, uri=True)) as live:  # as the kernel keeps it
        assert live.execute("SELECT x FROM t").fetchall() == [(1,)]
    fs.power_cut()
    with contextlib.closing(sqlite3.connect(folder / "db.sqlite")) as again:
        try:
            rows = again.execute("SELECT x FROM t").fetchall()
        except sqlite3.OperationalError:  # not even the table survived
            rows = []
    assert rows == ([(1,)] if survives else [])


def test_writes_through_a_shared_map_are_lost_unless_fsynced(fs, folder):
    for name, sync in (("synced", True), ("unsynced", False)):
        _write(folder / name, bytes(4096), sync=True)
        with open(folder / name, "r+b") as handle, mmap.mmap(handle.fileno(), 4096) as mapped:
            mapped[:5] = b"hello"
            mapped.flush() if sync else None  # msync; then the fsync sees the pages written back
            if sync:
                os.fsync(handle.fileno())
    _sync_folder(folder)
    fs.power_cut()
    assert (folder / "synced").read_bytes()[:5] == b"hello"
    assert (folder / "unsynced").read_bytes()[:5] == bytes(5)


def test_permissions_bite_even_for_root(fs, folder):
    (folder / "secret").write_bytes(b"x")
    os.chmod(folder / "secret", 0)
    with pytest.raises(PermissionError):
        (folder / "secret").read_bytes()
    assert not os.access(folder / "secret", os.R_OK)
    os.chmod(folder, 0o555)
    with pytest.raises(PermissionError):
        (folder / "new").write_bytes(b"")
    os.chmod(folder, 0o755)


# The store's durable steps, each cut off the moment it returns.


def test_write_atomically_is_durable_on_return(fs, folder):
    write_atomically(folder / MANIFEST, b"first")
    write_atomically(folder / MANIFEST, b"second")
    fs.power_cut()
    assert (folder / MANIFEST).read_bytes() == b"second"
    assert os.listdir(folder) == [MANIFEST]


def test_make_folder_makes_every_new_folder_durable(fs, folder):
    make_folder(folder / "a" / "b")
    fs.power_cut()
    assert (folder / "a" / "b").is_dir()


def test_vectors_appended_are_durable_on_return_in_a_file_just_made(fs, folder):
    vectors = VectorFile(folder / VECTORS, DIM)
    vectors.open_for_append(0)
    rows = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    assert vectors.append(rows) == 0
    vectors.close()
    fs.power_cut()
    np.testing.assert_array_equal(np.fromfile(folder / VECTORS, dtype=np.float32).reshape(-1, DIM), rows)


def test_a_shard_is_durable_on_return_in_a_store_that_had_no_shards_folder(fs, folder):
    rows = np.arange(4 * DIM, dtype=np.float32).reshape(4, DIM)
    name = write_shard_file(folder, rows)
    fs.power_cut()
    np.testing.assert_array_equal(np.fromfile(shard_path(folder, name), dtype=np.float32).reshape(-1, DIM), rows)


def test_merged_lists_are_durable_name_and_all_before_an_index_names_them(fs, folder):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, DIM)).astype(np.float32)
    faiss_io.write_index(ann_build.trained_index(x, "IVF4,Flat"), folder / "trained.faiss")
    x.tofile(folder / "rows.f32")
    piece = ondisk.Piece(os.fspath(folder / "rows.f32"), len(x), np.arange(len(x)), np.arange(len(x)))
    (job,) = ondisk.plan_parts([piece], os.fspath(folder / "trained.faiss"), DIM, os.fspath(folder))
    ondisk.add_part(job)
    ivfdata = folder / "index.1.test.ivfdata"
    merged = ondisk.merge_parts(os.fspath(folder / "trained.faiss"), [job.out], ivfdata)
    assert sorted(faiss_io.ids(merged).tolist()) == list(range(len(x)))
    del merged  # it maps the lists; nothing else is written before the cut
    lists = ivfdata.read_bytes()
    fs.power_cut()
    assert ivfdata.read_bytes() == lists


def test_a_removed_store_never_comes_back_as_a_manifest_over_half_a_store(fs, folder):
    for name in (MANIFEST, CATALOG, VECTORS):
        _write(folder / name, b"x", sync=True)
    _sync_folder(folder)
    remove_store_files(folder)
    fs.power_cut(keep=[f"{folder.name}/{CATALOG}"])  # the catalog's removal reached the disk early
    assert not (folder / MANIFEST).exists()


def test_a_file_moved_here_from_another_filesystem_is_whole_after_the_cut(fs, folder, tmp_path):
    """``dupes --move-to`` across filesystems copies, then unlinks the original: the copy must be durable first."""
    from lookalike.dupes import moves

    source = tmp_path / "photo.jpg"  # on the real filesystem: a cut here leaves it as it is
    data = os.urandom(300_000)
    source.write_bytes(data)
    folders: set[str] = set()
    moves.move(str(source), str(folder / "quarantine" / "photo.jpg"), folders)
    assert not source.exists()
    fs.power_cut()  # before the batch's sync: the original is gone, so the copy must already be durable
    assert (folder / "quarantine" / "photo.jpg").read_bytes() == data  # the only copy left

