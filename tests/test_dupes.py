"""Near-duplicate groups: checked against an all-pairs reference and scipy's connected components."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from lookalike.ann.dupes import DuplicateGroup, DuplicateGroupsError, duplicate_groups
from lookalike.errors import LookalikeError

N, DIM = 2000, 64
THRESHOLDS = (0.8, 0.9, 0.95, 0.98)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def all_pair_similarities(vectors: np.ndarray) -> np.ndarray:
    """Cosines in float64, the diagonal (self-matches) at -inf."""
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    np.fill_diagonal(sims, -np.inf)
    return sims


def exact_duplicate_groups_bruteforce(vectors: np.ndarray, ids: np.ndarray, threshold: float):
    """All pairs: {frozenset of ids}, and each grouped id's best similarity to any other vector."""
    sims = all_pair_similarities(vectors)
    _, labels = connected_components(sims >= threshold, directed=False)
    sizes = np.bincount(labels)
    groups = {frozenset(ids[labels == c].tolist()) for c in np.flatnonzero(sizes >= 2)}
    best = {int(i): float(s) for i, s, c in zip(ids, sims.max(axis=1), labels) if sizes[c] >= 2}
    return groups, best, sims


def flat_index(vectors: np.ndarray, ids: np.ndarray, extra: tuple[np.ndarray, np.ndarray] | None = None):
    """An exact inner-product index holding ``vectors`` under ``ids``, added in a shuffled order."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    shuffle = np.random.default_rng(1).permutation(len(ids))
    index.add_with_ids(vectors[shuffle], ids[shuffle])
    if extra is not None:
        index.add_with_ids(*extra)
    return index


@pytest.fixture(scope="module")
def planted():
    """2,000 random unit vectors, among them 60 groups of sizes 2..6 made by adding noise of varying strength."""
    rng = np.random.default_rng(0)
    rows = [unit(rng.standard_normal((N - 240, DIM)))]
    for size in np.tile(np.arange(2, 7), 12):  # 12 groups of each size: 240 rows
        base = rng.standard_normal(DIM)
        sigma = rng.uniform(0.05, 0.5, size=(size, 1))  # pairwise cosines from about 0.8 to 0.995
        rows.append(unit(base / np.sqrt(DIM) + sigma * rng.standard_normal((size, DIM)) / np.sqrt(DIM)))
    vectors = np.concatenate(rows)[rng.permutation(N)]
    ids = 1000 + 7 * rng.permutation(N).astype(np.int64)  # gappy, and not in row order
    return vectors, ids, flat_index(vectors, ids)


@pytest.fixture(scope="module")
def clear(planted):
    """Nudge a threshold to the nearest value no pair lies within 1e-5 of, so float32 and float64 agree."""
    sims = all_pair_similarities(planted[0])

    def nudge(nominal: float) -> float:
        near = sims[np.abs(sims - nominal) < 0.01]
        for step in np.linspace(0, 0.005, 51):
            for t in (nominal - step, nominal + step):
                if not np.any(np.abs(near - t) < 1e-5):
                    return float(t)
        raise AssertionError(f"no clear threshold near {nominal}")

    return nudge


@pytest.fixture
def one_thread():
    """FAISS on one OpenMP thread: many tiny searches on shared cores are otherwise slow."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def as_sets(groups: list[DuplicateGroup]) -> set[frozenset[int]]:
    return {frozenset(g.ids) for g in groups}


def check_order(groups: list[DuplicateGroup]) -> None:
    """Largest first then smallest id; in a group one centre then ascending ids, scores aligned."""
    keys = [(-len(g.ids), min(g.ids)) for g in groups]
    assert keys == sorted(keys)
    for g in groups:
        assert len(g.ids) >= 2 and len(g.scores) == len(g.ids)
        assert g.ids[1:] == sorted(g.ids[1:])


