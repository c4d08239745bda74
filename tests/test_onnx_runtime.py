"""ONNX Runtime as the CPU runtime: the same vectors as torch, an export cache that survives
damage and races, and torch as the fallback for networks the exporter can't take."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch
from click.testing import CliRunner
from conftest import photo

from lookalike import create_extractor
from lookalike.cli import main
from lookalike.errors import LookalikeError, OnnxExportError
from lookalike.featurize import extractor_for_spec
from lookalike.featurize.models import registry
from lookalike.featurize.runtimes.onnx_cache import model_path
from lookalike.featurize.runtimes.onnx_network import open_network

TESTS = Path(__file__).resolve().parent


def _photos():
    return [photo(name) for name in ("chelsea", "coffee", "astronaut", "rocket")]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The tiny test models registered (the registry restored after), with a cache of their own."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    tiny_models.register()
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOOKALIKE_CACHE", str(cache))
    return cache


def _exports(cache: Path) -> list[Path]:
    return sorted((cache / "onnx").glob("*.onnx"))


def test_lite0_on_onnx_runtime_gives_torch_vectors_on_real_photos(lite0, lite0_onnx):
    assert lite0_onnx.runtime == "onnxruntime" and lite0.runtime == "torch"
    onnx, reference = lite0_onnx.embed_images(_photos()), lite0.embed_images(_photos())
    assert _cosines(onnx, reference).min() >= 0.9999
    assert lite0_onnx.spec == lite0.spec  # interchangeable: the runtime is recorded, not compared
    assert lite0_onnx.spec.to_dict()["versions"]["runtime"] == "onnxruntime"


@pytest.mark.parametrize("name, layer", [("resnet18", None), ("efficientnet_lite0", "_blocks.5")])
def test_resnet18_and_a_layer_tap_on_onnx_runtime_give_torch_vectors(name, layer, tmp_path):
    weights = None
    if name == "resnet18":  # random weights: the graph is what is tested
        from torchvision.models import resnet18

        torch.manual_seed(0)
        weights = tmp_path / "resnet18.pth"
        torch.save(resnet18().state_dict(), weights)
    onnx = create_extractor(name, layer=layer, weights=weights, device="cpu", runtime="onnx")
    reference = create_extractor(name, layer=layer, weights=weights, device="cpu", runtime="torch")
    assert onnx.runtime == "onnxruntime" and onnx.spec == reference.spec
    assert _cosines(onnx.embed_images(_photos()), reference.embed_images(_photos())).min() >= 0.9999


def test_many_threads_split_into_sessions_that_keep_keys_and_vectors_in_order(lite0_onnx, corpus_dir):
    root, expected = corpus_dir
    paths = [str(root / name) for name in sorted(expected) if expected[name] is None]
    split = create_extractor(device="cpu", batch_size=3, threads=16, workers=0)
    assert len(split.networks) == 2 and split.threads == 16  # two sessions of 8 threads
    keys, vectors = [], []
    for batch in split.embed_paths(paths):
        keys += batch.keys
        vectors.append(batch.vectors)
    assert keys == paths
    reference = np.concatenate([b.vectors for b in lite0_onnx.embed_paths(paths)])
    np.testing.assert_allclose(np.concatenate(vectors), reference, atol=1e-5)


def test_auto_is_onnx_runtime_on_the_cpu_and_torch_for_what_only_torch_does():
    assert create_extractor(device="cpu").runtime == "onnxruntime"
    assert create_extractor(device="cpu", precision="bf16").runtime == "torch"
    with pytest.raises(LookalikeError, match="runs fp32 on the CPU, not with precision fp16"):
        create_extractor(device="cpu", precision="fp16", runtime="onnx")
    with pytest.raises(LookalikeError, match="runtime must be one of"):
        create_extractor(device="cpu", runtime="tensorrt")


def test_a_network_that_cannot_be_exported_runs_on_torch_after_one_warning(tiny, tmp_path, caplog):
    weights = tmp_path / "zeta.pth"
    model = tiny_models.save_weights(weights, tiny_models.UNEXPORTABLE)
    with caplog.at_level(logging.WARNING, logger="lookalike"):
        extractor = create_extractor(tiny_models.UNEXPORTABLE, weights=weights, device="cpu")
    assert extractor.runtime == "torch"
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "runs on torch: its ONNX export failed" in warning.getMessage()
    assert "zeta" in warning.getMessage() and "\n" not in warning.getMessage()

    # The vectors are torch's own, and the failure is remembered: no second export, one more warning.
    x = extractor.model_spec.preprocessing.normalize(extractor.model_spec.preprocessing(photo("coffee"))[None])
    with torch.inference_mode():
        model.fc = torch.nn.Identity()
        expected = torch.nn.functional.normalize(model(x), dim=1).numpy()
    np.testing.assert_allclose(extractor.embed_images([photo("coffee")]), expected, atol=1e-6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lookalike"):
        assert create_extractor(tiny_models.UNEXPORTABLE, weights=weights, device="cpu").runtime == "torch"
    assert "an earlier export failed" in caplog.text and _exports(tiny) == []
    with pytest.raises(OnnxExportError, match="Use --runtime torch"):
        create_extractor(tiny_models.UNEXPORTABLE, weights=weights, device="cpu", runtime="onnx")


def test_an_export_that_disagrees_with_torch_is_refused_and_torch_runs(tiny, tmp_path, monkeypatch, caplog):
    from lookalike.featurize.runtimes import onnx_export

    weights = tmp_path / "tiny.pth"
    tiny_models.save_weights(weights)
    real = onnx_export.PixelsIn.forward
    monkeypatch.setattr(onnx_export.PixelsIn, "forward", lambda self, pixels: real(self, pixels) + 0.05)  # a wrong graph
    with caplog.at_level(logging.WARNING, logger="lookalike"):
        extractor = create_extractor(tiny_models.TINY, weights=weights, device="cpu")
    assert extractor.runtime == "torch" and _exports(tiny) == []
    assert "disagrees with torch (row cosine" in caplog.text


def test_the_cli_shows_the_fallback_as_one_warning_line(tiny, tmp_path):
    weights = tmp_path / "zeta.pth"
    tiny_models.save_weights(weights, tiny_models.UNEXPORTABLE)
    photo("chelsea").save(tmp_path / "a.jpg")
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "v.npz"),
                                       "--model", tiny_models.UNEXPORTABLE, "--weights", str(weights)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "runs on torch" in warnings[0]
    assert "Traceback" not in result.stderr


def test_other_weights_make_another_export(tiny, tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    tiny_models.save_weights(a, seed=1)
    tiny_models.save_weights(b, seed=2)
    first = create_extractor(tiny_models.TINY, weights=a, device="cpu")
    assert len(_exports(tiny)) == 1
    second = create_extractor(tiny_models.TINY, weights=b, device="cpu")
    assert first.runtime == second.runtime == "onnxruntime"
    assert len(_exports(tiny)) == 2 and first.spec.weights_sha256 != second.spec.weights_sha256
    images = [photo("coffee"), photo("chelsea")]
    for weights, extractor in ((a, first), (b, second)):  # each export is its own weights' network
        reference = create_extractor(tiny_models.TINY, weights=weights, device="cpu", runtime="torch")
        assert _cosines(extractor.embed_images(images), reference.embed_images(images)).min() >= 0.9999


def test_a_damaged_export_is_exported_again(tiny, tmp_path):
    weights = tmp_path / "tiny.pth"
    tiny_models.save_weights(weights)
    extractor = create_extractor(tiny_models.TINY, weights=weights, device="cpu")
    expected = extractor.embed_images([photo("coffee")])
    stored_spec = extractor.spec.to_dict()
    (path,) = _exports(tiny)
    whole = path.read_bytes()
    assert open_network(path, "another key", threads=1, spinning=False) is None  # what the key check refuses
    for damaged in (whole[:-1], os.urandom(len(whole))):  # the last byte lost; every byte wrong
        path.write_bytes(damaged)
        # The torch-free route declines the damaged file; torch builds the network and exports it again.
        again = extractor_for_spec(stored_spec, weights=weights, device="cpu")
        assert again.runtime == "onnxruntime"
        assert open_network(path, path.stem.rsplit("-", 1)[1], threads=1, spinning=False) is not None  # whole again
        np.testing.assert_allclose(again.embed_images([photo("coffee")]), expected, atol=1e-6)


_EXPORT_IN_A_PROCESS = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
sys.path.insert(0, {tests!r})
import tiny_models
tiny_models.register()
from lookalike import create_extractor
from conftest import photo
from pathlib import Path
barrier = Path({barrier!r})
(barrier / sys.argv[1]).touch()
deadline = time.time() + 120
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:  # both start exporting at the same moment
    time.sleep(0.002)
extractor = create_extractor("tiny", weights={weights!r}, device="cpu", runtime="onnx")
print(extractor.embed_images([photo("coffee")]).round(6).tolist())
"""


