"""KNNClassifier against scikit-learn's brute-force cosine kNN, and against sklearn's estimator checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from lookalike.classify.knn import KNNClassifier

DIM = 16
N_CLASSES = 4


def clustered(seed: int, n_train: int = 80, n_test: int = 50) -> tuple[np.ndarray, ...]:
    """Overlapping gaussian clusters, so neighbourhoods mix classes and weighting matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CLASSES, DIM))
    y = rng.integers(N_CLASSES, size=n_train + n_test)
    X = (centres[y] + 1.5 * rng.normal(size=(len(y), DIM))).astype(np.float32)
    return X[:n_train], y[:n_train], X[n_train:]


def reference(k: int, weights: str) -> KNeighborsClassifier:
    return KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=weights, algorithm="brute")


def assert_no_boundary_ties(ref: KNeighborsClassifier, X_test: np.ndarray, k: int) -> None:
    """The k-th and (k+1)-th neighbours differ by more than float32 noise, so the vote is well defined."""
    distances, _ = ref.kneighbors(X_test, n_neighbors=k + 1)
    assert np.min(distances[:, k] - distances[:, k - 1]) > 1e-5


@pytest.mark.parametrize("labels", ["int", "str"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_matches_sklearn_brute_cosine(k, weights, labels):
    X_train, y_train, X_test = clustered(seed=k)
    if labels == "str":
        y_train = np.array(["cat", "dog", "eel", "fox"])[y_train]
    ref = reference(k, weights).fit(X_train, y_train)
    assert_no_boundary_ties(ref, X_test, k)

    model = KNNClassifier(n_neighbors=k, weights=weights).fit(X_train, y_train)

    np.testing.assert_array_equal(model.classes_, ref.classes_)
    np.testing.assert_array_equal(model.predict(X_test), ref.predict(X_test))
    np.testing.assert_allclose(model.predict_proba(X_test), ref.predict_proba(X_test), rtol=1e-5, atol=1e-7)
    distances, indices = model.kneighbors(X_test)
    ref_distances, ref_indices = ref.kneighbors(X_test)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(distances, ref_distances, rtol=1e-5, atol=1e-6)


def test_proba_columns_follow_classes_order():
    X_train, y_train, X_test = clustered(seed=0)
    y_train = np.array(["zebra", "ant", "mole", "bee"])[y_train]
    model = KNNClassifier(n_neighbors=5).fit(X_train, y_train)
    proba = model.predict_proba(X_test)
    assert list(model.classes_) == ["ant", "bee", "mole", "zebra"]
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X_test))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


_CHECKS = parametrize_with_checks([KNNClassifier(), KNNClassifier(n_neighbors=3, weights="uniform")])
_check_id = _CHECKS.kwargs["ids"]
# check_array_api_input is for estimators that declare array API support, which KNNClassifier
# (numpy in, FAISS inside) doesn't; without SCIPY_ARRAY_API it only skips itself. Every other
# check of scikit-learn's suite runs.
_RUN = [(estimator, check) for estimator, check in _CHECKS.args[1] if not _check_id(check).startswith("check_array_api_input")]


@pytest.mark.parametrize("estimator, check", _RUN, ids=_check_id)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "kneighbors"])
def test_not_fitted_raises(method):
    with pytest.raises(NotFittedError):
        getattr(KNNClassifier(), method)(np.ones((2, DIM), dtype=np.float32))


def test_more_neighbours_than_training_samples_raises_like_sklearn():
    X_train, y_train, X_test = clustered(seed=1, n_train=4)
    model = KNNClassifier(n_neighbors=5).fit(X_train, y_train)  # fit accepts it, as sklearn's does
    ref = reference(5, "distance").fit(X_train, y_train)
    for estimator in (model, ref):
        with pytest.raises(ValueError, match="Expected n_neighbors <= n_samples_fit"):
            estimator.predict(X_test)
    assert KNNClassifier(n_neighbors=4).fit(X_train, y_train).predict(X_test).shape == (len(X_test),)


@pytest.mark.parametrize(
    "params", [{"n_neighbors": 0}, {"n_neighbors": 2.5}, {"n_neighbors": True}, {"weights": "rank"}]
)
def test_bad_parameters_raise_at_fit(params):
    X_train, y_train, _ = clustered(seed=2)
    with pytest.raises(ValueError):
        KNNClassifier(**params).fit(X_train, y_train)


def test_zero_vectors_are_at_distance_one_from_everything():
    X_train, y_train, X_test = clustered(seed=3)
    X_train[0] = 0.0
    X_test[0] = 0.0
    for weights in ("uniform", "distance"):
        model = KNNClassifier(n_neighbors=5, weights=weights).fit(X_train, y_train)
        assert np.all(np.isfinite(model.fit_X_))
        proba = model.predict_proba(X_test)
        assert np.all(np.isfinite(proba))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)

        distances, _ = model.kneighbors(X_test[:1])
        np.testing.assert_array_equal(distances, 1.0)  # a zero query: no direction, equally far from all

        ref = reference(5, weights).fit(X_train, y_train)  # sklearn's cosine_distances agrees
        np.testing.assert_array_equal(model.predict(X_test[1:]), ref.predict(X_test[1:]))
        np.testing.assert_allclose(model.predict_proba(X_test[1:]), ref.predict_proba(X_test[1:]), rtol=1e-5)

    # The zero training vector is at distance 1 even from another zero vector: never an exact match.
    model = KNNClassifier(n_neighbors=len(X_train)).fit(X_train, y_train)
    distances, indices = model.kneighbors(X_test)
    np.testing.assert_allclose(distances[indices == 0], 1.0)


def test_exact_matches_outvote_everyone_else():
    rng = np.random.default_rng(4)
    a = rng.normal(size=DIM)
    X_train = np.stack([a, a, a + 0.05 * rng.normal(size=DIM), -a])
    y_train = np.array([1, 0, 0, 2])
    query = (3.0 * a)[None, :]  # same direction as a: cosine distance 0 up to rounding

    distance = KNNClassifier(n_neighbors=3, weights="distance").fit(X_train, y_train)
    np.testing.assert_array_equal(distance.kneighbors(query)[0][0, :2], 0.0)
    np.testing.assert_allclose(distance.predict_proba(query), [[0.5, 0.5, 0.0]])
    assert distance.predict(query)[0] == 0  # a tie goes to the first class

    uniform = KNNClassifier(n_neighbors=3, weights="uniform").fit(X_train, y_train)
    np.testing.assert_allclose(uniform.predict_proba(query), [[2 / 3, 1 / 3, 0.0]])


def test_pickle_and_clone_keep_predictions():
    X_train, y_train, X_test = clustered(seed=5)
    model = KNNClassifier(n_neighbors=3).fit(X_train, y_train)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X_test), model.predict_proba(X_test))
    fresh = clone(model)
    assert fresh.get_params() == model.get_params()
    assert not hasattr(fresh, "fit_X_")
