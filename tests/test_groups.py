"""Duplicate groups safe to act on: a keeper each, no chains, protected, missing and blank files never proposed,
verdicts that keep two images apart, and the exact tier by content hash."""

import os

import pytest
from dupes_helpers import at_cosine, make_store, unit

from lookalike.dupes.groups import Settings, find_groups
from lookalike.dupes.keeper import parse_rules, protect_folders
from lookalike.store.store import Store

A = unit(1, 0, 0)


def groups_of(store, **settings):
    return [[(m.key, m.keep, m.missing) for m in g.members] for g in find_groups(store, Settings(**settings))]


def test_a_chain_never_makes_a_member_of_something_it_is_not_like(tmp_path):
    """A~B 0.96, B~C 0.96, A~C 0.84: connected components would join all three; C is not proposed."""
    b = at_cosine(A, 0.96, 1)
    c = at_cosine(b, 0.96, 2)
    assert float(A @ c) < 0.95
    store = make_store(tmp_path, {"a.jpg": {"vector": A, "pixels": (30, 30)}, "b.jpg": {"vector": b, "pixels": (20, 20)},
                                  "c.jpg": {"vector": c, "pixels": (10, 10)}})
    (group,) = find_groups(store, Settings(threshold=0.95))
    assert [(m.key, m.keep) for m in group.members] == [("a.jpg", True), ("b.jpg", False)]
    assert group.kind == "near" and group.members[1].reason.startswith("proposed: a near duplicate of the keeper (0.960)")
    assert "c.jpg" not in {m.key for g in find_groups(store, Settings(threshold=0.95)) for m in g.proposed}


def test_what_is_left_of_a_component_forms_its_own_group(tmp_path):
    b = at_cosine(A, 0.96, 1)
    c = at_cosine(b, 0.96, 2)
    d = at_cosine(c, 0.99, 3)
    store = make_store(tmp_path, {"a.jpg": {"vector": A, "pixels": (40, 40)}, "b.jpg": {"vector": b, "pixels": (30, 30)},
                                  "c.jpg": {"vector": c, "pixels": (20, 20)}, "d.jpg": {"vector": d, "pixels": (10, 10)}})
    assert groups_of(store, threshold=0.95) == [[("a.jpg", True, False), ("b.jpg", False, False)],
                                                [("c.jpg", True, False), ("d.jpg", False, False)]]


def test_exact_copies_are_their_own_tier_without_reading_vectors(tmp_path, monkeypatch):
    store = make_store(tmp_path, {"a.jpg": {"vector": A, "mtime": 100}, "copy/a.jpg": {"vector": A, "copy_of": "a.jpg", "mtime": 200},
                                  "other.jpg": {"vector": at_cosine(A, 0.99, 1)}})
    monkeypatch.setattr(Store, "vectors", lambda self: pytest.fail("the exact tier read vectors"))
    (group,) = find_groups(store, Settings(exact=True))
    assert group.kind == "exact" and [(m.key, m.keep) for m in group.members] == [("a.jpg", True), ("copy/a.jpg", False)]
    assert group.members[1].reason.startswith("proposed: an exact copy of the keeper; newer")


def test_a_group_says_exact_only_when_every_member_has_the_same_bytes(tmp_path):
    store = make_store(tmp_path, {"a.jpg": {"vector": A}, "b.jpg": {"vector": A, "copy_of": "a.jpg"},
                                  "c.jpg": {"vector": at_cosine(A, 0.99, 1), "pixels": (5, 5)}})
    (group,) = find_groups(store, Settings())
    assert group.kind == "near" and len(group.members) == 3


def test_protected_missing_and_blank_files_are_never_proposed(tmp_path):
    files = {"keep/a.jpg": {"vector": A, "pixels": (50, 50)}, "protected/b.jpg": {"vector": A, "pixels": (40, 40)},
             "c.jpg": {"vector": A, "pixels": (40, 40)}, "blank.jpg": {"vector": A, "blank": True, "pixels": (90, 90)}}
    store = make_store(tmp_path, files)
    (tmp_path / "c.jpg").unlink()  # a stale entry
    settings = Settings(protect=protect_folders([tmp_path / "protected"]), rules=parse_rules("pixels"))
    (group,) = find_groups(store, settings)
    members = {m.key: m for m in group.members}
    assert group.keeper.key == "keep/a.jpg" and group.proposed == []
    assert members["protected/b.jpg"].keep and "protected folder" in members["protected/b.jpg"].reason
    assert members["c.jpg"].missing and not members["c.jpg"].keep and members["c.jpg"].reason.startswith("missing:")
    assert members["blank.jpg"].keep and "near-blank" in members["blank.jpg"].reason


def test_a_missing_file_is_never_the_keeper(tmp_path):
    store = make_store(tmp_path, {"big.jpg": {"vector": A, "pixels": (90, 90)}, "small.jpg": {"vector": A, "pixels": (9, 9)}})
    os.unlink(tmp_path / "big.jpg")
    (group,) = find_groups(store, Settings())
    assert group.keeper.key == "small.jpg" and group.members[1].missing and group.proposed == []


def test_a_verdict_keeps_two_images_out_of_one_group(tmp_path):
    from lookalike.dupes.verdicts import record

    near = at_cosine(A, 0.99, 1)
    store = make_store(tmp_path, {"a.jpg": {"vector": A, "pixels": (20, 20)}, "b.jpg": {"vector": near}})
    assert len(find_groups(store, Settings())) == 1
    assert record(store, [tmp_path / "a.jpg", tmp_path / "b.jpg"]) == 1
    assert find_groups(store, Settings()) == []
    os.rename(tmp_path / "b.jpg", tmp_path / "renamed.jpg")  # the verdict is by content: it follows the bytes
    with store.writer() as writer:
        info = (tmp_path / "renamed.jpg").stat()
        writer.move([("b.jpg", ("renamed.jpg", info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode))])
    assert find_groups(store, Settings()) == []
    assert record(store, [tmp_path / "a.jpg", tmp_path / "renamed.jpg"], forget=True) == 1
    assert len(find_groups(store, Settings())) == 1
