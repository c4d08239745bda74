import numpy as np
import pytest
from conftest import photo
from PIL import Image

from lookalike.errors import ImageLoadError
from lookalike.featurize.images.decode import load_image, to_rgb


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.usefixtures("unreadable_as_root")
def test_corpus_good_files_decode_and_bad_files_say_why(corpus_dir):
    root, expected = corpus_dir
    for name, keyword in expected.items():
        if keyword is None:
            image = load_image(root / name)
            assert image.mode == "RGB", name
            assert min(image.size) > 0, name
        else:
            with pytest.raises(ImageLoadError) as info:
                load_image(root / name)
            assert keyword in info.value.reason, (name, info.value.reason)
            assert info.value.path == str(root / name)


def test_sixteen_bit_png_is_scaled_not_clipped(corpus_dir):
    root, _ = corpus_dir
    decoded = _pixels(load_image(root / "09_gray16.png"))[..., 0]
    reference = _pixels(photo("coffee").convert("L"))
    assert np.abs(decoded - reference).max() <= 1


def test_transparency_is_composited_on_white(corpus_dir):
    root, _ = corpus_dir
    image = load_image(root / "10_palette_transparent.png")
    assert image.getpixel((10, 10)) == (200, 30, 30)
    assert image.getpixel((50, 10)) == (255, 255, 255)

    half_transparent = Image.new("LA", (4, 4), (0, 128))
    assert to_rgb(half_transparent).getpixel((0, 0)) == (127, 127, 127)


def test_animated_gif_gives_its_first_frame(corpus_dir):
    root, _ = corpus_dir
    image = load_image(root / "11_animated.gif")
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_exif_orientation_is_applied(corpus_dir):
    root, _ = corpus_dir
    rotated = load_image(root / "12_exif_rotated.jpg")
    upright = load_image(root / "01_chelsea.jpg")
    assert rotated.size == upright.size
    assert np.abs(_pixels(rotated) - _pixels(upright)).mean() < 3


def test_cmyk_jpeg_comes_back_with_the_right_colours(corpus_dir):
    root, _ = corpus_dir
    cmyk = load_image(root / "07_cmyk.jpg")
    assert np.abs(_pixels(cmyk) - _pixels(photo("chelsea"))).mean() < 4


def test_float_images_in_unit_range_are_scaled():
    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    out = _pixels(to_rgb(Image.fromarray(ramp, mode="F")))[..., 0]
    assert out.min() == 0 and out.max() == 255


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(ImageLoadError, match="over the limit of 9,999"):
        load_image(path, max_pixels=9_999)
    assert load_image(path, max_pixels=10_000).size == (100, 100)


def test_draft_decodes_large_jpegs_small_but_never_below_the_asked_size(tmp_path):
    path = tmp_path / "big.jpg"
    photo("astronaut").resize((2048, 1536)).save(path, quality=90)
    full = load_image(path)
    drafted = load_image(path, draft_size=300)
    assert full.size == (2048, 1536)
    assert drafted.size == (512, 384)  # 1/4 scale: 1/8 would leave 192 < 300
    assert load_image(path, draft_size=1000).size == (2048, 1536)


def test_missing_file_is_a_failure_not_a_crash(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "gone.jpg")


def test_rgb_colour_key_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "key.png"
    image = Image.new("RGB", (4, 4), (0, 0, 0))
    image.putpixel((0, 0), (10, 200, 30))
    image.save(path, transparency=(0, 0, 0))
    decoded = load_image(path)
    assert decoded.getpixel((0, 0)) == (10, 200, 30)
    assert decoded.getpixel((3, 3)) == (255, 255, 255)


def test_values_beyond_any_known_range_are_stretched_not_clipped():
    wide_int = Image.fromarray(np.array([[0, 35000, 70000]], dtype=np.int32))
    assert _pixels(to_rgb(wide_int))[0, :, 0].tolist() == [0, 128, 255]
    wide_float = Image.fromarray(np.array([[0.0, 500.0, 1000.0]], dtype=np.float32))
    assert _pixels(to_rgb(wide_float))[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied_to_images_opened_by_the_caller(corpus_dir):
    from lookalike.featurize.images.decode import upright_rgb

    root, _ = corpus_dir
    with Image.open(root / "12_exif_rotated.jpg") as opened:
        assert opened.size == (300, 451)  # stored on its side
        assert upright_rgb(opened).size == (451, 300)


@pytest.mark.parametrize(
    "error, words",
    [
        (OSError(5, "Input/output error"), "Input/output error (errno 5)"),
        (InterruptedError(4, "Interrupted system call"), "Interrupted system call"),
        (MemoryError(), "out of memory"),
    ],
    ids=["EIO", "EINTR", "MemoryError"],
)
def test_trouble_that_is_not_the_files_is_transient_not_a_failure(tmp_path, monkeypatch, error, words):
    from lookalike.errors import TransientError

    path = tmp_path / "fine.png"
    photo("coffee").save(path)

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image.Image, "load", failing)
    with pytest.raises(TransientError) as info:
        load_image(path)
    assert not isinstance(info.value, ImageLoadError)  # never recorded as the file's failure
    assert str(path) in str(info.value) and words in str(info.value) and "run again" in str(info.value)


def test_an_oserror_of_the_files_own_stays_a_failure(tmp_path, monkeypatch):
    path = tmp_path / "fine.png"
    photo("coffee").save(path)

    def truncated(*args, **kwargs):
        raise OSError("image file is truncated (3 bytes not processed)")  # PIL's, without an errno

    monkeypatch.setattr(Image.Image, "load", truncated)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(path)
