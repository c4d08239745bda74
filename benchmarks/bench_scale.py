"""The Ray path at scale: synthetic clustered vectors written as shards by Ray tasks, the on-disk
index built from them by Ray tasks, recall@10 against exact search; and images/s on 1 and 2 nodes.

    python benchmarks/bench_scale.py --rows 1000000 --dim 128          # the recall and build part
    python benchmarks/bench_scale.py --rows 0 --images 150             # only the throughput part

Vectors: ``bench_search.Mixture`` with few clusters (default 300, so about 3,300 members each at
1M, and ten neighbours never mean "the whole cluster"); each Ray task generates its own rows,
seeded by position, and writes them as one shard, so no vector passes through the driver,
which commits the shards as the Ray engine does. The index is the store's own on-disk build
(``StoreWriter`` with Ray tasks adding the parts) at the default factory and nprobe.

Throughput: the same photo folder indexed by the local engine (the baseline, default settings,
which are the fastest on this CPU) and by ``--engine ray`` on a 1-node local instance and on a
2-node ``ray.cluster_utils.Cluster`` (one CPU a node on this 2-core machine), in one run: each
of --repeats repeats runs the three side by side (the order alternating), and "vs local" is the
median of the per-repeat ratios with its bootstrap 95% interval (benchmarks/stats.py). 7
repeats by default, about 12 minutes at 150 photos on 2 cores: the fewest whose interval
leaves out the most extreme repeat.

The plan for 10M to 1B images is arithmetic on these figures and the store's own
``plan_build``, done when the JSON is written, so that the docs render what this run planned.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import results
import stats
from bench_search import Mixture

from lookalike.ann import build as ann_build
from lookalike.ann import faiss_io
from lookalike.ann import index as faiss_index
from lookalike.featurize.options import EmbedOptions
from lookalike.scale import connect
from lookalike.scale.build import ray_map_parts
from lookalike.store import ondisk
from lookalike.store.layout import INDEX
from lookalike.store.shards import ShardSet, write_shard_file
from lookalike.store.store import Store

SPEC = {"model": "synthetic", "layer": "none", "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {}}


def make_shard(directory: str, clusters: int, dim: int, start: int, count: int) -> tuple[str, int, int]:
    """A Ray task: rows ``start .. start+count`` of the mixture, written as one shard; (name, rows, peak RSS)."""
    rows = Mixture(clusters, dim).rows(start, count)
    name = write_shard_file(directory, rows)
    return name, count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Timed:
    """Wraps the on-disk build's steps to time them and keep what each add task reported."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.parts: list = []

    def wrap(self, module, name: str, label: str):
        original = getattr(module, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started

        setattr(module, name, timed)

    def map_parts(self, add_part, jobs):
        started = time.perf_counter()
        self.parts = ray_map_parts(add_part, jobs)
        self.seconds["add"] = time.perf_counter() - started
        return self.parts


def build_vectors(ray, directory: Path, n: int, dim: int, clusters: int, shard_rows: int) -> tuple[Store, dict]:
    store = Store.create(directory, directory.parent, {**SPEC, "dim": dim})
    task = ray.remote(num_cpus=1)(make_shard)
    timed = Timed()
    timed.wrap(ann_build, "trained_index", "train")
    timed.wrap(ondisk, "merge_parts", "merge")
    started = time.perf_counter()
    with store.writer(map_parts=timed.map_parts) as writer:
        pending = [task.remote(os.fspath(directory), clusters, dim, s, min(shard_rows, n - s)) for s in range(0, n, shard_rows)]
        shard_rss = []
        for start, ref in zip(range(0, n, shard_rows), pending):
            name, count, rss = ray.get(ref)
            writer.commit_shard(name, [(f"v{start + i:09d}", 1, 1, 1, 0o644, i) for i in range(count)])
            shard_rss.append(rss)
        timed.seconds["shards"] = time.perf_counter() - started
    timed.seconds["total"] = time.perf_counter() - started
    return store, {"seconds": timed.seconds, "parts": [p._asdict() for p in timed.parts], "shard_task_peak_rss": shard_rss}


def recall(store: Store, n_queries: int, clusters: int, dim: int, k: int = 10) -> dict:
    """recall@k of ``store.search`` (re-ranked) and of the on-disk index alone, at its default nprobe, against exact search."""
    index = faiss_io.read_index(store.directory / INDEX)
    with store.catalog() as catalog:
        ids, shards, rows = catalog.ids_and_rows()
        vectors = ShardSet.of(store.directory, dim, catalog).gather(shards, rows)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    del vectors
    queries = Mixture(clusters, dim).rows(0, n_queries, stream=1)
    _, truth = exact.search(queries, k)
    started = time.perf_counter()
    _, found = faiss_index.search(index, queries, k)
    seconds = time.perf_counter() - started
    codes_hits = sum(len(set(ids[t].tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    searched = store.search(queries, k)  # what users get: the candidates re-ranked by the exact vectors
    hits = sum(len(set(ids[t].tolist()) & {h.id for h in row}) for t, row in zip(truth, searched))
    ivf = faiss.extract_index_ivf(index)
    ivfdata = store.directory / ondisk.ivfdata_name(index)
    return {"recall_at_10": hits / (k * n_queries), "codes_recall_at_10": codes_hits / (k * n_queries), "nprobe": ivf.nprobe, "nlist": ivf.nlist,
            "ntotal": int(index.ntotal), "ivfdata_bytes": ivfdata.stat().st_size,
            "head_bytes": (store.directory / INDEX).stat().st_size,
            "bytes_per_vector": ivfdata.stat().st_size / index.ntotal, "query_ms": 1000 * seconds / n_queries}


def vector_part(args, work: Path) -> dict:
    with connect("local", num_cpus=os.cpu_count()) as ray:
        store, build = build_vectors(ray, work / "store", args.rows, args.dim, args.clusters, args.shard_rows)
    with store.catalog() as catalog:
        factory = catalog.meta("index_factory")
    found = recall(store, args.queries, args.clusters, args.dim)
    return {"factory": factory, **found, **build}


def throughput_part(args, work: Path) -> dict:
    """images/s of the local engine, and of the Ray engine on 1 and 2 local nodes, on the same folder, in turn."""
    from make_photos import make_photos
    from ray.cluster_utils import Cluster

    from lookalike.indexing import index_folder
    from lookalike.scale import index_with_ray

    folder = work / "photos"
    make_photos(folder, args.images, jobs=2)
    runs = {}
    engines = ("local", "ray_1_node", "ray_2_nodes")
    for repeat in range(args.repeats):
        for name in engines if repeat % 2 == 0 else reversed(engines):
            store = work / f"store_{name}"
            shutil.rmtree(store, ignore_errors=True)
            ticks = []  # time of on_start, then of each committed batch

            def tick(_, ticks=ticks):
                ticks.append(time.perf_counter())

            kwargs = {"store": store, "options": EmbedOptions(device="cpu"), "on_start": tick, "on_batch": tick}
            if name == "local":
                summary = index_folder(folder, **kwargs)
            elif name == "ray_1_node":
                summary = index_with_ray(folder, ray_address="local", **kwargs)
            else:
                summary = _on_two_nodes(Cluster, index_with_ray, folder, kwargs)
            # Ray commits come back in bursts, so a rate between commits means nothing: from the plan to the
            # last commit instead, which counts Ray's and the actors' start-up against the Ray engine
            rate = summary.embedded / (ticks[-1] - ticks[0])
            runs.setdefault(name, []).append({"images": summary.embedded, "wall_s": summary.seconds,
                                              "images_per_s": rate, "batches": len(ticks) - 1})
    return summarize_throughput(runs)


def summarize_throughput(runs: dict[str, list[dict]]) -> dict:
    """Each engine's medians and its rate over the local engine's, paired by repeat."""
    local = [x["images_per_s"] for x in runs["local"]]
    return {name: {"runs": r, "median_images_per_s": float(np.median([x["images_per_s"] for x in r])),
                   "median_wall_s": float(np.median([x["wall_s"] for x in r])),
                   "vs_local": stats.paired_ratio([x["images_per_s"] for x in r], local)}
            for name, r in ((name, runs[name]) for name in ("local", "ray_1_node", "ray_2_nodes"))}


def _on_two_nodes(Cluster, index_with_ray, folder: Path, kwargs: dict):
    """A 2-node ``Cluster`` of one CPU a node, in a short private temp dir, torn down after."""
    import ray

    from lookalike.scale.session import private_temp_dir

    with private_temp_dir("lkb-") as temp:
        os.makedirs(os.path.join(temp, "ray"))
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": os.path.join(temp, "ray"),
                                                                "include_dashboard": False})
        try:
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes(timeout=120)
            return index_with_ray(folder, ray_address=cluster.address, **kwargs)
        finally:
            ray.shutdown()
            cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--images", type=int, default=0, help="photos for the throughput part (0: skip it)")
    parser.add_argument("--repeats", type=int, default=7, help="throughput runs of each engine, side by side")
    parser.add_argument("--name", default="scale")
    parser.add_argument("--plan-dim", type=int, default=1280, help="the plan's vectors (Lite0: 1280)")
    parser.add_argument("--plan-budget-gib", type=int, default=64, help="index build budget (half the RAM of the machine)")
    parser.add_argument("--gpu-images-per-s", type=float, default=None,
                        help="the plan's GPU rate (default: the local engine's end-to-end rate in DIR/featurize_gpu_lite0.json, "
                             "which benchmarks/gpu_check.sh writes; without either, the plan has no GPU row)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    results.add_arguments(parser)
    args = parser.parse_args()
    results.check_tree(args.dirty)  # before the runs, not after them
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scale_"))
    figures = {}
    settings = {key: value for key, value in vars(args).items() if key not in ("results", "dirty")}
    earlier = args.results / f"{args.name}.json"
    if not args.rows and earlier.exists():  # the throughput part run on its own: keep the earlier vector part
        record = json.loads(earlier.read_text())
        if "vectors" in record["figures"]:
            figures["vectors"] = record["figures"]["vectors"]
            source = record["settings"].get("vectors_from") or {k: record[k] for k in ("date", "commit", "settings")}
            settings = {**settings, "vectors_from": source}
    if not args.images and earlier.exists():  # the vector part run on its own: keep the earlier throughput part
        record = json.loads(earlier.read_text())
        if "throughput" in record["figures"]:
            figures["throughput"] = record["figures"]["throughput"]
            source = record["settings"].get("throughput_from") or {k: record[k] for k in ("date", "commit")}
            settings = {**settings, "throughput_from": source}
    try:
        if args.rows:
            figures["vectors"] = vector_part(args, work)
            print(figures["vectors"])
        if args.images:
            figures["throughput"] = throughput_part(args, work)
            print(figures["throughput"])
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    figures["plan"] = plan_inputs(args, figures)
    figures["plan"]["sizes"] = plan_sizes(figures["plan"])
    for table in tables(figures, settings).values():
        print(results.markdown(table))
    print(f"-> {results.save(args.name, settings, figures, 'bench_scale', args.results, args.dirty)}")


def tables(figures: dict, settings: dict) -> dict:
    """docs/scale.md's tables: the 1M-vector build, the engines' throughput, the plan (all from the figures)."""
    shown = {}
    v = figures.get("vectors")
    if v:
        mib = 1 << 20
        sec = v["seconds"]
        rows = [
            ["vectors (synthetic, clustered)", f"{v['ntotal']:,}"],
            ["default factory, nprobe", f"{v['factory']}, {v['nprobe']}"],
            ["recall@10 vs exact, default nprobe (`store.search`, re-ranked)", f"{v['recall_at_10']:.4f}"],
            *([["the index's codes alone (`index.search`)", f"{v['codes_recall_at_10']:.4f}"]]
              if "codes_recall_at_10" in v else []),
            ["build: shards written by Ray tasks, s", f"{sec['shards']:.1f}"],
            ["build: train on the driver, s", f"{sec['train']:.1f}"],
            ["build: add in Ray tasks, s", f"{sec['add']:.1f} ({len(v['parts'])} part(s) of at most 2M rows)"],
            ["build: merge on disk, s", f"{sec['merge']:.2f}"],
            ["build: total, s", f"{sec['total']:.1f}"],
            ["peak RSS per add task, MiB", f"{max(p['peak_rss_bytes'] for p in v['parts']) / mib:.0f}"],
            ["peak RSS per shard-writing task, MiB", f"{max(v['shard_task_peak_rss']) / mib:.0f}"],
            ["index bytes per vector (.ivfdata / ntotal)", f"{v['bytes_per_vector']:.1f}"],
            ["index.faiss head (centroids), MiB", f"{v['head_bytes'] / mib:.1f}"],
            ["query, ms each (a batch of 1,000, lists mapped from disk)", f"{v['query_ms']:.2f}"],
        ]
        shown["build"] = {"columns": ["measure", "value"], "rows": rows}
    t = figures.get("throughput")
    if t:
        labels = {"local": "local engine (baseline)", "ray_1_node": "--engine ray, 1 local node (2 CPUs)",
                  "ray_2_nodes": "--engine ray, 2 local nodes (1 CPU each)"}
        rows = [[labels[k], f"{r['median_images_per_s']:.1f}", stats.shown(r["vs_local"], ".2f"),
                 f"{r['median_wall_s']:.1f}"] for k, r in t.items()]
        columns = ["engine (same folder, same run)", "images/s, plan to last commit", "vs local (paired repeats)",
                   "whole run, s"]
        shown["throughput"] = {"columns": columns, "rows": rows}
    if figures.get("plan"):
        shown["plan"] = plan_table(figures["plan"])
    return shown


PLAN_SIZES = (10_000_000, 100_000_000, 1_000_000_000)
PLAN_GPUS = (4, 16, 64)


def plan_inputs(args, figures: dict) -> dict:
    """What the plan is computed from: this run's measurements, and a GPU rate from a committed GPU run (or stated)."""
    v, t = figures.get("vectors", {}), figures.get("throughput", {})
    add_rate = v["ntotal"] / max(p["seconds"] for p in v["parts"]) / len(v["parts"]) if v else None
    cpu_rate = t["ray_2_nodes"]["median_images_per_s"] / 2 if t else None  # 2 nodes of one core each
    gpu_rate, gpu_from = args.gpu_images_per_s, "--gpu-images-per-s" if args.gpu_images_per_s else None
    gpu_run = args.results / "featurize_gpu_lite0.json"
    if gpu_rate is None and gpu_run.exists():
        record = json.loads(gpu_run.read_text())
        gpu_rate, gpu_from = record["figures"]["lookalike"]["images_per_s"], f"{gpu_run.name}, commit {record['commit']}"
    return {"dim": args.plan_dim, "budget_gib": args.plan_budget_gib, "gpu_images_per_s": gpu_rate, "gpu_from": gpu_from,
            "cpu_images_per_s_per_core": cpu_rate, "add_vectors_per_s_per_task": add_rate, "add_dim": args.dim,
            "recall_measured": v.get("recall_at_10"), "factory_measured": v.get("factory")}


def plan_sizes(p: dict) -> list[dict]:
    """For 10M, 100M and 1B images: the store's default factory (``plan_build``) for the search machine, its lists
    and code size."""
    from lookalike.ann.factory import plan_build

    sizes = []
    for n, gpus in zip(PLAN_SIZES, PLAN_GPUS):
        factory = plan_build(n, p["dim"], memory_budget_bytes=p["budget_gib"] << 30).factory
        ivf = faiss.extract_index_ivf(faiss.index_factory(p["dim"], factory.replace(f"IVF{factory[3:].split(',')[0]}", "IVF1")))
        sizes.append({"n": n, "gpus": gpus, "factory": factory, "nlist": int(factory[3:].split(",")[0].split("_")[0]),
                      "code_size": int(ivf.code_size)})
    return sizes


def plan_table(p: dict) -> dict:
    """10M, 100M, 1B images: the default factory for the search machine and what it costs (arithmetic)."""
    keys = ("factory", "recall", "bytes", "ivfdata", "head", "shards", "gpu", "cpu", "add")
    dim, rows = p["dim"], {k: [] for k in keys}
    for size in p["sizes"]:
        n, gpus, factory, nlist = size["n"], size["gpus"], size["factory"], size["nlist"]
        per_vector = size["code_size"] + 8  # codes and the 8-byte id, no slack (measured: see bytes per vector above)
        rows["factory"].append(f"`{factory}`")
        codes = factory.split(",")[-1]
        if p.get("recall_measured") is not None and codes == (p.get("factory_measured") or "").split(",")[-1]:
            rows["recall"].append(f"{codes} codes, re-ranked: {p['recall_measured']:.3f} measured with "
                                  f"{p['factory_measured']} on 1M x {p['add_dim']}-d synthetic vectors; not at this size")
        else:
            rows["recall"].append(f"not measured: {codes} codes (searches re-rank 4k candidates by the exact vectors)")
        rows["bytes"].append(f"{per_vector:,}")
        rows["ivfdata"].append(_size(n * per_vector))
        rows["head"].append(_size(nlist * dim * 4))
        rows["shards"].append(_size(n * dim * 4))
        if p.get("gpu_images_per_s"):
            gpu_h = n / p["gpu_images_per_s"] / 3600
            rows["gpu"].append(f"{gpu_h:,.0f} GPU-h: {gpus} GPUs, {gpu_h / gpus:.1f} h")
        if p.get("cpu_images_per_s_per_core"):
            core_h = n / p["cpu_images_per_s_per_core"] / 3600
            rows["cpu"].append(f"{core_h:,.0f} core-h: {core_h / 4:,.0f} cores for 4 h")
        if p.get("add_vectors_per_s_per_task"):  # flat-quantizer assignment scales with dim and nlist
            rate = p["add_vectors_per_s_per_task"] * p["add_dim"] / dim * 4096 / nlist
            rows["add"].append(f"{n / rate / 3600:,.0f} core-h")
    labels = {"factory": f"default factory ({p['budget_gib'] * 2} GiB search machine, {dim}-d)",
              "recall": "recall@10 at the default nprobe", "bytes": "index bytes per vector", "ivfdata": ".ivfdata on disk (mapped, paged in by queries)",
              "head": "index.faiss head in RAM (centroids)", "shards": "exact vectors in shards",
              "gpu": f"embedding on GPUs at {p.get('gpu_images_per_s') or 0:,.0f} images/s each ({p.get('gpu_from')})",
              "cpu": f"embedding on CPUs at {p.get('cpu_images_per_s_per_core') or 0:.1f} images/s a core "
                     "(measured here through Ray, on a shared machine)",
              "add": "index add, flat quantizer (from this run's rate, x dim and nlist)"}
    table_rows = [[labels[k]] + v for k, v in rows.items() if v]
    names = [f"{s['n'] // 1_000_000:,}M" if s["n"] < 1e9 else "1B" for s in p["sizes"]]
    return {"columns": ["", *names], "rows": table_rows}


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes:,.0f} B"


if __name__ == "__main__":
    main()
