"""Shards: rows gathered from vectors.f32 and shard files, read or mapped, against the vectors written."""

import numpy as np
import pytest

from lookalike.errors import StoreError
from lookalike.store import shards as shards_module
from lookalike.store.shards import ShardSet, shard_path, write_shard_file
from lookalike.store.store import VECTORS, Store

DIM = 8
SPEC = {"model": "fake", "layer": "x", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {"a": "1"}}


@pytest.fixture
def mixed(tmp_path):
    """A store with 40 rows in vectors.f32 and two shard files of 30 and 20 rows; (store, rows by shard)."""
    rng = np.random.default_rng(0)
    store = Store.create(tmp_path / ".lookalike", tmp_path, SPEC)
    written = {0: rng.standard_normal((40, DIM)).astype(np.float32)}
    with store.writer(sync=False) as writer:
        writer.write([(f"v{i}.jpg", 1, 1) for i in range(40)], written[0], [])
        for count in (30, 20):
            x = rng.standard_normal((count, DIM)).astype(np.float32)
            name = write_shard_file(store.directory, x)
            writer.commit_shard(name, [(f"{name}/{i}.jpg", 1, 1, 1, 0o644, i) for i in range(count)])
    with store.catalog() as catalog:
        for shard in catalog.shards():
            written[shard.id] = np.fromfile(shard_path(store.directory, shard.name), dtype=np.float32).reshape(-1, DIM)
    return store, written


def _shard_set(store) -> ShardSet:
    with store.catalog() as catalog:
        return ShardSet.of(store.directory, DIM, catalog)


@pytest.mark.parametrize("read_rows", [0, 256], ids=["mapped", "read"])
def test_gather_gives_the_written_rows_in_the_order_asked_whether_read_or_mapped(mixed, monkeypatch, read_rows):
    store, written = mixed
    monkeypatch.setattr(shards_module, "READ_ROWS", read_rows)
    shards = np.array([2, 0, 1, 0, 2, 1, 1], dtype=np.int64)
    rows = np.array([19, 39, 0, 0, 3, 29, 0], dtype=np.int64)

    got = _shard_set(store).gather(shards, rows)

    want = np.stack([written[s][r] for s, r in zip(shards.tolist(), rows.tolist())])
    np.testing.assert_array_equal(got, want)


def test_a_read_past_the_committed_rows_or_of_a_short_file_is_refused(mixed):
    store, _ = mixed
    stored = _shard_set(store)
    with pytest.raises(StoreError, match="holds 40 committed rows"):
        stored.gather(np.array([0]), np.array([40]))
    with open(store.directory / VECTORS, "r+b") as file:
        file.truncate(4 * DIM * 10)  # rows 10..39 lost
    with pytest.raises(StoreError, match="shorter than the 40 vectors"):
        stored.gather(np.array([0, 0]), np.array([1, 12]))
    with store.catalog() as catalog:
        damaged = catalog.shards()[0]
    shard_path(store.directory, damaged.name).write_bytes(b"\0" * 12)
    with pytest.raises(StoreError, match="the store is damaged"):
        stored.gather(np.array([damaged.id]), np.array([0]))
