"""Peak memory of indexing against the number of images: it should stay flat, in one run.

    python benchmarks/bench_store.py --json store.json
    python benchmarks/bench_store.py --large --sizes 200 800 3200 --json store.json

Every measurement is a fresh child process, so peaks never mix:

- floor (the baseline): import lookalike and build the default extractor, nothing indexed;
- writer N: ``StoreWriter.write`` of N synthetic 1280-d vectors in batches of --batch-size,
  as ``index_folder`` writes them (N = 10k, 100k; 1M with --large). The write phase and the
  index sync on exit are reported apart: the peak is reset in between (``/proc/self/clear_refs``);
- index N: the real ``lookalike index FOLDER`` CLI, default model on CPU, on N generated
  320x240 JPEGs (random crops of scikit-image photos).

"peak RSS" is the kernel's high-water mark of the largest process of the tree (``wait4``
rusage; the child's own VmHWM for the writer phases); "tree PSS" samples the proportional
set size of the CLI and its decoding workers together every 50 ms. A least-squares line
through (N, peak) gives bytes per image; bytes per image x 100,000 is what 100k images add
to the peak beyond the smallest size measured, which is how runs of a few thousand images
show the 100k-image behaviour; the writer rows measure 100k (1M with --large) directly,
without the CNN. File-backed pages count in RSS: reading the memory-mapped vectors to build
the index shows up there though the kernel can drop those pages. The index itself is held in
memory while it is built (an IVF index with Flat codes is 5 KiB a vector at 1280-d), so the
index sync, unlike the write phase, grows with N by design.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DIM = 1280
SPEC = {"model": "synthetic", "layer": "none", "dim": DIM, "weights_sha256": "0" * 64, "preprocessing": {}, "versions": {}}


def hwm_bytes() -> int:
    """This process's peak RSS so far (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM restarts from the current RSS


def child_floor() -> dict:
    from lookalike import create_extractor

    create_extractor(device="cpu")
    return {"peak": hwm_bytes()}


def child_writer(n: int, batch_size: int) -> dict:
    from lookalike.index.store import Store

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        store = Store.create(Path(folder) / ".lookalike", folder, SPEC)
        base = hwm_bytes()
        with store.writer(sync=False) as writer:
            for start in range(0, n, batch_size):
                count = min(batch_size, n - start)
                vectors = rng.standard_normal((count, DIM), dtype=np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                writer.write([(f"photos/{i:07d}.jpg", 50_000, i) for i in range(start, start + count)], vectors, [])
        write_peak = hwm_bytes()
        reset_hwm()
        with store.writer():  # on exit: the index build `lookalike index` ends with
            pass
        return {"base": base, "peak": write_peak, "index_peak": hwm_bytes(), "factory": store.info()["index_factory"]}


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
    """``lookalike index`` in a fresh store: its peak RSS (exact) and tree PSS (sampled)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as store:
        command = [str(Path(sys.executable).with_name("lookalike")), "index", str(folder), "--store", store,
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


def hardware() -> dict:
    import faiss
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "faiss": faiss.__version__,
            "numpy": np.__version__, "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def mib(x: float) -> str:
    return f"{x / 2**20:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--writer-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--large", action="store_true", help="add 1,000,000 to --writer-sizes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 800, 2000], help="images for the CLI runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photos", type=Path, default=Path("/tmp/lookalike-bench-jpegs"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_floor() if kind == "floor" else child_writer(int(rest[0]), args.batch_size)
        print(json.dumps(result))
        return

    writer_sizes = sorted(set(args.writer_sizes + ([1_000_000] if args.large else [])))
    results = {"hardware": hardware(), "settings": {"writer_sizes": writer_sizes, "sizes": args.sizes,
                                                     "batch_size": args.batch_size, "model": "efficientnet_lite0 (default)",
                                                     "device": "cpu"}}
    results["floor"] = in_child("floor")
    results["writer"] = {n: in_child("writer", str(n), "--batch-size", str(args.batch_size)) for n in writer_sizes}
    results["index"] = {}
    for n in args.sizes:
        make_jpegs(args.photos / str(n), n)
        results["index"][n] = run_cli(args.photos / str(n), args.batch_size)
    writer_n, index_n = list(results["writer"]), list(results["index"])
    fits = {"writer": slope(writer_n, [r["peak"] for r in results["writer"].values()]),
            "writer index sync": slope(writer_n, [r["index_peak"] for r in results["writer"].values()]),
            "lookalike index": slope(index_n, [r["peak"] for r in results["index"].values()]),
            "lookalike index, tree PSS": slope(index_n, [r["tree_pss"] for r in results["index"].values()])}
    results["bytes_per_image"] = fits
    floor = results["floor"]["peak"]

    print(json.dumps(results["hardware"]), json.dumps(results["settings"]), sep="\n")
    print(f"\n{'measure':<26}{'N':>9}{'peak MiB':>10}{'baseline':>10}{'ratio':>7}   baseline: what the process held before")
    for n, r in results["writer"].items():
        for label, peak in (("writer, write phase", r["peak"]), ("writer, index sync", r["index_peak"])):
            print(f"{label:<26}{n:>9}{mib(peak):>10}{mib(r['base']):>10}{peak / r['base']:>7.2f}"
                  f"   {'import store' if 'write' in label else r['factory']}")
    for n, r in results["index"].items():
        print(f"{'lookalike index (CLI)':<26}{n:>9}{mib(r['peak']):>10}{mib(floor):>10}{r['peak'] / floor:>7.2f}"
              f"   floor: import + create_extractor; tree PSS {mib(r['tree_pss'])} MiB,"
              f" {n / r['seconds']:.1f} img/s with start-up")
    print(f"\n{'fit':<28}{'bytes/image':>12}{'x 100k, MiB':>13}")
    for name, b in fits.items():
        print(f"{name:<28}{b:>12.0f}{mib(b * 100_000):>13}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
