"""The exceptions lookalike raises. Each message says what to do next; the CLI prints it as one line."""

from __future__ import annotations

import re


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


class StoreError(LookalikeError):
    """A store is missing, damaged, locked or used in a way it can't serve."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No store where one was looked for; the message says how to make one."""


class SpecMismatchError(LookalikeError):
    """Vectors made one way were about to be mixed with vectors made another way."""


class StoreMismatchError(StoreError, SpecMismatchError):
    """A store's vectors were made another way than those offered to it.

    ``what`` says how the two differ; the advice after it depends on the command (``index`` has
    ``--reset``, ``train`` its ``--store``), so a caller may raise it again with its own.
    """

    RESET = "Use the store's model, or --reset to start over with the new one."

    def __init__(self, what: str, advice: str = RESET):
        super().__init__(f"{what}. {advice}")
        self.what = what


class StoreLockedError(StoreError):
    """Another process is writing to the store, or holds its catalog locked."""


class StorePermissionError(StoreError, PermissionError):
    """This user may not read (or write) a store's files; nothing is wrong with the store."""


class StoreReadOnlyError(StoreError):
    """The store is on a read-only filesystem, and the command needs to write to it."""


class StoreDamagedError(StoreError):
    """A store's catalog or vector files are damaged: not what lookalike wrote."""


# The FAISS edge (lookalike.ann.index) and near-duplicate grouping (lookalike.ann.dupes).


class InvalidFactoryError(LookalikeError, ValueError):
    """A factory string FAISS can't parse, whose index can't take ids or removals, or that nothing fits."""


class DimensionMismatchError(LookalikeError, ValueError):
    """Vectors, ids or queries whose shapes don't fit each other or the index."""


class InvalidIdsError(LookalikeError, ValueError):
    """Ids that are not integers, or are negative (``-1`` means "no neighbour" in results)."""


class IndexStateError(LookalikeError, RuntimeError):
    """The index can't do this as it is: mapped read-only from its file, or not trained."""


class IndexFileError(LookalikeError, OSError):
    """An index file that is missing, unreadable, corrupt or can't be written."""


class DuplicateGroupsError(LookalikeError, ValueError):
    """``duplicate_groups`` was given arguments it cannot work with; the message says which."""


class DuplicatesError(LookalikeError, ValueError):
    """Acting on duplicates can't go ahead as asked: an unknown keeper rule, a destination inside a
    protected folder, a journal of another store, an action already undone."""


class DatasetError(LookalikeError, ValueError):
    """A labelled image set that can't train a classifier: no images, one class, an unreadable CSV."""


class ModelFileError(LookalikeError, OSError):
    """A model file that is missing, unreadable, damaged, of another format or unsafe to load."""


class ModelMismatchError(SpecMismatchError, ValueError):
    """The model was trained on vectors made one way and is asked about vectors made another way."""


class TransientError(LookalikeError):
    """A failure that says nothing about the file: out of memory, an I/O error, an interrupted read.

    The featurizer raises it instead of recording a per-file failure; indexing stops (or
    retries the batch) and keeps what was committed, so a rerun picks the files up again.
    """


# The web app and JSON API (lookalike.serve).


class UploadError(LookalikeError, ValueError):
    """An uploaded image the server refuses (empty, too large, not an image, truncated); ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class UnknownImageError(StoreError):
    """No embedded image in the store has the id asked for."""


class ServeError(LookalikeError, OSError):
    """The server can't start: the port is taken, the host unknown, or a file it needs is unreadable."""


class OnnxExportError(LookalikeError):
    """A network could not be exported to ONNX, or its export disagreed with torch; it runs on torch instead."""


class CheckpointError(LookalikeError):
    """A fine-tuning checkpoint that can't be resumed: damaged, or made with other settings or images."""


def first_line(error: BaseException) -> str:
    """What an error says, in one line of at most 200 characters: its first line, without the C++
    location FAISS starts its messages with (its type's name if it says nothing)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    match = re.match(r"Error in .*? at \S+:\d+: (?:Error: )?(.*)", lines[0])
    return (match.group(1) if match else lines[0])[:200]
