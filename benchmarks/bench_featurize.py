"""Featurizing throughput: lookalike end to end against the model alone and a naive loop, in one run.

    python benchmarks/bench_featurize.py --n 500 --json featurize.json

Three measurements on the same photos and the same network, medians over --repeats:
- model only: preprocessed uint8 batches already in memory, through normalise + forward;
- lookalike: ``Extractor.embed_paths`` on the files (decode on workers, draft mode, batches);
- naive: per image, PIL open + convert, torchvision transforms, a batch of one, forward
  (the img2vec / tutorial pattern).
Prints the hardware, versions and settings, a table with ratios, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from make_photos import make_photos


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    """Median seconds of ``fn`` over repeats, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(paths: list[str], model: str, batch_size: int, workers: int | None, device: str, repeats: int) -> dict:
    from torchvision.transforms import v2 as T

    from lookalike import create_extractor

    extractor = create_extractor(model, device=device, batch_size=batch_size, num_workers=workers)
    spec = extractor.model_spec.preprocessing
    n = len(paths)
    batch = torch.randint(0, 256, (batch_size, 3, spec.crop_size, spec.crop_size), dtype=torch.uint8)
    batches = -(-n // batch_size)

    def model_only():
        for _ in range(batches):
            extractor._forward(batch)

    def end_to_end():
        for _ in extractor.embed_paths(paths):
            pass

    naive_transform = T.Compose([
        T.Resize(spec.resize_size, interpolation=T.InterpolationMode(spec.interpolation), antialias=True),
        T.CenterCrop(spec.crop_size), T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std),
    ])
    network = extractor.module

    def naive():
        from PIL import Image

        with torch.inference_mode():
            for path in paths:
                x = naive_transform(Image.open(path).convert("RGB")).unsqueeze(0).to(extractor.device)
                network(x)

    results = {"images": n}
    for name, fn in (("model_only", model_only), ("lookalike", end_to_end), ("naive", naive)):
        seconds = _timed(fn, extractor.device, repeats)
        images = batches * batch_size if name == "model_only" else n
        results[name] = {"seconds": seconds, "images_per_s": images / seconds}
    results["lookalike_vs_model_only"] = results["lookalike"]["images_per_s"] / results["model_only"]["images_per_s"]
    results["lookalike_vs_naive"] = results["lookalike"]["images_per_s"] / results["naive"]["images_per_s"]
    results["settings"] = {"model": model, "batch_size": batch_size, "workers": extractor.num_workers,
                           "device": str(extractor.device), "precision": str(extractor.autocast_dtype or "fp32")}
    return results


def hardware() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lookalike-bench-photos"))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    paths = sorted(str(p) for p in args.folder.glob("*.jpg"))[: args.n]
    if len(paths) < args.n:
        paths = [str(p) for p in make_photos(args.folder, args.n)]
    results = {"hardware": hardware(), **bench(paths, args.model, args.batch_size, args.workers, args.device, args.repeats)}
    print(json.dumps(results["hardware"]), json.dumps(results["settings"]), sep="\n")
    print(f"\n{'measure':<12}{'images/s':>10}{'seconds':>10}   ({results['images']} photos, median of {args.repeats})")
    for name in ("model_only", "lookalike", "naive"):
        print(f"{name:<12}{results[name]['images_per_s']:>10.1f}{results[name]['seconds']:>10.2f}")
    print(f"\nlookalike / model only: {results['lookalike_vs_model_only']:.2f}   "
          f"lookalike / naive: {results['lookalike_vs_naive']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
