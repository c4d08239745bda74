"""The index build at 1M x 1280-d: time and recall against the training sample's size (rows a list).

    python benchmarks/bench_build.py                       # -> results/index_build_1m.json

The vectors are ``bench_search``'s synthetic clustered unit vectors (``Mixture``: 3,000
gaussian clusters of varied spread), written once to a memory-mapped file under --folder
and read through a ``RowView``, as the store reads its vector files. Each build is the
store's: the factory ``ann_factory.plan_build`` picks for this size, trained by
``ann_build.trained_index`` on a seeded sample of ``rows a list x nlist`` rows, then filled by
``ann_build.add_in_chunks`` (the two steps of ``build_index`` on the CPU), timed apart.

Recall@10 is the store's: the index's top 20 (``faiss_index.candidates``) re-ranked by the
exact vectors, against exact search (FAISS's ``knn``) of the same 1,000 fresh queries drawn
from the same clusters. Peak memory is the rise of the process's VmHWM over the build, reset
before each, against the plan's ``peak_bytes``.

Each size in --rows-per-list is built once (a survey); the store's default
(``ann_factory.TRAIN_POINTS_PER_CENTROID``) is built --repeats times in all, and its build
time is judged against the 5-minute target by the bootstrap interval of its median.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import faiss
import numpy as np
import results
import stats
from bench_search import SPEC, Mixture

from lookalike.ann import build as ann_build
from lookalike.ann import factory as ann_factory
from lookalike.ann import index as faiss_index
from lookalike.ann.rows import RowView, release_pages

TARGET_BUILD_S, TARGET_RECALL = 300.0, 0.95
LOW_NPROBE_DIVISOR = 8  # recall is also taken at an eighth of the default nprobe, where worse lists cost recall
K = 10


def vectors_file(folder: Path, n: int, mixture: Mixture, clusters: int, chunk: int = 50_000) -> np.ndarray:
    """The ``n`` rows as a read-only memory map, written on the first run (about 5 GB at 1M x 1280-d)."""
    path = folder / f"vectors-{n}x{SPEC['dim']}-c{clusters}.npy"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.npy")
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, SPEC["dim"]))
        for start in range(0, n, chunk):
            out[start:start + chunk] = mixture.rows(start, min(chunk, n - start))
        out.flush()
        del out
        partial.rename(path)
    return np.load(path, mmap_mode="r")


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def build_once(vectors: np.ndarray, factory: str, train_rows: int) -> tuple[object, dict]:
    """One build as the store makes it, its two steps timed apart, and its peak memory."""
    release_pages(vectors)  # pages the exact search and recall read count in RSS until handed back
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
    before = status_bytes("VmRSS")
    rows = RowView(vectors, np.arange(len(vectors)))
    ids = np.arange(len(vectors), dtype=np.int64)
    started = time.perf_counter()
    index = ann_build.trained_index(rows, factory, train_size=train_rows)
    trained = time.perf_counter()
    ann_build.add_in_chunks(index, rows, ids)
    added = time.perf_counter()
    return index, {"train_s": trained - started, "add_s": added - trained, "build_s": added - started,
                   "peak_bytes": status_bytes("VmHWM") - before}


def recall_at_k(index, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> float:
    """The store's recall@k: the index's candidates re-ranked by the exact vectors, against exact search."""
    _, found = index.search(queries, faiss_index.candidates(index, K))
    hits = 0
    for query, row, true in zip(queries, found, truth):
        row = np.sort(row[row >= 0])
        best = row[np.argsort(-(vectors[row] @ query), kind="stable")[:K]]
        hits += len(np.intersect1d(best, true))
    return hits / truth.size


def tables(figures: dict, settings: dict) -> dict:
    """What docs/performance.md shows: the setup, and each training size's build time, recall and memory."""
    plan = figures["plan"]
    setup = [["vectors", f"{settings['n']:,} synthetic, {SPEC['dim']}-d, {settings['clusters']:,} gaussian clusters "
                         "(`bench_search`'s), memory-mapped"],
             ["index", f"{plan['factory']} (the store's choice), nprobe {figures['nprobe']}, "
                       f"top {figures['candidates']} re-ranked by the exact vectors"],
             ["queries", f"{settings['queries']:,} fresh draws of the same clusters, recall@{K} against exact search"],
             ["repeats", f"each size once; the default ({figures['default_rows_per_list']} a list) "
                         f"{settings['repeats']} times: median and bootstrap 95% interval"]]
    rows = []
    for key, run in figures["sizes"].items():
        build = run["build_s"]
        rows.append([f"{key}{' (default)' if int(key) == figures['default_rows_per_list'] else ''}",
                     f"{run['train_rows']:,}", stats.shown(run["train_s"], ".0f", " s"), stats.shown(run["add_s"], ".0f", " s"),
                     stats.shown(build, ".0f", " s"), f"{run['recall']:.4f}", f"{run['recall_low_nprobe']:.4f}",
                     f"{run['peak_gib']:.2f} / {plan['peak_gib_at'][key]:.2f}"])
    judged = figures["sizes"][str(figures["default_rows_per_list"])]
    targets = [["build <= 300 s (interval's high end)", stats.verdict(figures["met_build"], judged["build_s"])],
               [f"recall@{K} >= {TARGET_RECALL}", "met" if figures["met_recall"] else "**missed**"]]
    return {"setup": {"columns": ["setting", "value"], "rows": setup},
            "sizes": {"columns": ["rows a list", "training rows", "training", "adding", "build",
                                  f"recall@{K}", f"recall@{K}, nprobe {figures['nprobe'] // LOW_NPROBE_DIVISOR}",
                                  "peak GiB / planned"], "rows": rows},
            "targets": {"columns": ["target (default size)", "verdict"], "rows": targets}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lookalike-bench-build"))
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rows-per-list", default="64,100,256", help="training sample sizes to survey, rows a list")
    parser.add_argument("--repeats", type=int, default=5, help="builds of the default size in all")
    parser.add_argument("--name", default="index_build_1m", help="the results file: DIR/NAME.json")
    results.add_arguments(parser)
    args = parser.parse_args()
    results.check_tree(args.dirty)
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("lookalike.ann.progress").setLevel(logging.INFO)  # the build's progress lines, as the CLI shows
    settings = {key: value for key, value in vars(args).items() if key not in ("results", "dirty")}
    settings["folder"] = str(args.folder)

    mixture = Mixture(args.clusters, SPEC["dim"])
    vectors = vectors_file(args.folder, args.n, mixture, args.clusters)
    queries = mixture.rows(0, args.queries, stream=1)
    started = time.perf_counter()
    _, truth = faiss_index.exact_search(vectors, queries, K)
    print(f"exact search of {args.queries} queries: {time.perf_counter() - started:.0f} s", flush=True)

    plan = ann_factory.plan_build(args.n, SPEC["dim"])
    nlist = int(plan.factory.split(",")[0].removeprefix("IVF"))
    default = ann_factory.TRAIN_POINTS_PER_CENTROID
    sizes = sorted({int(s) for s in args.rows_per_list.split(",")} | {default})
    order = sizes + [default] * (args.repeats - 1)
    runs: dict[int, list[dict]] = {size: [] for size in sizes}
    found = {"plan": {"factory": plan.factory, "peak_gib_at": {}}, "default_rows_per_list": default}
    for size in order:
        train_rows = min(args.n, size * nlist)
        index, run = build_once(vectors, plan.factory, train_rows)
        run["recall"] = recall_at_k(index, vectors, queries, truth)
        ivf = faiss.extract_index_ivf(index)
        default_nprobe, ivf.nprobe = ivf.nprobe, max(1, ivf.nprobe // LOW_NPROBE_DIVISOR)
        run["recall_low_nprobe"] = recall_at_k(index, vectors, queries, truth)  # the lists' quality shows more
        ivf.nprobe = default_nprobe
        found["nprobe"], found["candidates"] = int(faiss.extract_index_ivf(index).nprobe), \
            faiss_index.candidates(index, K)
        del index
        runs[size].append(run)
        found["plan"]["peak_gib_at"][str(size)] = ann_factory.estimate_build_bytes(
            args.n, SPEC["dim"], plan.factory, train_rows) / 2**30
        print(f"{size} a list ({train_rows:,} rows): train {run['train_s']:.0f} s, add {run['add_s']:.0f} s, "
              f"recall@{K} {run['recall']:.4f} ({run['recall_low_nprobe']:.4f} at nprobe / {LOW_NPROBE_DIVISOR}), "
              f"peak {run['peak_bytes'] / 2**30:.2f} GiB", flush=True)
    found["sizes"] = {}
    for size, done in runs.items():
        figure = {key: stats.median_interval([run[key] for run in done]) for key in ("train_s", "add_s", "build_s")}
        figure.update(train_rows=min(args.n, size * nlist), recall=float(np.median([run["recall"] for run in done])),
                      recall_low_nprobe=float(np.median([run["recall_low_nprobe"] for run in done])),
                      peak_gib=max(run["peak_bytes"] for run in done) / 2**30, runs=done)
        found["sizes"][str(size)] = figure
    judged = found["sizes"][str(default)]
    found["met_build"] = stats.meets(TARGET_BUILD_S, judged["build_s"], "lower")
    found["met_recall"] = min(run["recall"] for run in runs[default]) >= TARGET_RECALL
    for table in tables(found, settings).values():
        print("\n" + results.markdown(table))
    print(f"-> {results.save(args.name, settings, found, 'bench_build', args.results, args.dirty)}")


if __name__ == "__main__":
    main()
