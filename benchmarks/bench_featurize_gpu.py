"""GPU featurizing throughput: lookalike end to end against its baselines, side by side in one run.

    python benchmarks/bench_featurize_gpu.py --device cuda --batch-size 256 --n 1500 --naive-n 64 --name lite0

The CPU benchmark is ``bench_featurize.py``; this one is run by ``gpu_check.sh`` on a lent
GPU machine and writes ``benchmarks/results/featurize_gpu_<name>.json`` (``--name``).

Measured on the same photos and the same network, all side by side in each of --repeats repeats
(the order alternating), after a first call each (timed apart: it holds compilation):
- model only: uint8 batches already on the device, through normalise + forward + copy back;
- decode only (GPU): the files' bytes already in memory, through nvJPEG batches, orientation
  and resize on the GPU, on the same threads (--threads-per-gpu) as lookalike;
- decode on one core (CPU): what the reader's workers do per file, in this process;
- lookalike: ``Extractor.embed_paths`` on the files, what ``lookalike index`` runs (on a GPU
  also with --no-gpu-decode, i.e. PIL on CPU workers);
- naive: per image, PIL open + convert, torchvision transforms, a batch of one, forward in
  fp32 without channels_last (the img2vec / tutorial pattern); on a GPU over --naive-n files.
The ratios are lookalike over min(model only, decode only) and over naive, each the median of
the per-repeat ratios with its bootstrap 95% interval (benchmarks/stats.py; 5 repeats by
default, the fewest that give one). Prints the hardware, versions and settings, then the
table, and writes JSON with --json (a copy) and --name (DIR/featurize_gpu_NAME.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import results as results_module
import stats
import torch
from make_photos import bytes_per_mp, make_photos


def _sync(device: torch.device, stream_only: bool = False) -> None:
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize() if stream_only else torch.cuda.synchronize(device)


def _timed(measures: dict, device, repeats: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Seconds of each function's first call (one after the other), then of each repeat, side by side."""
    first = {}
    for name, fn in measures.items():
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        first[name] = time.perf_counter() - start

    def synced(fn):
        return lambda: (fn(), _sync(device))

    _sync(device)
    return first, stats.interleave({name: synced(fn) for name, fn in measures.items()}, repeats, warmup=0)


def _count(batches) -> int:
    return sum(len(batch.keys) for batch in batches)


def bench(paths: list[str], args) -> dict:
    from torchvision.transforms import v2 as T

    from lookalike import create_extractor
    from lookalike.featurize.images.jpeg import decode_jpegs, read_jpeg

    options = dict(device=args.device, batch_size=args.batch_size, workers=args.workers, weights=args.weights,
                   precision=args.precision, runtime="torch")
    extractor = create_extractor(args.model, compile=args.compile, gpu_decode=args.gpu_decode, **options)
    extractor.threads_per_gpu = args.threads_per_gpu
    device, pre = extractor.device, extractor.model_spec.preprocessing
    n, batch_size = len(paths), args.batch_size
    batches = -(-n // batch_size)
    pixels = torch.randint(0, 256, (batch_size, 3, pre.crop_size, pre.crop_size), dtype=torch.uint8, device=device)
    measures = {}

    def model_only():
        for _ in range(batches):
            extractor._forward(pixels)

    measures["model_only"] = (model_only, batches * batch_size)

    if extractor.jpeg_on_device:
        jpegs = [read_jpeg(p, max_pixels=extractor.max_pixels, draft_size=pre.resize_size, max_aspect_ratio=100) for p in paths]
        assert all(jpegs), "every benchmark photo should be a plain JPEG"
        chunks = [jpegs[i : i + batch_size] for i in range(0, n, batch_size)]

        def decode_batch(chunk, lane):
            images = decode_jpegs(chunk, lane.device)
            stacked = torch.stack([pre.resize_tensor(image, j.draft_scale) for image, j in zip(images, chunk)])
            _sync(lane.device, stream_only=True)  # this thread's stream: the batch is decoded
            return stacked

        def decode_only():
            for _ in extractor.lane_pool().map_in_order(decode_batch, chunks):
                pass

        measures["decode_only"] = (decode_only, n)
    else:
        from lookalike.featurize.images.reader import ImageFiles

        files = ImageFiles(paths, pre, extractor.max_pixels)

        def decode_one_core():  # what the reader's workers do, in this process
            for i in range(len(files)):
                files[i]

        measures["decode_1_core"] = (decode_one_core, n)
    if extractor.jpeg_on_device and not args.compile:  # one compiled network per run is enough
        cpu_decode = create_extractor(args.model, gpu_decode=False, compile=args.compile, **options)
        cpu_decode.threads_per_gpu = args.threads_per_gpu
        measures["lookalike_cpu_decode"] = (lambda: _count(cpu_decode.embed_paths(paths)), n)

    measures["lookalike"] = (lambda: _count(extractor.embed_paths(paths)), n)

    naive_transform = T.Compose([
        T.Resize(pre.resize_size, interpolation=T.InterpolationMode(pre.interpolation), antialias=True),
        T.CenterCrop(pre.crop_size), T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std),
    ])
    network = create_extractor(args.model, device=args.device, weights=args.weights, precision="fp32", runtime="torch").module
    network = network.to(memory_format=torch.contiguous_format)  # as tutorials leave it
    naive_paths = paths[: args.naive_n] if args.naive_n else paths

    def naive():
        from PIL import Image

        with torch.inference_mode():
            for path in naive_paths:
                x = naive_transform(Image.open(path).convert("RGB")).unsqueeze(0).to(device)
                network(x).cpu()

    measures["naive"] = (naive, len(naive_paths))

    results = {"images": n}
    first, times = _timed({name: fn for name, (fn, _) in measures.items()}, device, args.repeats)
    per_image = {name: [t / measures[name][1] for t in times[name]] for name in measures}  # seconds an image
    for name, (_, images) in measures.items():
        seconds = statistics.median(times[name])
        results[name] = {"seconds": seconds, "images": images, "images_per_s": images / seconds, "first_call_s": first[name],
                         "all_s": times[name]}
        print(f"  {name}: {images / seconds:.1f} images/s", flush=True)
    # the slower of the network and the decoder bounds each repeat: its time an image is the larger
    ceiling = [max(per_image[m][i] for m in ("model_only", "decode_only") if m in per_image) for i in range(args.repeats)]
    results["lookalike_vs_ceiling"] = stats.paired_ratio(ceiling, per_image["lookalike"])
    if "decode_1_core" in results:
        # On a CPU the model and decoding share the cores: with the model taking all of them
        # for 1/model s an image and decoding 1/decode core-seconds, the machine does about
        # 1 / (1/model + 1/(cores * decode)) images/s end to end (more only if the model
        # uses the cores better when it shares them than alone).
        cores = len(os.sched_getaffinity(0))
        bound = [m + d / cores for m, d in zip(per_image["model_only"], per_image["decode_1_core"])]
        results["cpu_bound"] = {"images_per_s": 1 / statistics.median(bound), "cores": cores}
        results["lookalike_vs_cpu_bound"] = stats.paired_ratio(bound, per_image["lookalike"])
    results["lookalike_vs_naive"] = stats.paired_ratio(per_image["naive"], per_image["lookalike"])
    results["settings"] = {
        "model": args.model, "batch_size": batch_size, "workers": extractor.num_workers, "devices": [str(d) for d in extractor.devices],
        "precision": str(extractor.autocast_dtype or "fp32"), "compile": args.compile, "gpu_decode": extractor.jpeg_on_device,
        "threads_per_gpu": args.threads_per_gpu,
    }
    return results


