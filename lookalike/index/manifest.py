"""The manifest: what a store holds and how it was made, versioned, in ``manifest.json``.

It records the embedding spec as a plain dict (the store never imports torch), so that
vectors made another way are refused instead of silently mixed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import write_atomically
from ..errors import StoreError, StoreMismatchError

FORMAT_VERSION = 2  # 2: the catalog records ctime, mode and when each row was written
MIGRATABLE_VERSIONS = (1,)  # upgraded in place when opened (see Store.open)
METRIC = "inner_product"  # on L2-normalised vectors: cosine similarity
_UNCOMPARED = ("versions",)


@dataclass
class Manifest:
    """A store's description.

    Attributes:
        spec: the embedding spec (``EmbeddingSpec.to_dict()``): model, weights, layer, dim, preprocessing.
        root: the indexed folder, relative to the store's folder (so both can move together).
        index_factory: a FAISS factory string the user forced, or None to choose by size.
        weights: the weights file the vectors were made with, when not the model's pretrained ones.
    """

    spec: dict
    root: str
    index_factory: str | None = None
    weights: str | None = None
    metric: str = METRIC
    format_version: int = FORMAT_VERSION
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def dim(self) -> int:
        return int(self.spec["dim"])

    def check_spec(self, spec: dict) -> None:
        """Raise ``StoreMismatchError`` naming both sides if ``spec`` made vectors differently."""
        differences = spec_differences(self.spec, spec)
        if differences:
            raise StoreMismatchError(
                f"this store holds vectors from {describe_spec(self.spec)}, not {describe_spec(spec)} "
                f"({'; '.join(differences)}). Use the store's model, or --reset to start over with the new one."
            )

    def write(self, path: Path) -> None:
        write_atomically(path, (json.dumps(asdict(self), indent=2) + "\n").encode(), crash_point="manifest")

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read {path}: {e}") from e
        version = data.get("format_version")
        if version != FORMAT_VERSION and version not in MIGRATABLE_VERSIONS:
            raise StoreError(
                f"{path} is store format {version}, this lookalike reads format {FORMAT_VERSION}: "
                f"re-index with --reset, or use a matching lookalike version"
            )
        known = {k: data[k] for k in ("spec", "root", "index_factory", "weights", "metric", "format_version", "created") if k in data}
        return cls(**known)


def spec_differences(a: dict, b: dict) -> list[str]:
    """Fields on which two spec dicts differ, ignoring library versions (compared as JSON: tuples are lists)."""
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    keys = sorted((set(a) | set(b)) - set(_UNCOMPARED))
    return [f"{key}: {a.get(key)} vs {b.get(key)}" for key in keys if a.get(key) != b.get(key)]


def describe_spec(spec: dict) -> str:
    layer = spec.get("layer")
    return f"{spec.get('model')} (layer {layer}, {spec.get('dim')}-d)"
