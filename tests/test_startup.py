"""What a fresh process imports: ``lookalike --help`` and the commands that need no network
load neither torch's compiler, torchvision's models nor faiss (where they need no search), and
nothing that runs on the store alone, or on a network already exported to ONNX, imports torch.
Each case runs ``python -m lookalike`` in a subprocess and reads its ``sys.modules`` at exit."""

import json
import os
import subprocess
import sys

import pytest
from conftest import photo

from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder

HEAVY = ("torch", "torchvision", "torchvision.models", "torch._dynamo", "faiss", "onnxruntime")

# Runs the CLI as `python -m lookalike` does, then reports which heavy modules got imported.
_RUN = """
import atexit, json, runpy, sys
atexit.register(lambda: print("MODULES " + json.dumps([m for m in {heavy!r} if m in sys.modules]), file=sys.stderr))
sys.argv = ["lookalike", *sys.argv[1:]]
runpy.run_module("lookalike", run_name="__main__")
"""


def _loaded(*args: str) -> tuple[list[str], subprocess.CompletedProcess]:
    done = subprocess.run([sys.executable, "-c", _RUN.format(heavy=HEAVY), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return json.loads(line.removeprefix("MODULES ")), done


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, onnx_cache_dir):
    """A small indexed folder; the store's network is in the session's ONNX cache."""
    folder = tmp_path_factory.mktemp("indexed")
    for name in ("chelsea", "coffee", "rocket"):
        photo(name).save(folder / f"{name}.jpg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOKALIKE_CACHE", str(onnx_cache_dir))
        index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    return folder


def test_import_and_help_load_no_torch_compiler_models_or_faiss():
    loaded, done = _loaded("--help")
    assert "Usage" in done.stdout
    assert loaded == []
    code = f"import sys, lookalike, lookalike.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip() == "[]"


def test_importtime_shows_no_torch_behind_import_lookalike():
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import lookalike.cli"], capture_output=True,
                          text=True, timeout=120)
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "lookalike.cli" in imported
    assert not imported & {"torch", "torchvision", "faiss", "torch._dynamo"}


def test_reindexing_an_unchanged_folder_imports_no_torch(indexed):
    loaded, done = _loaded("index", str(indexed))
    assert "0 added, 0 updated, 0 removed, 3 unchanged" in done.stdout
    assert "torch" not in loaded and "onnxruntime" not in loaded


def test_querying_an_indexed_image_imports_no_torch(indexed):
    loaded, done = _loaded("query", str(indexed / "coffee.jpg"), "-k", "1")
    assert "chelsea.jpg" in done.stdout or "rocket.jpg" in done.stdout
    assert "torch" not in loaded and "onnxruntime" not in loaded


def test_querying_a_new_image_runs_the_cached_export_without_torch(indexed, tmp_path):
    query = tmp_path / "cat.jpg"
    photo("chelsea").crop((20, 10, 420, 290)).save(query)
    loaded, done = _loaded("query", str(query), "--store", str(indexed / ".lookalike"), "-k", "1")
    assert "chelsea.jpg" in done.stdout.splitlines()[1]  # the cat finds the cat
    assert "onnxruntime" in loaded and "torch" not in loaded


def test_a_new_folders_first_index_runs_the_cached_export_without_torch(indexed, tmp_path):
    """The export of the bundled model made once (by ``indexed``), a new store needs no torch: the spec is remembered."""
    folder = tmp_path / "new"
    folder.mkdir()
    photo("coffee").save(folder / "coffee.jpg")
    loaded, done = _loaded("index", str(folder), "--device", "cpu", "--workers", "0")
    assert "1 added" in done.stdout
    assert "onnxruntime" in loaded and "torch" not in loaded
    spec = json.loads((folder / ".lookalike" / "manifest.json").read_text())["spec"]
    assert spec == json.loads((indexed / ".lookalike" / "manifest.json").read_text())["spec"]  # the same network, exactly
