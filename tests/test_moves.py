"""Settling a move a crash interrupted: finished where the destination holds the file, never where it holds other bytes."""

from __future__ import annotations

import os

from lookalike.dupes import moves
from lookalike.featurize.images.facts import file_digest


def test_a_destination_holding_other_bytes_leaves_both_files_untouched(tmp_path):
    source, dest = tmp_path / "a.jpg", tmp_path / "q" / "a.jpg"
    dest.parent.mkdir()
    source.write_bytes(b"the user's photo")
    dest.write_bytes(b"something else that appeared there")
    assert moves.settle(str(source), str(dest), file_digest(source)) == "both"
    assert source.read_bytes() == b"the user's photo" and dest.read_bytes() == b"something else that appeared there"


def test_a_whole_copy_at_the_destination_finishes_the_move_and_a_part_copy_is_dropped(tmp_path):
    source, dest = tmp_path / "a.jpg", tmp_path / "q" / "a.jpg"
    dest.parent.mkdir()
    source.write_bytes(b"the user's photo")
    digest = file_digest(source)
    part = dest.parent / f".a.jpg{moves.TMP_SUFFIX}"
    part.write_bytes(b"the user's")  # a copy cut off half-way
    assert moves.settle(str(source), str(dest), digest) == "source" and not part.exists()
    dest.write_bytes(b"the user's photo")  # a copy linked in place, then killed before the source went
    assert moves.settle(str(source), str(dest), digest) == "dest"
    assert not source.exists() and dest.read_bytes() == b"the user's photo"
    assert os.listdir(dest.parent) == ["a.jpg"]
