"""The round trip in fresh processes: finetune -> index --model OUT.lkft -> query and predict; the store
records the fine-tuned weights and refuses any other model."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_data import TINY, held_out_textures, textures

from lookalike.featurize.models.finetuned import read_finetuned
from lookalike.featurize.models.spec import EmbeddingSpec
from lookalike.featurize.runtimes.onnx_cache import export_key, model_path
from lookalike.finetune import FinetuneConfig, finetune

LOOKALIKE = [sys.executable, "-m", "lookalike"]


def _run(*args, check=True):
    done = subprocess.run([*LOOKALIKE, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_finetune_then_index_query_and_predict_in_fresh_processes(tmp_path):
    root = textures(tmp_path / "labelled", per_class=3)
    model = tmp_path / "textures.lkft"
    done = _run("finetune", root, "-o", model, "--head-epochs", "1", "--epochs", "1", "--unfreeze", "1",
                "--val-fraction", "0.34", "--batch-size", "4", "--device", "cpu", "--workers", "0")  # Lite0's 224 px
    assert "validation on 3 images" in done.stdout and model.exists()
    tuned_sha = read_finetuned(model).document["spec"]["weights_sha256"]

    photos = tmp_path / "photos"
    shutil.copytree(root, photos)
    _run("index", photos, "--model", model, "--device", "cpu", "--workers", "0")
    manifest = json.loads((photos / ".lookalike" / "manifest.json").read_text())
    # the model is known by its weights; the manifest says where its file was given
    assert manifest["spec"]["model"] == "finetuned:" + tuned_sha[:16] and manifest["spec"]["weights_sha256"] == tuned_sha
    assert manifest["model_file"] == str(model.resolve())
    # On the CPU the fine-tuned network runs on ONNX Runtime like any model, exported once under a key
    # made of its weights' sha256 (and layer, preprocessing, versions), so the fresh processes below reuse it.
    assert manifest["spec"]["versions"]["runtime"] == "onnxruntime"
    spec = EmbeddingSpec.from_dict(manifest["spec"])
    export = model_path(spec)
    assert export.is_file() and export.name == f"finetuned_{tuned_sha[:16]}-{export_key(spec)}.onnx"

    held_out = held_out_textures(tmp_path / "new")
    query = next(p for p, label in held_out.items() if label == "grass")  # not in the store: embedded by the .lkft
    exported = export.stat().st_mtime_ns
    hits = json.loads(_run("query", query, "-k", "3", "--json", "--store", photos / ".lookalike").stdout)
    assert [Path(h["path"]).parent.name for h in hits] == ["grass"] * 3  # all the grass there is

    done = _run("predict", model, *held_out, "--json", "--device", "cpu")
    assert "runs on torch" not in done.stderr  # the cached export, not a fallback
    predicted = json.loads(done.stdout)
    assert {Path(p["path"]).name: p["labels"][0] for p in predicted} == {Path(k).name: v for k, v in held_out.items()}
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-3 for p in predicted)
    assert export.stat().st_mtime_ns == exported  # query and predict found the export: none was made again

    refused = _run("index", photos, "--model", "efficientnet_lite0", "--device", "cpu", check=False)
    assert refused.returncode == 1 and "this store holds vectors from" in refused.stderr

    # Another fine-tune written over the same path: the file the store names is now another model
    # (no validation split, so the last epoch, with a trained block, is kept).
    config = FinetuneConfig(**{**TINY, "image_size": None, "val_fraction": 0.0})
    other = finetune(root, tmp_path / "other.lkft", config, device="cpu", workers=0)
    shutil.copy(other.model_path, model)
    shutil.copy(next(iter(held_out)), photos / "grass" / "new.png")
    refused = _run("index", photos, "--device", "cpu", "--workers", "0", check=False)
    assert refused.returncode == 1 and "is now another model" in refused.stderr and "Traceback" not in refused.stderr
