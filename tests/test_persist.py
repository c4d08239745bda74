"""Model files: every classifier kind round-trips exactly, and files that could run code never load."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import skops
import skops.io as sio
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from lookalike.classify import persist
from lookalike.classify.persist import (
    ALLOWED_TYPES,
    FORMAT_VERSION,
    ModelFileError,
    ModelMismatchError,
    SavedModel,
    load_model,
    save_model,
)
from lookalike.errors import LookalikeError

LABELS = ["cat", "coffee", "rocket"]
SPEC = {
    "model": "efficientnet_lite0",
    "weights_sha256": "ab" * 32,
    "layer": "global_pool",
    "dim": 16,
    "preprocessing": {"resize": 256, "crop": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "pooling": "avg",
    "normalization": "l2",
    "versions": {"torch": "2.4.0", "torchvision": "0.19.0"},
}
REPORT = {"cv": {"folds": 3, "accuracy": [0.9, 1.0, 0.95], "mean": 0.95}, "n_train": 60, "notes": None, "ok": True}

# SVC(probability=True) is deprecated from scikit-learn 1.9 (use CalibratedClassifierCV), still worth reading back.
pytestmark = pytest.mark.filterwarnings("ignore:The `probability` parameter:FutureWarning")


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded L2-normalised vectors around three centres: training set, labels and unseen queries."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, 16))

    def around(n):
        which = np.arange(n) % 3
        x = centres[which] + 0.8 * rng.normal(size=(n, 16))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32"), np.array(LABELS)[which]

    x, y = around(60)
    queries, _ = around(40)
    return x, y, queries


ESTIMATORS = {
    "linear-svc": lambda: LinearSVC(C=0.5),
    "calibrated-linear-svc": lambda: CalibratedClassifierCV(LinearSVC(), cv=3),
    "calibrated-linear-svc-isotonic": lambda: CalibratedClassifierCV(LinearSVC(), cv=3, method="isotonic"),
    "rbf-svc": lambda: SVC(gamma=2.0),
    "rbf-svc-probability": lambda: SVC(probability=True, random_state=0),
    "logreg": lambda: LogisticRegression(C=2.0, max_iter=500),
    "centroid": lambda: NearestCentroid(),
    "scaler-logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    "normalizer-linear-svc": lambda: make_pipeline(Normalizer(), LinearSVC()),
}


def saved(estimator, classifier="svm") -> SavedModel:
    return SavedModel(estimator=estimator, spec=SPEC, classes=list(LABELS), report=REPORT, classifier=classifier)


def assert_same_outputs(original, loaded, queries) -> None:
    assert type(loaded) is type(original)
    np.testing.assert_array_equal(loaded.predict(queries), original.predict(queries))
    for method in ("decision_function", "predict_proba"):
        if hasattr(original, method):
            np.testing.assert_array_equal(getattr(loaded, method)(queries), getattr(original, method)(queries))


@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_every_classifier_kind_round_trips_exactly(kind, vectors, tmp_path):
    x, y, queries = vectors
    estimator = ESTIMATORS[kind]().fit(x, y)
    save_model(saved(estimator, kind), tmp_path / "model.skops")

    loaded = load_model(tmp_path / "model.skops", expect_spec=SPEC)

    assert_same_outputs(estimator, loaded.estimator, queries)
    assert loaded.classifier == kind


def test_knn_classifier_round_trips_exactly(vectors, tmp_path):
    from lookalike.classify import knn
    x, y, queries = vectors
    estimator = knn.KNNClassifier().fit(x, y)
    save_model(saved(estimator, "knn"), tmp_path / "model.skops")

    assert_same_outputs(estimator, load_model(tmp_path / "model.skops").estimator, queries)


def test_spec_classes_and_report_round_trip_as_json(vectors, tmp_path):
    x, y, _ = vectors
    save_model(saved(LinearSVC().fit(x, y), "svm"), tmp_path / "model.skops")

    loaded = load_model(tmp_path / "model.skops")

    assert loaded.spec == json.loads(json.dumps(SPEC))  # tuples come back as lists
    assert loaded.spec["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert loaded.classes == LABELS
    assert loaded.report == REPORT
    assert loaded.classifier == "svm"


def test_numpy_values_in_the_report_are_stored_as_plain_json(vectors, tmp_path):
    x, y, _ = vectors
    report = {"best_params": {"C": np.float64(0.5), "n_neighbors": np.int64(5)}, "scores": np.array([0.5, 1.0])}
    save_model(SavedModel(LinearSVC().fit(x, y), SPEC, LABELS, report, "svm"), tmp_path / "model.skops")

    loaded = load_model(tmp_path / "model.skops").report
    assert loaded == {"best_params": {"C": 0.5, "n_neighbors": 5}, "scores": [0.5, 1.0]}
    assert type(loaded["best_params"]["n_neighbors"]) is int


def test_the_file_is_a_plain_skops_archive_with_a_json_description(vectors, tmp_path):
    x, y, queries = vectors
    estimator = LogisticRegression().fit(x, y)
    save_model(saved(estimator), tmp_path / "model.skops")

    with zipfile.ZipFile(tmp_path / "model.skops") as archive:
        meta = json.loads(archive.read("lookalike.json"))
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["saved_with"]["skops"] == skops.__version__
    # skops on its own reads the estimator back, trusting nothing beyond its defaults
    plain = sio.load(tmp_path / "model.skops", trusted=[])
    np.testing.assert_array_equal(plain.predict(queries), estimator.predict(queries))


def test_saving_replaces_the_file_and_leaves_no_temporary(vectors, tmp_path):
    x, y, queries = vectors
    path = tmp_path / "model.skops"
    save_model(saved(LinearSVC().fit(x, y)), path)
    centroid = NearestCentroid().fit(x, y)
    save_model(saved(centroid, "centroid"), path)

    assert sorted(os.listdir(tmp_path)) == ["model.skops"]
    assert_same_outputs(centroid, load_model(path).estimator, queries)


def test_a_failed_save_keeps_the_old_file(vectors, tmp_path, monkeypatch):
    x, y, _ = vectors
    path = tmp_path / "model.skops"
    save_model(saved(LinearSVC().fit(x, y)), path)
    before = path.read_bytes()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persist.os, "replace", disk_full)
    with pytest.raises(ModelFileError, match="No space left"):
        save_model(saved(NearestCentroid().fit(x, y), "centroid"), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.skops"]


def test_saving_into_a_missing_folder_is_a_model_file_error(vectors, tmp_path):
    x, y, _ = vectors
    with pytest.raises(ModelFileError, match="can't write"):
        save_model(saved(LinearSVC().fit(x, y)), tmp_path / "nowhere" / "model.skops")


def test_save_refuses_what_load_would_refuse(vectors, tmp_path):
    x, y, _ = vectors
    with pytest.raises(ModelFileError, match="KNeighborsClassifier"):
        save_model(saved(KNeighborsClassifier(n_neighbors=3).fit(x, y), "knn"), tmp_path / "model.skops")
    assert not (tmp_path / "model.skops").exists()


def test_save_checks_its_inputs(vectors, tmp_path):
    x, y, _ = vectors
    with pytest.raises(NotFittedError):
        save_model(saved(LinearSVC()), tmp_path / "model.skops")
    with pytest.raises(TypeError, match="report"):
        save_model(SavedModel(LinearSVC().fit(x, y), SPEC, LABELS, {"when": object()}, "svm"), tmp_path / "model.skops")
    assert not (tmp_path / "model.skops").exists()


# --- expect_spec ------------------------------------------------------------------------


def test_expect_spec_ignores_library_versions(vectors, tmp_path):
    x, y, _ = vectors
    save_model(saved(LinearSVC().fit(x, y)), tmp_path / "model.skops")

    newer = {**SPEC, "versions": {"torch": "9.9.9"}}
    assert load_model(tmp_path / "model.skops", expect_spec=newer).spec["versions"] == SPEC["versions"]


def test_vectors_made_another_way_are_refused(vectors, tmp_path):
    x, y, _ = vectors
    save_model(saved(LinearSVC().fit(x, y)), tmp_path / "model.skops")
    other = {**SPEC, "model": "resnet50", "layer": "avgpool", "dim": 2048}

    with pytest.raises(ModelMismatchError) as caught:
        load_model(tmp_path / "model.skops", expect_spec=other)

    message = str(caught.value)
    assert isinstance(caught.value, LookalikeError)
    assert "efficientnet_lite0 (layer global_pool" in message and "resnet50 (layer avgpool" in message
    assert "another way" in message and "retrain" in message and "\n" not in message


# --- files that must never load -------------------------------------------------------


def rebuilt(path, replace: dict[str, bytes | None]) -> bytes:
    """The zip at ``path`` with members replaced (or dropped, for None)."""
    out = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename not in replace:
                target.writestr(info, source.read(info))
        for name, data in replace.items():
            if data is not None:
                target.writestr(name, data)
    return out.getvalue()


def lookalike_json(**overrides) -> bytes:
    meta = {"format_version": FORMAT_VERSION, "spec": SPEC, "classes": LABELS, "report": {}, "classifier": "svm"}
    return json.dumps({**meta, **overrides}).encode()


def exec_payload(marker) -> bytes:
    """A skops file whose root, if built, calls ``exec`` with code that creates ``marker``."""
    code = f"open({str(marker)!r}, 'w').close()"
    schema = {
        "__class__": "exec",
        "__module__": "builtins",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(code),
                    "is_json": True,
                }
            ],
        },
        "protocol": sio._protocol.PROTOCOL,
        "_skops_version": skops.__version__,
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
        archive.writestr("lookalike.json", lookalike_json())
    return out.getvalue()


def test_a_skops_file_that_would_run_code_is_refused(tmp_path):
    payload = exec_payload(tmp_path / "marker")
    # The payload is live: skops, told to trust exec, runs it.
    sio.loads(exec_payload(tmp_path / "control"), trusted=["builtins.exec"])
    assert (tmp_path / "control").exists()

    (tmp_path / "model.skops").write_bytes(payload)
    with pytest.raises(ModelFileError, match=r"builtins\.exec") as caught:
        load_model(tmp_path / "model.skops", expect_spec=SPEC)

    assert not (tmp_path / "marker").exists()
    assert "don't trust it" in str(caught.value)


class _RunsOnUnpickle:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_pickle_named_like_a_model_is_never_unpickled(tmp_path):
    payload = pickle.dumps(_RunsOnUnpickle(tmp_path / "marker"))
    pickle.loads(pickle.dumps(_RunsOnUnpickle(tmp_path / "control")))  # the payload is live
    assert (tmp_path / "control").exists()

    (tmp_path / "model.skops").write_bytes(payload)
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(tmp_path / "model.skops")
    assert not (tmp_path / "marker").exists()


def test_types_skops_trusts_but_lookalike_does_not_are_refused(vectors, tmp_path):
    x, y, _ = vectors
    foreign = sio.dumps(KNeighborsClassifier(n_neighbors=3).fit(x, y))
    assert sio.get_untrusted_types(data=foreign) == []  # skops alone would load it
    (tmp_path / "model.skops").write_bytes(foreign)
    (tmp_path / "model.skops").write_bytes(rebuilt(tmp_path / "model.skops", {"lookalike.json": lookalike_json()}))

    with pytest.raises(ModelFileError, match="KNeighborsClassifier"):
        load_model(tmp_path / "model.skops")


def test_every_allowed_name_is_a_real_class():
    for name in sorted(ALLOWED_TYPES):
        module, _, attribute = name.rpartition(".")
        if module == "lookalike.classify.knn" and importlib.util.find_spec(module) is None:
            continue  # arrives with the kNN classifier
        if name == "numpy.bool" and np.__version__.startswith("1."):
            continue  # numpy 1 spells it bool_
        assert isinstance(getattr(importlib.import_module(module), attribute), type), name


# --- damaged and missing files ---------------------------------------------------------


@pytest.fixture
def model_file(vectors, tmp_path):
    x, y, _ = vectors
    path = tmp_path / "good.skops"
    save_model(saved(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), "logreg"), path)
    return path


def npy_data_offset(path) -> int:
    """Where the bytes of the first stored array start in the (uncompressed) archive."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(".npy"))
    header = path.read_bytes()[info.header_offset : info.header_offset + 30]  # the local file header
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length


