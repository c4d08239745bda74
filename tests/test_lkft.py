"""The .lkft file: what it holds, --model OUT.lkft wherever a model goes, predict through the fine-tuned head,
and a tampered file refused with a reason."""

import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from finetune_data import TINY, textures
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lookalike import create_extractor
from lookalike.cli import main
from lookalike.errors import ModelFileError
from lookalike.featurize import get_model_spec
from lookalike.featurize.images.decode import load_image
from lookalike.featurize.models.backbone import build_backbone
from lookalike.featurize.models.finetuned import content_sha256, read_finetuned
from lookalike.finetune import FinetuneConfig, finetune
from lookalike.finetune.head import EmbeddingHead
from lookalike.training import predict


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tiny fine-tune of Lite0 on texture crops, shared (read-only) by this module's tests."""
    root = textures(tmp_path_factory.mktemp("set"), per_class=3)
    result = finetune(root, tmp_path_factory.mktemp("model") / "textures.lkft", FinetuneConfig(**TINY), device="cpu",
                      workers=0)
    return result.model_path, root


def test_the_file_is_safetensors_with_the_spec_classes_configuration_and_report(tuned):
    path, _ = tuned
    with safe_open(str(path), framework="pt") as f:
        metadata, names = f.metadata(), list(f.keys())
    document = json.loads(metadata["document"])
    assert metadata["format"] == "lookalike.finetuned" and len(metadata["sha256"]) == 64
    assert document["spec"]["base_model"] == "efficientnet_lite0" and document["spec"]["layer"] == "flatten"
    assert document["spec"]["preprocessing"]["crop_size"] == 64 and document["classes"] == ["brick", "grass", "gravel"]
    assert document["spec"]["preprocessing"]["resize_size"] == round(256 * 64 / 224)  # --image-size 64, Lite0's 256/224
    assert document["config"]["layer_decay"] == 0.6 and document["report"]["history"]
    base = get_model_spec("efficientnet_lite0").builder().state_dict()
    assert sorted(n for n in names if n.startswith("body.")) == sorted("body." + k for k in base)
    assert {n for n in names if n.startswith("head.")} == {"head.weight", "head.bias"}


def test_model_lkft_builds_the_finetuned_body_and_stores_record_its_sha256(tuned):
    path, root = tuned
    model = read_finetuned(path)
    extractor = create_extractor(str(path), device="cpu", workers=0)
    base = create_extractor("efficientnet_lite0", device="cpu", workers=0)
    # known by its weights, never by where the file lies
    assert extractor.spec.model == "finetuned:" + model.document["spec"]["weights_sha256"][:16]
    assert extractor.spec.layer == "flatten" and extractor.dim == 1280
    assert extractor.spec.preprocessing.crop_size == 64  # embedded at the size it was tuned at
    assert extractor.spec.weights_sha256 == model.document["spec"]["weights_sha256"] != base.spec.weights_sha256
    assert model.document["spec"]["base_weights_sha256"] == base.spec.weights_sha256
    image = Image.open(next(root.rglob("*.png"))).convert("RGB")
    pre = extractor.spec.preprocessing
    with torch.inference_mode():  # the pretrained body on the same 64 px pixels
        before = torch.nn.functional.normalize(build_backbone(get_model_spec("efficientnet_lite0")).module(
            pre.normalize(pre(image)[None])), dim=1).numpy()
    cosine = (extractor.embed_images([image]) @ before.T).item()
    assert 0.5 < cosine < 0.99999  # the tuned body moved the embedding, not beyond recognition


