"""Neighbours: the ``k`` nearest stored images of query vectors, within one catalog snapshot.

The index finds candidates; the store's own float32 vectors decide. An index with lossy
codes (``SQ8``, the default above 100k vectors, ``SQfp16`` or ``PQ``) is asked for more
candidates than ``k`` (``faiss_index.candidates``) and they are re-ranked by their exact
inner products, so every score a search returns is the exact cosine similarity, whatever
the index. Files changed since the index was written are searched by brute force instead,
and the index skips them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from ..ann import index as faiss_index
from ..errors import StoreError
from .catalog import Catalog, FileRecord
from .shards import ShardSet

RERANK_BYTES = 32 << 20  # the candidates' vectors copied out for one block of queries (128 queries at 40 x 1280-d)
BRUTE_FORCE_ROWS = 16_384  # changed rows searched by brute force at a time (80 MiB of 1280-d vectors)


class Hit(NamedTuple):
    """One neighbour: its rank (1 = nearest), cosine similarity, path and stable id."""

    rank: int
    score: float
    path: str
    id: int


def neighbours(catalog: Catalog, index, stored: ShardSet, root: str, vectors: np.ndarray, k: int,
               workers: int = 1, clamp: bool = False) -> list[list[Hit]]:
    """The ``k`` nearest embedded images of each row of ``vectors``, best first, scores exact.

    Args:
        catalog: in a read snapshot in which ``index`` can be trusted (see ``Store._consistent_index``).
        index: the store's index, or None to search everything by brute force.
        stored: the snapshot's vector files.
        root: the indexed folder, resolved: hits carry ``root/key`` paths.
        vectors: ``(n, dim)`` float32 queries.
        k: neighbours per query.
        workers: threads sharing a lone query's scan (see ``faiss_index.search``).
        clamp: ``k`` past the store's size gives every image instead of failing.

    Raises:
        StoreError: the store is empty, or holds fewer than ``k`` images (without ``clamp``).
    """
    total = catalog.count("ok", at_most=k)  # exact whenever it is under k; a full count cost 0.2 s at 1M files
    if total == 0:
        raise StoreError("the store holds no vectors yet: run `lookalike index DIR` on a folder with images")
    if k > total and clamp:
        k = total
    if k > total:
        raise StoreError(f"k={k} is more than the {total} images in the store; ask for at most {total}")
    parts, rerank = [], False
    if index is not None:
        changed, removed = catalog.changed_since(catalog.meta("index_generation"))
        stale = np.array([r.id for r in changed] + removed, dtype=np.int64)  # outdated in the index
        fresh = [r for r in changed if r.row is not None]  # searched by brute force instead
        if index.ntotal:
            wanted = faiss_index.candidates(index, k)
            rerank = wanted > k
            parts.append(faiss_index.search(index, vectors, min(wanted, index.ntotal), exclude=stale, workers=workers))
    else:
        fresh = list(catalog.records("ok"))  # no usable index: everything by brute force
    for start in range(0, len(fresh), BRUTE_FORCE_ROWS):  # a block at a time: memory stays bounded without an index
        block = fresh[start : start + BRUTE_FORCE_ROWS]
        block_ids = np.array([r.id for r in block], dtype=np.int64)
        rows = stored.gather(np.array([r.shard for r in block]), np.array([r.row for r in block]))
        scores, at = faiss_index.exact_search(rows, vectors, min(k, len(block)))
        parts.append((scores, block_ids[at]))
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    records = {id_: r for id_, r in catalog.by_ids(np.unique(ids[ids >= 0]).tolist()).items() if r.row is not None}
    if rerank:
        scores = exact_scores(vectors, ids, records, stored)
    return _hits(records, root, scores, ids, k)


def exact_scores(vectors: np.ndarray, ids: np.ndarray, records: dict[int, FileRecord], stored: ShardSet) -> np.ndarray:
    """The inner product of each query with the stored vector of each of its candidate ids.

    Returns:
        ``(n, c)`` float32, like ``ids``; ``-inf`` where an id is not an embedded file.
    """
    known = np.array(sorted(records), dtype=np.int64)
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)
    if not known.size:
        return scores
    where = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    found = known[where] == ids
    step = max(1, RERANK_BYTES // (4 * ids.shape[1] * vectors.shape[1]))
    for start in range(0, len(ids), step):
        rows = slice(start, start + step)
        block, kept = where[rows], found[rows]
        wanted = np.unique(block[kept])  # each candidate's vector is copied once, however many queries share it
        if not wanted.size:
            continue
        chosen = [records[int(i)] for i in known[wanted]]
        candidates = stored.gather(np.array([r.shard for r in chosen]), np.array([r.row for r in chosen]))
        position = np.minimum(np.searchsorted(wanted, block), len(wanted) - 1)  # exact where kept
        exact = np.einsum("nd,ncd->nc", vectors[rows], candidates[position])
        scores[rows] = np.where(kept, exact, -np.inf)
    return scores


def _hits(records: dict[int, FileRecord], root: str, scores: np.ndarray, ids: np.ndarray, k: int) -> list[list[Hit]]:
    """Best first, each id once, only ids the catalog snapshot knows as embedded."""
    paths = {id_: os.path.join(root, r.path) for id_, r in records.items()}
    order = np.argsort(-scores, axis=1, kind="stable")
    scores, ids = np.take_along_axis(scores, order, 1).tolist(), np.take_along_axis(ids, order, 1).tolist()
    results = []
    for row_scores, row_ids in zip(scores, ids):
        seen, hits = set(), []
        for score, id_ in zip(row_scores, row_ids):
            path = paths.get(id_)
            if path is None or id_ in seen:
                continue
            seen.add(id_)
            hits.append(Hit(len(hits) + 1, score, path, id_))
            if len(hits) == k:
                break
        results.append(hits)
    return results
