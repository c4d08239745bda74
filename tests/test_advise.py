"""advise on handwritten digits (unlike ImageNet): each tap embedded once, and its numbers are what
`train` and `finetune` reach on their own with the same folds; it names a winner only by more than
the folds' noise, and otherwise recommends the simplest of the tied recipes."""

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
from lookalike.finetune.advise import AdviceRow, advise, auto_layers, folds_for, judge
from lookalike.finetune.verdict import difference_interval
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


def test_three_folds_of_six_digits_tie_and_the_simplest_recipe_is_recommended(first):
    """18 images, 6 per test fold: one image is 0.17 of accuracy, so nothing is told apart."""
    assert first.verdict == "tied" and all(r.tied for r in first.rows)
    recommended = first.rows[first.recommended]
    assert (recommended.layer, recommended.recipe) == ("flatten", "svm")  # the default model's embedding, linear SVM
    assert first.reading.startswith("tied: 6 recipes") and "ImageNet" not in first.reading
    assert all(r.versus_best[0] <= 0 <= r.versus_best[1] for r in first.rows[1:])


def test_the_command_is_ready_to_paste_and_json_and_chart_are_written(digit_set, first, tmp_path):
    recommended = first.rows[first.recommended]
    assert first.command.startswith(f"lookalike train {digit_set} -o model.skops --model efficientnet_lite0")
    assert f"--classifier {recommended.recipe}" in first.command and f"--store {recommended.store}" in first.command
    result = CliRunner().invoke(main, ["advise", str(digit_set), "--models", "efficientnet_lite0", "--layers",
                                       ",".join(LAYERS), "--folds", "3", "--device", "cpu", "--workers", "0",
                                       "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["rank", "model", "layer", "recipe", "accuracy", "macro-F1", "time", "vs", "best"]
    best = first.rows[0]
    assert f"{best.accuracy:.3f} ± {best.accuracy_std:.3f}" in lines[1] and "0 images embedded now" in result.output
    assert lines[1].endswith("best, tied") and all(" tied [" in line for line in lines[2:7])
    assert lines[1 + first.recommended].startswith(f"{first.recommended + 1}* ")
    assert first.command in result.output and "reading: tied: 6 recipes" in result.output
    saved = json.loads((tmp_path / "advice.json").read_text())
    assert [r["accuracy"] for r in saved["rows"]] == [r.accuracy for r in first.rows]
    assert saved["verdict"] == "tied" and saved["recommended"] == first.recommended
    assert [r["versus_best"] for r in saved["rows"]] == [r.versus_best for r in first.rows]
    assert (tmp_path / "advice.png").stat().st_size > 5000


def _row(layer, recipe, accuracies, model="efficientnet_lite0"):
    folds = [{"accuracy": a, "macro_f1": a} for a in accuracies]
    return AdviceRow(model, layer, recipe, float(np.mean(accuracies)), float(np.std(accuracies)), float(np.mean(accuracies)),
                     0.1, folds, store="store")


TAPS = {("efficientnet_lite0", layer): i for i, layer in enumerate(["flatten", "_blocks.14", "_blocks.11", "_blocks.8"])}


def test_the_interval_is_the_paired_t_interval_corrected_for_overlapping_folds():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1; t(0.975, 2 dof) = 4.3027 (a t table); 3 folds: sqrt(1/3 + 1/2)
    low, high = difference_interval([0.9, 0.9, 0.9], [0.8, 0.7, 0.6])
    assert (low, high) == (pytest.approx(0.2 - 4.3027 * 0.1 * 0.912871, abs=1e-4), pytest.approx(0.2 + 0.392777, abs=1e-4))
    # differences 0.14, 0.2, 0.26: the plain interval (sd sqrt(1/3)) would exclude 0 (0.2 - 0.149); corrected, it doesn't
    low, _ = difference_interval([0.9, 0.9, 0.9], [0.76, 0.7, 0.64])
    assert low == pytest.approx(0.2 - 4.3027 * 0.06 * 0.912871, abs=1e-4) and low < 0


def test_a_margin_inside_the_fold_spread_is_a_tie_the_simplest_recipe_and_no_diagnosis():
    """The review's case: an earlier layer ahead by 0.006 on 5 folds that spread by 0.03-0.04."""
    rows = [_row("_blocks.11", "logreg", [0.86, 0.80, 0.83, 0.88, 0.81]),  # mean 0.836
            _row("flatten", "svm", [0.82, 0.84, 0.79, 0.86, 0.84]),  # mean 0.830
            _row("_blocks.14", "knn", [0.87, 0.77, 0.84, 0.83, 0.80]),  # mean 0.822
            _row("_blocks.8", "knn", [0.52, 0.49, 0.50, 0.55, 0.47])]  # far behind on every fold
    verdict, reading = judge(rows, TAPS)
    assert not verdict.winner and verdict.tied == [0, 1, 2] and verdict.recommended == 1
    assert [r.tied for r in rows] == [True, True, True, False] and rows[3].versus_best[0] > 0.25
    assert reading.startswith("tied: 3 recipes") and "svm on efficientnet_lite0 @ flatten" in reading
    assert "ImageNet" not in reading and "can't tell" in reading

    consistent = [_row("_blocks.11", "svm", [0.9, 0.9, 0.9]), _row("flatten", "svm", [0.76, 0.7, 0.64])]
    verdict, _ = judge(consistent, TAPS)  # ahead by 0.14 to 0.26 on 3 folds: still within the noise of 3 folds
    assert not verdict.winner and verdict.recommended == 1


def test_a_margin_beyond_the_fold_spread_names_the_winner_and_only_then_the_data():
    rows = [_row("_blocks.11", "svm", [0.93, 0.90, 0.95, 0.92, 0.91]),
            _row("flatten", "svm", [0.83, 0.81, 0.84, 0.82, 0.80]),  # 0.08 to 0.11 behind on every fold
            _row("flatten", "logreg", [0.80, 0.79, 0.83, 0.80, 0.78])]
    verdict, reading = judge(rows, TAPS)
    assert verdict.winner and verdict.recommended == 0 and [r.tied for r in rows] == [True, False, False]
    assert reading == ("svm on efficientnet_lite0 @ _blocks.11 wins by more than the folds' noise; an earlier layer "
                       "beats the embedding: data unlike ImageNet (the table's 'earlier layer and an SVM')")

    # Two earlier layers tied, every embedding row beaten: the data is unlike ImageNet all the same,
    # and of the two the layer nearer the embedding is recommended.
    rows = [_row("_blocks.11", "svm", [0.93, 0.90, 0.95, 0.92, 0.91]), _row("_blocks.14", "svm", [0.92, 0.91, 0.94, 0.92, 0.90]),
            _row("flatten", "svm", [0.83, 0.81, 0.84, 0.82, 0.80])]
    verdict, reading = judge(rows, TAPS)
    assert verdict.tied == [0, 1] and verdict.recommended == 1 and "data unlike ImageNet" in reading

    # A winner among embedding rows alone: no earlier layer was measured, so nothing is said of the data.
    rows = [_row("flatten", "svm", [0.93, 0.90, 0.95, 0.92, 0.91]), _row("flatten", "knn", [0.83, 0.81, 0.84, 0.82, 0.80])]
    verdict, reading = judge(rows, TAPS)
    assert verdict.winner and reading == "svm on efficientnet_lite0 @ flatten wins by more than the folds' noise"


@pytest.mark.parametrize("simpler, other", [
    (("flatten", "svm", "efficientnet_lite0"), ("flatten", "finetune", "efficientnet_lite0")),  # frozen before a fine-tune
    (("flatten", "svm", "efficientnet_lite0"), ("flatten", "svm", "resnet18")),  # the default model first
    (("flatten", "knn", "resnet18"), ("flatten", "svm", "resnet50")),  # then fewer parameters: 11.7M, 25.6M
    (("flatten", "knn", "efficientnet_lite0"), ("_blocks.14", "svm", "efficientnet_lite0")),  # the embedding first
    (("_blocks.14", "knn", "efficientnet_lite0"), ("_blocks.11", "svm", "efficientnet_lite0")),  # then nearer it
    (("flatten", "logreg", "efficientnet_lite0"), ("flatten", "knn", "efficientnet_lite0")),  # then svm, logreg, knn
])
def test_of_tied_recipes_the_simplest_is_recommended(simpler, other):
    for ranked in ((simpler, other), (other, simpler)):  # whichever ranks first: the same folds, a tie
        rows = [_row(layer, recipe, [0.8, 0.9, 0.85], model=model) for layer, recipe, model in ranked]
        verdict, _ = judge(rows, TAPS)
        chosen = rows[verdict.recommended]
        assert verdict.tied == [0, 1] and (chosen.layer, chosen.recipe, chosen.model) == simpler


def test_a_clear_margin_end_to_end_names_the_winner(digit_set, tmp_path, monkeypatch):
    """Vectors made for the purpose: the embedding separates the digits, _blocks.11 is one point for every image
    (the SVM guesses one class: exactly 1/3 of each stratified fold). 1.0 against 0.33 on every fold."""
    import lookalike.training

    def vectors(source, *, store, model, layer, options, on_start, on_batch):
        y = np.array(sorted(p.parent.name for p in digit_set.rglob("*.png")))
        X = (y[:, None] == np.unique(y)[None, :]).astype(np.float32) if layer is None else np.ones((len(y), 3), np.float32)
        return X, y, {"layer": layer or "flatten"}, []

    monkeypatch.setattr(lookalike.training, "labelled_vectors", vectors)
    result = CliRunner().invoke(main, ["advise", str(digit_set), "--models", "efficientnet_lite0", "--layers",
                                       ",".join(LAYERS), "--classifiers", "svm", "--folds", "3", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("1* ") and " flatten " in lines[1] and lines[1].endswith("winner")
    assert lines[2].endswith("behind [+0.667, +0.667]")
    assert ("reading: svm on efficientnet_lite0 @ flatten wins by more than the folds' noise; the embedding beats the "
            "earlier layers: data like ImageNet") in result.output
    saved = json.loads((tmp_path / "advice.json").read_text())
    assert saved["verdict"] == "winner" and saved["recommended"] == 0
    assert [r["accuracy"] for r in saved["rows"]] == [1.0, pytest.approx(1 / 3)]


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
    recommended = advice.rows[advice.recommended]
    assert ("lookalike finetune" in advice.command) == (recommended.recipe == "finetune")


def test_advise_takes_a_finetuned_model_as_a_candidate(tmp_path):
    root = textures(tmp_path / "set", per_class=3)
    config = FinetuneConfig(head_epochs=1, epochs=0, val_fraction=0.34, image_size=64)
    model = tmp_path / "tex.lkft"
    finetune_images([str(p) for p in sorted(root.rglob("*.png"))], [p.parent.name for p in sorted(root.rglob("*.png"))],
                    model, config, device="cpu", workers=0)
    advice = advise(root, models=[str(model)], layers=["embedding"], classifiers=["knn"], folds=3, options=OPTIONS)
    assert advice.rows[0].model == str(model.resolve()) and advice.embedded == 9
