"""Classifier model files: a fitted estimator with its embedding spec, labels and report, never pickled.

A model file is a skops zip archive (``skops.io``) whose root object is the estimator,
plus one extra member, ``lookalike.json``, holding the format version, the embedding
spec, the class labels, the classifier kind and the training report. Loading reads the
JSON first, then builds the estimator only if every type the file names is on
``ALLOWED_TYPES``: a model file can describe objects, but never make us run its code.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomically
from ..errors import ModelFileError, ModelMismatchError, first_line
from ..featurize.models.spec import describe_spec, spec_differences

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_MEMBER = "lookalike.json"

# Every type a model file may name, as skops spells it (module of definition + class).
# Found by dumping fitted estimators of each kind and reading their schema; the tests
# check each name still resolves to a class, so a scikit-learn reshuffle fails there.
ALLOWED_ESTIMATOR_TYPES = frozenset({
    "sklearn.svm._classes.LinearSVC",
    "sklearn.svm._classes.SVC",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.neighbors._nearest_centroid.NearestCentroid",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",  # one per fold inside CalibratedClassifierCV
    "sklearn.calibration._SigmoidCalibration",  # method="sigmoid" (the default)
    "sklearn.isotonic.IsotonicRegression",  # method="isotonic"
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.Normalizer",
    "lookalike.classify.knn.KNNClassifier",
})
ALLOWED_VALUE_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.tuple",
    "builtins.str", "builtins.int", "builtins.float", "builtins.bool",  # values and dict key types
    "numpy.ndarray",
    "numpy.float64", "numpy.float32", "numpy.float16",  # numpy scalars kept as fitted attributes
    "numpy.int64", "numpy.int32", "numpy.int16", "numpy.int8",
    "numpy.uint64", "numpy.uint32", "numpy.uint16", "numpy.uint8",
    "numpy.bool", "numpy.bool_",  # numpy 2 and numpy 1 spellings
})
ALLOWED_TYPES = ALLOWED_ESTIMATOR_TYPES | ALLOWED_VALUE_TYPES


@dataclass
class SavedModel:
    """A trained classifier and what it needs to be used again.

    Attributes:
        estimator: a fitted scikit-learn estimator or Pipeline (types on ``ALLOWED_TYPES``).
        spec: the embedding spec of the training vectors (``EmbeddingSpec.to_dict()``).
        classes: the class labels, as strings.
        report: a JSON-able training report, e.g. cross-validation results.
        classifier: the kind of classifier, e.g. "svm", "rbf-svm", "logreg", "knn", "centroid".
        model_file: for vectors of a fine-tuned model (``spec`` names it by its digest), where its
            ``.lkft`` file was when the classifier was trained.
    """

    estimator: object
    spec: dict
    classes: list[str]
    report: dict
    classifier: str
    model_file: str | None = None


def save_model(model: SavedModel, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically: readers see the old file or the new one, never half.

    Args:
        model: the model; spec, classes and report must be JSON-able (tuples come back as lists,
            numpy scalars and arrays as plain numbers and lists).
        path: where to write (by convention ``*.skops``); the folder must exist.

    Raises:
        sklearn.exceptions.NotFittedError: the estimator is not fitted.
        TypeError: spec, classes or report can't be written as JSON.
        ModelFileError: the estimator holds types ``load_model`` would refuse, or the file can't be written.
    """
    import sklearn
    import skops
    import skops.io as sio
    from sklearn.utils.validation import check_is_fitted

    path = Path(path)
    check_is_fitted(model.estimator)
    meta = {
        "format_version": FORMAT_VERSION,
        "classifier": str(model.classifier),
        "classes": _json_value(list(model.classes), "classes"),
        "spec": _json_value(model.spec, "spec"),
        "report": _json_value(model.report, "report"),
        "model_file": model.model_file,
        "saved_with": {
            "lookalike": _lookalike_version(), "scikit-learn": sklearn.__version__, "skops": skops.__version__
        },
    }
    buffer = io.BytesIO(sio.dumps(model.estimator))
    with zipfile.ZipFile(buffer) as archive:
        refused = _refused_types(archive, buffer.getvalue(), path)
    if refused:
        raise ModelFileError(
            f"won't save {path}: the estimator holds types lookalike refuses to load ({', '.join(refused)}); "
            f"use one of the supported classifiers"
        )
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(META_MEMBER, json.dumps(meta, indent=2) + "\n")
    _write_atomically(path, buffer.getvalue())
    logger.debug("saved a %s model for %d classes to %s", model.classifier, len(meta["classes"]), path)


def load_model(path: str | os.PathLike, *, expect_spec: dict | None = None) -> SavedModel:
    """Read a model written by ``save_model``, refusing any file that names a type off ``ALLOWED_TYPES``.

    Nothing in the file is run: skops builds only allow-listed types, from their saved state.

    Args:
        path: the model file.
        expect_spec: the embedding spec of the vectors about to be classified; checked against
            the model's spec (library versions aside) before the estimator is built.

    Returns:
        The model.

    Raises:
        ModelFileError: the file is missing, unreadable, not a model file, damaged, of another
            format version, or names types lookalike does not load.
        ModelMismatchError: ``expect_spec`` describes vectors made another way than the model's.
    """
    import skops.io as sio

    path = Path(path)
    data = _read_bytes(path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path} is not a lookalike model file ({_what_it_is(data)}): {_RETRAIN}") from None
    with archive:
        meta = _read_meta(archive, path)
        if expect_spec is not None:
            _check_spec(meta["spec"], expect_spec, path)
        refused = _refused_types(archive, data, path)
    if refused:
        raise ModelFileError(
            f"{path} names types lookalike never loads ({', '.join(refused)}), so it was not written by "
            f"lookalike or was tampered with: don't trust it; {_RETRAIN}"
        )
    try:
        estimator = sio.loads(data, trusted=sorted(ALLOWED_TYPES))
    except ImportError as error:
        raise ModelFileError(
            f"{path} needs a class this installation lacks ({error}): install a lookalike that has it, or {_RETRAIN}"
        ) from None
    except Exception as error:  # a damaged file costs one line, whatever skops or sklearn trip on
        raise ModelFileError(
            f"{path} is damaged{_other_sklearn(meta)}: {first_line(error)}; {_RETRAIN}"
        ) from None
    if not hasattr(estimator, "predict"):
        raise ModelFileError(f"{path} holds a {type(estimator).__name__}, not a classifier: {_RETRAIN}")
    return SavedModel(
        estimator=estimator,
        spec=meta["spec"],
        classes=meta["classes"],
        report=meta["report"],
        classifier=meta["classifier"],
        model_file=meta.get("model_file"),
    )


