"""The review behind the web app's Duplicates view: decisions checked against the server's own groups, then
acted on as `lookalike dupes --move-to` acts, and undone. (The page itself: test_serve_browser.)"""

from __future__ import annotations

import pytest
from dupes_helpers import at_cosine, make_store, unit, where

from lookalike.dupes.groups import Settings, find_groups
from lookalike.errors import DuplicatesError, UnknownImageError
from lookalike.featurize.images.facts import file_digest
from lookalike.serve.gallery import Gallery
from lookalike.serve.review import Decision, Review

K = unit(1, 0, 0)
THRESHOLD = 0.95


@pytest.fixture
def library(tmp_path):
    """keeper.jpg (most pixels); a.jpg at 0.97 and b.jpg at 0.96 to it, but only 0.931 to each other; copy.jpg its bytes."""
    root = tmp_path / "photos"
    store = make_store(root, {
        "keeper.jpg": {"vector": K, "pixels": (900, 900)},
        "a.jpg": {"vector": at_cosine(K, 0.97, 7), "pixels": (500, 500)},
        "b.jpg": {"vector": at_cosine(K, 0.96, 6), "pixels": (400, 400)},
        "other.jpg": {"vector": unit(0, 1, 0)},
        "twin.jpg": {"vector": unit(0, 0, 1), "pixels": (800, 800)},
        "copy.jpg": {"vector": unit(0, 0, 1), "copy_of": "twin.jpg"},
    })
    with store.catalog() as catalog:
        ids = {key: record.id for key, record in catalog.by_paths(
            ["keeper.jpg", "a.jpg", "b.jpg", "other.jpg", "twin.jpg", "copy.jpg"]).items()}
    gallery = Gallery(store)
    return root, store, gallery, ids


def shown(gallery):
    generation, groups = gallery.groups(THRESHOLD, 10)
    return generation, {g.keeper.key: g for g in groups}


def test_the_rules_keeper_stays_and_its_duplicates_move_to_the_quarantine(library, tmp_path):
    root, store, gallery, ids = library
    review = Review(store, gallery, quarantine=tmp_path / "q")
    generation, groups = shown(gallery)
    assert sorted(groups) == ["keeper.jpg", "twin.jpg"] and groups["twin.jpg"].kind == "exact"
    decisions = [Decision(g.keeper.id, [m.id for m in g.members[1:]]) for g in groups.values()]
    answer = review.resolve(THRESHOLD, 10, generation, decisions)
    assert sorted(m["path"] for m in answer["moved"]) == [str(root / k) for k in ("a.jpg", "b.jpg", "copy.jpg")]
    assert answer["left"] == [] and answer["to"] == str(tmp_path / "q")
    for key in ("a.jpg", "b.jpg", "copy.jpg"):
        assert where(root, tmp_path / "q", key) == ["dest"]
    assert where(root, tmp_path / "q", "keeper.jpg") == ["source"] and (root / "twin.jpg").exists()
    assert store.check().ok and len(store) == 3  # the moved files left the store


def test_a_picked_keeper_takes_only_its_own_duplicates_never_through_the_old_keeper(library, tmp_path):
    root, store, gallery, ids = library
    review = Review(store, gallery, quarantine=tmp_path / "q")
    generation, _ = shown(gallery)
    answer = review.resolve(THRESHOLD, 10, generation, [Decision(ids["a.jpg"], [ids["keeper.jpg"], ids["b.jpg"]])])
    assert [m["path"] for m in answer["moved"]] == [str(root / "keeper.jpg")]  # 0.97 to a.jpg
    assert answer["left"] == [{"path": str(root / "b.jpg"), "why": "only 0.931 to the chosen keeper, under 0.95"}]
    assert where(root, tmp_path / "q", "b.jpg") == ["source"] and where(root, tmp_path / "q", "a.jpg") == ["source"]
    assert where(root, tmp_path / "q", "keeper.jpg") == ["dest"]


