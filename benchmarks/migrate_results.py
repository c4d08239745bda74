"""One-off: move benchmarks/results/*.json to the layout results.py renders from (no measured number changes).

    python benchmarks/migrate_results.py          # rewrites the files, prints each table that renders differently

- Tables are no longer stored: each file names its layout module, which renders them from the figures.
- ``commit`` loses its ``-dirty`` suffix for ``"dirty": true`` (its diff was not recorded then).
- Ratios become figures with an interval (benchmarks/stats.py). Where the run kept its repeats
  (search.json's times, finetune_cpu.json's epochs, scale.json's runs, featurize_cpu.json's
  start-up runs), they are recomputed from them as medians of paired repeats, with their
  intervals; where it kept only medians, the old ratio of medians stays, as a point without
  an interval, and the file says so in its ``note``.
- Figures the tables need that lived only in the stored tables are moved into the figures
  (recipes' ranks), and the scale plan's factories are computed now, as the script computes
  them when it saves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import results
import stats

LAYOUTS = {"featurize_cpu": "featurize_report", "finetune_cpu": "bench_finetune", "recipes_digits": "bench_recipes",
           "recipes_digits_large": "bench_recipes", "scale": "bench_scale", "search": "bench_search",
           "serve_1m": "bench_serve", "store_build_1m": "bench_store", "store_memory": "bench_store"}
MEDIANS_ONLY = "ratios of medians, no intervals: measured before paired repeats were kept"


def search(f: dict, record: dict) -> None:
    import bench_search

    for key, _, _ in bench_search.MEASURES:
        old = f[key]
        judged, target = ("ratio", bench_search.TARGET_SEARCH_RATIO) if key == "search" else \
            ("lookalike_s", bench_search.TARGET_OPEN_S)
        new = bench_search.summary(old["times"], judged, target)
        for extra in ("same_top_k", "candidates"):
            if extra in old:
                new[extra] = old[extra]
        f[key] = new


def serve(f: dict, record: dict) -> None:
    import bench_serve

    for key, run in f["runs"].items():
        name, clients = key.rsplit("_", 1)
        if clients != "1":
            continue
        store_p50 = run["library"]["store.search"]["p50_ms"]
        run["ratio"] = stats.point(run["p50_ms"] / store_p50)
        run["target"] = {"measure": "p50_ms", "at_most": bench_serve.TARGETS[name]}
        run["met"] = run["p50_ms"] <= bench_serve.TARGETS[name]  # judged as a point when it was measured
        run["p50_ms"] = stats.point(run["p50_ms"], None)
        for value in run["library"].values():
            value["p50_ms"] = stats.point(value["p50_ms"])
    record["note"] = MEDIANS_ONLY


def finetune(f: dict, record: dict) -> None:
    for entry in f.values():
        entry["ratio"] = stats.paired_ratio(entry["lookalike_epochs"], entry["plain_epochs"])


def recipes(f: dict, record: dict) -> None:
    rows = {row[0]: row for row in record["tables"]["digits"]["rows"]}
    for entry in f["recipes"]:
        row = rows[f"{entry['layer']} · {entry['recipe']}"]
        entry["advise_rank"] = int(row[2]) if row[2] else None
        entry["held_out_rank"] = int(row[4])


def scale(f: dict, record: dict) -> None:
    import bench_scale

    if "throughput" in f:
        f["throughput"] = bench_scale.summarize_throughput({name: t["runs"] for name, t in f["throughput"].items()})
    f["plan"]["sizes"] = bench_scale.plan_sizes(f["plan"])
    # its GPU rate (1,047 images/s) came from an earlier run whose JSON was not kept: the plan shows no GPU row until a
    # committed GPU run gives one (settings keep what the run was given)
    f["plan"]["gpu_images_per_s"], f["plan"]["gpu_from"] = None, None


def featurize(f: dict, record: dict) -> None:
    model = f["model"]
    model["ratios"] = {name: stats.point(rate / model["fastest_rate"]) for name, rate in model["rates"].items()}
    for kind, e2e in f["end_to_end"].items():
        bound = f["bounds"][kind]
        e2e["model_only_rate"], e2e["bound_rate"] = model["fastest_rate"], bound
        e2e["to_bound"] = {name: stats.point(rate / bound) for name, rate in e2e["rates"].items()}
        e2e["to_model"] = {name: stats.point(rate / model["fastest_rate"]) for name, rate in e2e["rates"].items()}
    peers = f["peers"]
    rates = peers["rates"]
    peers["ratios"] = {"naive loop": stats.point(peers["vs_naive"])}
    peers["ratios"].update({name: stats.point(rates["lookalike resnet18"] / rate)
                            for name, rate in rates.items() if name.startswith("img2vec")})
    peers["vs_naive"], peers["resnet18_vs_img2vec"] = stats.point(peers["vs_naive"]), stats.point(peers["resnet18_vs_img2vec"])
    for value in f["startup"].values():
        if isinstance(value, dict):
            value["seconds"] = stats.median_interval(value.pop("all_s"))  # the runs were kept: their median and interval
            del value["median_s"]
    sizes = [int(n) for n in f["memory"]]
    run = f["memory"]
    growth = max(run[str(sizes[1])]["peak_mib"] / run[str(sizes[0])]["peak_mib"],
                 run[str(sizes[1])]["largest_worker_mib"] / run[str(sizes[0])]["largest_worker_mib"])
    f["memory"] = {"images": sizes, "runs": [run], "growth": stats.point(growth)}
    old = f["targets"]
    import featurize_report

    f["targets"] = featurize_report.targets(f)
    for name, verdict in f["targets"].items():
        if verdict["measured"]["n"] is None:  # a legacy point: its verdict as judged when it was measured
            verdict["pass"] = old[name]["pass"]
    record["note"] = MEDIANS_ONLY + " (start-up runs were kept: intervals)"


STEPS = {"search": search, "serve_1m": serve, "finetune_cpu": finetune, "recipes_digits": recipes,
         "recipes_digits_large": recipes, "scale": scale, "featurize_cpu": featurize}


def migrate(path: Path) -> None:
    record = json.loads(path.read_text())
    if "layout" in record:
        print(f"{path.name}: already migrated")
        return
    name = record["benchmark"]
    old_tables = record["tables"]
    STEPS.get(name, lambda f, r: None)(record["figures"], record)
    commit = record["commit"]
    state = {"commit": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty")}
    if state["dirty"]:
        state["diff_stat"] = "not recorded (saved before results.py recorded it)"
    new = {"benchmark": name, "layout": LAYOUTS[name], "date": record["date"], **state}
    if record.get("note"):
        new["note"] = record["note"]
    new.update({key: record[key] for key in ("hardware", "versions", "settings", "figures")})
    for table, rendered in results.tables(new).items():
        if rendered != old_tables.get(table):
            print(f"{path.name}/{table} renders differently now:\n{results.markdown(rendered)}")
    path.write_text(json.dumps(new, indent=2) + "\n")


if __name__ == "__main__":
    for each in sorted(results.RESULTS.glob("*.json")):
        migrate(each)