_RETRAIN = "train and save the classifier again"


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ModelFileError(f"can't read a model from {path}: it is a folder; give the model file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(
            f"can't read a model from {path}: no such file; check the path, or train and save a model first"
        ) from None
    except OSError as error:
        reason = error.strerror or error
        raise ModelFileError(f"can't read a model from {path}: {reason}; check its permissions") from None


def _what_it_is(data: bytes) -> str:
    if not data:
        return "it is empty"
    if data[:1] == b"\x80":
        return "it looks like a pickle, and lookalike never loads pickles"
    return "not a zip archive, or a truncated one"


def _read_meta(archive: zipfile.ZipFile, path: Path) -> dict:
    """The validated ``lookalike.json``; checks the format version before anything else."""
    try:
        meta = json.loads(archive.read(META_MEMBER))
    except KeyError:
        raise ModelFileError(
            f"{path} is a zip archive but not a lookalike model file (no {META_MEMBER}): {_RETRAIN}"
        ) from None
    except (zipfile.BadZipFile, ValueError, RecursionError) as error:
        raise ModelFileError(f"{path} is damaged ({META_MEMBER}: {first_line(error)}): {_RETRAIN}") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} is model format {version}, this lookalike reads format {FORMAT_VERSION}: "
            f"use a matching lookalike version, or {_RETRAIN}"
        )
    expected = {"spec": dict, "classes": list, "report": dict, "classifier": str}
    wrong = [key for key, kind in expected.items() if not isinstance(meta.get(key), kind)]
    if wrong or not all(isinstance(label, str) for label in meta["classes"]):
        what = ", ".join(wrong) or "classes"
        raise ModelFileError(f"{path} is damaged ({META_MEMBER} lacks a valid {what}): {_RETRAIN}")
    return meta


def _check_spec(stored: dict, expected: dict, path: Path) -> None:
    differences = spec_differences(stored, expected)
    if differences:
        raise ModelMismatchError(
            f"{path} was trained on vectors from {describe_spec(stored)}, but these come from "
            f"{describe_spec(expected)} ({'; '.join(differences)}): the vectors were made another way. "
            f"Re-embed the images with the model's spec, or retrain the classifier on these vectors."
        )


def _refused_types(archive: zipfile.ZipFile, data: bytes, path: Path) -> list[str]:
    """Types in the skops payload that are off ``ALLOWED_TYPES``, found without building anything.

    Two views, both must pass: every type the schema names (skops would trust some of these,
    e.g. any scikit-learn estimator; we trust only ours), and what skops itself calls untrusted
    (which also names bound methods).
    """
    import skops.io as sio

    try:
        schema = json.loads(archive.read("schema.json"))
    except KeyError:
        raise ModelFileError(f"{path} is damaged (no schema.json): {_RETRAIN}") from None
    except (zipfile.BadZipFile, ValueError, RecursionError) as error:
        raise ModelFileError(f"{path} is damaged (schema.json: {first_line(error)}): {_RETRAIN}") from None
    named = _schema_types(schema)
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as error:  # auditing builds no objects; whatever it trips on means a bad file
        raise ModelFileError(f"{path} is damaged ({first_line(error)}): {_RETRAIN}") from None
    return sorted((named | untrusted) - ALLOWED_TYPES)


def _schema_types(schema: object) -> set[str]:
    """Every ``module.class`` named by a node of a skops schema (walked without recursion)."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node:
                found.add(f"{node.get('__module__')}.{node.get('__class__')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _json_value(value: object, name: str) -> object:
    """``value`` as JSON gives it back (tuples become lists, numpy values plain ones), or TypeError naming the field."""
    try:
        return json.loads(json.dumps(value, default=_numpy_to_python))
    except (TypeError, ValueError) as error:
        raise TypeError(f"the model's {name} must be JSON-able: {error}") from None


def _numpy_to_python(value: object) -> object:
    """Numpy scalars and arrays as plain Python (a report's ``best_params`` may hold ``np.int64``)."""
    import numpy as np

    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        write_atomically(path, data)
    except OSError as error:
        raise ModelFileError(f"can't write the model to {path}: {error.strerror or error}") from None


def _other_sklearn(meta: dict) -> str:
    """A hint when the file was saved by another scikit-learn, whose estimators may not read back here."""
    import sklearn

    saved_with = meta.get("saved_with")
    saved = saved_with.get("scikit-learn") if isinstance(saved_with, dict) else None
    if saved is None or saved == sklearn.__version__:
        return ""
    return f" or needs scikit-learn {saved} (this is {sklearn.__version__})"


def _lookalike_version() -> str:
    from ..version import __version__

    return __version__