def damaged(model_file, how: str) -> bytes:
    raw = model_file.read_bytes()
    if how == "empty":
        return b""
    if how == "text":
        return b"this is not a model\n"
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "flipped-byte":
        at = npy_data_offset(model_file) + 100
        return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]
    if how == "no-description":
        return rebuilt(model_file, {"lookalike.json": None})
    if how == "bad-description":
        return rebuilt(model_file, {"lookalike.json": b"{not json"})
    if how == "description-without-classes":
        return rebuilt(model_file, {"lookalike.json": lookalike_json(classes=None)})
    if how == "no-schema":
        return rebuilt(model_file, {"schema.json": None})
    if how == "garbage-array":
        with zipfile.ZipFile(model_file) as archive:
            npy = next(name for name in archive.namelist() if name.endswith(".npy"))
        return rebuilt(model_file, {npy: b"\x93NUMPY garbage"})
    raise AssertionError(how)


DAMAGE = {
    "empty": "empty",
    "text": "not a zip",
    "truncated": "not a zip",
    "flipped-byte": "damaged",
    "no-description": "not a lookalike model file",
    "bad-description": "damaged",
    "description-without-classes": "classes",
    "no-schema": "no schema.json",
    "garbage-array": "damaged",
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_file_is_a_one_line_model_file_error(how, model_file, tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(damaged(model_file, how))

    with pytest.raises(ModelFileError, match=DAMAGE[how]) as caught:
        load_model(path)

    assert isinstance(caught.value, LookalikeError)
    assert "\n" not in str(caught.value) and "again" in str(caught.value)


def test_another_format_version_is_refused(model_file, tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(rebuilt(model_file, {"lookalike.json": lookalike_json(format_version=FORMAT_VERSION + 1)}))

    expected = f"format {FORMAT_VERSION + 1}, this lookalike reads format {FORMAT_VERSION}"
    with pytest.raises(ModelFileError, match=expected):
        load_model(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "absent.skops")
    with pytest.raises(ModelFileError, match="folder"):
        load_model(tmp_path)


def test_a_file_that_fails_to_build_names_the_scikit_learn_that_saved_it(model_file, tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(damaged(model_file, "garbage-array"))
    path.write_bytes(rebuilt(path, {"lookalike.json": lookalike_json(saved_with={"scikit-learn": "0.24.2"})}))

    with pytest.raises(ModelFileError, match=r"needs scikit-learn 0\.24\.2 \(this is "):
        load_model(path)
