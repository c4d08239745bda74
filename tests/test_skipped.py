"""What indexing did not read, said: image files of types not read (counted, with what to install),
and RAW files read through the JPEG of the same name beside them (stored once, still findable)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import photo
from raw_files import write_dng

from lookalike.cli import main
from lookalike.featurize.images import formats
from lookalike.featurize.images.discover import jpeg_sidecar, scan
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store

OPTIONS = EmbedOptions(device="cpu", workers=0)


@pytest.fixture
def shoot(tmp_path):
    """A camera card: a RAW+JPEG pair, a RAW alone, a layered and a vector file, and files that are no images."""
    folder = tmp_path / "card"
    (folder / "DCIM").mkdir(parents=True)
    write_dng(folder / "DCIM" / "IMG_0001.DNG", photo("chelsea"))
    photo("chelsea").save(folder / "DCIM" / "IMG_0001.JPG", quality=90)
    write_dng(folder / "DCIM" / "IMG_0002.dng", photo("coffee"))
    (folder / "drawing.psd").write_bytes(b"8BPS" + bytes(100))
    (folder / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "notes.txt").write_text("not an image")
    (folder / "clip.mp4").write_bytes(bytes(100))
    return folder


def _without_rawpy(monkeypatch):
    monkeypatch.setattr(formats, "installed", lambda module: module != "rawpy")


def test_scan_pairs_raw_files_with_their_jpegs_and_counts_what_it_leaves(shoot, monkeypatch):
    found = scan(shoot)
    assert [f.key for f in found.found] == ["DCIM/IMG_0001.JPG", "DCIM/IMG_0002.dng"]
    assert found.sidecars == {"DCIM/IMG_0001.DNG": "DCIM/IMG_0001.JPG"}
    assert found.skipped_by_type() == {".psd": 1, ".svg": 1}  # not the .txt or the .mp4
    assert jpeg_sidecar(shoot / "DCIM" / "IMG_0001.DNG") == str(shoot / "DCIM" / "IMG_0001.JPG")
    assert jpeg_sidecar(shoot / "DCIM" / "IMG_0002.dng") is None
    _without_rawpy(monkeypatch)
    assert scan(shoot).skipped_by_type() == {".dng": 1, ".psd": 1, ".svg": 1}  # the pair is still read as a JPEG


def test_a_raw_file_with_a_jpeg_sidecar_is_stored_once_and_queried_through_it(shoot):
    summary = index_folder(shoot, options=OPTIONS)
    assert (summary.added, summary.embedded, summary.failed) == (2, 2, 0)
    assert (summary.skipped, summary.sidecars) == ({".psd": 1, ".svg": 1}, 1)
    store = open_store(shoot)
    assert sorted(key for key, _ in ((p.split("card/")[1], v) for p, v in store)) == ["DCIM/IMG_0001.JPG",
                                                                                      "DCIM/IMG_0002.dng"]
    raw, jpeg = shoot / "DCIM" / "IMG_0001.DNG", shoot / "DCIM" / "IMG_0001.JPG"
    keys, vectors, failed = store.embedder([str(raw)])
    assert keys == [str(raw)] and not failed
    np.testing.assert_array_equal(vectors[0], store.get_vectors([jpeg])[0])  # the JPEG's own stored vector
    hits = store.similar(raw, k=2)
    assert hits[0].path == str(jpeg) and hits[0].score > 0.9999
    assert hits[1].path.endswith("IMG_0002.dng")


def test_a_raw_file_is_removed_when_its_jpeg_sidecar_appears(shoot):
    index_folder(shoot, options=OPTIONS)
    photo("coffee").save(shoot / "DCIM" / "IMG_0002.jpeg", quality=90)
    summary = index_folder(shoot, options=OPTIONS)
    assert (summary.added, summary.removed, summary.sidecars) == (1, 1, 2)
    keys = {p.split("card/")[1] for p, _ in open_store(shoot)}
    assert keys == {"DCIM/IMG_0001.JPG", "DCIM/IMG_0002.jpeg"}


def test_raw_files_skipped_without_rawpy_are_read_once_it_is_installed(shoot, monkeypatch):
    _without_rawpy(monkeypatch)
    summary = index_folder(shoot, options=OPTIONS)
    assert (summary.added, summary.failed, summary.skipped) == (1, 0, {".dng": 1, ".psd": 1, ".svg": 1})
    assert open_store(shoot).failures() == []  # skipped, not failed: nothing to retry by hand
    monkeypatch.undo()
    summary = index_folder(shoot, options=OPTIONS)
    assert (summary.added, summary.embedded, summary.skipped) == (1, 1, {".psd": 1, ".svg": 1})


def test_a_stored_raw_file_is_kept_when_rawpy_goes_missing(shoot, monkeypatch):
    index_folder(shoot, options=OPTIONS)
    _without_rawpy(monkeypatch)
    summary = index_folder(shoot, options=OPTIONS)
    assert (summary.removed, summary.unchanged) == (0, 1)
    assert len(open_store(shoot)) == 2


def test_index_and_info_say_what_was_skipped(shoot, monkeypatch):
    _without_rawpy(monkeypatch)
    result = CliRunner().invoke(main, ["index", str(shoot), "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    said = "skipped 3 files of types not read: .dng 1, .psd 1, .svg 1: pip install 'lookalike[raw]' for RAW"
    assert said in result.stderr
    assert "1 RAW file read through the JPEG of the same name beside it" in result.stderr
    result = CliRunner().invoke(main, ["info", "--store", str(shoot)])
    assert result.exit_code == 0, result.output
    assert f"last index: {said}; 1 RAW file read through" in result.stdout
    details = json.loads(CliRunner().invoke(main, ["info", "--json", "--store", str(shoot)]).stdout)
    assert details["last_index"] == {"skipped": {".dng": 1, ".psd": 1, ".svg": 1}, "sidecars": 1}
    assert open_store(shoot).info()["last_index"] == details["last_index"]


def test_info_says_when_nothing_was_skipped(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo("coffee").save(folder / "coffee.png")
    index_folder(folder, options=OPTIONS)
    result = CliRunner().invoke(main, ["info", "--store", str(folder)])
    assert "last index: read every image file it found" in result.stdout
