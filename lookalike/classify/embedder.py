"""``ImageEmbedder``: a scikit-learn transformer from image paths to embeddings, so that
``make_pipeline(ImageEmbedder(), LinearSVC()).fit(paths, labels)`` just works."""

from __future__ import annotations

import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class ImageEmbedder(TransformerMixin, BaseEstimator):
    """Embeds image files with a pretrained CNN (frozen: ``fit`` learns nothing but the output size).

    Args:
        model: a name from ``lookalike.list_models()`` or ``timm:<name>``.
        layer: an earlier layer to tap (see ``lookalike.list_layers``), or None for the embedding.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        batch_size: images per forward pass.
    """

    def __init__(self, model: str = "efficientnet_lite0", layer: str | None = None, device: str | None = None,
                 batch_size: int = 32):
        self.model = model
        self.layer = layer
        self.device = device
        self.batch_size = batch_size

    def fit(self, X, y=None):
        """Load the network; records ``n_features_out_`` and ``spec_``."""
        extractor = self._get_extractor()
        self.n_features_out_ = extractor.dim
        self.spec_ = extractor.spec.to_dict()
        return self

    def transform(self, X) -> np.ndarray:
        """Embed a sequence of image paths; float32 (n, dim), L2-normalised.

        Raises:
            ValueError: some images can't be read (rows must stay aligned with labels, so
                no image can be dropped silently); the message lists them.
        """
        check_is_fitted(self, "n_features_out_")
        paths = [os.fspath(p) for p in X]
        vectors, failures = {}, []
        for batch in self._get_extractor().embed_paths(paths):
            vectors.update(zip(batch.keys, batch.vectors))
            failures += batch.failures
        if failures:
            listed = "; ".join(f"{f.key}: {f.reason}" for f in failures[:3])
            raise ValueError(f"{len(failures)} images could not be read ({listed}); remove them from the input")
        if not paths:
            return np.zeros((0, self.n_features_out_), dtype=np.float32)
        return np.stack([vectors[p] for p in paths])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        return np.array([f"embedding{i}" for i in range(self.n_features_out_)], dtype=object)

    def _get_extractor(self):
        extractor = self.__dict__.get("_extractor")
        if extractor is None:
            from ..featurize import create_extractor

            extractor = create_extractor(self.model, layer=self.layer, device=self.device, batch_size=self.batch_size)
            self.__dict__["_extractor"] = extractor
        return extractor

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_extractor", None)  # a network on a device is rebuilt, not pickled
        return state
