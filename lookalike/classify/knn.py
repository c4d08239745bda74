"""A cosine k-nearest-neighbour classifier on embedding vectors, searched exactly by FAISS.

``KNNClassifier`` follows scikit-learn's estimator contract and predicts what
``KNeighborsClassifier(metric="cosine", algorithm="brute")`` predicts, at FAISS speed.
Training vectors are stored L2-normalised as float32; queries are normalised the same way,
so FAISS's exact inner-product search (``faiss.knn`` with ``METRIC_INNER_PRODUCT``, the
kernel ``IndexFlatIP.search`` runs, without copying the vectors into an index) ranks them
by cosine similarity. No FAISS object is kept, so the estimator pickles and clones as
plain numpy.

Cosine distance is ``1 - cos``, in ``[0, 2]``. The distances of the ``k`` neighbours FAISS
found are recomputed in float64, so they (and ``predict_proba``) don't depend on how
the queries were batched.

Zero vectors have no direction, so cosine is undefined for them. Here a vector whose norm
is (numerically) zero stays zero after normalisation: its similarity to everything is 0
and its distance to everything is 1 (what scikit-learn's ``cosine_distances`` gives too).
A zero query is equally far from every training vector, so which ``k`` of them vote is
up to the search; a zero training vector is never an exact match, not even for a zero
query.
"""

from __future__ import annotations

import numbers

import faiss
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["KNNClassifier"]

WEIGHTS = ("uniform", "distance")
# Norms below this are zero vectors (scikit-learn's normalize() uses the same cut-off).
ZERO_NORM = 10 * np.finfo(np.float64).eps
# Stored vectors are float32, so cosine distances below a few float32 ulps of 1 can't be
# told from 0: such neighbours are exact matches (an angle under about 1e-3 radians).
EXACT_MATCH_DISTANCE = 4 * float(np.finfo(np.float32).eps)
# Float64 floats gathered at once when rescoring neighbours (64 MiB).
RESCORE_BLOCK_FLOATS = 2**23


