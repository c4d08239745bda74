"""The manifest: what a store holds and how it was made, versioned, in ``manifest.json``.

It records the embedding spec as a plain dict: the store never reads it (it imports nothing of
featurize); ``indexing`` compares it with the spec of the vectors offered, so that vectors made
another way are refused instead of silently mixed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import write_atomically
from ..errors import StoreError
from .access import damaged, explained

# 2: the catalog records ctime, mode and when each row was written; 3: vectors may sit in shard files;
# 4: each file's content hash, pixel size and EXIF time, and "not duplicates" verdicts
FORMAT_VERSION = 4
MIGRATABLE_VERSIONS = (1, 2, 3)  # upgraded in place when opened (see Store.open)
METRIC = "inner_product"  # on L2-normalised vectors: cosine similarity


@dataclass
class Manifest:
    """A store's description.

    Attributes:
        spec: the embedding spec (``EmbeddingSpec.to_dict()``): model, weights, layer, dim, preprocessing.
        root: the indexed folder, relative to the store's folder (so both can move together).
        index_factory: a FAISS factory string the user forced, or None to choose by size.
        weights: the weights file the vectors were made with, when not the model's pretrained ones.
        model_file: for a fine-tuned model (known in ``spec`` by its digest), where its ``.lkft`` file
            was last given; ``lookalike index --model NEWPATH`` records a new place.
        id: names the store in the journals of actions on its files ("" in stores made before it had one,
            until their first action gives them one).
    """

    spec: dict
    root: str
    index_factory: str | None = None
    weights: str | None = None
    model_file: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    metric: str = METRIC
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def dim(self) -> int:
        return int(self.spec["dim"])

    def write(self, path: Path) -> None:
        write_atomically(path, (json.dumps(asdict(self), indent=2) + "\n").encode(), crash_point="manifest")

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        with explained(path, writing=False):
            text = path.read_text()
        try:
            data = json.loads(text)
        except ValueError as e:
            raise damaged(path, f"not JSON: {e}") from e
        version = data.get("format_version")
        if version != FORMAT_VERSION and version not in MIGRATABLE_VERSIONS:
            raise StoreError(
                f"{path} is store format {version}, this lookalike reads format {FORMAT_VERSION}: "
                f"re-index with --reset, or use a matching lookalike version"
            )
        known = {k: data[k] for k in ("spec", "root", "index_factory", "weights", "model_file", "id", "metric",
                                             "format_version", "created") if k in data}
        return cls(**{"id": "", **known})
