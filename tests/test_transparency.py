"""Transparent images embedded as a person sees them (issue #22).

MATE's overlay wallpapers are white pixels whose picture is held in the alpha channel: on
white they were all one blank image, "duplicates" at 1.0000. Here such overlays are made
from real photos (each photo's luminance as the alpha over flat white), and ordinary
transparent logos and cut-outs check that everything else still looks like itself.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from conftest import photo
from PIL import Image, ImageDraw

from lookalike.featurize import create_extractor
from lookalike.featurize.images.decode import load_image
from lookalike.featurize.images.transparency import NEAR_BLANK_STD, blankness, flatten, is_near_blank
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store

OVERLAYS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "moon")


def overlay(name: str) -> Image.Image:
    """A MATE-style overlay: every pixel white, the photo's luminance held in the alpha channel."""
    alpha = photo(name).convert("L").resize((400, 300))
    white = Image.new("L", alpha.size, 255)
    return Image.merge("RGBA", (white, white, white, alpha))


def logo() -> Image.Image:
    """An ordinary transparent logo: coloured shapes and dark text on nothing."""
    image = Image.new("RGBA", (320, 240), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 150, 150), fill=(220, 40, 40, 255))
    draw.rectangle((170, 40, 300, 170), fill=(30, 90, 200, 255))
    draw.polygon([(60, 220), (160, 170), (260, 220)], fill=(40, 160, 60, 255))
    draw.text((120, 90), "LOGO", fill=(20, 20, 20, 255))
    return image


def one_colour_logo() -> Image.Image:
    """A flat navy logo: one colour, the shape in the alpha channel (antialiased edges)."""
    shape = Image.new("L", (640, 480), 0)
    draw = ImageDraw.Draw(shape)
    draw.ellipse((80, 60, 400, 380), fill=255)
    draw.rectangle((300, 200, 600, 440), fill=255)
    shape = shape.resize((320, 240), Image.Resampling.LANCZOS)
    return Image.merge("RGBA", (*Image.new("RGB", shape.size, (20, 30, 90)).split(), shape))


def cut_out() -> Image.Image:
    """A photo cut out of its background: the cat inside an ellipse, transparent around it."""
    cat = photo("chelsea").convert("RGBA")
    mask = Image.new("L", cat.size, 0)
    ImageDraw.Draw(mask).ellipse((60, 20, 390, 290), fill=255)
    cat.putalpha(mask)
    return cat


def _on_white(image: Image.Image) -> Image.Image:
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def _off_diagonal(vectors: np.ndarray) -> np.ndarray:
    scores = vectors @ vectors.T
    return scores[~np.eye(len(vectors), dtype=bool)]


@pytest.fixture(scope="module")
def overlay_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("overlays")
    for name in OVERLAYS:
        overlay(name).save(folder / f"{name}-overlay.png")
    return folder


def test_distinct_overlays_no_longer_embed_alike(lite0, overlay_folder):
    paths = sorted(str(p) for p in overlay_folder.glob("*.png"))
    (batch,) = lite0.embed_paths(paths)
    assert not batch.failures
    assert _off_diagonal(batch.vectors).max() < 0.8  # measured 0.40; duplicates start at 0.95
    # As lookalike embedded them before (on white): one blank picture six times, the bug this fixes.
    before = lite0.embed_images([load_image(p, alpha="white") for p in paths])
    assert _off_diagonal(before).min() > 0.999


def test_dupes_finds_no_group_among_distinct_overlays(overlay_folder, tmp_path):
    store_dir = tmp_path / "store"
    index_folder(overlay_folder, store=store_dir, options=EmbedOptions(device="cpu", workers=0))
    store = open_store(store_dir)
    assert len(store) == len(OVERLAYS)
    assert store.duplicate_groups(threshold=0.95) == []


def test_an_overlay_is_seen_as_its_alpha_in_luminance():
    image = overlay("coffee")
    flat = np.asarray(flatten(image))
    alpha = np.asarray(image.getchannel("A"))
    assert np.array_equal(flat, np.stack([alpha] * 3, axis=-1))
    assert np.array_equal(np.asarray(flatten(image, "white")), np.full_like(flat, 255))  # the old way: blank


@pytest.mark.parametrize("make", [logo, one_colour_logo, cut_out], ids=["logo", "one-colour logo", "cut-out"])
def test_ordinary_transparent_images_still_look_like_themselves(lite0, tmp_path, make):
    """A logo or cut-out meant to sit on a page comes out as on a white page, pixel for pixel as before."""
    image = make()
    transparent, opaque = tmp_path / "transparent.png", tmp_path / "opaque.png"
    image.save(transparent)
    _on_white(image).save(opaque)
    assert np.array_equal(np.asarray(load_image(transparent)), np.asarray(load_image(opaque)))
    (batch,) = lite0.embed_paths([str(transparent), str(opaque)])
    assert float(batch.vectors[0] @ batch.vectors[1]) > 0.999


