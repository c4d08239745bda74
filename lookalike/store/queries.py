"""The questions a store answers above a plain search: the neighbours of an image given by id, path or
vector (itself never among them, ``k`` held to what the store has), and near-duplicate groups.

One policy each, used by ``lookalike query``, ``lookalike dupes``, the web app and the Python API
alike; ``Store.similar`` and ``Store.duplicate_groups`` call these.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..ann.dupes import duplicate_groups as link_groups
from ..errors import StoreError, UnknownImageError
from .neighbours import Hit


class Member(NamedTuple):
    """One image of a duplicate group: its id, its path, and its best similarity to another member."""

    id: int
    path: str
    score: float


class Group(NamedTuple):
    """Near-duplicates: the group's centre first (the member with the most close neighbours), then by id."""

    members: list[Member]


def query_items(store, queries) -> tuple[np.ndarray, list[int | None]]:
    """Vectors of the queries, and each one's own id where it is a stored image (None otherwise).

    Queries are vectors ``(n, dim)``, or items each of which is a stored image's id (int), a
    path (an indexed one reuses its stored vector; others are embedded), or one vector.
    """
    if isinstance(queries, np.ndarray) and queries.dtype.kind == "f":
        vectors = np.atleast_2d(np.ascontiguousarray(queries, dtype=np.float32))
        if vectors.shape[1] != store.dim:
            raise StoreError(f"query vectors are {vectors.shape[1]}-d, this store holds {store.dim}-d vectors")
        return vectors, [None] * len(vectors)
    items = list(queries)
    paths = [os.fspath(q) for q in items if _is_path(q)]
    ids = [int(q) for q in items if _is_id(q)]
    with store.catalog() as catalog:
        catalog.snapshot()
        keys = {p: store.relative(p) for p in paths}
        known = catalog.by_paths(keys.values())
        by_path = {p: r for p, key in keys.items() if (r := known.get(key)) is not None and r.row is not None}
        by_id = {i: r for i, r in catalog.by_ids(ids).items() if r.row is not None}
        stored = store._shard_set(catalog)
        catalog.end_snapshot()
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise UnknownImageError(f"no embedded image has id {unknown[0]}: ids come from search, similar and dupes results")
    embedded = embed_new(store, [p for p in paths if p not in by_path])
    records, old = list(by_path.values()) + list(by_id.values()), {}
    if records:
        rows = stored.gather(np.array([r.shard for r in records], dtype=np.int64),
                             np.array([r.row for r in records], dtype=np.int64))
        old = dict(zip([r.id for r in records], rows))
    vectors, own = [], []
    for q in items:
        if _is_path(q):
            record = by_path.get(os.fspath(q))
            vectors.append(old[record.id] if record is not None else embedded[os.fspath(q)])
            own.append(record.id if record is not None else None)
        elif _is_id(q):
            vectors.append(old[int(q)])
            own.append(int(q))
        else:
            vectors.append(query_items(store, np.asarray(q, dtype=np.float32))[0][0])
            own.append(None)
    return np.stack(vectors), own


def embed_new(store, paths: list[str]) -> dict[str, np.ndarray]:
    """Vectors of images outside the store, embedded with its own spec (``lookalike.open_store`` says how)."""
    if not paths:
        return {}
    if store.embedder is None:
        raise StoreError("to search with images outside the store, open it with lookalike.open_store")
    keys, vectors, failed = store.embedder(paths)
    if failed:
        path, reason = next(iter(failed.items()))
        raise StoreError(f"cannot read query image {path}: {reason}")
    return dict(zip(keys, vectors))


def similar(store, items, k: int, threshold: float | None = None, workers: int = 1) -> list[list[Hit]]:
    """For each item, its ``k`` nearest other stored images, best first, at least ``threshold`` similar.

    A stored item is left out of its own results (by id, however it was named); ``k`` past the
    store's size gives every other image instead of failing.
    """
    if k < 1:
        raise StoreError(f"k must be at least 1, not {k}")
    vectors, own = query_items(store, items)
    ask = k + (1 if any(i is not None for i in own) else 0)  # room for the stored items themselves
    results = []
    for hits, own_id in zip(store.search(vectors, ask, workers=workers, clamp=True), own):
        others = [h for h in hits if h.id != own_id][:k]
        results.append([h._replace(rank=rank) for rank, h in enumerate(others, 1)
                        if threshold is None or h.score >= threshold])
    return results


def duplicate_groups(store, threshold: float = 0.95, k: int = 10,
                     progress: Callable[[int, int], None] | None = None) -> list[Group]:
    """Groups of near-duplicates over the whole store: connected components of its kNN graph at ``threshold``.

    Every image's ``k`` nearest neighbours are searched (exact scores, in bounded memory: see
    ``ann.dupes``); ``progress(done, total)`` is told the rows searched after each batch.

    Raises:
        DuplicateGroupsError: a threshold outside (-1, 1] or k < 2.
    """
    ids, keys, vectors = store.vectors()
    total = len(ids)
    search = lambda queries, n: store.knn(queries, min(n, total))  # noqa: E731 - a store smaller than k
    found = link_groups(vectors, ids, search, threshold=threshold, k=min(k, max(total, 2)),
                        progress=(lambda done: progress(done, total)) if progress else None)
    root = str(store.root)  # resolved once, not per member
    path_of = dict(zip(ids.tolist(), (os.path.join(root, key) for key in keys)))
    return [Group([Member(i, path_of[i], s) for i, s in zip(g.ids, g.scores)]) for g in found]


def _is_path(item) -> bool:
    return isinstance(item, (str, os.PathLike))


def _is_id(item) -> bool:
    return isinstance(item, (int, np.integer)) and not isinstance(item, bool)
