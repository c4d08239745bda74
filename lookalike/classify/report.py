"""Classification reports: cross-validated or held-out accuracy, macro-F1, per-class
precision/recall/support, the confusion matrix, as a JSON-able dict, text and PNG."""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold, cross_val_predict


def cross_validated_report(estimator, X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Stratified k-fold predictions for every sample, scored. Folds shrink to the smallest class."""
    smallest = int(np.unique(y, return_counts=True)[1].min())
    folds = max(2, min(folds, smallest))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(clone(estimator), X, y, cv=splitter)
    return {"kind": f"{folds}-fold cross-validation", "folds": folds, **score(y, predicted)}


def score(y_true, y_pred, classes: list[str] | None = None) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows: truth)."""
    classes = sorted(set(map(str, y_true)) | set(map(str, y_pred))) if classes is None else list(classes)
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    return {
        "samples": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "classes": classes,
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def format_report(report: dict) -> str:
    """The report as a text table."""
    classes = report["classes"]
    width = max(12, *(len(c) for c in classes))
    lines = [
        f"{report.get('kind', 'evaluation')} on {report['samples']} images: "
        f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}",
        "",
        f"{'class':<{width}} precision  recall      f1  support",
    ]
    for c in classes:
        m = report["per_class"][c]
        lines.append(f"{c:<{width}} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:7.3f} {m['support']:8d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    cell = max(5, *(len(c) for c in classes))
    lines.append(" " * width + " " + " ".join(f"{c[:cell]:>{cell}}" for c in classes))
    for c, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"{c:<{width}} " + " ".join(f"{n:>{cell}d}" for n in row))
    return "\n".join(lines)


def confusion_png(report: dict, path) -> None:
    """Draw the confusion matrix: counts in cells shaded by row share, class names on the axes."""
    from PIL import Image, ImageDraw

    classes, matrix = report["classes"], np.array(report["confusion_matrix"])
    label_w, cell = 8 + 7 * max(len(c) for c in classes), 48
    size = (label_w + cell * len(classes) + 10, 30 + label_w + cell * len(classes))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), "rows: true class, columns: predicted", fill="black")
    top = 30 + label_w
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    for i, name in enumerate(classes):
        draw.text((4, top + i * cell + cell // 2 - 5), name, fill="black")
        column = Image.new("RGB", (label_w, 14), "white")
        ImageDraw.Draw(column).text((0, 0), name, fill="black")
        image.paste(column.rotate(90, expand=True), (label_w + i * cell + cell // 2 - 7, 30))
        for j in range(len(classes)):
            share = matrix[i, j] / rows[i, 0]
            shade = int(255 - 180 * share)
            box = (label_w + j * cell, top + i * cell, label_w + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            draw.text((box[0] + 6, box[1] + cell // 2 - 5), str(matrix[i, j]), fill="black")
    image.save(path)
