"""Verdicts that stick: images a user said are not duplicates of each other, never grouped again.

A verdict names contents, not paths: the pair of content hashes, so it survives re-indexing,
renames and moves (``lookalike distinct``, and the web app's "not duplicates").
"""

from __future__ import annotations

import itertools
import os
from typing import NamedTuple

from ..errors import DuplicatesError


class Verdict(NamedTuple):
    """Two contents said to be distinct, when, and the files that hold each now (by path)."""

    a: str
    b: str
    recorded: float | None
    paths_a: list[str]
    paths_b: list[str]


def record(store, paths, forget: bool = False) -> int:
    """Say (or with ``forget`` unsay) that the images at ``paths`` are not duplicates of one another; how many pairs changed.

    Raises:
        DuplicatesError: fewer than two images, or a path the store has no content hash of.
    """
    digests = digests_of(store, paths)
    if len(set(digests)) < 2:
        raise DuplicatesError("distinct needs two or more images with different contents")
    pairs = [(a, b) for a, b in itertools.combinations(sorted(set(digests)), 2)]
    with store.writer(sync=False) as writer:
        return writer.catalog.record_verdicts(pairs, forget=forget)


def digests_of(store, paths) -> list[str]:
    """The stored content hash of each path (a stored image's path, as the user types it)."""
    keys = [store.relative(os.fspath(p)) for p in paths]
    with store.catalog() as catalog:
        records = catalog.by_paths(keys)
    digests = []
    for path, key in zip(paths, keys):
        record = records.get(key)
        if record is None or record.status != "ok":
            raise DuplicatesError(f"{path} is not an image in the store: index it first")
        if record.digest is None:
            raise DuplicatesError(f"{path} has no content hash yet (indexed by an older lookalike): run `lookalike index` once")
        digests.append(record.digest)
    return digests


def listed(store) -> list[Verdict]:
    """Every verdict, oldest first, with the stored files that hold each content now."""
    with store.catalog() as catalog:
        pairs = catalog.verdicts()
        holders = catalog.by_digests([d for a, b, _ in pairs for d in (a, b)])
    root = store.root
    paths = {d: [str(root / r.path) for r in records] for d, records in holders.items()}
    return [Verdict(a, b, when, paths.get(a, []), paths.get(b, [])) for a, b, when in pairs]
