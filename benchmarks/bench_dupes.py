"""Duplicates at scale: finding, resolving and undoing 150,000 planted groups in a store of 1,000,000 files.

    python benchmarks/bench_dupes.py --folder /scratch/dupes           # -> benchmarks/results/dupes.json
    python benchmarks/bench_dupes.py --folder /tmp/d --n 20000 --groups 3000 --repeats 2 --quick   # a smoke run

Builds (or reuses) a library of --n small real files (a few hundred bytes each, unique bytes)
in folders of 1,000, and a store over them written through the store's writer (as
``bench_search`` writes its stores): --groups of them have a planted copy, two thirds exact
(the same bytes and vector) and one third near (cosine 0.97, other bytes); the other files
get random unit vectors of --dim dimensions (none within 0.95 of another). Then, each
command in a fresh process (``python -m lookalike``), with its peak RSS:

- knn: one ``Store.knn`` pass over every stored vector (k = 10), the search dupes makes;
- dupes: ``lookalike dupes --json``: its time against the knn pass (target <= 2x), its peak
  memory against ``dupes.groups.memory_plan`` (target: within plan), and the groups found;
- resolve: ``lookalike dupes --move-to DIR --yes``: files moved per second of moving, as the
  command reports it (target >= 2,000), and per second of the whole command, which finds the
  groups again first; afterwards every file accounted for by its hash;
- undo: ``lookalike undo``: files per second, and every file back at its path, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import results
import stats

from lookalike.dupes.groups import memory_plan
from lookalike.store.layout import MANIFEST, STORE_DIRNAME
from lookalike.store.store import Store
from lookalike.store.writer import Facts

PER_FOLDER = 1000
CHUNK = 20_000
TARGET_DUPES_OVER_KNN, TARGET_FILES_PER_S = 2.0, 2000.0


def build(root: Path, n: int, groups: int, dim: int, seed: int = 0) -> dict:
    """The files and the store: ``groups`` planted pairs among ``n`` files; returns what was planted."""
    rng = np.random.default_rng(seed)
    originals = n - groups
    planted = rng.choice(originals, groups, replace=False)
    exact = set(planted[: 2 * groups // 3].tolist())
    store = Store.create(root / STORE_DIRNAME, root, {"model": "synthetic", "layer": "none", "dim": dim,
                                                      "weights_sha256": "0" * 64, "preprocessing": {}})
    copy_of = {originals + i: int(o) for i, o in enumerate(planted)}
    started = time.perf_counter()
    with store.writer() as writer:
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            vectors = _unit(np.random.default_rng([seed, start]).standard_normal((stop - start, dim), dtype=np.float32))
            embedded, facts = [], {}
            for i in range(start, stop):
                source = copy_of.get(i)
                key = _key(i)
                path = root / key
                path.parent.mkdir(exist_ok=True)
                if source is not None and source in exact:
                    data = _bytes(source)
                    vectors[i - start] = _vector(source, dim, seed)
                else:
                    data = _bytes(i)
                    if source is not None:
                        vectors[i - start] = _near(_vector(source, dim, seed), 0.97, rng)
                    elif i in copy_of.values() or i < originals:
                        vectors[i - start] = _vector(i, dim, seed)
                path.write_bytes(data)
                info = path.stat()
                embedded.append((key, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode))
                facts[key] = Facts(hashlib.sha256(data).hexdigest(), 640, 480, None, False)
            writer.write(embedded, vectors, [], facts=facts)
        write_s = time.perf_counter() - started
    return {"files": n, "groups": groups, "exact": len(exact), "near": groups - len(exact), "dim": dim,
            "write_and_index_s": round(time.perf_counter() - started, 1), "write_s": round(write_s, 1)}


def _key(i: int) -> str:
    return f"d{i // PER_FOLDER:05d}/IMG_{i:07d}.jpg"


def _bytes(i: int) -> bytes:
    return f"lookalike bench file {i}\n".encode() * 8


def _vector(i: int, dim: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng([seed, 1, i]).standard_normal((1, dim), dtype=np.float32))[0]


def _near(v: np.ndarray, cosine: float, rng) -> np.ndarray:
    other = rng.standard_normal(v.shape, dtype=np.float32)
    other -= (other @ v) * v
    other /= np.linalg.norm(other)
    return (cosine * v + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """(seconds, peak RSS in bytes of the child, its result) for one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, max(peak, before) * 1024, done


KNN = """
import sys, time, resource
import numpy as np
from lookalike.store.store import Store
store = Store.open(sys.argv[1])
ids, vectors = store.vector_rows()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
for s in range(0, len(ids), 4096):
    store.knn(np.ascontiguousarray(vectors[s:s + 4096]), 10)
print(time.perf_counter() - start, base * 1024)
"""