@pytest.mark.slow
def test_two_processes_exporting_at_once_leave_one_valid_file(tiny, tmp_path):
    weights = tmp_path / "tiny.pth"
    tiny_models.save_weights(weights)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    code = _EXPORT_IN_A_PROCESS.format(tests=str(TESTS), weights=str(weights), barrier=str(barrier))
    env = {**os.environ, "LOOKALIKE_CACHE": str(tiny)}
    processes = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]  # the same vectors
    exported = [err.count("exporting tiny to ONNX") for _, err in outputs]
    assert sorted(exported) == [0, 1], exported  # the lock: one exported, the other waited and loaded it
    files = sorted(p.name for p in (tiny / "onnx").iterdir())
    (export,) = _exports(tiny)
    assert [f for f in files if not f.endswith((".onnx", ".lock"))] == []  # no temporary file left behind
    reference = create_extractor("tiny", weights=weights, device="cpu", runtime="torch").embed_images([photo("coffee")])
    from lookalike.featurize.runtimes.onnx_network import OnnxNetwork

    pixels = create_extractor("tiny", weights=weights, device="cpu", runtime="torch").model_spec.preprocessing.pixels(photo("coffee"))
    features = OnnxNetwork(export, threads=1).run(pixels[None], forward_batch=1)
    assert _cosines(features, reference).min() >= 0.9999


