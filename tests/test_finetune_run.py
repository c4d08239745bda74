"""Fine-tuning runs: determinism, BatchNorm statistics, the files written, bad input, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from finetune_data import TINY, textures
from safetensors import safe_open
from safetensors.torch import load_file

from lookalike.cli import main
from lookalike.errors import CheckpointError, DatasetError
from lookalike.featurize import get_model_spec
from lookalike.featurize.models.weights import load_state_dict
from lookalike.finetune import FinetuneConfig, finetune
from lookalike.finetune.checkpoint import checkpoint_path

LOOKALIKE = [sys.executable, "-m", "lookalike"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs on one set: the default twice (0 and 1 decoding workers), and --train-bn."""
    root = textures(tmp_path_factory.mktemp("set"), per_class=3)
    out = tmp_path_factory.mktemp("runs")
    made = {}
    for name, options, workers in (("a", {}, 0), ("b", {}, 1), ("bn", {"train_bn": True}, 0)):
        made[name] = finetune(root, out / f"{name}.lkft", FinetuneConfig(**TINY, **options), device="cpu", workers=workers)
    return made


def _body(result) -> dict[str, torch.Tensor]:
    """The network's tensors in a .lkft, by the base model's names."""
    return {k[5:]: v for k, v in load_file(result.model_path).items() if k.startswith("body.")}


@pytest.fixture(scope="module")
def base_state():
    return load_state_dict(get_model_spec("efficientnet_lite0"))


def test_the_same_seed_gives_the_same_weights_whatever_the_workers(runs, base_state):
    a, b = load_file(runs["a"].model_path), load_file(runs["b"].model_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["body._conv_head.weight"], base_state["_conv_head.weight"])  # it did train


def _trained(result):
    """Is this parameter or buffer name in a block the run trained? (read off the base model's blocks)"""
    from lookalike.finetune.blocks import find_blocks

    names = set(result.report["trained_blocks"])
    blocks = [b for b in find_blocks(get_model_spec("efficientnet_lite0").builder()) if b.name in names]
    return lambda key: any(b.owns(key.rsplit(".", 1)[0]) for b in blocks)


def test_batchnorm_statistics_are_frozen_by_default_and_move_with_train_bn(runs, base_state):
    assert runs["a"].report["trained_blocks"] == ["_conv_head"]  # the head convolution and its batch norm, _bn1
    trained = _trained(runs["a"])
    statistics = [k for k in base_state if k.endswith(("running_mean", "running_var"))]
    default, with_bn = _body(runs["a"]), _body(runs["bn"])
    assert all(torch.equal(default[k], base_state[k]) for k in statistics)
    moved = [k for k in statistics if not torch.equal(with_bn[k], base_state[k])]
    assert sorted(moved) == ["_bn1.running_mean", "_bn1.running_var"]  # the trained block's, and only those
    assert all(torch.equal(with_bn[k], base_state[k]) for k in statistics if not trained(k))


def test_frozen_blocks_keep_their_weights_and_trained_ones_change(runs, base_state):
    body = _body(runs["a"])
    trained = _trained(runs["a"])
    weights = [k for k in base_state if k.endswith("weight") and not k.startswith("_fc")]
    assert all(torch.equal(body[k], base_state[k]) for k in weights if not trained(k))
    assert [k for k in weights if trained(k)] == ["_conv_head.weight", "_bn1.weight"]
    assert all(not torch.equal(body[k], base_state[k]) for k in weights if trained(k))
    assert torch.equal(body["_fc.weight"], base_state["_fc.weight"])  # the ImageNet classifier rides along untouched


def test_a_run_writes_the_model_its_report_and_curves_and_leaves_no_checkpoint(runs):
    result = runs["a"]
    path = result.model_path
    for suffix in (".report.json", ".curves.png", ".confusion.png"):
        assert (path.parent / (path.name + suffix)).stat().st_size > 1000
    assert not checkpoint_path(path).exists()
    report = json.loads((path.parent / (path.name + ".report.json")).read_text())
    assert [(r["stage"], r["epoch"]) for r in report["history"]] == [("head", 1), ("finetune", 1)]
    assert report["recipe"]["augmentation"]["strength"] == "strong" and "under 500" in report["recipe"]["reason"]
    assert report["train_images"] == 6 and report["validation_images"] == 3
    assert report["validation"]["samples"] == 3 and report["classes"] == ["brick", "grass", "gravel"]
    assert report["spec"]["base_model"] == "efficientnet_lite0" and report["spec"]["layer"] == "flatten"


