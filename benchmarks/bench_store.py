"""Peak memory of indexing against the number of images, and of the index build against its plan.

    python benchmarks/bench_store.py                                   # -> results/store_memory.json
    python benchmarks/bench_store.py --name store_build_1m --writer-sizes 1000000 --sizes \\
        --batch-size 4096                                              # -> results/store_build_1m.json

Every measurement is a fresh child process, so peaks never mix:

- floor (the baseline): import lookalike and build the default extractor, nothing indexed;
- writer N: ``StoreWriter.write`` of N synthetic 1280-d vectors in batches of --batch-size,
  as ``index_folder`` writes them. The write phase and the index build on exit are reported
  apart: the peak is reset in between (``/proc/self/clear_refs``). For the build, the child
  records the plan the store makes (``ann_factory.plan_build``: factory, training rows, the
  peak it planned for, the budget) and the RSS it had before the build; the build is within
  its plan when peak RSS - RSS before <= planned peak;
- index N: the real ``python -m lookalike index FOLDER`` on N generated 320x240 JPEGs
  (random crops of scikit-image photos), default model on the CPU.

"peak RSS" is the kernel's high-water mark of the largest process of the tree (``wait4``
rusage; the child's own VmHWM for the writer phases); "tree PSS" samples the proportional
set size of the CLI and its decoding workers together every 50 ms. A least-squares line
through (N, peak) gives bytes per image. Peaks, not timings: each is measured once, as the
kernel's high-water mark hardly moves with a shared machine's load, and nothing here is a
ratio against a baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import results

DIM = 1280
SPEC = {"model": "synthetic", "layer": "none", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {}}


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmHWM: peak RSS so far; VmRSS: now), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM restarts from the current RSS


def child_floor() -> dict:
    from lookalike import create_extractor

    create_extractor(device="cpu")
    return {"peak": status_bytes("VmHWM")}


def child_writer(n: int, batch_size: int) -> dict:
    from lookalike.ann import factory as ann_factory
    from lookalike.store.store import Store

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        store = Store.create(Path(folder) / ".lookalike", folder, SPEC)
        base = status_bytes("VmHWM")
        started = time.perf_counter()
        with store.writer(sync=False) as writer:
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                vectors = rng.standard_normal((count, DIM), dtype=np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                writer.write([(f"photos/{i:07d}.jpg", 50_000, i) for i in range(start, start + count)], vectors, [])
        write_peak, write_s = status_bytes("VmHWM"), time.perf_counter() - started
        plan = ann_factory.plan_build(n, DIM, store.manifest.index_factory)  # as the writer's sync plans it
        reset_hwm()
        before_build = status_bytes("VmRSS")
        started = time.perf_counter()
        with store.writer():  # on exit: the index build `lookalike index` ends with
            pass
        return {"base": base, "peak": write_peak, "write_s": write_s, "index_peak": status_bytes("VmHWM"),
                "before_build": before_build, "build_s": time.perf_counter() - started,
                "factory": store.info()["index_factory"], "plan": plan._asdict()}


def make_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """n 320x240 JPEGs: random crops and flips of scikit-image's photos (kept between runs)."""
    from PIL import Image
    from skimage import data

    if len(list(folder.glob("*.jpg"))) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("chelsea", "coffee", "astronaut", "rocket")]
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(rng.integers(w // 3, w)), int(rng.integers(h // 3, h))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = photo.crop((left, top, left + cw, top + ch)).resize((320, 240), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"{i:06d}.jpg", quality=85)


def tree_pss(pid: int) -> int:
    """Proportional set size of ``pid`` and its descendants, in bytes (0 for what has already gone)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def run_cli(folder: Path, batch_size: int) -> dict:
    """``python -m lookalike index`` in a fresh store: its peak RSS (exact) and tree PSS (sampled)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as store:
        command = [sys.executable, "-m", "lookalike", "index", str(folder), "--store", store,
                   "--device", "cpu", "--batch-size", str(batch_size)]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak, done = [0], threading.Event()

        def sample():
            while not done.wait(0.05):
                peak[0] = max(peak[0], tree_pss(process.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}")
        return {"peak": usage.ru_maxrss * 1024, "tree_pss": peak[0], "seconds": time.perf_counter() - started}


def in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def slope(sizes: list[int], peaks: list[int]) -> float:
    """Least-squares bytes per image (0 with a single size)."""
    return float(np.polyfit(sizes, peaks, 1)[0]) if len(set(sizes)) > 1 else 0.0


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def tables(figures: dict, settings: dict) -> dict:
    """docs/performance.md's table: the write phase, the build against its plan, and the CLI, each against where it started."""
    rows = []
    for n, r in figures["writer"].items():
        rows.append([f"store writer, writing vectors (batches of {figures['batch_size']:,})", f"{int(n):,}", mib(r["peak"]),
                     mib(r["peak"] - r["base"]), "", ""])
    for n, r in figures["writer"].items():
        plan, grown = r["plan"], r["index_peak"] - r["before_build"]
        rows.append([f"index build at the end ({r['factory']}, trained on {plan['train_rows']:,})", f"{int(n):,}",
                     mib(r["index_peak"]), mib(grown), mib(plan["peak_bytes"]),
                     "yes" if grown <= plan["peak_bytes"] else "**no**"])
    for n, r in figures["index"].items():
        rows.append([f"`lookalike index` on 320x240 JPEGs (CLI, Lite0, CPU; tree PSS {mib(r['tree_pss'])} MiB)",
                     f"{int(n):,}", mib(r["peak"]), mib(r["peak"] - figures["floor"]["peak"]), "", ""])
    columns = ["measure", "N", "peak RSS, MiB", "above its start, MiB", "planned, MiB", "within plan"]
    return {"memory": {"columns": columns, "rows": rows}}


def measure(args) -> dict:
    figures = {"batch_size": args.batch_size, "floor": in_child("floor")}
    figures["writer"] = {n: in_child("writer", str(n), "--batch-size", str(args.batch_size)) for n in args.writer_sizes}
    figures["index"] = {}
    for n in args.sizes:
        make_jpegs(args.photos / str(n), n)
        figures["index"][n] = run_cli(args.photos / str(n), args.batch_size)
    writer_n, index_n = list(figures["writer"]), list(figures["index"])
    figures["bytes_per_image"] = {
        "writer": slope(writer_n, [r["peak"] for r in figures["writer"].values()]),
        "writer index build": slope(writer_n, [r["index_peak"] for r in figures["writer"].values()]),
        "lookalike index": slope(index_n, [r["peak"] for r in figures["index"].values()]),
        "lookalike index, tree PSS": slope(index_n, [r["tree_pss"] for r in figures["index"].values()]),
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--writer-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--sizes", type=int, nargs="*", default=[200, 800, 2000], help="images for the CLI runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photos", type=Path, default=Path("/tmp/lookalike-bench-jpegs"))
    parser.add_argument("--name", default="store_memory", help="the results file: DIR/NAME.json")
    results.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(child_floor() if kind == "floor" else child_writer(int(rest[0]), args.batch_size)))
        return
    results.check_tree(args.dirty)  # before the runs, not after them

    settings = {"writer_sizes": args.writer_sizes, "sizes": args.sizes, "batch_size": args.batch_size, "dim": DIM,
                "model": "efficientnet_lite0 (default)", "device": "cpu",
                "code_at_start": results.commit()}  # the JSON's own commit is taken when it is saved, hours later
    figures = measure(args)
    print(results.markdown(tables(figures, settings)["memory"]))
    path = results.save(args.name, settings, figures, "bench_store", args.results, args.dirty)
    print(f"floor (import + create_extractor): {mib(figures['floor']['peak'])} MiB")
    for name, b in figures["bytes_per_image"].items():
        print(f"{name:<28}{b:>12.0f} bytes/image")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
