"""An IVF index's lists for a large ``nlist``: two-level k-means, as FAISS's ``contrib.clustering`` does it.

FAISS's own IVF training runs k-means over all ``nlist`` centroids for every sample row:
``rows x nlist x dim`` multiply-adds an iteration, over an hour for 4,096 lists at 1M x 1280-d
on 2 cores. Two levels cost about ``2 * sqrt(nlist)`` centroids a row instead of ``nlist``:

1. k-means with ``sqrt(nlist)`` coarse centroids on a subsample;
2. every sample row goes to its coarse group, and each group gets k-means of its own, with
   a share of the ``nlist`` lists proportional to its rows (each list keeps about as many
   training rows as the sample gives a list).

Both levels run FAISS's k-means, on every core, in the full dimension (no PCA: synthetic
clusters in random directions have no small subspace to keep). Memory is the sample, which
the caller bounds, and one group's rows. A progress line (``progress.Progress``) follows the
groups, with the time left estimated from the groups done.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from .progress import Progress

ITERATIONS = 10  # FAISS's IVF default for the lists; the coarse level is cheap, and gets more
COARSE_ITERATIONS = 20
COARSE_POINTS_PER_CENTROID = 2_000  # the coarse k-means' subsample, as FAISS's contrib.clustering
MIN_LISTS = 256  # below this, one-level k-means is cheap enough: FAISS's own training
LARGEST_GROUP_SHARE = 3  # the largest coarse group, against an even share (the build plan copies one group)


def two_level_applies(index: faiss.Index) -> bool:
    """Whether ``index`` gets its lists here: a plain IVF index (not behind a PCA or OPQ, whose lists
    live in the transformed space) with a flat quantizer and at least ``MIN_LISTS`` lists."""
    ivf = faiss.try_extract_index_ivf(index)
    return (ivf is not None and ivf.nlist >= MIN_LISTS and isinstance(faiss.downcast_index(index), faiss.IndexIVF)
            and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat))


def two_level_centroids(sample: np.ndarray, nlist: int, *, spherical: bool, seed: int = 0) -> np.ndarray:
    """``(nlist, dim)`` float32 centroids of ``sample`` (contiguous float32 rows, at least ``nlist``).

    ``spherical`` (for inner-product indexes) keeps every centroid at unit length, as FAISS's
    IVF training does for that metric. Seeded: the same sample gives the same centroids.
    """
    n, dim = sample.shape
    coarse_count = max(1, round(math.sqrt(nlist)))
    coarse = faiss.Kmeans(dim, coarse_count, niter=COARSE_ITERATIONS, seed=seed, spherical=spherical,
                          max_points_per_centroid=COARSE_POINTS_PER_CENTROID)
    coarse.train(sample)
    _, groups = coarse.index.search(sample, 1)
    groups = groups.ravel()
    del coarse
    sizes = np.bincount(groups, minlength=coarse_count)
    shares = lists_per_group(sizes, nlist)
    order = np.argsort(groups, kind="stable")
    progress = Progress(f"training {nlist:,} lists on {n:,} rows", int(sizes.sum()), "rows")
    centroids, start = [], 0
    for group in range(coarse_count):
        rows = order[start:start + sizes[group]]
        start += sizes[group]
        if shares[group]:
            centroids.append(_group_centroids(sample[rows], int(shares[group]), spherical, seed + 1 + group))
        progress.step(len(rows))
    progress.finish()
    return np.ascontiguousarray(np.vstack(centroids), dtype=np.float32)


def lists_per_group(sizes: np.ndarray, nlist: int) -> np.ndarray:
    """How many of ``nlist`` lists each coarse group gets: proportional to its rows, summing to ``nlist``,
    never more lists than rows."""
    cumulative = np.cumsum(sizes, dtype=np.int64)
    shares = np.diff(cumulative * nlist // max(int(cumulative[-1]), 1), prepend=0)
    over = shares > sizes
    if over.any():  # rounding gave a tiny group a list more than its rows: hand it to the largest
        spare = int((shares[over] - sizes[over]).sum())
        shares[over] = sizes[over]
        shares[np.argmax(sizes - shares)] += spare
    return shares


def _group_centroids(rows: np.ndarray, count: int, spherical: bool, seed: int) -> np.ndarray:
    if count >= len(rows):  # as many lists as rows: every row is a centroid
        centroids = rows[:count].copy()
        if spherical:
            faiss.normalize_L2(centroids)
        return centroids
    kmeans = faiss.Kmeans(rows.shape[1], count, niter=ITERATIONS, seed=seed, spherical=spherical,
                          min_points_per_centroid=1)
    kmeans.train(np.ascontiguousarray(rows))
    return kmeans.centroids
