"""The classifier commands: train, predict, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import (
    DEFAULTS,
    chosen_format,
    echo_csv,
    embed_options,
    featurizer_options,
    format_options,
    progressbar,
    shown,
)

CLASSIFIER_CHOICE = click.Choice(["svm", "rbf-svm", "logreg", "knn", "centroid"])


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The model file to write (also OUTPUT.report.json and OUTPUT.confusion.png).")
@click.option("--classifier", type=CLASSIFIER_CHOICE, default="svm", show_default=True,
              help="svm: linear SVM; rbf-svm; logreg: logistic regression; knn: cosine kNN; centroid: nearest centroid.")
@click.option("--C", "C", type=click.FloatRange(min=0, min_open=True), default=None, help="Regularisation of svm, rbf-svm, logreg.")
@click.option("--k", "k", type=click.IntRange(min=1), default=None, help="Neighbours for knn [default: 5].")
@click.option("--search", is_flag=True, help="Pick C (or k) by a small cross-validated grid search.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Cross-validation folds.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the embeddings are kept [default: SOURCE/.lookalike].")
@featurizer_options(None)
def train(source, output, classifier, C, k, search, folds, store, model, layer, weights, **options):
    """Train a classifier on labelled images: SOURCE is a folder with one subfolder per
    class, or a CSV of path,label.

    The CNN stays frozen; only the classifier learns (the small-data transfer-learning
    recipe; for images unlike ImageNet try an earlier --layer and an SVM). Embeddings are
    kept in a store, so the next experiment on the same folder runs the CNN on nothing.
    Prints a stratified k-fold report, then fits on all images and saves the model.
    """
    from ..training import train as run

    bar = {}

    def on_start(total):
        bar["bar"] = progressbar(total, "Embedding").__enter__() if total else None

    try:
        result = run(source, output, classifier=classifier, C=C, k=k, search=search, folds=folds, store=store,
                     model=model, layer=layer, weights=weights, on_start=on_start,
                     on_batch=lambda n: bar["bar"].update(n),
                     options=embed_options(**options))
    finally:
        if bar.get("bar"):
            bar["bar"].__exit__(None, None, None)
    for path, reason in result.skipped:
        click.echo(f"skipped {shown(path)}: {reason}", err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    from ..classify.report import format_report

    if result.best_params:
        click.echo(f"grid search chose {result.best_params}")
    if "accuracy" in result.report:
        click.echo(format_report(result.report))
    click.echo(f"model -> {result.model_path} (report: {result.model_path}.report.json)")


@click.command()
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="Labels per image.")
@format_options
@click.option("--device", default=DEFAULTS.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The weights file the model's images were embedded with, if not the pretrained ones.")
@click.option("--model", "lkft", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The fine-tuned .lkft the model's images were embedded with, if it has moved since.")
def predict(model_file, images, top, as_json, as_csv, device, weights, lkft):
    """Label IMAGES (files or folders) with a model from `lookalike train`.

    Images are embedded the way the model's training images were. Unreadable
    images are reported and skipped.
    """
    fmt = chosen_format(as_json, as_csv)
    from ..featurize.options import EmbedOptions
    from ..training import predict as run

    predictions, failures = run(model_file, images, top=top, options=EmbedOptions(device=device), weights=weights,
                                model_file=lkft)
    if fmt == "json":
        click.echo(json.dumps([{"path": shown(p.path), "labels": p.labels, "probabilities": p.probabilities}
                               for p in predictions], indent=2))
    elif fmt == "csv":
        echo_csv(["path", "rank", "label", "probability"],
                  [(shown(p.path), r, label, f"{prob:.6f}") for p in predictions
                   for r, (label, prob) in enumerate(zip(p.labels, p.probabilities), 1)])
    else:
        for p in predictions:
            labels = ", ".join(f"{label} {prob:.2f}" for label, prob in zip(p.labels, p.probabilities))
            click.echo(f"{shown(p.path)}: {labels}")
    for path, reason in failures:
        click.echo(f"skipped {shown(path)}: {reason}", err=True)


@click.command()
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--device", default=DEFAULTS.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The weights file the model's images were embedded with, if not the pretrained ones.")
@click.option("--model", "lkft", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The fine-tuned .lkft the model's images were embedded with, if it has moved since.")
def evaluate(model_file, source, as_json, device, weights, lkft):
    """Score a model on a held-out labelled folder (one subfolder per class) or CSV."""
    from ..classify.report import format_report
    from ..featurize.options import EmbedOptions
    from ..training import evaluate as run

    report, failures = run(model_file, source, options=EmbedOptions(device=device), weights=weights, model_file=lkft)
    for path, reason in failures:
        click.echo(f"skipped {shown(path)}: {reason}", err=True)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


COMMANDS = (train, predict, evaluate)
