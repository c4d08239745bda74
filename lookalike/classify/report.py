"""Classification reports: cross-validated or held-out accuracy, macro-F1, per-class
precision/recall/support, the confusion matrix, as a JSON-able dict, text and PNG."""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
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
    """Save ``confusion_figure(report)`` as a PNG."""
    import matplotlib.pyplot as plt

    figure = confusion_figure(report)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def confusion_figure(report: dict):
    """The confusion matrix drawn by scikit-learn's ``ConfusionMatrixDisplay`` (matplotlib, Agg backend).

    Counts in the cells with each true class's share below, shaded by that share (rows sum
    to 1), so a small class's errors show as plainly as a large one's. Long class names are
    rotated, and the figure grows with the number and length of the names, so none is cut.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # files only: no display, never switches a backend already in use
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    classes, matrix = report["classes"], np.array(report["confusion_matrix"])
    n, longest = len(classes), max(len(c) for c in classes)
    side = max(4.0, 0.55 * n + 0.09 * longest + 2.5)
    figure, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    shares = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
    display = ConfusionMatrixDisplay(shares, display_labels=classes)
    display.plot(ax=ax, cmap="Blues", colorbar=True, xticks_rotation=45 if longest > 3 else "horizontal",
                 values_format=".2f", im_kw={"vmin": 0, "vmax": 1})
    if longest > 3:
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{matrix[i, j]}\n{shares[i, j]:.0%}" if matrix[i, j] else "0")
        text.set_fontsize(max(6, 11 - n // 4))
    display.im_.colorbar.set_label("share of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    kind = report.get("kind", "evaluation")
    ax.set_title(f"{kind}: accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}", fontsize=10)
    return figure
