"""Shared fixtures: real photos from scikit-image, a bad-file corpus, and no network, ever."""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from ray_helpers import local_ray, ray_cluster, ray_temp  # noqa: F401 - the Ray fixtures, for the scale tests
from skimage import data as skimage_data

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux's /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def photo(name: str) -> Image.Image:
    """A real photo shipped inside scikit-image's wheel, as an RGB PIL image."""
    return Image.fromarray(getattr(skimage_data, name)()).convert("RGB")


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return {name: photo(name) for name in PHOTOS}


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory) -> Path:
    """One ONNX export cache for the whole session: each network is exported once, not once per test.

    Under xdist the workers share it (the cache's export lock lets one export while the
    others wait for its file), so the default network is exported once a run, not once a worker.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "lookalike_cache"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("lookalike_cache")


@pytest.fixture(autouse=True)
def no_network(tmp_path, monkeypatch, onnx_cache_dir):
    """Tests never download: an empty hub cache per test, and downloads that fail like a machine offline.

    ONNX exports go to the session's cache (``LOOKALIKE_CACHE``, inherited by subprocesses);
    tests of the cache itself point it elsewhere.
    """
    monkeypatch.setenv("LOOKALIKE_CACHE", str(onnx_cache_dir))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))

    def offline(url, *args, **kwargs):
        raise URLError("network is disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


@pytest.fixture(scope="session")
def lite0():
    """The bundled default model on the CPU with torch, built once."""
    from lookalike import create_extractor

    return create_extractor(device="cpu", batch_size=8, workers=0, runtime="torch")


@pytest.fixture(scope="session")
def lite0_onnx(onnx_cache_dir):
    """The bundled default model on ONNX Runtime (exported into the session's cache), built once."""
    from lookalike import create_extractor

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOKALIKE_CACHE", str(onnx_cache_dir))
        return create_extractor(device="cpu", batch_size=8, workers=0, runtime="onnx")


@pytest.fixture(params=["torch", "onnx"])
def extractor(request):
    """Lite0 on each runtime, for tests whose behaviour both must share."""
    return request.getfixturevalue("lite0" if request.param == "torch" else "lite0_onnx")


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _exif_rotated(image: Image.Image) -> bytes:
    """The photo stored on its side with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg_bytes(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def _animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette_with_transparency(path: Path) -> None:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0] + [200, 30, 30] + [0] * 762)
    image.paste(1, (0, 0, 32, 64))  # left half red, right half palette index 0, transparent
    image.save(path, transparency=0)


def _sixteen_bit_gray(path: Path, base: Image.Image) -> None:
    gray = np.asarray(base.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    Image.fromarray(gray).save(path)  # PNG keeps 16 bits (mode I;16)


def make_corpus(root: Path) -> dict[str, str | None]:
    """Write good and bad files into ``root``; returns file name -> None (good) or a reason keyword (bad)."""
    root.mkdir(parents=True, exist_ok=True)
    chelsea, coffee = photo("chelsea"), photo("coffee")
    expected: dict[str, str | None] = {}

    def good(name, write):
        write(root / name)
        expected[name] = None

    def bad(name, write, keyword):
        write(root / name)
        expected[name] = keyword

    jpeg = _jpeg_bytes(chelsea)
    good("01_chelsea.jpg", lambda p: p.write_bytes(jpeg))
    bad("02_truncated.jpg", lambda p: p.write_bytes(jpeg[: len(jpeg) // 2]), "truncated")
    good("03_coffee.png", lambda p: coffee.save(p))
    bad("04_empty.jpg", lambda p: p.write_bytes(b""), "empty")
    good("05_coffee.webp", lambda p: coffee.save(p, "WEBP"))
    bad("06_text.jpg", lambda p: p.write_text("this is not an image\n"), "not an image")
    good("07_cmyk.jpg", lambda p: p.write_bytes(_jpeg_bytes(chelsea.convert("CMYK"))))
    bad("08_huge.png", lambda p: Image.new("L", (7200, 7200)).save(p), "over the limit")
    good("09_gray16.png", lambda p: _sixteen_bit_gray(p, coffee))
    good("10_palette_transparent.png", _palette_with_transparency)
    good("11_animated.gif", _animated_gif)
    good("12_exif_rotated.jpg", lambda p: p.write_bytes(_exif_rotated(chelsea)))
    bad("13_unreadable.jpg", lambda p: (p.write_bytes(jpeg), os.chmod(p, 0)), "permission denied")
    good("14_rgba.png", lambda p: coffee.convert("RGBA").save(p))
    good("15_chelsea.bmp", lambda p: chelsea.save(p))
    good("16_chelsea.tiff", lambda p: chelsea.save(p))
    good("17_gray.png", lambda p: chelsea.convert("L").save(p))
    bad("18_folder.jpg", lambda p: p.mkdir(), "directory")
    return expected


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, make_corpus(root)


def refuse_as_root(monkeypatch, unreadable) -> None:
    """As root (CI) chmod 000 stops nothing: make opening a file ``unreadable(path)`` picks fail as for a user."""
    if os.geteuid() != 0:
        return
    import builtins

    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and unreadable(os.fspath(file)):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


@pytest.fixture
def unreadable_as_root(monkeypatch):
    """chmod 000 stops everyone but root; as root (CI), make opening that file fail as it would for a user."""
    refuse_as_root(monkeypatch, lambda path: path.endswith("unreadable.jpg"))


# Seconds each file's tests took on 2 cores (`pytest --durations=0`, summed by file), for the
# files over 15 s: Ray start-ups, fine-tuning runs, kills at every crash point, fresh processes.
LONGEST_FIRST = {"test_scale_pipeline": 97, "test_scale_cluster": 74, "test_finetune_run": 68, "test_onnx_runtime": 65,
                 "test_crash": 62, "test_docs": 59, "test_lkft": 55, "test_finetune_cli": 51, "test_registry": 49,
                 "test_scale_faults": 43, "test_training": 36, "test_formats": 35, "test_powercut": 34,
                 "test_ondisk": 30, "test_serve_api": 28, "test_advise": 27, "test_faiss_index": 25,
                 "test_embed_pool": 24, "test_transparency": 23, "test_cli_store": 20, "test_jpeg": 19,
                 "test_indexing": 17, "test_watch": 16}


def pytest_collection_modifyitems(items):
    """The longest files first, then the rest with the most slow tests first (each file's own order kept).

    scripts/test hands whole files to two pytest-xdist workers in this order
    (``--no-loadscope-reorder``): the longest first, so that neither worker ends alone on one;
    xdist's own order, by the number of tests in a file, started the one-test Ray and
    fine-tuning files last, while the other worker sat idle.
    """
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))

    def rank(item):
        return (-LONGEST_FIRST.get(item.path.stem, 0), -slow[item.path], str(item.path))

    items.sort(key=rank)
