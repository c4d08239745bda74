"""Predictions: a classifier's class probabilities, and the top labels of each row, most probable first.

``lookalike predict`` and the web app's labeller both answer through ``top_labels``.
"""

from __future__ import annotations

import numpy as np


def probabilities(estimator, X: np.ndarray) -> np.ndarray:
    """Class probabilities in ``estimator.classes_`` order; a softmax of decision scores where there are none."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)
    scores = estimator.decision_function(X)
    if scores.ndim == 1:
        scores = np.stack([-scores, scores], axis=1)
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def top_labels(probabilities: np.ndarray, classes, top: int) -> list[list[tuple[str, float]]]:
    """For each row, the ``top`` (label, probability) pairs, most probable first (ties keep class order)."""
    classes = np.asarray(classes, dtype=str)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    return [[(str(classes[i]), float(row[i])) for i in best] for row, best in zip(probabilities, order)]