BASELINE = """
import sys, resource
from lookalike.store.store import Store
Store.open(sys.argv[1]).vector_rows()
import lookalike.cli
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*.jpg") if STORE_DIRNAME not in p.parts}


def tables(figures: dict, settings: dict) -> dict:
    """docs/performance.md's table: the dupes pass against one knn pass, its memory against its plan, resolving, undo."""
    ratio = figures["dupes_over_knn"]
    peak = figures["above_baseline_bytes"]
    rows = [
        ["`lookalike dupes --json` over one `Store.knn` pass (paired repeats)", stats.shown(ratio, suffix="x"),
         f"<= {TARGET_DUPES_OVER_KNN}x", stats.verdict(stats.meets(TARGET_DUPES_OVER_KNN, ratio), ratio)],
        ["its peak memory above the open store, MiB", f"{peak / 2**20:,.0f}",
         f"plan {figures['memory_plan_bytes'] / 2**20:,.0f}", "met" if figures["within_plan"] else "**missed**"],
        ["resolving all groups (`--move-to DIR --yes`): files moved per second of moving", f"{figures['files_per_s']:,.0f}",
         f">= {TARGET_FILES_PER_S:,.0f}", "met" if figures["files_per_s"] >= TARGET_FILES_PER_S else "**missed**"],
        ["the same command, files per second from its start (the groups found again first)",
         f"{figures['command_files_per_s']:,.0f}", "", ""],
        ["every file accounted for by its hash afterwards", "yes" if figures["accounted_for"] else "**no**", "", ""],
        ["`lookalike undo` of it, files/s", f"{figures['undo_files_per_s']:,.0f}", "", ""],
        ["every file back at its path, byte for byte", "yes" if figures["restored_byte_for_byte"] else "**no**", "", ""],
    ]
    built = figures["built"]
    setup = [["files", f"{built['files']:,} (small real files in folders of {PER_FOLDER:,})"],
             ["planted groups", f"{built['groups']:,}: {built['exact']:,} exact copies, {built['near']:,} near (cosine 0.97)"],
             ["groups found", f"{figures['groups_found']:,} ({figures['exact_groups']:,} exact), {figures['members']:,} members"],
             ["vectors", f"{built['dim']}-d, random unit vectors otherwise (none within 0.95 of another)"],
             ["repeats", f"{ratio['n']} knn and dupes passes, interleaved"]]
    return {"scale": {"columns": ["measure", "value", "target", "verdict"], "rows": rows},
            "setup": {"columns": ["setting", "value"], "rows": setup}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="scratch space for the library (several GB at 1M)")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=150_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="knn and dupes passes, interleaved (5 for an interval)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: write no JSON")
    results.add_arguments(parser)
    args = parser.parse_args()
    if not args.quick:
        results.check_tree(args.dirty)  # before the runs, not after them
    root = args.folder / "library"
    lookalike = [sys.executable, "-m", "lookalike"]
    if (root / STORE_DIRNAME / MANIFEST).exists() and len(Store.open(root / STORE_DIRNAME)) == args.n:
        built = json.loads((args.folder / "built.json").read_text())
    else:
        shutil.rmtree(args.folder, ignore_errors=True)
        root.mkdir(parents=True)
        built = build(root, args.n, args.groups, args.dim)
        (args.folder / "built.json").write_text(json.dumps(built))
    store_dir = str(root / STORE_DIRNAME)
    base = int(subprocess.run([sys.executable, "-c", BASELINE, store_dir], capture_output=True, text=True,
                              check=True).stdout)
    peaks, last = [], {}

    def knn():
        subprocess.run([sys.executable, "-c", KNN, store_dir], capture_output=True, text=True, check=True)

    def dupes():
        _, peak, last["done"] = timed([*lookalike, "dupes", "--store", store_dir, "--json"])
        peaks.append(peak)

    times = stats.interleave({"dupes": dupes, "knn": knn}, args.repeats, warmup=0)
    found = json.loads(last["done"].stdout)["groups"]
    members = sum(len(g["members"]) for g in found)
    plan = memory_plan(args.n, members, args.dim, 10)
    before = digests(root)
    resolve_s, _, moved = timed([*lookalike, "dupes", "--store", store_dir, "--move-to", str(args.folder / "q"), "--yes"])
    moved_count = int(moved.stdout.split("moved ")[1].split(" files")[0])
    acting_s = float(moved.stdout.split(" in ")[1].split("s,")[0])  # the moves alone, as the command reports them
    after = {**digests(root), **{f"q/{k}": v for k, v in digests(args.folder / "q").items()}}
    undo_s, _, _ = timed([*lookalike, "undo", "--store", store_dir])
    restored = digests(root) == before and not list((args.folder / "q").rglob("*.jpg"))
    figures = {
        "built": built, "times": times, "dupes_over_knn": stats.paired_ratio(times["dupes"], times["knn"]),
        "groups_found": len(found), "members": members, "exact_groups": sum(g["kind"] == "exact" for g in found),
        "peak_rss_bytes": peaks, "baseline_rss_bytes": base, "above_baseline_bytes": max(peaks) - base,
        "memory_plan_bytes": plan, "within_plan": max(peaks) - base <= plan,
        "resolve_s": resolve_s, "acting_s": acting_s, "moved": moved_count, "files_per_s": moved_count / acting_s,
        "command_files_per_s": moved_count / resolve_s,
        "accounted_for": sorted(before.values()) == sorted(after.values()),
        "undo_s": undo_s, "undo_files_per_s": moved_count / undo_s, "restored_byte_for_byte": restored,
    }
    settings = vars(args) | {"folder": str(args.folder), "results": str(args.results)}
    for table in tables(figures, settings).values():
        print(results.markdown(table))
    if not args.quick:
        print("->", results.save("dupes", settings, figures, "bench_dupes", args.results, args.dirty))


if __name__ == "__main__":
    main()
