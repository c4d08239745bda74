"""Acting on duplicates: moves that never lose or overwrite a file, re-checks before each move, the store
following, the trash, and a journal that lets a killed action be finished or undone."""

import os
import subprocess
import sys

import numpy as np
import pytest
from dupes_helpers import at_cosine, make_store, unit

from lookalike.dupes import actions
from lookalike.dupes import journal as journals
from lookalike.dupes.groups import Settings, find_groups
from lookalike.dupes.keeper import protect_folders
from lookalike.errors import DuplicatesError
from lookalike.featurize.images.facts import file_digest
from lookalike.store.store import Store

A, B = unit(1, 0, 0), unit(0, 1, 0)


def library(root, n_groups=3, copies=2):
    """``n_groups`` originals, each with ``copies`` exact copies under dup/ and a near copy under near/."""
    files = {}
    for g in range(n_groups):
        vector = unit(*([0] * g + [1]))
        files[f"orig/{g}.jpg"] = {"vector": vector, "pixels": (100, 100), "mtime": 1000}
        for c in range(copies):
            files[f"dup{c}/{g}.jpg"] = {"vector": vector, "copy_of": f"orig/{g}.jpg", "mtime": 2000}
        files[f"near/{g}.jpg"] = {"vector": at_cosine(vector, 0.97, 7), "pixels": (50, 50), "mtime": 3000}
    return make_store(root, files)


def act(store, to, **kwargs):
    groups = find_groups(store, Settings())
    return actions.apply(store, actions.plan(store, groups, to=to, **kwargs))


def digests(folder):
    return sorted(file_digest(p) for p in folder.rglob("*.jpg") if ".lookalike" not in p.parts)


def test_a_move_keeps_every_path_under_the_destination_and_the_store_follows(tmp_path):
    store = library(tmp_path / "photos")
    before = digests(tmp_path / "photos")
    outcome = act(store, tmp_path / "quarantine")
    assert len(outcome.moved) == 9 and outcome.skipped == []
    assert sorted(p.relative_to(tmp_path / "quarantine").as_posix() for p in (tmp_path / "quarantine").rglob("*.jpg")) == \
        sorted(f"{d}/{g}.jpg" for d in ("dup0", "dup1", "near") for g in range(3))
    assert sorted(digests(tmp_path / "photos") + digests(tmp_path / "quarantine")) == before  # every byte accounted for
    assert len(store) == 3 and store.check().ok and find_groups(store, Settings()) == []
    state = journals.read(outcome.journal)
    assert state.status == "done" and sorted(state.done) == list(range(9)) == sorted(state.stored)


def test_moved_within_the_indexed_folder_a_file_keeps_its_row_and_vector(tmp_path):
    store = make_store(tmp_path / "photos", {"a.jpg": {"vector": A, "pixels": (900, 900)}, "b.jpg": {"vector": A, "copy_of": "a.jpg"}})
    with store.catalog() as catalog:
        before = catalog.by_paths(["b.jpg"])["b.jpg"]
    act(store, tmp_path / "photos" / "sorted-out")
    with store.catalog() as catalog:
        after = catalog.by_paths(["sorted-out/b.jpg"])["sorted-out/b.jpg"]
    assert (after.id, after.row, after.digest) == (before.id, before.row, before.digest)
    assert store.check().ok and len(store) == 2
    hidden = make_store(tmp_path / "other", {"a.jpg": {"vector": A, "pixels": (900, 900)}, "b.jpg": {"vector": A, "copy_of": "a.jpg"}})
    act(hidden, tmp_path / "other" / ".trashcan")  # indexing never looks in a hidden folder: the row goes
    assert len(hidden) == 1 and hidden.check().ok


def test_every_file_is_checked_again_before_it_moves(tmp_path):
    store = library(tmp_path / "photos")
    groups = find_groups(store, Settings())
    planned = actions.plan(store, groups, to=tmp_path / "q")
    root = tmp_path / "photos"
    (root / "dup0/0.jpg").write_bytes(b"edited")  # size and mtime changed
    same = root / "dup1/0.jpg"
    info = same.stat()
    same.write_bytes(bytes(reversed(same.read_bytes())))  # same size, same mtime: only the hash tells
    os.utime(same, ns=(info.st_atime_ns, info.st_mtime_ns))
    (tmp_path / "q" / "near").mkdir(parents=True)
    (tmp_path / "q" / "near" / "1.jpg").write_bytes(b"already here")
    (root / "orig/2.jpg").unlink()  # a keeper gone: its whole group is left alone
    os.link(root / "dup1/1.jpg", tmp_path / "second-name.jpg")  # a hard link is not moved
    outcome = actions.apply(store, planned)
    why = {os.path.relpath(p, root): reason for p, reason in outcome.skipped}
    assert why == {"dup0/0.jpg": "changed since it was indexed", "dup1/0.jpg": "has other content than when it was indexed",
                   "near/1.jpg": f"something is already at {tmp_path / 'q' / 'near' / '1.jpg'}",
                   "dup0/2.jpg": f"its keeper {root / 'orig/2.jpg'} is gone: the group was left alone",
                   "dup1/2.jpg": f"its keeper {root / 'orig/2.jpg'} is gone: the group was left alone",
                   "near/2.jpg": f"its keeper {root / 'orig/2.jpg'} is gone: the group was left alone",
                   "dup1/1.jpg": "is a hard link (2 names): not moved, only files with one name are"}
    assert (tmp_path / "q" / "near" / "1.jpg").read_bytes() == b"already here"  # never overwritten
    assert sorted(os.path.relpath(p, root) for p, _ in outcome.moved) == ["dup0/1.jpg", "near/0.jpg"]