def hardware() -> dict:
    import torchvision

    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lookalike-bench-photos"))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None, help="A state dict file instead of the pretrained weights.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads-per-gpu", type=int, default=2)
    parser.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=None,
                        help="Decode JPEGs on the device [default: on a GPU]; on a CPU, tests that path.")
    parser.add_argument("--naive-n", type=int, default=None, help="Time the naive loop on the first N files only.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--name", default=None, help="Save DIR/featurize_gpu_NAME.json.")
    results_module.add_arguments(parser)
    args = parser.parse_args()
    if args.name:
        results_module.check_tree(args.dirty)

    paths = [str(p) for p in make_photos(args.folder, args.n, "mixed", jobs=os.cpu_count() or 1)]
    machine = hardware()
    print(json.dumps(machine), flush=True)
    results = {"hardware": machine, **bench(paths, args)}
    print(json.dumps(results["settings"]))
    print(f"\n{'measure':<22}{'images/s':>10}{'seconds':>10}{'images':>8}{'1st call':>10}   (median of {args.repeats})")
    for name in ("model_only", "decode_only", "decode_1_core", "lookalike", "lookalike_cpu_decode", "naive"):
        if name in results:
            r = results[name]
            print(f"{name:<22}{r['images_per_s']:>10.1f}{r['seconds']:>10.2f}{r['images']:>8}{r['first_call_s']:>10.2f}")
    ceiling = "min(model only, decode only)" if "decode_only" in results else "model only"
    print(f"\nlookalike / {ceiling}: {stats.shown(results['lookalike_vs_ceiling'])}   "
          f"lookalike / naive: {stats.shown(results['lookalike_vs_naive'])}")
    if "cpu_bound" in results:
        print(f"CPU bound, model and decoding sharing {results['cpu_bound']['cores']} cores: "
              f"{results['cpu_bound']['images_per_s']:.1f} images/s; "
              f"lookalike / bound: {stats.shown(results['lookalike_vs_cpu_bound'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.name:
        settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
                    if key not in ("results", "dirty")}
        settings["photos"] = bytes_per_mp([Path(p) for p in paths])
        path = results_module.save(f"featurize_gpu_{args.name}", settings, results, "bench_featurize_gpu", args.results,
                                   args.dirty)
        print(f"-> {path}")


def tables(figures: dict, settings: dict) -> dict:
    """Each measure's images/s (medians), then lookalike's paired ratios with their intervals."""
    rows = [[name, f"{figures[name]['images_per_s']:.1f}"] for name in
            ("model_only", "decode_only", "decode_1_core", "lookalike", "lookalike_cpu_decode", "naive") if name in figures]
    rows += [[label, stats.shown(figures[key])] for key, label in (
        ("lookalike_vs_ceiling", "lookalike / min(model only, decode only)"),
        ("lookalike_vs_cpu_bound", "lookalike / CPU bound"), ("lookalike_vs_naive", "lookalike / naive")) if key in figures]
    return {"throughput": {"columns": ["measure", "images/s, or ratio (paired repeats)"], "rows": rows}}


if __name__ == "__main__":
    main()
