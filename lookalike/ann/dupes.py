"""Near-duplicate groups over a whole store, from a kNN graph and its connected components.

Every row is searched for its ``k`` nearest neighbours, batch by batch; each neighbour at
or above the threshold is an edge, and the edges are merged as they arrive into a
union-find forest over the rows. Memory is O(n) for the forest plus O(batch_size * k)
for one batch of results: no n x n matrix is ever made, so a million vectors on a
``np.memmap`` work.

What a kNN graph can and cannot see, with an exact search (``IndexFlatIP``):

- Every edge found is a true pair (cos >= threshold), so a group never joins vectors
  that no chain of true pairs joins.
- Every vector with any other vector at or above the threshold is in some group: its
  nearest other neighbour is among its own k nearest and is above the threshold too.
- A group is complete (the whole connected component of the all-pairs threshold graph)
  whenever each member has at most k - 1 others at or above the threshold, because then
  all its pairs are in its own result list. A dense cluster larger than that is usually
  still found whole through chains of nearest neighbours, but not always: two tight
  clusters that touch only through a pair that neither end ranks among its k nearest
  come out as two groups. Raise ``k`` when clusters bigger than k are expected.

An approximate index (IVF, HNSW) may miss neighbours, and so may miss edges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..errors import DuplicateGroupsError

log = logging.getLogger(__name__)

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class DuplicateGroup(NamedTuple):
    """One connected component of the threshold graph.

    ``ids``: the members, the group's centre first (the member with the most
    above-threshold neighbours in its own result list; the smallest id on ties), then
    the rest by ascending id. ``scores``: aligned with ``ids``, each member's best cosine
    similarity to another member, the strongest link holding it in the group. With an
    exact search that is its similarity to its nearest neighbour in the whole store.
    """

    ids: list[int]
    scores: list[float]


def duplicate_groups(
    vectors,
    ids: np.ndarray,
    search: SearchFn,
    threshold: float = 0.95,
    k: int = 10,
    batch_size: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> list[DuplicateGroup]:
    """Group the rows of ``vectors`` whose cosine similarity chains together at or above ``threshold``.

    Args:
        vectors: array-like of shape (n, d), float32 and L2-normalised; a ``np.memmap``
            is read ``batch_size`` rows at a time.
        ids: int64 ids of shape (n,), row-aligned with ``vectors``, unique, never -1.
        search: FAISS-style ``(queries (b, d), k) -> (D, I)`` returning similarities
            (larger is closer, e.g. inner products) and ids, -1 for a missing neighbour;
            typically ``index.search`` of an index holding these vectors under these ids.
            Ids it returns that are not in ``ids`` (stale entries) are ignored.
        threshold: the least cosine similarity that joins two vectors, in (-1, 1].
            Float32 rounding puts identical unit vectors just under 1.0: use 0.9999
            for exact copies.
        k: neighbours fetched per row, the row itself included; at least 2.
        batch_size: rows searched per call to ``search``.
        progress: called with the number of rows done after each batch.

    Returns:
        The groups of two or more members, largest first, then by smallest member id.

    Raises:
        DuplicateGroupsError: (a ``ValueError``) for a threshold outside (-1, 1], k < 2,
            batch_size < 1, misshapen inputs, duplicate ids or an id of -1, or a search
            result whose shape does not fit the queries.
    """
    n = _check_arguments(vectors, ids, threshold, k, batch_size)
    if n < 2:
        return []
    ids = np.asarray(ids, dtype=np.int64)
    parent, best, degree = _link_rows(vectors, ids, search, threshold, k, batch_size, progress)
    groups = _collect_groups(_flatten(parent), ids, best, degree)
    log.debug("%d near-duplicate groups among %d vectors at threshold %s", len(groups), n, threshold)
    return groups


def _check_arguments(vectors, ids, threshold: float, k: int, batch_size: int) -> int:
    """Raise ``DuplicateGroupsError`` for unusable arguments; return n."""
    if not (isinstance(threshold, (int, float, np.floating, np.integer)) and -1.0 < threshold <= 1.0):
        raise DuplicateGroupsError(
            f"threshold must be a cosine similarity in (-1, 1], got {threshold!r}: try 0.95 for near-duplicates"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise DuplicateGroupsError(f"k must be an integer >= 2 (each row's own match takes one slot), got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DuplicateGroupsError(f"batch_size must be a positive integer, got {batch_size!r}")
    shape = np.shape(vectors)
    if len(shape) != 2:
        raise DuplicateGroupsError(f"vectors must have shape (n, d), got shape {shape}")
    id_shape = np.shape(ids)
    if id_shape != (shape[0],):
        raise DuplicateGroupsError(f"ids must have shape ({shape[0]},) to match the vectors, got {id_shape}")
    ids = np.asarray(ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise DuplicateGroupsError(f"ids must be integers, got dtype {ids.dtype}")
    if np.any(ids == -1):
        raise DuplicateGroupsError("ids must not contain -1: FAISS uses -1 for a missing neighbour")
    return shape[0]


def _link_rows(vectors, ids, search: SearchFn, threshold, k, batch_size, progress):
    """Search every row and merge its above-threshold neighbours: (parent forest, best score, degree) per row."""
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise DuplicateGroupsError("ids must be unique: an id that appears twice cannot name one row")
    parent = np.arange(n)
    best = np.full(n, -np.inf, dtype=np.float32)
    degree = np.zeros(n, dtype=np.int32)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        queries = np.ascontiguousarray(vectors[start:stop], dtype=np.float32)
        found = search(queries, k)
        a, b, sims = _batch_edges(found, start, stop, sorted_ids, order, threshold, degree)
        np.maximum.at(best, a, sims)
        np.maximum.at(best, b, sims)
        _union(parent, a, b)
        if progress is not None:
            progress(stop)
    return parent, best, degree


def _batch_edges(found, start: int, stop: int, sorted_ids, order, threshold: float, degree):
    """The above-threshold edges (query row, neighbour row, similarity) of one search result; fills ``degree``."""
    sims, labels = (np.asarray(x) for x in found)
    if sims.shape != labels.shape or sims.ndim != 2 or sims.shape[0] != stop - start:
        raise DuplicateGroupsError(
            f"search returned D {sims.shape} and I {labels.shape} for {stop - start} queries: "
            "expected two arrays of shape (queries, k)"
        )
    pos = np.minimum(np.searchsorted(sorted_ids, labels), len(sorted_ids) - 1)
    known = sorted_ids[pos] == labels  # never true for -1 (missing): ids may not hold it
    rows = np.where(known, order[pos], -1)
    query = np.arange(start, stop)[:, None]
    hit = known & (rows != query) & (sims >= threshold)
    # an index holding an id twice returns it twice: count distinct neighbours only
    linked = np.sort(np.where(hit, rows, -1), axis=1)
    fresh = linked >= 0
    fresh[:, 1:] &= linked[:, 1:] != linked[:, :-1]
    degree[start:stop] = fresh.sum(axis=1)
    return np.broadcast_to(query, hit.shape)[hit], rows[hit], sims[hit].astype(np.float32)


def _find(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Roots of the nodes ``x``, halving every path walked and pointing ``x`` straight at its root."""
    r = parent[x]
    while True:
        p = parent[r]
        if np.array_equal(p, r):
            break
        # all queried nodes halve their paths at once, so a long chain shrinks geometrically
        grand = parent[p]
        parent[r] = grand
        r = grand
    parent[x] = r
    return r


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Merge the trees of each pair (a[i], b[i]), a whole batch of pairs per numpy pass."""
    while a.size:
        ra, rb = _find(parent, a), _find(parent, b)
        apart = ra != rb
        a, b = np.minimum(ra[apart], rb[apart]), np.maximum(ra[apart], rb[apart])
        # hook each larger root under a smaller one: roots only ever point down, so no
        # cycle can form; a root met by several pairs keeps one write, the rest go round again
        parent[b] = a


def _flatten(parent: np.ndarray) -> np.ndarray:
    """Every row's root, by pointer jumping over the whole forest."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def _collect_groups(roots: np.ndarray, ids: np.ndarray, best: np.ndarray, degree: np.ndarray) -> list[DuplicateGroup]:
    """The components of two or more rows, centre first then by id, largest first then by smallest id."""
    members = np.flatnonzero(np.bincount(roots)[roots] >= 2)
    if members.size == 0:
        return []
    members = members[np.lexsort((ids[members], -degree[members], roots[members]))]  # centres lead
    root = roots[members]
    starts = np.flatnonzero(np.r_[True, root[1:] != root[:-1]])
    follower = np.ones(members.size, dtype=bool)
    follower[starts] = False
    members = members[np.lexsort((ids[members], follower, root))]
    ends = np.r_[starts[1:], members.size]
    smallest = np.minimum.reduceat(ids[members], starts)
    member_ids, scores = ids[members].tolist(), best[members].astype(float).tolist()
    return [
        DuplicateGroup(ids=member_ids[starts[g] : ends[g]], scores=scores[starts[g] : ends[g]])
        for g in np.lexsort((smallest, starts - ends)).tolist()
    ]