def l2_normalise(X: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 norm, as ``dtype``; zero rows stay zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    norms[norms < ZERO_NORM] = np.inf  # x / inf == 0: a zero vector stays zero, no NaN
    out = np.empty(X.shape, dtype=dtype)
    np.divide(X, norms[:, None], out=out, casting="same_kind")
    return out


class KNNClassifier(ClassifierMixin, BaseEstimator):
    """Cosine k-nearest-neighbour classifier with exact FAISS inner-product search.

    Args:
        n_neighbors: how many neighbours vote (``k``); at most the number of training
            samples, else ``predict`` raises ``ValueError`` as scikit-learn does.
        weights: ``"uniform"`` (one vote each) or ``"distance"`` (a vote weighs
            ``1 / cosine distance``; when a query has neighbours at distance 0, only
            those vote, equally; scikit-learn's convention). A distance below
            ``EXACT_MATCH_DISTANCE`` (float32 rounding) counts as 0.

    Attributes:
        classes_: the class labels, sorted; ``predict_proba`` columns follow this order.
        n_features_in_: the vector dimension seen in ``fit``.
        n_samples_fit_: how many training vectors there are.
        fit_X_: the training vectors, L2-normalised, float32, C-contiguous.
        fit_y_: each training vector's class, as an index into ``classes_``.
    """

    def __init__(self, n_neighbors: int = 5, weights: str = "distance"):
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X, y) -> KNNClassifier:
        """Store L2-normalised copies of the training vectors and their labels.

        Args:
            X: training vectors, array-like of shape ``(n_samples, n_features)``.
            y: class labels, shape ``(n_samples,)``; any labels ``numpy.unique`` sorts.

        Returns:
            self, fitted.

        Raises:
            ValueError: a bad ``n_neighbors`` or ``weights``, non-finite or mismatched
                ``X`` and ``y``, or continuous ``y``.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_, self.fit_y_ = np.unique(y, return_inverse=True)
        self.fit_X_ = l2_normalise(X)
        self.n_samples_fit_ = X.shape[0]
        return self

    def kneighbors(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The ``n_neighbors`` nearest training vectors of each query, by cosine distance.

        Args:
            X: query vectors, shape ``(n_queries, n_features_in_)``.

        Returns:
            ``(distances, indices)``, both of shape ``(n_queries, n_neighbors)``, nearest
            first: float64 cosine distances in ``[0, 2]`` and row positions in the
            training set.

        Raises:
            sklearn.exceptions.NotFittedError: ``fit`` has not been called.
            ValueError: bad ``X``, or ``n_neighbors`` exceeds the training samples.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        k = self.n_neighbors
        if k > self.n_samples_fit_:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                f"n_samples_fit = {self.n_samples_fit_}, n_samples = {X.shape[0]}: "
                f"fit on more vectors or lower n_neighbors."
            )
        queries = l2_normalise(X, np.float64)
        _, indices = faiss.knn(
            queries.astype(np.float32), self.fit_X_, k, metric=faiss.METRIC_INNER_PRODUCT
        )
        distances = self._rescore(queries, indices)
        order = np.argsort(distances, axis=1, kind="stable")
        return np.take_along_axis(distances, order, 1), np.take_along_axis(indices, order, 1)

    def predict_proba(self, X) -> np.ndarray:
        """The weighted share of each class among each query's neighbours.

        Args:
            X: query vectors, shape ``(n_queries, n_features_in_)``.

        Returns:
            float64 array of shape ``(n_queries, n_classes)``, columns in ``classes_``
            order, rows summing to 1.

        Raises:
            sklearn.exceptions.NotFittedError: ``fit`` has not been called.
            ValueError: bad ``X``, or ``n_neighbors`` exceeds the training samples.
        """
        distances, indices = self.kneighbors(X)
        votes = self._vote_weights(distances)
        n_queries, n_classes = indices.shape[0], len(self.classes_)
        cells = np.arange(n_queries)[:, None] * n_classes + self.fit_y_[indices]
        proba = np.bincount(cells.ravel(), votes.ravel(), n_queries * n_classes)
        proba = proba.reshape(n_queries, n_classes)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """The class with the most (weighted) votes; a tie goes to the first in ``classes_``.

        Args:
            X: query vectors, shape ``(n_queries, n_features_in_)``.

        Returns:
            array of shape ``(n_queries,)`` holding labels from ``classes_``.

        Raises:
            sklearn.exceptions.NotFittedError: ``fit`` has not been called.
            ValueError: bad ``X``, or ``n_neighbors`` exceeds the training samples.
        """
        check_is_fitted(self)
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _check_params(self) -> None:
        k = self.n_neighbors
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"n_neighbors must be an integer >= 1, got {k!r}.")
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}.")

    def _rescore(self, queries: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Float64 cosine distances of the found neighbours, independent of query batching."""
        distances = np.empty(indices.shape, dtype=np.float64)
        block = max(1, RESCORE_BLOCK_FLOATS // (indices.shape[1] * self.n_features_in_))
        for start in range(0, len(queries), block):
            rows = slice(start, start + block)
            neighbours = self.fit_X_[indices[rows]].astype(np.float64)
            similarity = np.einsum("ikd,id->ik", neighbours, queries[rows])
            distances[rows] = 1.0 - similarity
        np.clip(distances, 0.0, 2.0, out=distances)
        distances[distances < EXACT_MATCH_DISTANCE] = 0.0
        return distances

    def _vote_weights(self, distances: np.ndarray) -> np.ndarray:
        """Each neighbour's vote: 1, or 1/distance with exact matches outvoting the rest."""
        if self.weights == "uniform":
            return np.ones_like(distances)
        exact = distances == 0.0
        with np.errstate(divide="ignore"):
            votes = 1.0 / distances
        has_exact = exact.any(axis=1)
        votes[has_exact] = exact[has_exact]
        return votes
