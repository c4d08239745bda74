"""Undo: every file back byte for byte with its row and vector, nothing overwritten, and the refusals in one line."""

import os
import subprocess
import sys

import pytest
from test_actions import act, digests, library

from lookalike.dupes import journal as journals
from lookalike.dupes.undo import undo
from lookalike.errors import DuplicatesError
from lookalike.store.store import Store


def test_undo_puts_back_what_it_can_and_says_what_it_cannot(tmp_path):
    store = library(tmp_path / "photos")
    before = digests(tmp_path / "photos")
    act(store, tmp_path / "q")
    (tmp_path / "q" / "dup0" / "0.jpg").write_bytes(b"edited after the move")  # other bytes: stays
    (tmp_path / "photos" / "dup1" / "1.jpg").write_bytes(b"a new file where one was")  # its place taken: stays
    outcome = undo(store)
    kept = {os.path.relpath(p, tmp_path): why for p, why in outcome.kept}
    assert kept == {"q/dup0/0.jpg": "changed since it was moved (other bytes): left where it is",
                    "photos/dup1/1.jpg": f"something is at {tmp_path / 'photos' / 'dup1' / '1.jpg'} again: left where it is"}
    assert len(outcome.restored) == 7
    assert sorted(p.relative_to(tmp_path / "q").as_posix() for p in (tmp_path / "q").rglob("*.jpg")) == \
        ["dup0/0.jpg", "dup1/1.jpg"]
    assert (tmp_path / "photos" / "dup1" / "1.jpg").read_bytes() == b"a new file where one was"
    assert len(store) == 10 and store.check().ok  # the 3 keepers and the 7 restored
    assert len(set(before) & set(digests(tmp_path / "photos"))) == len(set(before))  # each content is there again


def test_an_undone_action_and_a_foreign_journal_are_refused_in_one_line(tmp_path):
    store = library(tmp_path / "photos")
    outcome = act(store, tmp_path / "q")
    undo(store)
    with pytest.raises(DuplicatesError, match=r"was undone already \("):
        undo(store, outcome.journal)
    with pytest.raises(DuplicatesError, match="nothing to undo"):
        undo(store)
    other = library(tmp_path / "other")
    foreign = act(other, tmp_path / "q2")
    with pytest.raises(DuplicatesError, match="is the journal of another store"):
        undo(store, foreign.journal)
    assert journals.read(foreign.journal).status == "done"


@pytest.mark.parametrize("point", ["undo.moved:3", "undo.done"])
def test_a_killed_undo_is_finished_by_running_it_again(tmp_path, point):
    store = library(tmp_path / "photos")
    before = {p.relative_to(tmp_path / "photos").as_posix(): p.read_bytes() for p in (tmp_path / "photos").rglob("*.jpg")}
    act(store, tmp_path / "q")
    command = [sys.executable, "-m", "lookalike", "undo", "--store", str(tmp_path / "photos")]
    assert subprocess.run(command, env={**os.environ, "LOOKALIKE_CRASH": point}, capture_output=True).returncode == 86
    assert len(digests(tmp_path / "photos")) + len(digests(tmp_path / "q")) == 12  # nothing lost mid-undo
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    after = {p.relative_to(tmp_path / "photos").as_posix(): p.read_bytes() for p in (tmp_path / "photos").rglob("*.jpg")}
    assert after == before
    reopened = Store.open(tmp_path / "photos" / ".lookalike")
    assert len(reopened) == 12 and reopened.check().ok