def test_a_store_indexed_with_torch_takes_onnx_additions(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        photo(name).save(folder / f"{name}.jpg")
    runner = CliRunner()
    first = runner.invoke(main, ["index", str(folder), "--runtime", "torch", "--workers", "0"])
    assert first.exit_code == 0, first.output
    photo("rocket").save(folder / "rocket.jpg")
    second = runner.invoke(main, ["index", str(folder), "--runtime", "onnx", "--workers", "0"])
    assert second.exit_code == 0, second.output
    assert "1 added" in second.stdout
    manifest = json.loads((folder / ".lookalike" / "manifest.json").read_text())
    assert manifest["spec"]["versions"]["runtime"] == "torch"  # the store's record keeps its first runtime

    from lookalike import open_store

    store = open_store(folder)
    stored = store.get_vectors([folder / "rocket.jpg"])
    torch_vector = create_extractor(device="cpu", runtime="torch").embed_paths([folder / "rocket.jpg"])
    assert _cosines(stored, next(torch_vector).vectors).min() >= 0.9999
    (hits,) = store.search([str(folder / "rocket.jpg")], k=1)
    assert hits[0].path.endswith("rocket.jpg") and hits[0].score > 0.9999


def test_the_export_key_follows_the_installed_versions(lite0_onnx, monkeypatch):
    from lookalike.featurize.runtimes import onnx_cache

    before = model_path(lite0_onnx.spec)
    real = onnx_cache.installed_versions
    monkeypatch.setattr(onnx_cache, "installed_versions", lambda model: {**real(model), "onnxruntime": "99.0"})
    assert model_path(lite0_onnx.spec) != before
