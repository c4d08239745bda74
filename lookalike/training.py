"""Where featurize, the store and classify meet: train a classifier on a labelled folder's stored
embeddings, predict with a saved model, evaluate it on a held-out folder.

The labelled folder is indexed into a store once (incrementally), so trying five
classifiers, or five values of C, runs the CNN once.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .classify.labels import check_trainable, read_labelled
from .classify.predictions import probabilities, top_labels
from .errors import DatasetError, StoreMismatchError
from .featurize.models.registry import is_model_file
from .featurize.options import EmbedOptions
from .store.layout import STORE_DIRNAME


class Prediction(NamedTuple):
    """The ``top`` labels of one image, most probable first, with their probabilities."""

    path: str
    labels: list[str]
    probabilities: list[float]


@dataclass
class TrainResult:
    report: dict
    model_path: Path
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): images without a vector
    best_params: dict | None = None


def labelled_vectors(source, *, store=None, model=None, layer=None, weights=None, options: EmbedOptions | None = None,
                     on_start: Callable[[int], None] | None = None, on_batch: Callable[[int], None] | None = None):
    """Embed a labelled set through a store (only new or changed images run the CNN).

    Returns:
        (X, y, spec, skipped): vectors and labels of the images that could be read, the
        embedding spec, and (path, reason) for the ones that could not.
    """
    from .featurize import IMAGE_EXTENSIONS
    from .indexing import index_folder
    from .store.store import Store

    images = read_labelled(source, IMAGE_EXTENSIONS)
    check_trainable(images.labels, 2, source)  # one class: say so before any embedding
    try:
        summary = index_folder(images.root, store=store, model=model, layer=layer, weights=weights,
                               options=options, on_start=on_start, on_batch=on_batch, only=images.paths)
    except StoreMismatchError as e:
        kept = Path(store) if store is not None else images.root / STORE_DIRNAME
        raise StoreMismatchError(e.what, f"The embeddings of {source} are kept in {kept}: give this model a store "
                                         f"of its own with --store DIR, or delete {kept} to start over") from None
    opened = Store.open(summary.store)
    with opened.catalog() as catalog:
        records = catalog.by_paths(opened.relative(p) for p in images.paths)
    kept, labels, skipped = [], [], []
    for path, label in zip(images.paths, images.labels):
        record = records.get(opened.relative(path))
        if record is not None and record.row is not None:
            kept.append(path)
            labels.append(label)
        else:
            skipped.append((path, record.reason if record else "not found among the indexed images"))
    X = opened.get_vectors(kept) if kept else np.zeros((0, opened.dim), np.float32)
    return X, np.array(labels, dtype=str), opened.manifest.spec, skipped


def train(source, output, *, classifier: str = "svm", C: float | None = None, k: int | None = None,
          search: bool = False, folds: int = 5, **embed_options) -> TrainResult:
    """Cross-validate a classifier on a labelled folder (or CSV), then fit it on everything and save it.

    Writes ``output`` (the model, no pickle), ``output.report.json`` and ``output.confusion.png``.

    Raises:
        DatasetError: fewer than two classes, or no readable images.
    """
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from .classify.estimators import GRIDS, make_classifier, with_probabilities
    from .classify.persist import SavedModel, save_model
    from .classify.report import confusion_png, cross_validated_report

    estimator = make_classifier(classifier, C=C, k=k)  # bad options fail before any embedding
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot write the model to {output}: {e.strerror or e}") from e
    X, y, spec, skipped = labelled_vectors(source, **embed_options)
    notes = check_trainable(y.tolist(), folds, source)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if classifier == "knn":
        _check_neighbours(k or 5, len(y), max(2, min(folds, smallest)))
    best = None
    if search and GRIDS[classifier] and smallest >= 2:
        grid = GridSearchCV(estimator, GRIDS[classifier], cv=StratifiedKFold(min(folds, smallest)), scoring="f1_macro")
        best = grid.fit(X, y).best_params_
        estimator = clone(estimator).set_params(**best)
    with warnings.catch_warnings():  # NearestCentroid notes features that are constant within a class: harmless
        warnings.filterwarnings("ignore", message=".*within_class_std_dev_.*")
        report = cross_validated_report(estimator, X, y, folds) if smallest >= 2 else {}
        final = with_probabilities(clone(estimator), smallest).fit(X, y)
    report = {**report, "classifier": classifier, "best_params": best, "skipped": len(skipped)}
    model_file = embed_options.get("model")
    model_file = os.path.abspath(model_file) if is_model_file(model_file) else None
    save_model(SavedModel(final, spec, sorted(set(y)), report, classifier, model_file), output)
    (output.parent / (output.name + ".report.json")).write_text(json.dumps(report, indent=2) + "\n")
    if "confusion_matrix" in report:
        confusion_png(report, output.parent / (output.name + ".confusion.png"))
    return TrainResult(report, output, notes, skipped, best)


def _check_neighbours(k: int, n: int, folds: int) -> None:
    """kNN can't ask for more neighbours than a cross-validation fold trains on."""
    fewest = n - -(-n // folds)  # images each fold trains on
    if k > fewest:
        raise DatasetError(f"--k {k} is more than the {fewest} images each of the {folds} folds trains on: use --k {fewest} or less")


def predict(model_path, inputs: Sequence[str | os.PathLike], *, top: int = 3, options: EmbedOptions | None = None,
            weights: str | os.PathLike | None = None, model_file: str | os.PathLike | None = None, **changes):
    """Label images (files, or folders searched recursively) with a saved model: a classifier from
    ``train`` or a fine-tuned ``.lkft`` from ``finetune`` (its own head on its own embeddings).

    Returns:
        (predictions, failures): a ``Prediction`` per readable image, (path, reason) for the rest.
    """
    from .featurize import IMAGE_EXTENSIONS
    from .featurize.images.discover import discover

    paths = []
    for item in map(Path, inputs):
        paths += [f.path for f in discover(item, IMAGE_EXTENSIONS)] if item.is_dir() else [str(item)]
    if not paths:
        raise DatasetError(f"no images in {', '.join(map(str, inputs))}")
    classes, extractor, probabilities_of = _labeller(model_path, EmbedOptions.of(options, **changes), weights, model_file)
    predictions, failures = [], []
    for batch in extractor.embed_paths(paths):
        failures += [(f.key, f.reason) for f in batch.failures]
        if not batch.keys:
            continue
        for key, labels in zip(batch.keys, top_labels(probabilities_of(batch.vectors), classes, top)):
            predictions.append(Prediction(key, [label for label, _ in labels], [round(p, 6) for _, p in labels]))
    return predictions, failures


def _labeller(model_path, options: EmbedOptions, weights, model_file=None):
    """(classes, extractor, vectors -> probabilities) for a classifier file or a ``.lkft``."""
    from .featurize import create_extractor, extractor_for_spec
    from .featurize.models.finetuned import read_finetuned

    if not is_model_file(model_path):
        from .classify.persist import load_model

        saved = load_model(model_path)
        classes = np.asarray(saved.estimator.classes_, dtype=str)
        extractor = extractor_for_spec(saved.spec, weights=weights, model_file=model_file or saved.model_file,
                                       options=options)
        return classes, extractor, lambda v: probabilities(saved.estimator, v)
    model = read_finetuned(model_path)
    extractor = create_extractor(model.path, weights=weights, options=options)  # refuses weights=: the file holds its own
    if extractor.spec.weights_sha256 != model.document["spec"]["weights_sha256"]:
        raise DatasetError(f"{model_path} changed while it was being read: run again")
    return np.asarray(model.classes, dtype=str), extractor, model.probabilities


def evaluate(model_path, source, *, options: EmbedOptions | None = None, weights: str | os.PathLike | None = None,
             model_file: str | os.PathLike | None = None, **changes) -> tuple[dict, list[tuple[str, str]]]:
    """Score a saved model (classifier or ``.lkft``) on a held-out labelled folder or CSV: the training report's fields."""
    from .classify.persist import load_model
    from .classify.report import score
    from .featurize import IMAGE_EXTENSIONS
    from .featurize.models.finetuned import read_finetuned

    known = read_finetuned(model_path).classes if is_model_file(model_path) else load_model(model_path).classes
    images = read_labelled(source, IMAGE_EXTENSIONS)
    predictions, failures = predict(model_path, images.paths, top=1, options=EmbedOptions.of(options, **changes),
                                    weights=weights, model_file=model_file)
    truth = dict(zip(images.paths, images.labels))
    report = score([truth[p.path] for p in predictions], [p.labels[0] for p in predictions],
                   sorted(set(known) | set(images.labels)))
    return {"kind": "held-out evaluation", **report, "skipped": len(failures)}, failures