def test_bad_images_are_skipped_with_reasons_and_listed(tmp_path):
    root = textures(tmp_path / "set", per_class=3)
    (root / "grass" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "gravel" / "notes.png").write_text("not an image")
    out = tmp_path / "m.lkft"
    result = CliRunner().invoke(main, ["finetune", str(root), "-o", str(out), "--head-epochs", "1", "--epochs", "0",
                                       "--val-fraction", "0.34", "--image-size", "64", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and "broken.png" in result.stderr and "notes.png: not an image" in result.stderr
    report = json.loads((tmp_path / "m.lkft.report.json").read_text())
    assert sorted(Path(s["path"]).name for s in report["skipped"]) == ["broken.png", "notes.png"]
    assert all(s["reason"] for s in report["skipped"]) and report["train_images"] + report["validation_images"] == 9


@pytest.mark.parametrize("counts, message", [
    ({"brick": 3, "grass": 1}, "class 'grass' has 1 readable image"),
    ({"brick": 3}, "at least two classes"),
])
def test_too_few_images_is_one_clear_error_before_any_model_is_built(tmp_path, counts, message, monkeypatch):
    root = tmp_path / "set"
    for name, n in counts.items():
        textures(root, per_class=n, classes=(name,))
    import lookalike.featurize.models.backbone as backbone

    monkeypatch.setattr(backbone, "build_backbone", lambda *a, **k: pytest.fail("a model was built"))
    result = CliRunner().invoke(main, ["finetune", str(root), "-o", str(tmp_path / "m.lkft"), "--device", "cpu"])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output
    with pytest.raises(DatasetError):
        finetune(root, tmp_path / "m.lkft", device="cpu")


def test_a_broken_image_that_leaves_a_class_with_one_is_the_same_error(tmp_path):
    root = textures(tmp_path / "set", per_class=2)
    os.replace(root / "grass" / sorted(os.listdir(root / "grass"))[0], root / "grass" / "x.png")
    (root / "grass" / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="class 'grass' has 1 readable image"):
        finetune(root, tmp_path / "m.lkft", device="cpu")


def test_a_checkpoint_in_the_way_needs_resume_and_a_damaged_one_is_refused(tmp_path):
    root = textures(tmp_path / "set", per_class=2)
    out = tmp_path / "m.lkft"
    checkpoint_path(out).write_bytes(b"half a checkpoint")
    with pytest.raises(CheckpointError, match="add --resume"):
        finetune(root, out, device="cpu")
    with pytest.raises(CheckpointError, match="damaged"):
        finetune(root, out, device="cpu", resume=True)


def _finished_epochs(checkpoint: Path) -> int:
    try:
        with safe_open(str(checkpoint), framework="pt") as f:
            return len(json.loads(f.metadata()["document"])["history"])
    except Exception:  # noqa: BLE001 - not there yet
        return 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    root = textures(tmp_path / "set", per_class=3)
    out = tmp_path / "killed.lkft"
    settings = ["--head-epochs", "1", "--epochs", "3", "--unfreeze", "1", "--batch-size", "2", "--val-fraction", "0.34",
                "--image-size", "64"]
    args = [*LOOKALIKE, "finetune", str(root), "-o", str(out), *settings, "--device", "cpu", "--workers", "0"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = checkpoint_path(out)
    deadline = time.monotonic() + 300
    while _finished_epochs(checkpoint) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the third epoch's steps (one more to go after it)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    done = _finished_epochs(checkpoint)
    assert 2 <= done < 4 and not out.exists()  # killed mid-run, the last finished epoch saved

    refused = subprocess.run([*args, "--resume", "--lr", "0.5"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "other settings" in refused.stderr and "lr: 0.0001 then, 0.5 now" in refused.stderr
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after {done} finished epochs" in resumed.stdout and not checkpoint.exists()

    # The reference is a fresh process too: this test process's torch may carry state (threads,
    # flags) from tests run before it in the same worker, and that moves weights by 1e-5.
    uninterrupted_path = tmp_path / "uninterrupted.lkft"
    reference = [*LOOKALIKE, "finetune", str(root), "-o", str(uninterrupted_path), *settings, "--device", "cpu", "--workers", "0"]
    assert subprocess.run(reference, capture_output=True, text=True, timeout=300).returncode == 0
    history = json.loads((tmp_path / "killed.lkft.report.json").read_text())["history"]
    expected = json.loads((tmp_path / "uninterrupted.lkft.report.json").read_text())["history"]
    assert len(history) == len(expected) == 4
    for mine, theirs in zip(history, expected):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-5), (mine, theirs)
    killed, uninterrupted = load_file(out), load_file(uninterrupted_path)
    worst = max(float((killed[k] - uninterrupted[k]).abs().max()) for k in uninterrupted)
    assert worst <= 1e-5, f"weights differ by up to {worst:g}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fine_tunes_with_amp_and_channels_last(tmp_path):
    root = textures(tmp_path / "set")
    result = finetune(root, tmp_path / "gpu.lkft", FinetuneConfig(**TINY), device="cuda", workers=2)
    assert len(result.report["history"]) == 2 and result.report["validation"]["samples"] == 3


def test_the_cli_prints_the_recipe_the_epochs_and_the_validation_report(tmp_path):
    root = textures(tmp_path / "set", per_class=3)
    result = CliRunner().invoke(main, ["finetune", str(root), "-o", str(tmp_path / "m.lkft"), "--head-epochs", "1",
                                       "--epochs", "0", "--val-fraction", "0.25", "--image-size", "64", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "head 1/1: train loss" in result.stderr and "val loss" in result.stderr
    assert "recipe: 1 head epochs, then 0" in result.stdout and "strong augmentation" in result.stdout
    assert "validation on 3 images" in result.stdout and "model -> " in result.stdout
