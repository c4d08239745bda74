"""Export: every stored vector with its path, for other tools (numpy or Parquet), a block at a time.

    npy      OUTPUT: float32 (n, dim), numpy's .npy format; OUTPUT.paths.json: the n paths
    parquet  OUTPUT: one table of path (string) and vector (fixed-size list of float32)

Each file is written whole or not at all: a temporary file, fsynced, renamed over the name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import replace_atomically, write_atomically
from ..errors import MissingDependencyError, StoreError

FORMATS = ("npy", "parquet")
CHUNK_ROWS = 65_536  # rows at a time: a million vectors never sit in memory at once


def export(store, output: str | os.PathLike, fmt: str = "npy") -> int:
    """Write every embedded file's vector and absolute path to ``output``; returns how many.

    Raises:
        StoreError: an unknown format, or ``output`` can't be written.
        MissingDependencyError: parquet without pyarrow.
    """
    if fmt not in FORMATS:
        raise StoreError(f"export writes {', '.join(FORMATS)}, not {fmt!r}")
    output = Path(output)
    _, keys, vectors = store.vectors()
    root = store.root
    paths = [str(root / key) for key in keys]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            replace_atomically(output, lambda tmp: _parquet(tmp, paths, vectors, store.dim))
        else:
            replace_atomically(output, lambda tmp: _npy(tmp, vectors, len(paths), store.dim))
            write_atomically(output.with_name(output.name + ".paths.json"), json.dumps(paths).encode())
    except OSError as e:
        raise StoreError(f"cannot write {output}: {e.strerror or e}") from e
    return len(paths)


def _npy(path: Path, vectors, count: int, dim: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, dim))
    for start in range(0, count, CHUNK_ROWS):
        out[start : start + CHUNK_ROWS] = vectors[start : start + CHUNK_ROWS]
    out.flush()
    del out


def _parquet(path: Path, paths: list[str], vectors, dim: int) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("parquet export needs pyarrow: pip install 'lookalike[parquet]'") from None
    schema = pa.schema([("path", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(paths), CHUNK_ROWS):
            rows = vectors[start : start + CHUNK_ROWS]
            column = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), dim)
            writer.write_table(pa.table({"path": paths[start : start + CHUNK_ROWS], "vector": column}, schema=schema))
