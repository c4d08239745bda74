"""Classifiers on stored embeddings: real texture photos, CLI train/predict in fresh processes, bad data."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from finetune_data import held_out_textures
from PIL import Image

from lookalike.cli import main
from lookalike.errors import DatasetError, SpecMismatchError
from lookalike.featurize.options import EmbedOptions
from lookalike.training import labelled_vectors, predict, train

TEXTURES = Path(__file__).parent / "data" / "textures"
LOOKALIKE = [sys.executable, "-m", "lookalike"]  # never a console-script lookup that could be missing
OPTIONS = {"options": EmbedOptions(device="cpu", workers=0)}


@pytest.fixture
def textures(tmp_path):
    """A copy, since training keeps its embeddings in a store inside the folder."""
    return Path(shutil.copytree(TEXTURES, tmp_path / "textures"))


def test_cnn_embeddings_beat_raw_pixels_by_a_wide_margin(textures):
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import LinearSVC

    X, y, spec, skipped = labelled_vectors(textures, **OPTIONS)
    assert X.shape == (36, 1280) and skipped == [] and spec["model"] == "efficientnet_lite0"
    paths = sorted(p for p in textures.rglob("*.png"))
    pixels = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() / 255 for p in paths])
    labels = [p.parent.name for p in paths]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    raw = cross_val_score(LinearSVC(), pixels, labels, cv=folds).mean()

    result = train(textures, textures.parent / "model.skops", **OPTIONS)
    assert result.report["accuracy"] >= 0.9
    assert result.report["accuracy"] >= raw + 0.25, (result.report["accuracy"], raw)
    assert result.report["confusion_matrix"] and (textures.parent / "model.skops.confusion.png").exists()


def test_trying_another_classifier_runs_the_cnn_on_nothing(textures, monkeypatch):
    train(textures, textures.parent / "a.skops", **OPTIONS)
    import lookalike.featurize

    monkeypatch.setattr(lookalike.featurize, "create_extractor", lambda *a, **k: pytest.fail("the CNN ran again"))
    result = train(textures, textures.parent / "b.skops", classifier="knn", k=3, **OPTIONS)
    assert result.report["classifier"] == "knn" and result.report["accuracy"] > 0.8


def test_image_embedder_makes_a_pipeline_on_paths(tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    from lookalike.classify.embedder import ImageEmbedder

    paths = sorted(str(p) for p in TEXTURES.rglob("*.png"))
    labels = [Path(p).parent.name for p in paths]
    pipeline = make_pipeline(ImageEmbedder(device="cpu"), LinearSVC()).fit(paths, labels)
    held_out = held_out_textures(tmp_path)
    assert list(pipeline.predict(list(held_out))) == list(held_out.values())


@pytest.mark.slow
def test_train_then_predict_in_fresh_processes(textures, tmp_path):
    model = tmp_path / "textures.skops"
    done = subprocess.run([*LOOKALIKE, "train", str(textures), "-o", str(model), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout and "confusion matrix" in done.stdout
    held_out = held_out_textures(tmp_path)
    (tmp_path / "bad.png").write_text("not an image")
    done = subprocess.run([*LOOKALIKE, "predict", str(model), *held_out, str(tmp_path / "bad.png"), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {Path(r["path"]).name: r["labels"][0] for r in rows} == {Path(p).name: c for p, c in held_out.items()}
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-3 or len(r["probabilities"]) < 3 for r in rows)
    assert "skipped" in done.stderr and "bad.png" in done.stderr


def test_a_model_from_another_featurizer_is_refused(textures, tmp_path):
    from lookalike.classify.persist import load_model, save_model

    model = tmp_path / "m.skops"
    train(textures, model, **OPTIONS)
    saved = load_model(model)
    saved.spec = {**saved.spec, "weights_sha256": "f" * 64}  # as if trained on other weights
    save_model(saved, model)
    with pytest.raises(SpecMismatchError, match="different vectors"):
        predict(model, [str(next(TEXTURES.rglob("*.png")))], device="cpu")


def _make_classes(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            shutil.copy(sorted((TEXTURES / name).glob("*.png"))[i], root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "counts, message",
    [
        ({}, "no labelled images"),
        ({"brick": 3}, "at least two classes"),
    ],
)
def test_unusable_data_is_one_clear_error(tmp_path, counts, message):
    root = _make_classes(tmp_path / "data", counts) if counts else (tmp_path / "data")
    root.mkdir(exist_ok=True)
    result = CliRunner().invoke(main, ["train", str(root), "-o", str(tmp_path / "m.skops"), "--device", "cpu"])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output
    with pytest.raises(DatasetError):
        train(root, tmp_path / "m.skops", **OPTIONS)


def test_a_single_image_class_and_unreadable_images_are_warnings(tmp_path):
    root = _make_classes(tmp_path / "data", {"brick": 4, "grass": 4, "gravel": 1})
    (root / "grass" / "broken.png").write_bytes(b"\x89PNG broken")
    result = CliRunner().invoke(main, ["train", str(root), "-o", str(tmp_path / "m.skops"), "--device", "cpu",
                                       "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "warning: class 'gravel' has a single image" in result.stderr
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    assert (tmp_path / "m.skops").exists()


def test_csv_labels_search_and_evaluate_on_a_held_out_folder(textures, tmp_path):
    rows = ["path,label"] + [f"{p.relative_to(textures).as_posix()},{p.parent.name}" for p in sorted(textures.rglob("*.png"))]
    (textures / "labels.csv").write_text("\n".join(rows) + "\n")
    model = tmp_path / "logreg.skops"
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(textures / "labels.csv"), "-o", str(model), "--classifier", "logreg",
                                  "--search", "--folds", "3", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "grid search chose {'C':" in result.output and "3-fold cross-validation on 36 images" in result.output

    held_out = tmp_path / "held_out"
    for path, label in held_out_textures(tmp_path).items():
        (held_out / label).mkdir(parents=True)
        shutil.copy(path, held_out / label)
    result = runner.invoke(main, ["evaluate", str(model), str(held_out), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["samples"], report["accuracy"]) == (3, 1.0)
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_report_scores_agree_with_scikit_learn():
    from sklearn.metrics import classification_report

    from lookalike.classify.report import format_report, score

    y_true = ["a", "a", "b", "b", "c", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a", "c"]
    report = score(y_true, y_pred)
    reference = classification_report(y_true, y_pred, output_dict=True)
    assert report["accuracy"] == pytest.approx(reference["accuracy"])
    assert report["macro_f1"] == pytest.approx(reference["macro avg"]["f1-score"])
    for label in "abc":
        assert report["per_class"][label]["recall"] == pytest.approx(reference[label]["recall"])
        assert report["per_class"][label]["support"] == reference[label]["support"]
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert "macro-F1 0.7" in format_report(report)


def test_classifier_options_are_checked_before_any_embedding(textures):
    from lookalike.errors import LookalikeError

    with pytest.raises(LookalikeError, match="--k applies to knn only"):
        train(textures, textures.parent / "m.skops", classifier="svm", k=3, **OPTIONS)
    assert not (textures / ".lookalike").exists()


def test_knn_with_more_neighbours_than_a_fold_trains_on_is_one_clear_error(textures, tmp_path):
    result = CliRunner().invoke(main, ["train", str(textures), "-o", str(tmp_path / "m.skops"), "--classifier", "knn",
                                       "--k", "50", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 1 and "--k 50 is more than the 28 images" in result.stderr
    assert "Traceback" not in result.output


def test_a_csv_row_without_a_label_is_refused(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat\nb.png,\n")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "labels.csv"), "-o", str(tmp_path / "m.skops")])
    assert result.exit_code == 1 and "line 3 has a path but no label" in result.stderr


def test_train_on_a_store_of_another_layer_advises_its_own_options(textures, tmp_path):
    """`train` has --store, not --reset: the advice names what the command has."""
    labelled_vectors(textures, **OPTIONS)
    result = CliRunner().invoke(main, ["train", str(textures), "-o", str(tmp_path / "m.skops"), "--layer", "_blocks.5",
                                       "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 1 and "this store holds vectors from efficientnet_lite0" in result.stderr
    assert "--store DIR" in result.stderr and "--reset" not in result.stderr