def test_a_light_logo_meant_for_dark_pages_is_shown_on_black():
    white_text = Image.new("RGBA", (320, 240), (0, 0, 0, 0))
    ImageDraw.Draw(white_text).ellipse((40, 40, 280, 200), fill=(255, 255, 255, 255))
    assert is_near_blank(_on_white(white_text))
    flat = flatten(white_text)
    assert flat.getpixel((5, 5)) == (0, 0, 0) and flat.getpixel((160, 120)) == (255, 255, 255)
    assert not is_near_blank(flat)


def test_near_blank_tells_blank_pictures_from_pictures():
    jpeg = io.BytesIO()
    Image.new("RGB", (800, 600), (250, 250, 250)).save(jpeg, "JPEG", quality=50)
    dot = Image.new("RGB", (800, 600), "white")
    ImageDraw.Draw(dot).ellipse((390, 290, 410, 310), fill="black")
    blank = [Image.new("RGB", (640, 480), "white"), Image.open(io.BytesIO(jpeg.getvalue())),
             Image.new("RGBA", (64, 64), (0, 0, 0, 0)), _on_white(overlay("chelsea"))]
    pictures = [photo(name) for name in ("chelsea", "coffee", "astronaut", "rocket", "moon", "camera")]
    pictures += [flatten(overlay(name)) for name in OVERLAYS] + [overlay("moon"), dot]
    assert [is_near_blank(image) for image in blank] == [True] * len(blank)
    assert [is_near_blank(image) for image in pictures] == [False] * len(pictures)
    assert min(blankness(image) for image in pictures) > 2 * NEAR_BLANK_STD  # a margin, not a knife edge


def test_thumbnails_show_an_overlays_picture(overlay_folder):
    from lookalike.serve.files import open_indexed
    from lookalike.serve.thumbnails import Thumbnails
    from lookalike.store.catalog import FileRecord

    info = os.stat(overlay_folder / "chelsea-overlay.png")
    record = FileRecord(1, "chelsea-overlay.png", info.st_size, info.st_mtime_ns, "ok", None, 0, 1)
    with open_indexed(str(overlay_folder.resolve()), record) as opened:  # as the server opens a stored file
        thumbnail = Thumbnails().get(opened, 128)
    shown = Image.open(io.BytesIO(thumbnail.jpeg))
    assert not is_near_blank(shown)
    expected = overlay("chelsea").getchannel("A").resize(shown.size, Image.Resampling.BOX)
    assert np.abs(np.asarray(shown.convert("L"), float) - np.asarray(expected, float)).mean() < 6


def _forget_alpha(store_dir) -> dict:
    """Make a store look as one written before ``alpha`` existed: its manifest's spec without the field."""
    manifest = store_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    assert data["spec"]["preprocessing"].pop("alpha") == "composite"  # what a new store records
    manifest.write_text(json.dumps(data, indent=2))
    return data["spec"]


def test_a_store_made_before_keeps_embedding_on_white_until_reset(lite0, tmp_path):
    folder, store_dir = tmp_path / "photos", tmp_path / "store"
    folder.mkdir()
    photo("coffee").save(folder / "coffee.jpg")
    options = EmbedOptions(device="cpu", workers=0)
    index_folder(folder, store=store_dir, options=options)
    old_spec = _forget_alpha(store_dir)
    overlay("chelsea").save(folder / "chelsea.png")
    index_folder(folder, store=store_dir, options=options)  # no mismatch: "white" is what the store says
    overlay("astronaut").save(folder / "astronaut.png")
    summary = index_folder(folder, store=store_dir, model="efficientnet_lite0", options=options)  # named: the same
    assert summary.embedded == 1
    store = open_store(store_dir)
    blank = lite0.embed_images([Image.new("RGB", (400, 300), "white")])[0]
    vectors = store.get_vectors([folder / "chelsea.png", folder / "astronaut.png"])
    assert (vectors @ blank).min() > 0.999  # embedded the old way, comparable with the old vectors
    assert json.loads((store_dir / "manifest.json").read_text())["spec"] == old_spec  # the record is untouched
    query = store.embedder([str(folder / "chelsea.png")])[1][0]  # a query image is embedded as the store's were
    assert float(query @ blank) > 0.999

    index_folder(folder, store=store_dir, reset=True, options=options)
    assert json.loads((store_dir / "manifest.json").read_text())["spec"]["preprocessing"]["alpha"] == "composite"
    vectors = open_store(store_dir).get_vectors([folder / "chelsea.png", folder / "astronaut.png"])
    assert float(vectors[0] @ vectors[1]) < 0.8


def test_an_extractor_for_an_old_spec_flattens_on_white():
    from lookalike.featurize import extractor_for_spec

    new = create_extractor(device="cpu", workers=0, runtime="torch")
    old = new.spec.to_dict()
    old["preprocessing"].pop("alpha")
    legacy = extractor_for_spec(old, device="cpu", workers=0, runtime="torch")
    assert legacy.spec.preprocessing.alpha == "white" and new.spec.preprocessing.alpha == "composite"
    image = overlay("rocket")
    blank = new.embed_images([Image.new("RGB", image.size, "white")])[0]
    assert float(legacy.embed_images([image])[0] @ blank) > 0.999
    assert float(new.embed_images([image])[0] @ blank) < 0.8
