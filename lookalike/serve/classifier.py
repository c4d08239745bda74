"""The labeller: a classifier from ``lookalike train`` that labels the store's query vectors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class Labeller:
    """A saved classifier, checked once against the store's embedding spec.

    Args:
        path: a model file written by ``lookalike train``.
        spec: the store's embedding spec (``store.info()["spec"]``); vectors made another way are refused.

    Raises:
        ModelFileError: the file is missing, damaged or not a lookalike model.
        ModelMismatchError: the model was trained on vectors made another way than the store's.
    """

    def __init__(self, path: str | os.PathLike, spec: dict):
        from ..classify.persist import load_model

        self.path = Path(path)
        self.model = load_model(self.path, expect_spec=spec)
        self.classes = np.asarray(self.model.estimator.classes_, dtype=str)

    def predict(self, vectors: np.ndarray, top: int = 3) -> list[list[dict]]:
        """The ``top`` labels of each vector with their probabilities, most probable first."""
        from ..classify.predictions import probabilities, top_labels

        probs = probabilities(self.model.estimator, np.atleast_2d(vectors))
        return [[{"label": label, "probability": round(p, 6)} for label, p in row]
                for row in top_labels(probs, self.classes, top)]

    def describe(self) -> dict:
        return {"file": self.path.name, "classifier": self.model.classifier, "classes": self.classes.tolist()}
