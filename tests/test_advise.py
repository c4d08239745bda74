"""advise on handwritten digits (unlike ImageNet): each tap embedded once, and its numbers are what
`train` and `finetune` reach on their own with the same folds."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from finetune_data import digits, textures

from lookalike.cli import main
from lookalike.featurize.models.finetuned import read_finetuned
from lookalike.featurize.options import EmbedOptions
from lookalike.finetune import FinetuneConfig, finetune_images
from lookalike.finetune.advise import advise, auto_layers, folds_for
from lookalike.training import evaluate, train

OPTIONS = EmbedOptions(device="cpu", workers=0, runtime="torch")  # no ONNX exports: these tests are about the recipes
LAYERS = ["embedding", "_blocks.11"]


@pytest.fixture(scope="module")
def digit_set(tmp_path_factory):
    """3 digits x 6 images: 32x32 ink on white, from scikit-learn's bundled set."""
    return digits(tmp_path_factory.mktemp("digits"), per_class=6, classes=(0, 1, 7))


@pytest.fixture(scope="module")
def first(digit_set):
    return advise(digit_set, models=["efficientnet_lite0"], layers=LAYERS, folds=3, options=OPTIONS)


def test_auto_layers_are_the_embedding_and_earlier_blocks_spread_over_depth():
    assert auto_layers("efficientnet_lite0") == [None, "_blocks.14", "_blocks.11", "_blocks.8"]
    assert auto_layers("resnet18") == [None, "layer4.0", "layer3.1", "layer2.1"]


def test_every_tap_is_embedded_once_and_a_rerun_embeds_nothing(digit_set, first, monkeypatch):
    assert first.embedded == 18 * 2
    assert len(first.rows) == 2 * 3 and {r.recipe for r in first.rows} == {"svm", "logreg", "knn"}
    accuracies = [round(r.accuracy, 9) for r in first.rows]
    assert accuracies == sorted(accuracies, reverse=True)
    import lookalike.featurize

    monkeypatch.setattr(lookalike.featurize, "create_extractor", lambda *a, **k: pytest.fail("the CNN ran again"))
    again = advise(digit_set, models=["efficientnet_lite0"], layers=LAYERS, folds=3, options=OPTIONS)
    assert again.embedded == 0
    assert [(r.layer, r.recipe, r.accuracy) for r in again.rows] == [(r.layer, r.recipe, r.accuracy) for r in first.rows]


def test_the_frozen_rows_are_what_train_reaches_on_its_own(digit_set, first, tmp_path):
    """`train` cross-validates with the same folds: its accuracy for each (layer, classifier) is advise's."""
    reached = []
    for row in first.rows:
        layer = None if row.layer == "flatten" else row.layer
        result = train(digit_set, tmp_path / f"{row.recipe}.skops", classifier=row.recipe, k=5 if row.recipe == "knn" else None,
                       folds=3, store=row.store, layer=layer, options=OPTIONS)
        assert result.report["accuracy"] == pytest.approx(row.accuracy, abs=1e-9), row  # equal folds: mean = pooled
        reached.append(result.report["accuracy"])
    reached = [round(a, 9) for a in reached]
    assert reached == sorted(reached, reverse=True)  # the same ranking


def test_the_command_is_ready_to_paste_and_json_and_chart_are_written(digit_set, first, tmp_path):
    best = first.rows[0]
    assert first.command.startswith(f"lookalike train {digit_set} -o model.skops --model efficientnet_lite0")
    assert f"--classifier {best.recipe}" in first.command and f"--store {best.store}" in first.command
    result = CliRunner().invoke(main, ["advise", str(digit_set), "--models", "efficientnet_lite0", "--layers",
                                       ",".join(LAYERS), "--folds", "3", "--device", "cpu", "--workers", "0",
                                       "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["rank", "model", "layer", "recipe", "accuracy", "macro-F1", "time"]
    assert f"{best.accuracy:.3f} ± {best.accuracy_std:.3f}" in lines[1] and "0 images embedded now" in result.output
    assert first.command in result.output
    saved = json.loads((tmp_path / "advice.json").read_text())
    assert [r["accuracy"] for r in saved["rows"]] == [r.accuracy for r in first.rows]
    assert (tmp_path / "advice.png").stat().st_size > 5000


@pytest.mark.slow
def test_the_finetune_row_is_what_finetune_reaches_on_its_own(digit_set, tmp_path):
    config = FinetuneConfig(head_epochs=1, epochs=1, unfreeze=1, batch_size=4, val_fraction=0.25, flip=False, image_size=64)
    advice = advise(digit_set, models=["efficientnet_lite0"], layers=["embedding"], classifiers=["svm"], folds=3,
                    finetune=True, finetune_config=config, options=OPTIONS)
    tuned = next(r for r in advice.rows if r.recipe == "finetune")
    assert len(tuned.folds) == 3 and tuned.layer == "flatten"

    # Fold 0 by hand: its training images in a folder of their own, `finetune`, then `evaluate` on the rest.
    from lookalike.classify.labels import read_labelled
    from lookalike.featurize import IMAGE_EXTENSIONS

    images = read_labelled(digit_set, IMAGE_EXTENSIONS)
    paths, labels = np.array(images.paths), np.array(images.labels)
    train_idx, test_idx = next(folds_for(labels, 3, 0).split(paths, labels))
    held_out = tmp_path / "held_out"
    for i in test_idx:
        (held_out / labels[i]).mkdir(parents=True, exist_ok=True)
        shutil.copy(paths[i], held_out / labels[i])
    model = tmp_path / "fold0.lkft"
    finetune_images(list(paths[train_idx]), list(labels[train_idx]), model, config, device="cpu", workers=0)
    report, _ = evaluate(model, held_out, options=OPTIONS)
    assert report["accuracy"] == pytest.approx(tuned.folds[0]["accuracy"], abs=1e-9)
    assert read_finetuned(model).classes == ["0", "1", "7"]
    position = [r.recipe for r in advice.rows].index("finetune")
    svm = next(r for r in advice.rows if r.recipe == "svm")
    assert (position == 0) == (tuned.accuracy > svm.accuracy or (tuned.accuracy == svm.accuracy and tuned.macro_f1 > svm.macro_f1))
    assert "lookalike finetune" in advice.command if position == 0 else "lookalike train" in advice.command


def test_advise_takes_a_finetuned_model_as_a_candidate(tmp_path):
    root = textures(tmp_path / "set", per_class=3)
    config = FinetuneConfig(head_epochs=1, epochs=0, val_fraction=0.34, image_size=64)
    model = tmp_path / "tex.lkft"
    finetune_images([str(p) for p in sorted(root.rglob("*.png"))], [p.parent.name for p in sorted(root.rglob("*.png"))],
                    model, config, device="cpu", workers=0)
    advice = advise(root, models=[str(model)], layers=["embedding"], classifiers=["knn"], folds=3, options=OPTIONS)
    assert advice.rows[0].model == str(model.resolve()) and advice.embedded == 9
