"""The formats phones and cameras write, made offline from real photos: HEIC, AVIF, JPEG XL and RAW (DNG).

Each embeds as the same pixels saved as PNG do, comes out upright, is refused over the pixel
limit before it is decoded, and a damaged file of each costs one failure with a reason.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rawpy
from conftest import photo
from PIL import Image
from raw_files import write_dng

from lookalike.errors import ImageLoadError
from lookalike.featurize.images import formats
from lookalike.featurize.images.decode import load_image
from lookalike.featurize.images.jxl import jxl_size
from lookalike.featurize.options import EmbedOptions

PARITY_PHOTOS = ("chelsea", "astronaut")  # astronaut is the hardest: its own JPEG at quality 90 scores 0.989
LOSSLESS = ("jxl_lossless", "dng", "dng_bitmap_preview")
LOSSY = ("heic", "avif", "jxl", "dng_jpeg_preview")


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    formats.readable_formats()  # registers the HEIF and JPEG XL plugins, which also write
    image.save(path, **kwargs)
    return path


def _write_all(folder: Path, name: str) -> dict[str, Path]:
    """The photo as PNG (the reference), JPEG at quality 90 (the lossy yardstick) and every new format."""
    image = photo(name)
    return {
        "png": _save(image, folder / f"{name}.png"),
        "jpeg90": _save(image, folder / f"{name}.jpg", quality=90),
        "heic": _save(image, folder / f"{name}.heic", quality=90),
        "avif": _save(image, folder / f"{name}.avif", quality=90),
        "jxl": _save(image, folder / f"{name}.jxl", quality=90),
        "jxl_lossless": _save(image, folder / f"{name}_lossless.jxl", lossless=True),
        "dng": write_dng(folder / f"{name}.dng", image),
        "dng_bitmap_preview": write_dng(folder / f"{name}_bitmap.dng", image, preview="bitmap"),
        "dng_jpeg_preview": write_dng(folder / f"{name}_jpeg.dng", image, preview="jpeg"),
    }


def _embed(extractor, paths: list[Path]) -> dict[Path, np.ndarray]:
    vectors = {}
    for batch in extractor.embed_paths([str(p) for p in paths]):
        assert not batch.failures, batch.failures
        vectors.update(zip(map(Path, batch.keys), batch.vectors))
    return vectors


@pytest.mark.parametrize("name", PARITY_PHOTOS)
def test_each_format_embeds_as_the_same_pixels_saved_as_png(lite0_onnx, tmp_path, name):
    """Lossless files (JPEG XL lossless, a DNG developed, a DNG's uncompressed preview) score >= 0.99 against
    the PNG. Lossy ones at quality 90 lose what a JPEG at quality 90 loses: each scores at least
    min(0.99, the JPEG's own score) - 0.005 (measured: HEIC 0.9995, AVIF 0.997, JPEG XL 0.994-0.996,
    a DNG's JPEG preview at 95 0.989-0.998; the JPEG itself 0.989-0.9965)."""
    files = _write_all(tmp_path, name)
    vectors = _embed(lite0_onnx, list(files.values()))
    score = {kind: float(vectors[files["png"]] @ vectors[path]) for kind, path in files.items()}
    for kind in LOSSLESS:
        assert score[kind] >= 0.99, (kind, score)
    floor = min(0.99, score["jpeg90"]) - 0.005
    for kind in LOSSY:
        assert score[kind] >= floor, (kind, score)
    others = [float(vectors[files["png"]] @ v) for v in _embed(lite0_onnx, [_save(photo("coffee"), tmp_path / "c.png")]).values()]
    assert max(others) < 0.9  # the bound means something: another photo scores far below it


def test_an_exif_rotated_heic_comes_out_upright(tmp_path):
    upright = photo("chelsea")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turn 90 degrees clockwise to view
    path = _save(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "rotated.heic", quality=95, exif=exif.tobytes())
    with Image.open(path) as opened:
        assert opened.info.get("original_orientation") == 6  # pillow-heif kept it as a transform, as iPhones do
    decoded = load_image(path)
    assert decoded.size == upright.size
    assert np.abs(np.asarray(decoded, float) - np.asarray(upright, float)).mean() < 4


@pytest.mark.parametrize("preview", [None, "jpeg"])
def test_a_raw_file_on_its_side_comes_out_upright_developed_or_previewed(tmp_path, preview):
    """Against the same sensor data stored upright (LibRaw stretches this synthetic sensor's brightest
    pixel to white, so the developed picture is some 10% brighter than the photo itself)."""
    photo_ = photo("chelsea")
    upright = load_image(write_dng(tmp_path / "upright.dng", photo_, preview=preview), draft_size=224)
    path = write_dng(tmp_path / "rotated.dng", photo_.transpose(Image.Transpose.ROTATE_90), orientation=6, preview=preview)
    decoded = load_image(path, draft_size=224)
    assert decoded.size == upright.size == photo_.size
    assert np.abs(np.asarray(decoded, float) - np.asarray(upright, float)).mean() < 3  # JPEG blocks fall elsewhere


def test_a_jpeg_xl_is_turned_by_its_codestream_never_again_by_its_exif(tmp_path):
    """ISO/IEC 18181-2: a JPEG XL's own orientation rules, and libjxl applies it while decoding.
    pillow-jxl-plugin writes an Exif orientation of 6 over pixels stored upright: shown as stored."""
    upright = photo("chelsea")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(upright, tmp_path / "tagged.jxl", lossless=True, exif=exif.tobytes())
    with Image.open(path) as opened:
        assert opened.getexif().get(0x0112) == 6
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(upright))


def test_a_multi_image_heic_gives_its_primary_image(tmp_path):
    first, primary = photo("coffee"), photo("chelsea")
    path = _save(first, tmp_path / "burst.heic", quality=95, save_all=True, append_images=[primary], primary_index=1)
    with Image.open(path) as opened:
        assert opened.n_frames == 2
    decoded = np.asarray(load_image(path), float)
    assert decoded.shape == np.asarray(primary).shape
    assert np.abs(decoded - np.asarray(primary, float)).mean() < 4


def test_the_pixel_limit_refuses_heif_and_jpeg_xl_before_decoding(tmp_path, monkeypatch):
    import pillow_heif.as_plugin
    import pillow_jxl.JpegXLImagePlugin

    heic = _save(photo("chelsea"), tmp_path / "a.heic")
    jxl = _save(photo("chelsea"), tmp_path / "a.jxl")

    def decoded(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(pillow_heif.as_plugin.HeifImageFile, "load", decoded)
    monkeypatch.setattr(pillow_jxl.JpegXLImagePlugin, "Decoder", decoded)  # it decodes as Pillow opens the file
    for path in (heic, jxl):
        with pytest.raises(ImageLoadError, match=r"451x300 is 135,300 pixels, over the limit of 135,299"):
            load_image(path, max_pixels=135_299)


@pytest.fixture
def unpacked(monkeypatch) -> list:
    """Grows by one each time rawpy unpacks a RAW file's sensor data."""
    calls = []

    class Spy(rawpy.RawPy):
        def unpack(self):
            calls.append(True)
            return super().unpack()

    monkeypatch.setattr(rawpy, "RawPy", Spy)
    return calls


def test_the_pixel_limit_refuses_a_raw_file_before_unpacking_it(tmp_path, unpacked):
    path = write_dng(tmp_path / "a.dng", photo("chelsea"))
    with pytest.raises(ImageLoadError, match=r"902x600 is 541,200 pixels, over the limit"):
        load_image(path, max_pixels=541_199)
    assert not unpacked
    assert load_image(path, max_pixels=541_200).size == (451, 300)
    assert unpacked


def test_a_raw_files_preview_is_used_only_when_large_enough(tmp_path, unpacked):
    path = write_dng(tmp_path / "a.dng", photo("chelsea"), preview="jpeg")  # a 451x300 preview
    load_image(path, draft_size=300)
    assert not unpacked  # 300 a side is there: the camera's own rendering
    load_image(path, draft_size=301)
    assert unpacked  # too small: the sensor data are developed


@pytest.mark.parametrize("kind", ["heic", "avif", "jxl", "dng"])
def test_a_damaged_file_of_each_format_is_one_failure_with_a_reason(tmp_path, kind):
    from lookalike.indexing import index_folder, open_store

    (tmp_path / "good").mkdir()
    files = _write_all(tmp_path / "good", "chelsea")
    whole = files[kind].read_bytes()
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / f"cut.{files[kind].suffix[1:]}").write_bytes(whole[: len(whole) // 3])
    (folder / "fine.png").write_bytes(files["png"].read_bytes())
    summary = index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    assert (summary.embedded, summary.failed) == (1, 1)
    (failure,) = open_store(folder).failures()
    assert failure.path == f"cut.{files[kind].suffix[1:]}"
    assert failure.reason and "\n" not in failure.reason and len(failure.reason) < 200


def test_raw_files_without_rawpy_fail_naming_the_install(tmp_path, monkeypatch):
    path = write_dng(tmp_path / "IMG_0001.CR2", photo("chelsea"))  # the name is all that counts here
    monkeypatch.setattr(formats, "installed", lambda module: module != "rawpy")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "a RAW file (.cr2): reading it needs pip install 'lookalike[raw]'"
    assert ".cr2" not in formats.readable_extensions() and ".heic" in formats.readable_extensions()


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (451, 300), (300, 451), (400, 300), (1600, 900), (513, 257),
                                  (1200, 1000), (5000, 17), (9000, 3)])
@pytest.mark.parametrize("container", [False, True])
def test_the_jpeg_xl_header_reader_agrees_with_libjxl(size, container):
    """Sizes of every SizeHeader form (small multiples of 8, 9-, 13- and 18-bit sides, aspect ratio codes);
    an Exif box makes the encoder write the ISO BMFF container instead of a bare codestream."""
    formats.readable_formats()
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 1
    kwargs = {"exif": exif.tobytes()} if container else {}
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "JXL", **kwargs)
    data = buffer.getvalue()
    assert data.startswith(b"\x00\x00\x00\x0cJXL ") == container
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.size == size
    assert jxl_size(io.BytesIO(data)) == size
    assert jxl_size(io.BytesIO(data[: 40 if container else 2])) is None  # cut short: unreadable, never a guess
