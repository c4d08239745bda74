"""The classifiers lookalike trains on embeddings, by name, with sensible defaults for
small data (the cs231n transfer-learning recipe: frozen CNN, a linear classifier on top)."""

from __future__ import annotations

from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.svm import SVC, LinearSVC

from ..errors import LookalikeError

CLASSIFIERS = ("svm", "rbf-svm", "logreg", "knn", "centroid")
DEFAULT_CLASSIFIER = "svm"

# The one hyperparameter --search tunes for each, by cross-validation.
GRIDS = {
    "svm": {"C": [0.01, 0.1, 1.0, 10.0]},
    "rbf-svm": {"C": [0.1, 1.0, 10.0, 100.0]},
    "logreg": {"C": [0.1, 1.0, 10.0, 100.0]},
    "knn": {"n_neighbors": [1, 3, 5, 10]},
    "centroid": {},
}


def make_classifier(name: str = DEFAULT_CLASSIFIER, *, C: float | None = None, k: int | None = None) -> ClassifierMixin:
    """A fresh, unfitted classifier.

    Args:
        name: one of ``CLASSIFIERS``.
        C: regularisation for the SVMs and logistic regression (larger fits harder).
        k: neighbours for kNN.

    Raises:
        LookalikeError: an unknown name, or an option the classifier doesn't take.
    """
    if name not in CLASSIFIERS:
        raise LookalikeError(f"unknown classifier {name!r}: choose one of {', '.join(CLASSIFIERS)}")
    if C is not None and name in ("knn", "centroid"):
        raise LookalikeError(f"--C does not apply to {name}")
    if k is not None and name != "knn":
        raise LookalikeError(f"--k applies to knn only, not {name}")
    if name == "svm":
        return LinearSVC(C=C or 1.0)
    if name == "rbf-svm":
        return SVC(kernel="rbf", C=C or 10.0, gamma="scale")
    if name == "logreg":
        return LogisticRegression(C=C or 10.0, max_iter=5000)
    if name == "knn":
        from .knn import KNNClassifier

        return KNNClassifier(n_neighbors=k or 5)
    return NearestCentroid()


def with_probabilities(estimator: ClassifierMixin, smallest_class: int) -> ClassifierMixin:
    """Wrap a classifier without probabilities of its own in sigmoid calibration, where data allows.

    Needs two images in every class; with fewer, the classifier stays as it is and
    ``probabilities`` falls back to a softmax of its decision scores.
    """
    # SVC(probability=False) has none; NearestCentroid's saturate at 0 and 1 on embeddings.
    own = hasattr(estimator, "predict_proba") and not isinstance(estimator, NearestCentroid)
    if own or smallest_class < 2:
        return estimator
    return CalibratedClassifierCV(estimator, cv=min(3, smallest_class), method="sigmoid")