def test_predict_is_the_trained_head_on_the_finetuned_body(tuned):
    """The reference is torch: the body built from the file's weights and the training head module."""
    path, root = tuned
    model = read_finetuned(path)
    paths = sorted(str(p) for p in root.rglob("*.png"))[::3]
    predictions, failures = predict(path, paths, top=3, device="cpu", workers=0)
    assert failures == [] and len(predictions) == len(paths)

    spec = model.spec(get_model_spec("efficientnet_lite0"))
    body = build_backbone(spec).module.eval()
    head = EmbeddingHead(1280, 3)
    head.linear.weight.data = torch.from_numpy(model.head_weight)
    head.linear.bias.data = torch.from_numpy(model.head_bias)
    pixels = torch.stack([spec.preprocessing(load_image(p, draft_size=spec.preprocessing.resize_size)) for p in paths])
    with torch.inference_mode():
        reference = torch.softmax(head(body(spec.preprocessing.normalize(pixels))), dim=1).numpy()
    for row, prediction in zip(reference, predictions):
        order = np.argsort(-row)
        assert prediction.labels == [model.classes[i] for i in order]
        assert prediction.probabilities == pytest.approx(row[order].tolist(), abs=1e-4)


def test_model_lkft_works_for_embed_train_and_layers(tuned, tmp_path):
    path, root = tuned
    runner = CliRunner()
    result = runner.invoke(main, ["embed", str(root / "brick"), "-o", str(tmp_path / "v.npz"), "--model", str(path),
                                  "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    spec = json.loads(str(np.load(tmp_path / "v.npz")["spec"]))
    digest = read_finetuned(path).document["spec"]["weights_sha256"]
    assert spec["model"] == "finetuned:" + digest[:16] and spec["weights_sha256"] == digest

    data = textures(tmp_path / "set", per_class=4)
    result = runner.invoke(main, ["train", str(data), "-o", str(tmp_path / "m.skops"), "--model", str(path), "--folds", "3",
                                  "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "3-fold cross-validation on 12 images" in result.output
    result = runner.invoke(main, ["predict", str(tmp_path / "m.skops"), str(data / "grass"), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert {row["labels"][0] for row in json.loads(result.output)} == {"grass"}

    result = runner.invoke(main, ["layers", str(path)])
    assert result.exit_code == 0 and "_blocks.15" in result.output.split()


def test_a_head_on_an_earlier_layer_embeds_at_that_layer(tmp_path):
    root = textures(tmp_path / "set", per_class=2)
    config = FinetuneConfig(**{**TINY, "epochs": 0, "val_fraction": 0.5}, layer="_blocks.13")
    result = finetune(root, tmp_path / "early.lkft", config, device="cpu", workers=0)
    extractor = create_extractor(str(result.model_path), device="cpu", workers=0, runtime="torch")
    assert (extractor.spec.layer, extractor.dim) == ("_blocks.13", 192)
    predictions, _ = predict(result.model_path, [str(next((root / "grass").iterdir()))], device="cpu", workers=0,
                             runtime="torch")
    assert len(predictions[0].labels) == 3


def _rewrite(path, out, *, tensors=None, metadata=None, resign=False):
    """A copy with other tensors or metadata; ``resign`` recomputes the digest (as a careful forger would)."""
    with safe_open(str(path), framework="pt") as f:
        old_metadata = f.metadata()
    tensors = tensors if tensors is not None else load_file(path)
    metadata = {**old_metadata, **(metadata or {})}
    if resign:
        metadata["sha256"] = content_sha256(tensors, metadata["document"])
    save_file(tensors, out, metadata=metadata)
    return out


def _written(out, data: bytes):
    out.write_bytes(data)
    return out


def _flip_a_weight_byte(path, out):
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    data[8 + header + 1000] ^= 0x01  # a byte of the first tensor's data
    out.write_bytes(bytes(data))
    return out


def _renamed_class(path, out):
    with safe_open(str(path), framework="pt") as f:
        document = json.loads(f.metadata()["document"])
    document["classes"][0] = "bricks"
    return _rewrite(path, out, metadata={"document": json.dumps(document, sort_keys=True)})


@pytest.mark.parametrize("tamper, reason", [
    (_flip_a_weight_byte, "changed after it was written"),
    (_renamed_class, "changed after it was written"),
    (lambda p, out: _rewrite(p, out, tensors={**load_file(p), "head.bias": torch.zeros(3)}), "changed after it was written"),
    (lambda p, out: _rewrite(p, out, metadata={"format_version": "2"}, resign=True), "format 2"),
    (lambda p, out: _written(out, p.read_bytes()[: p.stat().st_size // 2]), "not a readable .lkft"),  # truncated
    (lambda p, out: torch.save({"x": torch.zeros(2)}, out) or out, "not a readable .lkft"),  # a pickle
    (lambda p, out: _written(out, b""), "not a readable .lkft"),
])
def test_a_tampered_or_broken_file_is_refused_with_a_reason(tuned, tmp_path, tamper, reason):
    path, root = tuned
    bad = tamper(path, tmp_path / "bad.lkft")
    with pytest.raises(ModelFileError, match=reason):
        read_finetuned(bad)
    with pytest.raises(ModelFileError, match=reason):
        create_extractor(str(bad), device="cpu")
    image = str(next(root.rglob("*.png")))
    result = CliRunner().invoke(main, ["predict", str(bad), image, "--device", "cpu"])
    assert result.exit_code == 1 and reason in result.stderr and "Traceback" not in result.output


def test_an_intact_copy_elsewhere_reads_and_weights_are_refused(tuned, tmp_path):
    path, _ = tuned
    copy = shutil.copy(path, tmp_path / "copy.lkft")
    assert read_finetuned(copy).classes == ["brick", "grass", "gravel"]
    with pytest.raises(ModelFileError, match="holds its own weights"):
        create_extractor(str(copy), weights=str(copy), device="cpu")
    with pytest.raises(ModelFileError, match="no fine-tuned model"):
        read_finetuned(tmp_path / "missing.lkft")


def _lookalike(*args, cwd) -> subprocess.CompletedProcess:
    """``lookalike`` in a fresh process, from ``cwd``."""
    return subprocess.run([sys.executable, "-m", "lookalike", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_same_lkft_named_from_two_folders_is_the_same_model(tuned, tmp_path):
    """`index DIR --model ./x.lkft` twice, from two working directories: the second adds nothing, refuses nothing."""
    path, root = tuned
    photos = tmp_path / "photos"
    shutil.copytree(root / "brick", photos)
    images = len(list(photos.iterdir()))
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(path, tmp_path / "a" / "ft.lkft")
    first = _lookalike("index", "../photos", "--model", "./ft.lkft", "--device", "cpu", "--workers", "0",
                       cwd=tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert f"{images} added" in first.stdout
    second = _lookalike("index", "../../photos", "--model", "../ft.lkft", "--device", "cpu", "--workers", "0",
                        cwd=tmp_path / "a" / "b")
    assert second.returncode == 0, second.stderr
    assert "0 added" in second.stdout and "0 embedded" in second.stdout


def test_a_moved_lkft_is_named_once_and_the_store_follows(tuned, tmp_path):
    """The file moves: a query of a new image says so in one line naming --model; `index --model NEWPATH` then
    adds nothing, raises nothing, and records the new place, so the query works again."""
    path, root = tuned
    photos = tmp_path / "photos"
    shutil.copytree(root / "brick", photos)
    shutil.copy(path, tmp_path / "ft.lkft")
    assert _lookalike("index", photos, "--model", tmp_path / "ft.lkft", "--device", "cpu", "--workers", "0",
                      cwd=tmp_path).returncode == 0
    (tmp_path / "moved").mkdir()
    (tmp_path / "ft.lkft").rename(tmp_path / "moved" / "ft.lkft")
    outside = tmp_path / "new.png"
    shutil.copy(next((root / "grass").iterdir()), outside)
    lost = _lookalike("query", outside, "--store", photos, cwd=tmp_path)
    assert lost.returncode == 1 and lost.stderr.count("\n") == 1 and "--model NEWPATH" in lost.stderr
    assert "Traceback" not in lost.stderr
    again = _lookalike("index", photos, "--model", tmp_path / "moved" / "ft.lkft", "--device", "cpu", "--workers", "0",
                       cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 added" in again.stdout and "0 embedded" in again.stdout
    found = _lookalike("query", outside, "--store", photos, "-k", "2", "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 2