def test_a_bad_destination_is_one_line_before_anything_moves(tmp_path):
    store = library(tmp_path / "photos")
    protect = protect_folders([tmp_path / "photos" / "orig"])
    for to, message in [(tmp_path / "photos" / "orig" / "q", "inside the protected folder"),
                        (tmp_path / "photos", "is the indexed folder itself"),
                        (tmp_path / "photos" / ".lookalike" / "q", "inside the store")]:
        with pytest.raises(DuplicatesError, match=message):
            actions.plan(store, [], to=to, protect=protect)
    with pytest.raises(DuplicatesError, match="--move-to DIR or --trash"):
        actions.plan(store, [])


def test_the_trash_takes_them_and_undo_finds_them_there(tmp_path, monkeypatch):
    from send2trash import plat_other

    from lookalike.dupes.undo import undo

    data_home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.setattr(plat_other, "XDG_DATA_HOME", os.fsencode(data_home))
    monkeypatch.setattr(plat_other, "HOMETRASH_B", os.fsencode(data_home / "Trash"))
    monkeypatch.setattr(plat_other, "HOMETRASH", str(data_home / "Trash"))
    store = library(tmp_path / "photos", n_groups=1)
    before = digests(tmp_path / "photos")
    outcome = act(store, None, to_trash=True)
    assert len(outcome.moved) == 3 and all(str(data_home / "Trash" / "files") in at for _, at in outcome.moved)
    assert len(list((data_home / "Trash" / "info").glob("*.trashinfo"))) == 3 and len(store) == 1
    undone = undo(store)
    assert len(undone.restored) == 3 and digests(tmp_path / "photos") == before and len(store) == 4
    assert list((data_home / "Trash" / "info").glob("*.trashinfo")) == []


CRASH_POINTS = ["dupes.journal", "dupes.intents", "dupes.moved:1", "dupes.moved:4", "dupes.done",
                "catalog.after_commit", "dupes.stored"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_any_step_loses_no_file_and_the_same_command_finishes_it(tmp_path, point):
    """Killed at each step, then run again: every file in exactly one place, the store consistent."""
    library(tmp_path / "photos")
    before = digests(tmp_path / "photos")
    command = [sys.executable, "-m", "lookalike", "dupes", "--store", str(tmp_path / "photos"), "--move-to",
               str(tmp_path / "q"), "--yes"]
    killed = subprocess.run(command, env={**os.environ, "LOOKALIKE_CRASH": point}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 86, killed.stderr
    assert sorted(digests(tmp_path / "photos") + digests(tmp_path / "q")) == before  # nothing lost, nothing doubled
    assert not list((tmp_path / "q").rglob(".*lookalike-part"))
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert sorted(digests(tmp_path / "photos") + digests(tmp_path / "q")) == before
    assert len(digests(tmp_path / "q")) == 9 and len(Store.open(tmp_path / "photos" / ".lookalike")) == 3
    assert Store.open(tmp_path / "photos" / ".lookalike").check().ok
    states = journals.journals(tmp_path / "photos" / ".lookalike")
    assert all(s.status == "done" for s in states)


@pytest.mark.parametrize("point", ["dupes.moved:4", "dupes.stored"])
def test_a_killed_action_is_undone_byte_for_byte(tmp_path, point):
    store = library(tmp_path / "photos")
    before = {p.relative_to(tmp_path / "photos").as_posix(): p.read_bytes() for p in (tmp_path / "photos").rglob("*.jpg")}
    command = [sys.executable, "-m", "lookalike", "dupes", "--store", str(tmp_path / "photos"), "--move-to",
               str(tmp_path / "q"), "--yes"]
    assert subprocess.run(command, env={**os.environ, "LOOKALIKE_CRASH": point}, capture_output=True).returncode == 86
    undone = subprocess.run([sys.executable, "-m", "lookalike", "undo", "--store", str(tmp_path / "photos")],
                            capture_output=True, text=True, timeout=120)
    assert undone.returncode == 0, undone.stderr
    after = {p.relative_to(tmp_path / "photos").as_posix(): p.read_bytes() for p in (tmp_path / "photos").rglob("*.jpg")}
    assert after == before and list((tmp_path / "q").rglob("*.jpg")) == []
    reopened = Store.open(tmp_path / "photos" / ".lookalike")
    assert len(reopened) == 12 and reopened.check().ok
    ids, keys, vectors = reopened.vectors()  # the rows point at the vectors the files had
    for key, vector in zip(keys, vectors[np.arange(len(keys))]):
        assert np.allclose(vector, store.get_vectors([tmp_path / "photos" / key])[0])