def assert_same_groups(got: list[DuplicateGroup], expected: list[DuplicateGroup]) -> None:
    """Identical ids in identical order; scores equal up to float32 rounding (BLAS blocking varies with batch)."""
    assert [g.ids for g in got] == [g.ids for g in expected]
    for g, e in zip(got, expected):
        assert g.scores == pytest.approx(e.scores, abs=1e-6)


@pytest.mark.parametrize("nominal", THRESHOLDS)
def test_matches_all_pairs_reference(planted, clear, nominal):
    vectors, ids, index = planted
    threshold = clear(nominal)
    expected, best, _ = exact_duplicate_groups_bruteforce(vectors, ids, threshold)
    groups = duplicate_groups(vectors, ids, index.search, threshold=threshold, k=10, batch_size=256)
    assert as_sets(groups) == expected
    assert len(expected) >= 20 and max(map(len, expected)) >= 4  # the data tests something
    check_order(groups)
    for g in groups:
        assert g.scores == pytest.approx([best[i] for i in g.ids], abs=1e-5)


def test_higher_thresholds_leave_fewer_members(planted, clear):
    """The planted noise varies, so raising the threshold peels members off and splits groups."""
    vectors, ids, index = planted
    runs = [duplicate_groups(vectors, ids, index.search, threshold=clear(t)) for t in THRESHOLDS]
    members = [sum(len(g.ids) for g in groups) for groups in runs]
    assert members == sorted(members, reverse=True) and members[0] > members[-1]
    assert len({len(groups) for groups in runs}) > 1


def test_chain_joins_three():
    """a-b and b-c above the threshold, a-c below: one group of three, centred on b."""
    angles = np.radians([0.0, 15.0, 30.0, 90.0, 180.0])
    vectors = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1).astype(np.float32)
    vectors[3] = [0, 0, 1]
    ids = np.array([10, 20, 30, 40, 50], dtype=np.int64)
    index = flat_index(vectors, ids)
    assert float(vectors[0] @ vectors[2]) < 0.95 < float(vectors[0] @ vectors[1])
    (group,) = duplicate_groups(vectors, ids, index.search, threshold=0.95, k=3)
    assert group.ids == [20, 10, 30]
    assert group.scores == pytest.approx([np.cos(np.radians(15))] * 3, abs=1e-6)
    assert duplicate_groups(vectors, ids, index.search, threshold=0.97, k=3) == []
    # b stored twice fills two slots of a's and c's lists, yet counts once: b stays the centre
    twice = flat_index(vectors, ids, extra=(vectors[1:2], ids[1:2]))
    assert duplicate_groups(vectors, ids, twice.search, threshold=0.95, k=4) == [group]


def test_memmap_gives_identical_groups(planted, clear, tmp_path):
    vectors, ids, index = planted
    threshold = clear(0.9)
    stored = np.lib.format.open_memmap(tmp_path / "vectors.npy", mode="w+", dtype=np.float32, shape=vectors.shape)
    stored[:] = vectors
    stored.flush()
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    assert_same_groups(
        duplicate_groups(mapped, ids, index.search, threshold=threshold, batch_size=300),
        duplicate_groups(vectors, ids, index.search, threshold=threshold),
    )


def test_batch_size_does_not_change_groups(planted, clear, one_thread):
    vectors, ids, index = planted
    threshold = clear(0.9)
    one = duplicate_groups(vectors, ids, index.search, threshold=threshold, batch_size=1)
    assert_same_groups(one, duplicate_groups(vectors, ids, index.search, threshold=threshold, batch_size=4096))
    assert_same_groups(one, duplicate_groups(vectors, ids, index.search, threshold=threshold, batch_size=7))


def test_search_sees_at_most_batch_size_rows_and_progress_counts_up(planted):
    vectors, ids, index = planted
    calls, done = [], []

    def search(queries, k):
        calls.append((len(queries), k))
        assert queries.dtype == np.float32 and queries.flags.c_contiguous
        return index.search(queries, k)

    duplicate_groups(vectors, ids, search, threshold=0.9, k=5, batch_size=300, progress=done.append)
    assert all(rows <= 300 and k == 5 for rows, k in calls)
    assert sum(rows for rows, _ in calls) == N
    assert done == list(range(300, N, 300)) + [N]