def test_undo_brings_every_file_back_byte_for_byte(library, tmp_path):
    root, store, gallery, ids = library
    before = {key: file_digest(root / key) for key in ids}
    review = Review(store, gallery, quarantine=tmp_path / "q")
    generation, groups = shown(gallery)
    review.resolve(THRESHOLD, 10, generation, [Decision(g.keeper.id, [m.id for m in g.members]) for g in groups.values()])
    answer = review.undo()
    assert sorted(answer["restored"], key=lambda r: r["path"]) == [{"path": str(root / k)} for k in ("a.jpg", "b.jpg", "copy.jpg")]
    assert {key: file_digest(root / key) for key in ids} == before and answer["kept"] == []
    assert len(store) == 6 and store.check().ok
    with pytest.raises(DuplicatesError, match="undone already|nothing to undo"):
        review.undo()


def test_decisions_are_checked_against_the_groups_the_server_finds(library, tmp_path):
    root, store, gallery, ids = library
    review = Review(store, gallery, quarantine=tmp_path / "q")
    generation, _ = shown(gallery)
    with pytest.raises(DuplicatesError, match="store changed since"):
        review.resolve(THRESHOLD, 10, generation - 1, [Decision(ids["keeper.jpg"], [ids["a.jpg"]])])
    with pytest.raises(DuplicatesError, match="in no duplicate group"):
        review.resolve(THRESHOLD, 10, generation, [Decision(ids["other.jpg"], [ids["a.jpg"]])])
    with pytest.raises(DuplicatesError, match="not in the group of image"):
        review.resolve(THRESHOLD, 10, generation, [Decision(ids["keeper.jpg"], [ids["copy.jpg"]])])
    with pytest.raises(DuplicatesError, match="decided twice"):  # each keeper removing the other would lose both
        review.resolve(THRESHOLD, 10, generation, [Decision(ids["twin.jpg"], [ids["copy.jpg"]]),
                                                   Decision(ids["copy.jpg"], [ids["twin.jpg"]])])
    with pytest.raises(DuplicatesError, match="start it with --quarantine DIR or --trash"):
        Review(store, gallery).resolve(THRESHOLD, 10, generation, [Decision(ids["keeper.jpg"], [ids["a.jpg"]])])
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == sorted(ids)  # nothing moved
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("place", ["store", "root"])
def test_a_quarantine_the_store_can_not_use_is_refused_when_the_server_starts(library, place):
    root, store, gallery, _ = library
    with pytest.raises(DuplicatesError, match="choose another folder"):
        Review(store, gallery, quarantine=root / ".lookalike" / "q" if place == "store" else root)
    with pytest.raises(DuplicatesError, match="choose one"):
        Review(store, gallery, quarantine=root.parent / "q", trash=True)


def test_not_duplicates_sticks_and_the_pair_is_never_grouped_again(library):
    root, store, gallery, ids = library
    review = Review(store, gallery)
    with pytest.raises(DuplicatesError, match="different contents"):  # the same bytes can't be distinct
        review.distinct([ids["twin.jpg"], ids["copy.jpg"]])
    shown(gallery)  # cached, as the page saw them
    assert review.distinct([ids["keeper.jpg"], ids["a.jpg"]]) == {"pairs": 1}
    for groups in (find_groups(store, Settings(threshold=THRESHOLD)), shown(gallery)[1].values()):
        assert not any({"keeper.jpg", "a.jpg"} <= {m.key for m in g.members} for g in groups)
    with pytest.raises(UnknownImageError):
        review.distinct([ids["keeper.jpg"], 10**9])


def test_a_file_gone_from_disk_is_left_alone_and_said_so(library, tmp_path):
    root, store, gallery, ids = library
    (root / "b.jpg").unlink()
    review = Review(store, gallery, quarantine=tmp_path / "q")
    generation, _ = shown(gallery)
    answer = review.resolve(THRESHOLD, 10, generation, [Decision(ids["keeper.jpg"], [ids["a.jpg"], ids["b.jpg"]])])
    assert [m["path"] for m in answer["moved"]] == [str(root / "a.jpg")]
    assert answer["left"] == [{"path": str(root / "b.jpg"), "why": "missing from disk"}]
