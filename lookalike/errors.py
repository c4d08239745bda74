"""The exceptions lookalike raises. Each message says what to do next; the CLI prints it as one line."""

from __future__ import annotations


class LookalikeError(Exception):
    """Base class: catch this to handle every error lookalike raises on purpose."""


class UnknownModelError(LookalikeError, ValueError):
    """The model name is not in the registry (and not a ``timm:<name>`` timm knows)."""


class UnknownLayerError(LookalikeError, ValueError):
    """``layer=`` names no node of the model's graph."""


class WeightsNotFoundError(LookalikeError, FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable; the message names the file and folder."""


class InvalidWeightsError(LookalikeError, ValueError):
    """A weights file could not be read, or its tensors don't fit the architecture."""


class MissingDependencyError(LookalikeError, ImportError):
    """An optional extra (timm, ...) is needed for what was asked."""


class ImageLoadError(LookalikeError, OSError):
    """One image could not be decoded; ``reason`` says why in a few words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
