"""Keeper rules: each one, their order, ties broken by the next rule, and the reasons a person reads."""

import pytest

from lookalike.dupes.keeper import Candidate, choose, parse_rules, protect_folders
from lookalike.errors import DuplicatesError


def member(key, size=100, pixels=(10, 10), mtime=0, taken=None, root="/photos"):
    return Candidate(key, f"{root}/{key}", size, pixels[0], pixels[1], mtime * 10**9, None if taken is None else taken * 10**9)


def keeper_of(members, rules=None):
    index, kept, reasons = choose(members, parse_rules(rules))
    return members[index].key, kept, reasons


def test_the_default_is_pixels_then_size_then_oldest():
    assert keeper_of([member("a", pixels=(10, 10)), member("b", pixels=(20, 10))])[:2] == ("b", "kept: most pixels (20x10)")
    assert keeper_of([member("a", size=5), member("b", size=9)])[:2] == ("b", "kept: largest file (9 bytes)")
    key, kept, reasons = keeper_of([member("a", mtime=200), member("b", mtime=100)])
    assert key == "b" and kept.startswith("kept: oldest (modified 1970-01-01 00:01:40")
    assert reasons[0].startswith("newer (1970-01-01 00:03:20 against 1970-01-01 00:01:40")


def test_each_rule_breaks_the_ties_of_the_one_before_and_the_path_the_last():
    same_pixels = [member("a", size=1), member("b", size=2), member("c", size=2, mtime=-5)]
    assert keeper_of(same_pixels, "pixels")[0] == "a"  # every rule ties: the path decides
    assert keeper_of(same_pixels, "pixels,size")[0] == "b"
    assert keeper_of(same_pixels, "pixels,size,oldest")[0] == "c"


def test_exif_time_wins_over_the_modification_time():
    photos = [member("scan", mtime=10, taken=None), member("camera", mtime=999, taken=5)]
    key, kept, _ = keeper_of(photos, "oldest")
    assert key == "camera" and "taken 1970-01-01 00:00:05" in kept
    assert keeper_of(photos, "newest")[0] == "scan"


def test_shortest_path_format_and_folder_rules(tmp_path):
    assert keeper_of([member("x/y/long.jpg"), member("short.jpg")], "shortest-path")[0] == "short.jpg"
    formats = [member("a.png"), member("b.jpeg"), member("c.heic")]
    assert keeper_of(formats, "format:heic,jpg,png")[0] == "c.heic"
    key, kept, reasons = keeper_of(formats[:2], "format:jpg,png")
    assert key == "b.jpeg" and kept == "kept: preferred format (jpg)"  # .jpeg is jpg
    assert reasons[0] == "a less preferred format (png against jpg)"
    (tmp_path / "originals").mkdir()
    inside = [member("edit.jpg", root=str(tmp_path)), member("originals/raw.jpg", root=str(tmp_path))]
    assert keeper_of(inside, f"in:{tmp_path / 'originals'},pixels")[0] == "originals/raw.jpg"


def test_bad_rules_are_one_line_naming_the_rules():
    with pytest.raises(DuplicatesError, match="unknown keeper rule 'largest': use pixels, size"):
        parse_rules("pixels,largest")
    with pytest.raises(DuplicatesError, match="in: needs a folder"):
        parse_rules("in:")
    with pytest.raises(DuplicatesError, match="unknown keeper rule 'jpg'"):
        parse_rules("size,jpg")  # a format needs format: before it
    with pytest.raises(DuplicatesError, match="--protect nowhere: no such folder"):
        protect_folders(["nowhere"])