def test_stale_and_repeated_index_entries_are_ignored(planted, clear):
    """Ids the index holds but ``ids`` doesn't name, and ids added twice, change nothing."""
    vectors, ids, index = planted
    threshold = clear(0.9)
    expected = duplicate_groups(vectors, ids, index.search, threshold=threshold)
    rows = np.array([g_row for g in expected[:5] for g_row in np.flatnonzero(np.isin(ids, g.ids))])
    stale_ids = 10**9 + np.arange(rows.size, dtype=np.int64)  # copies of grouped vectors under unknown ids
    extra = (np.concatenate([vectors[rows], vectors[rows]]), np.concatenate([stale_ids, ids[rows]]))
    polluted = flat_index(vectors, ids, extra=extra)
    assert_same_groups(duplicate_groups(vectors, ids, polluted.search, threshold=threshold, k=20), expected)


def test_few_vectors_make_no_groups():
    def search(queries, k):
        raise AssertionError("nothing to search")

    assert duplicate_groups(np.zeros((0, 8), np.float32), np.zeros(0, np.int64), search) == []
    assert duplicate_groups(unit(np.ones((1, 8))), np.array([5]), search) == []


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"k": 1}, "k must be"),
        ({"batch_size": 0}, "batch_size"),
        ({"ids": np.array([1, 2, 2])}, "unique"),
        ({"ids": np.array([1, -1, 2])}, "-1"),
        ({"ids": np.array([1, 2])}, "shape"),
        ({"ids": np.array([1.0, 2.0, 3.0])}, "integers"),
        ({"vectors": np.zeros(3, np.float32)}, "(n, d)"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, words):
    args = {"vectors": unit(np.eye(3)), "ids": np.array([1, 2, 3]), "search": faiss.IndexFlatIP(3).search} | kwargs
    with pytest.raises(DuplicateGroupsError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        duplicate_groups(**args)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LookalikeError)


def test_misshapen_search_result_is_an_error():
    vectors = unit(np.eye(4))
    with pytest.raises(DuplicateGroupsError, match="search returned"):
        duplicate_groups(vectors, np.arange(4), lambda q, k: (np.ones((1, k)), np.zeros((1, k), np.int64)))


def graph_search(neighbours: np.ndarray, sims: np.ndarray):
    """A fake search over vectors whose one coordinate is their row: returns precomputed neighbour lists."""

    def search(queries, k):
        rows = queries[:, 0].astype(np.int64)
        return sims[rows, :k], neighbours[rows, :k]

    return search


