"""Search and open: a lookalike store against raw FAISS on the same index file, in one run.

    python benchmarks/bench_search.py --n 1000000        # -> benchmarks/results/search.json

Builds (or reuses, under --folder) a real store of --n synthetic L2-normalised vectors: a
mixture of --clusters gaussian clusters of varied spread, written in chunks through
``StoreWriter.write`` as the indexer writes, then indexed by the store's own
``sync_index`` (the factory it plans for that size, e.g. ``IVF4096,SQ8`` at 1M on a machine
with 12 GiB of RAM or more, trained on min(n, 100 * nlist) vectors).
Then, on one batch of --queries fresh query vectors, lookalike and its baseline side by side
in each of --repeats repeats (the order alternating), each ratio the median of the
per-repeat ratios with its bootstrap 95% interval (benchmarks/stats.py); a target is met
when the interval's worse end meets it:

- search: ``index.search`` on the index as the store reads it (``read_index``, memory-mapped,
  the nprobe saved in the file), with lossy codes for 2k candidates re-ranked by the exact
  vectors held in memory, against ``store.search(q, k)``, which also reopens the index,
  checks the catalog generation, reads the candidates' vectors from its files and maps ids
  to paths; target: ratio <= 1.10;
- open: ``Store.open`` + a first one-query search, in this process and as a fresh
  ``python -c`` process, against ``faiss.read_index`` without mmap (a full load) of the
  same file; target <= 2 s. Then the same with the store's files dropped from the page
  cache (posix_fadvise) before each open, for a cold-disk number (--cold-repeats times).

Repeats: 21 by default (11 cold), about a minute and a half at 100,000 vectors on 2 cores
beside the build: from about 15 repeats the bootstrap interval of a median leaves out the
extreme repeats, which on a shared machine are where a neighbour's burst lands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import results
import stats

from lookalike.ann import factory as ann_factory
from lookalike.ann import faiss_io
from lookalike.ann import index as faiss_index
from lookalike.store.store import INDEX, MANIFEST, STORE_DIRNAME, STORE_FILES, Store

SPEC = {"model": "synthetic", "layer": "none", "dim": 1280, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {}}
TARGET_SEARCH_RATIO, TARGET_OPEN_S = 1.10, 2.0


class Mixture:
    """Unit vectors from gaussian clusters around random unit centres; rows are seeded by position."""

    def __init__(self, clusters: int, dim: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.centres = _unit(rng.standard_normal((clusters, dim), dtype=np.float32))
        # per-dimension noise so a member's cosine to its centre spreads over about 0.55..0.85
        self.spread = (rng.uniform(0.6, 1.5, clusters) / np.sqrt(dim)).astype(np.float32)
        self.seed = seed

    def rows(self, start: int, count: int, stream: int = 0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, start])
        labels = rng.integers(0, len(self.centres), count)
        noise = rng.standard_normal((count, self.centres.shape[1]), dtype=np.float32)
        noise *= self.spread[labels, None]
        noise += self.centres[labels]
        return _unit(noise)


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build_store(folder: Path, n: int, mixture: Mixture, chunk: int) -> tuple[Store, dict]:
    """The store under ``folder`` holding ``n`` rows; reused when it already does and its index is current."""
    directory = folder / STORE_DIRNAME
    if (directory / MANIFEST).exists():
        store = Store.open(directory)
        info = store.info()
        if info["embedded"] == n and (directory / INDEX).exists() and store.check().ok:
            planned = ann_factory.plan_build(n, store.dim, store.manifest.index_factory).factory
            if info["index_factory"] == planned:
                return store, {"reused": True, "index_factory": planned}
            started = time.perf_counter()  # built under an older default: rebuilt as the writer builds it now
            store.repair()
            return store, {"reused": True, "rebuilt_from": info["index_factory"], "index_s": time.perf_counter() - started,
                           "index_factory": store.info()["index_factory"]}
        for name in STORE_FILES:  # only the store's own files, as `lookalike index --reset` does
            for path in directory.glob(name + "*"):
                path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    store = Store.create(directory, folder, SPEC)
    started = time.perf_counter()
    with store.writer(sync=False) as writer:
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            keys = [(f"photos/{i // 1000:04d}/{i:07d}.jpg", 40_000 + i % 9_000, 1_700_000_000_000_000_000 + i)
                    for i in range(start, start + count)]
            writer.write(keys, mixture.rows(start, count), [])
    written = time.perf_counter()
    with store.writer():  # nothing written: on exit the store builds its index as after `lookalike index`
        pass
    indexed = time.perf_counter()
    return store, {"reused": False, "write_s": written - started, "index_s": indexed - written,
                   "index_factory": store.info()["index_factory"]}


def evict(directory: Path) -> None:
    """Drop a store's files from the page cache (clean pages only; no root needed)."""
    for path in directory.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def fresh_process(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def bench_search(directory: Path, queries: np.ndarray, k: int, repeats: int) -> dict:
    """Raw FAISS against ``Store.search``; both mappings are dropped on return, so --evict can evict.

    The store re-ranks the candidates of lossy codes by the exact vectors; the raw side does
    the same work the fastest way: ``index.search`` for as many candidates, then inner
    products with the vectors held in memory (numpy), where the store reads them from its files.
    """
    store = Store.open(directory)
    index = faiss_io.read_index(directory / INDEX)  # as Store.search reads it: mapped, nprobe from the file
    wanted = faiss_index.candidates(index, k)
    ids, _, rows = store.vectors()
    vectors = rows[:]  # every stored vector in memory: the raw side's re-rank reads no file

    def raw() -> np.ndarray:
        _, found = index.search(queries, wanted)
        if wanted == k:
            return found
        at = np.searchsorted(ids, np.maximum(found, 0))
        exact = np.where(found >= 0, np.einsum("nd,ncd->nc", queries, vectors[at]), -np.inf)
        return np.take_along_axis(found, np.argsort(-exact, axis=1, kind="stable"), 1)[:, :k]

    times = stats.interleave({"raw": raw, "lookalike": lambda: store.search(queries, k)}, repeats)
    same = np.mean([[h.id for h in hits] == list(row) for hits, row in zip(store.search(queries, k), raw())])
    result = summary(times, "ratio", TARGET_SEARCH_RATIO)
    result.update(same_top_k=float(same), candidates=wanted)
    return {"search": result, "index": faiss_io.describe(index)}


def bench_open(directory: Path, query: np.ndarray, k: int, repeats: int, cold: bool) -> dict:
    """``Store.open`` + a first search against a full ``faiss.read_index``, here and in fresh processes."""
    index_path = directory / INDEX

    def open_lookalike():
        if cold:
            evict(directory)
        Store.open(directory).search(query, k)

    def open_raw():
        if cold:
            evict(directory)
        faiss.read_index(str(index_path))

    opening = stats.interleave({"raw": open_raw, "lookalike": open_lookalike}, repeats)
    np.save(directory.parent / "query.npy", query)
    lookalike_code = (f"import numpy as np; from lookalike.store.store import Store; "
                      f"Store.open({str(directory)!r}).search(np.load({str(directory.parent / 'query.npy')!r}), {k})")
    raw_code = f"import faiss; faiss.read_index({str(index_path)!r})"

    def in_fresh_process(code: str):
        def run():
            if cold:
                evict(directory)
            fresh_process(code)
        return run

    fresh = stats.interleave({"raw": in_fresh_process(raw_code), "lookalike": in_fresh_process(lookalike_code)}, repeats)
    return {"open": summary(opening, "lookalike_s", TARGET_OPEN_S),
            "open_fresh_process": summary(fresh, "lookalike_s", TARGET_OPEN_S)}


def summary(times: dict[str, list[float]], judged: str, target: float) -> dict:
    """Both sides' medians and lookalike / raw (paired), each with its interval; ``judged`` against ``target``."""
    found = {"lookalike_s": stats.median_interval(times["lookalike"]), "raw_s": stats.median_interval(times["raw"]),
             "ratio": stats.paired_ratio(times["lookalike"], times["raw"])}
    found["target"] = {"measure": judged, "at_most": target}
    found["met"] = stats.meets(target, found[judged], "lower")
    return found


MEASURES = (
    ("search", "search (`store.search` vs `index.search` on the same index, both re-ranked)", "raw FAISS"),
    ("open", "open + first search, page cache warm", "`faiss.read_index`, full load"),
    ("open_fresh_process", "the same in a fresh Python process", ""),
    ("cold_open", "open + first search, files evicted from the page cache", ""),
    ("cold_open_fresh_process", "the same in a fresh Python process", ""),
)


def tables(figures: dict, settings: dict) -> dict:
    """What docs/performance.md shows: the setup, and lookalike against raw FAISS (medians, paired ratios, intervals)."""
    index, build = figures["index"], figures["build"]
    setup = [["vectors", f"{settings['n']:,} synthetic, {SPEC['dim']}-d, {settings['clusters']:,} gaussian clusters"],
             ["index", f"{build['index_factory']}, nprobe {index.get('nprobe', '-')}, built by the store's writer"],
             ["queries", f"{settings['queries']:,} fresh draws of the same clusters, k = {settings['k']}"],
             ["repeats", f"{settings['repeats']} paired (cold opens: {settings['cold_repeats']}); "
                         + "medians, and in brackets their bootstrap 95% intervals"],
             ["same top-k ids as raw FAISS (re-ranked alike)", f"{figures['search']['same_top_k']:.1%} of queries"]]
    if not build.get("reused"):
        setup.append(["build", f"writing {build['write_s']:.0f} s, indexing {build['index_s']:.0f} s"])
    rows = []
    for key, label, baseline in MEASURES:
        row = figures[key]
        target = row["target"]
        aim = (f"ratio <= {target['at_most']:.2f}" if target["measure"] == "ratio" else f"<= {target['at_most']:g} s")
        verdict = stats.verdict(row["met"], row[target["measure"]])
        rows.append([label, stats.shown(row["lookalike_s"], ".2f", " s"),
                     (f"{baseline}: " if baseline else "") + stats.shown(row["raw_s"], ".2f", " s"),
                     stats.shown(row["ratio"], ".2f"), f"{aim}: {verdict}"])
    return {"setup": {"columns": ["setting", "value"], "rows": setup},
            "search": {"columns": ["measure", "lookalike", "baseline", "lookalike / baseline", "target"], "rows": rows}}


def hardware() -> dict:
    return {"python": platform.python_version(), "faiss": faiss.__version__, "numpy": np.__version__,
            "cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
            "processor": platform.processor() or platform.machine(),
            "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lookalike-bench-store"))
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=21, help="paired repeats of each measure")
    parser.add_argument("--cold-repeats", type=int, default=11, help="opens with the page cache evicted first")
    parser.add_argument("--rebuild", action="store_true", help="build the store again even if it fits")
    parser.add_argument("--name", default="search", help="the results file: DIR/NAME.json")
    results.add_arguments(parser)
    args = parser.parse_args()
    results.check_tree(args.dirty)  # before the build, not after it

    settings = {key: value for key, value in vars(args).items() if key not in ("results", "dirty")}
    settings.update(folder=str(args.folder))
    if args.rebuild:
        shutil.rmtree(args.folder / STORE_DIRNAME, ignore_errors=True)
    mixture = Mixture(args.clusters, SPEC["dim"])
    store, build = build_store(args.folder, args.n, mixture, args.chunk)
    found = {"hardware": hardware(), "build": build}
    queries = mixture.rows(0, args.queries, stream=1)  # not stored vectors: fresh draws of the same clusters
    found.update(bench_search(store.directory, queries, args.k, args.repeats))
    found.update(bench_open(store.directory, queries[:1], args.k, args.repeats, cold=False))
    cold = bench_open(store.directory, queries[:1], args.k, args.cold_repeats, cold=True)
    found.update(cold_open=cold["open"], cold_open_fresh_process=cold["open_fresh_process"])
    print(json.dumps(found["hardware"]), json.dumps(settings), json.dumps(build), json.dumps(found["index"]), sep="\n")
    for table in tables(found, settings).values():
        print("\n" + results.markdown(table))
    print(f"-> {results.save(args.name, settings, found, 'bench_search', args.results, args.dirty)}")


if __name__ == "__main__":
    main()
