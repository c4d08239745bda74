"""Start-up and memory for bench_featurize.py: fresh ``python -m lookalike`` processes, timed whole."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import stats
from PIL import Image

FOLDER = Path("/tmp/lookalike-bench-startup")


def startup(args, small: list[str]) -> dict:
    """Wall seconds of fresh processes, the median of --startup-runs with its interval: re-indexing an unchanged
    folder, querying an indexed and a new image, and for scale an empty interpreter and ``import torch``; plus
    whether torch loaded. The commands run side by side in each repeat, the order alternating."""
    folder = files_to_index(args.startup_files, small)
    run(["index", str(folder)])  # indexes once (exporting the network if needed); the timed runs change nothing
    new = FOLDER / "new.jpg"
    Image.open(small[-1]).convert("RGB").save(new, quality=90)
    commands = {
        "re-index, unchanged": ["-m", "lookalike", "index", str(folder)],
        "query, indexed image": ["-m", "lookalike", "query", str(folder / "00001.jpg"), "-k", "5"],
        "query, new image": ["-m", "lookalike", "query", str(new), "--store", str(folder / ".lookalike"), "-k", "5"],
        "python -c pass": ["-c", "pass"],
        "python -c 'import torch'": ["-c", "import torch"],
    }
    seconds = stats.interleave({name: (lambda command=command: timed(command)) for name, command in commands.items()},
                               args.startup_runs, warmup=0)  # each a fresh process: nothing to warm up but the page cache
    out = {name: {"seconds": stats.median_interval(seconds[name]), "imports_torch": imports_torch(command)}
           for name, command in commands.items()}
    out["files"] = args.startup_files
    return out


def files_to_index(n: int, small: list[str]) -> Path:
    """``n`` small JPEGs (crops of the benchmark photos), made once."""
    folder = FOLDER / f"folder-{n}"
    if len(list(folder.glob("*.jpg"))) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = [Image.open(p).convert("RGB") for p in small[:16]]
    for i in range(n):
        image = sources[i % len(sources)]
        left, top = int(rng.integers(0, image.width - 160)), int(rng.integers(0, image.height - 120))
        image.crop((left, top, left + 160, top + 120)).save(folder / f"{i:05}.jpg", quality=90)
    return folder


def run(arguments: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "lookalike", *arguments], capture_output=True, text=True,
                              timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"lookalike {' '.join(arguments)} failed: {done.stderr.strip()[-500:]}")
    return done


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command} failed: {done.stderr.strip()[-500:]}")
    return seconds


def imports_torch(command: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True, timeout=600, check=False)
    return any(line.split("|")[-1].strip() == "torch" for line in done.stderr.splitlines() if line.startswith("import time:"))


_MEMORY = """
import json, resource, sys
from lookalike import create_extractor
paths = json.loads(sys.argv[1])
extractor = create_extractor(device="cpu")
done = sum(len(batch.keys) for batch in extractor.embed_paths(paths))
extractor.close()  # the workers are waited for, so that their peak counts below
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"images": done, "peak_mib": own, "largest_worker_mib": workers}))
"""


def memory(args, small: list[str]) -> dict:
    """Peak RSS of a process embedding a quarter of the small photos, and all of them (ONNX, defaults), side by side
    in each of --memory-repeats repeats; ``growth``, the larger of the two peaks' ratios (the process's and its
    largest worker's), is the median of the per-repeat growths with its interval."""
    sizes = (len(small) // 4, len(small))
    runs = []
    for repeat in range(args.memory_repeats):
        run = {}
        for n in sizes if repeat % 2 == 0 else reversed(sizes):
            done = subprocess.run([sys.executable, "-c", _MEMORY, json.dumps(small[:n])], capture_output=True, text=True,
                                  timeout=1800, check=False)
            if done.returncode != 0:
                raise SystemExit(f"memory run failed: {done.stderr.strip()[-500:]}")
            run[str(n)] = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append({str(n): run[str(n)] for n in sizes})
    growth = [growth_of(run, sizes) for run in runs]
    return {"images": list(sizes), "runs": runs, "growth": stats.median_interval(growth)}


def growth_of(run: dict, sizes: tuple[int, int]) -> float:
    """How much more memory 4x the images took: the larger of the process's and its largest worker's ratio."""
    small, large = run[str(sizes[0])], run[str(sizes[1])]
    return max(large["peak_mib"] / small["peak_mib"], large["largest_worker_mib"] / small["largest_worker_mib"])