def random_graph(n: int, k: int, seed: int):
    """Out-lists of k: self first; half the rows one shuffled path; the rest random edges, some weak or missing."""
    rng = np.random.default_rng(seed)
    neighbours = np.full((n, k), -1, dtype=np.int64)
    sims = np.zeros((n, k), dtype=np.float32)
    neighbours[:, 0], sims[:, 0] = np.arange(n), 1.0
    path = rng.permutation(n // 2)  # half the rows form one chain, joined in random order
    neighbours[path[1:], 1], sims[path[1:], 1] = path[:-1], 0.97
    neighbours[n // 2 :, 1:] = rng.integers(n // 2, n, size=(n - n // 2, k - 1))
    sims[n // 2 :, 1:] = rng.choice([0.2, 0.96], p=[0.85, 0.15], size=(n - n // 2, k - 1))
    neighbours[n // 2 :][rng.random((n - n // 2, k)) < 0.05] = -1
    return neighbours, sims


def reference_components(neighbours: np.ndarray, sims: np.ndarray, threshold: float) -> set[frozenset[int]]:
    n = len(neighbours)
    edge = (neighbours >= 0) & (sims >= threshold)
    rows = np.broadcast_to(np.arange(n)[:, None], edge.shape)[edge]
    graph = coo_matrix((np.ones(rows.size), (rows, neighbours[edge])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    return {frozenset(part.tolist()) for part in np.split(order, np.cumsum(sizes)[:-1]) if len(part) >= 2}


def test_union_find_matches_scipy_on_a_large_graph():
    """50,000 rows: a 25,000-long chain in random order plus random sparse edges, vs scipy."""
    n, k = 50_000, 4
    neighbours, sims = random_graph(n, k, seed=2)
    vectors = np.arange(n, dtype=np.float32)[:, None]
    groups = duplicate_groups(vectors, np.arange(n), graph_search(neighbours, sims), threshold=0.95, k=k)
    assert as_sets(groups) == reference_components(neighbours, sims, 0.95)
    assert len(groups[0].ids) >= n // 2
    # the path's first row lists nobody above the threshold: only its successor's list links it
    assert min(min(g.scores) for g in groups) >= 0.95
    check_order(groups)


def test_dense_cluster_larger_than_k_may_split_and_more_k_joins_it():
    """The documented limit: two tight clusters of 8 touching through one pair nobody ranks in their top 4."""
    rng = np.random.default_rng(3)
    axis = unit(rng.standard_normal(DIM))
    side = unit(rng.standard_normal(DIM) - (rng.standard_normal(DIM) @ axis) * axis)
    left = unit(axis + 0.13 * side + 0.01 * rng.standard_normal((8, DIM)))
    right = unit(axis - 0.13 * side + 0.01 * rng.standard_normal((8, DIM)))
    vectors = np.concatenate([left, right, unit(rng.standard_normal((50, DIM)))])
    ids = np.arange(len(vectors), dtype=np.int64)
    index = flat_index(vectors, ids)
    expected, _, sims = exact_duplicate_groups_bruteforce(vectors, ids, 0.95)
    assert len(expected) == 1 and sims[:8, 8:16].max() >= 0.95  # all pairs: one group of 16
    assert len(duplicate_groups(vectors, ids, index.search, threshold=0.95, k=4)) == 2
    assert as_sets(duplicate_groups(vectors, ids, index.search, threshold=0.95, k=20)) == expected


@pytest.mark.slow
def test_a_million_rows_in_bounded_memory(tmp_path):
    """1,000,000 memmapped rows through a fake search: the traced peak stays O(n), far below n x n."""
    import tracemalloc

    n, k = 1_000_000, 4
    neighbours, sims = random_graph(n, k, seed=4)
    mapped = np.lib.format.open_memmap(tmp_path / "rows.npy", mode="w+", dtype=np.float32, shape=(n, 1))
    mapped[:, 0] = np.arange(n)
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    search = graph_search(np.where(neighbours >= 0, neighbours * 3 + 1, -1), sims)
    tracemalloc.start()
    try:
        groups = duplicate_groups(mapped, ids, search, threshold=0.95, k=k)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a few n-sized arrays plus the result itself (Python ints and floats, ~70 bytes a member)
    assert peak < 200 * n
    assert len(groups[0].ids) >= n // 2


def test_a_long_chain_in_one_batch():
    """100,000 rows, each linked to the one before: one batch hooks them into a single deep path,
    which path halving in the root search flattens in a few passes (without it: minutes)."""
    n = 100_000
    neighbours = np.stack([np.arange(n), np.arange(n) - 1], axis=1)
    sims = np.tile(np.float32([1.0, 0.99]), (n, 1))
    vectors = np.arange(n, dtype=np.float32)[:, None]
    (group,) = duplicate_groups(vectors, np.arange(n), graph_search(neighbours, sims), k=2, batch_size=n)
    assert group.ids == [1, 0, *range(2, n)]  # row 0 lists nobody: row 1, with one link, leads
    assert group.scores == pytest.approx([0.99] * n)
