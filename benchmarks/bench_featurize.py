"""CPU featurizing against the fastest configuration anyone could pick, side by side in one run.

    python benchmarks/bench_featurize.py

One command, defaults for this project's 2-core machine: about 25 minutes the first time
(the photos are generated and the networks exported once; both are cached), about 20 after.
Setup: the `bench` extra (``pip install -e '.[bench]'``: img2vec-pytorch, simplejpeg) and,
for larger source photos, ``apt-get install mate-backgrounds`` (see make_photos.py).
Writes benchmarks/results/featurize_cpu.json; ``python benchmarks/results.py --write`` then
renders docs/performance.md's tables (featurize_report.py lays them out).

Every group below runs its configurations side by side in each of --repeats repeats (the
order alternating), and each ratio is the median of the per-repeat ratios with its bootstrap
95% interval (benchmarks/stats.py); a target is met when the interval's worse end meets it.
9 repeats by default (a round of everything takes about 90 s here): the fewest odd number
whose interval leaves out the most extreme repeat at each end. Measured:

- model only, each runtime (ONNX Runtime; torch channels_last in inference mode) x threads x
  forward batch (uint8 pixels in memory, vectors out), and ONNX Runtime as one single-thread
  session per core in forked processes, each running slices of the pixels it already has;
  the fastest of them is the denominator of every model ratio, and lookalike's default
  (``Extractor`` on the same pixels, which it sends to its worker processes) is measured against it;
- decoding on one core: lookalike's per-file work (PIL draft mode, resize, crop) and the
  alternatives (simplejpeg with DCT scaling, torchvision's decode_jpeg, PIL without draft),
  with their largest pixel difference from lookalike's after the same resize;
- end to end, ``Extractor.embed_paths`` on small (at most 1 MP) and large (4-12 MP) camera-like
  JPEGs, lookalike's defaults and a sweep of decoding workers x network threads, in the same
  repeats as the fastest model-only configuration and decoding on one core, whose per-image
  times give each repeat's bound: what decoding and the network sharing the cores allow;
- peers on the large photos: a naive per-image loop, and img2vec-pytorch's resnet-18 against
  lookalike's resnet18 with the same random weights from a temporary torch hub cache;
- start-up, in fresh processes: re-indexing an unchanged folder of 1,000 files, and querying
  an indexed image and a new one (benchmarks/featurize_startup.py), and peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import featurize_peers
import featurize_report
import featurize_startup
import numpy as np
import results
import stats
import torch
from make_photos import bytes_per_mp, make_photos

BATCHES = (1, 2, 4, 8, 16, 32)
DEFAULT = featurize_report.DEFAULT


def sample_pixels(paths: list[str], preprocessing, n: int) -> np.ndarray:
    from lookalike.featurize.images.batches import file_pixels

    rows = [file_pixels(p, preprocessing)[0] for p in paths[:n]]
    return np.stack([rows[i % len(rows)] for i in range(n)])


@contextlib.contextmanager
def model_configs(args, pixels: np.ndarray, cores: int):
    """Each runtime x threads x forward batch as a function running the network on ``pixels``, and lookalike's
    default (``DEFAULT``); with the default extractor, whose settings the report names. Open until the end."""
    from lookalike import create_extractor
    from lookalike.featurize.runtimes.onnx_cache import model_path
    from lookalike.featurize.runtimes.onnx_network import OnnxNetwork

    default = create_extractor(args.model, device="cpu", runtime="onnx")
    torch_extractor = create_extractor(args.model, device="cpu", runtime="torch")
    path = model_path(default.spec)
    configs = {}
    for threads in sorted({1, cores}):
        for spinning in (True, False):  # ORT's own default spins idle threads; lookalike's doesn't
            network = OnnxNetwork(path, threads=threads, spinning=spinning)
            for batch in BATCHES:
                configs[f"onnxruntime{', spinning' if spinning else ''}|{threads}|{batch}"] = _onnx_pass(network, pixels, batch)
    for threads in sorted({1, cores}):
        for batch in BATCHES:
            configs[f"torch channels_last|{threads}|{batch}"] = _torch_pass(torch_extractor, pixels, batch, threads)
    pools = []
    if cores > 1:  # a session per core, each on its share of the pixels (forked: nothing is sent but slices)
        pools.append(_process_pool(path, pixels, cores))
        for batch in BATCHES[:4]:
            configs[f"onnxruntime, a process per core|1|{batch}"] = _processes_pass(pools[0], len(pixels), batch)
    configs[DEFAULT] = lambda: default._embed_pixels(pixels)  # all at once, as the others get them
    try:
        yield configs, default
    finally:
        default.close()
        for pool in pools:
            pool.shutdown()


def model_only(args, configs: dict, default, images: int) -> dict:
    """images/s of each configuration (medians), and each one's rate over the fastest's, paired by repeat."""
    seconds = stats.interleave(configs, args.repeats)
    rates = {name: images / statistics.median(s) for name, s in seconds.items()}
    rate, fastest = max((r, name) for name, r in rates.items() if name != DEFAULT)
    ratios = {name: stats.paired_ratio(seconds[fastest], s) for name, s in seconds.items()}  # its rate / the fastest's
    return {"rates": rates, "seconds": seconds, "images": images, "fastest": fastest, "fastest_rate": rate,
            "ratios": ratios,
            "lookalike_settings": {"forward_batch": default.forward_batch, "threads": default.threads,
                                   "workers": default.num_workers}}


_worker: dict = {}


def _start_session(path, pixels) -> None:
    from lookalike.featurize.runtimes.onnx_network import OnnxNetwork

    _worker.update(network=OnnxNetwork(path, threads=1), pixels=pixels)


def _run_slice(start: int, stop: int, batch: int) -> int:
    _worker["network"].run(_worker["pixels"][start:stop], batch)
    return stop - start


def _process_pool(path, pixels, cores: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_session, initargs=(path, pixels))
    list(pool.map(time.sleep, [0.2] * cores))  # every worker started, its session open
    return pool


def _processes_pass(pool, n: int, batch: int):
    step = max(batch, 8)  # slices of a few batches, shared out as the workers free up
    starts = range(0, n, step)
    return lambda: sum(pool.map(_run_slice, starts, [min(i + step, n) for i in starts], [batch] * len(starts)))


def _onnx_pass(network, pixels, batch):
    return lambda: network.run(pixels, batch)


def _torch_pass(extractor, pixels, batch, threads):
    """torch as lookalike runs it (channels_last, inference mode), ``threads`` intra-op threads."""
    normalize, module = extractor.model_spec.preprocessing.normalize, extractor.module
    x = torch.from_numpy(pixels)

    @torch.inference_mode()
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for i in range(0, len(x), batch):
                module(normalize(x[i : i + batch]).contiguous(memory_format=torch.channels_last))
        finally:
            torch.set_num_threads(before)

    return run


def decoding(args, sets: dict[str, list[str]]) -> dict:
    """Decoders on one core (this process), and their largest pixel difference from lookalike's."""
    from lookalike import create_extractor

    preprocessing = create_extractor(args.model, device="cpu", runtime="onnx").model_spec.preprocessing
    out = {}
    for kind, paths in sets.items():
        paths = paths[: args.decode_n]
        decoders = featurize_peers.decoders(preprocessing)
        torch.set_num_threads(1)
        seconds = stats.interleave({name: (lambda f=f, paths=paths: [f(p) for p in paths]) for name, f in decoders.items()},
                                   args.repeats)
        torch.set_num_threads(os.cpu_count() or 1)
        ours = [decoders["lookalike (PIL draft)"](p) for p in paths[:16]]
        out[kind] = {name: {"images_per_s": len(paths) / statistics.median(s), "seconds": s,
                            "max_level_difference": max(int(np.abs(a.astype(int) - decoders[name](p).astype(int)).max())
                                                        for a, p in zip(ours, paths[:16]))}
                     for name, s in seconds.items()}
    return out


MODEL, DECODE = "model only, fastest configuration", "decoding on one core (lookalike)"


def end_to_end(args, sets: dict[str, list[str]], cores: int, fastest_model, model_images: int) -> dict:
    """``embed_paths`` with lookalike's defaults, a sweep of workers x threads, and the torch runtime; side by side
    with ``fastest_model`` (the fastest model-only configuration, on ``model_images`` images) and decoding on one
    core, whose per-image times give each repeat's bound: 1 / (1/model + 1/(cores x decode)) images/s."""
    from lookalike import create_extractor
    from lookalike.featurize.images.batches import file_pixels

    preprocessing = create_extractor(args.model, device="cpu", runtime="onnx").model_spec.preprocessing
    out = {}
    for kind, paths in sets.items():
        extractors = {"lookalike default": create_extractor(args.model, device="cpu")}
        for workers in sorted({1, cores}):
            for threads in sorted({1, cores}):
                extractors[f"onnx, {workers} workers, {threads} threads"] = create_extractor(
                    args.model, device="cpu", runtime="onnx", workers=workers, threads=threads)
        extractors["torch default"] = create_extractor(args.model, device="cpu", runtime="torch")
        configs = {name: (lambda e=e, paths=paths: sum(len(b.keys) for b in e.embed_paths(paths)))
                   for name, e in extractors.items()}
        configs[MODEL] = fastest_model
        configs[DECODE] = lambda paths=paths: [file_pixels(p, preprocessing) for p in paths]
        seconds = stats.interleave(configs, args.repeats)
        per_image = {name: [t / (model_images if name == MODEL else len(paths)) for t in s] for name, s in seconds.items()}
        bound = [m + d / cores for m, d in zip(per_image[MODEL], per_image[DECODE])]  # seconds an image, per repeat
        default = extractors["lookalike default"]
        out[kind] = {"rates": {name: 1 / statistics.median(per_image[name]) for name in extractors},
                     "seconds": seconds,
                     "model_only_rate": 1 / statistics.median(per_image[MODEL]),
                     "decode_rate": 1 / statistics.median(per_image[DECODE]),
                     "bound_rate": 1 / statistics.median(bound),
                     "to_bound": {name: stats.paired_ratio(bound, per_image[name]) for name in extractors},
                     "to_model": {name: stats.paired_ratio(per_image[MODEL], per_image[name]) for name in extractors},
                     "default_settings": {"workers": default.num_workers, "threads": default.threads,
                                          "forward_batch": default.forward_batch, "batch_size": default.batch_size}}
        for extractor in extractors.values():
            extractor.close()
    return out


def photo_sets(args) -> dict[str, list[str]]:
    jobs = os.cpu_count() or 1
    return {kind: [str(p) for p in make_photos(args.folder / kind, n, kind, jobs=jobs)]
            for kind, n in (("small", args.small), ("large", args.large))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lookalike-bench-photos"))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--small", type=int, default=256, help="Small photos (at most 1 MP) end to end.")
    parser.add_argument("--large", type=int, default=96, help="Large photos (4-12 MP) end to end.")
    parser.add_argument("--model-images", type=int, default=64, help="Images per model-only pass.")
    parser.add_argument("--decode-n", type=int, default=48, help="Files per decoder on one core.")
    parser.add_argument("--naive-n", type=int, default=24, help="Large photos for the naive loop and img2vec.")
    parser.add_argument("--startup-files", type=int, default=1000)
    parser.add_argument("--startup-runs", type=int, default=11, help="fresh processes of each start-up command")
    parser.add_argument("--memory-repeats", type=int, default=5, help="peak-memory runs of each size")
    parser.add_argument("--repeats", type=int, default=9, help="paired repeats of every other group")
    parser.add_argument("--name", default="featurize_cpu", help="DIR/NAME.json")
    results.add_arguments(parser)
    args = parser.parse_args()
    results.check_tree(args.dirty)  # before the runs, not after them

    cores = len(os.sched_getaffinity(0))
    sets = photo_sets(args)
    photos = {kind: bytes_per_mp([Path(p) for p in paths]) for kind, paths in sets.items()}
    for kind, found in photos.items():
        print(f"{kind} photos: {found['files']} files, {found['mean_mp']:.1f} MP, {found['mb_per_mp']:.3f} MB/MP", flush=True)
    from lookalike import create_extractor

    preprocessing = create_extractor(args.model, device="cpu", runtime="onnx").model_spec.preprocessing
    figures = {"photos": photos, "cores": cores}
    pixels = sample_pixels(sets["small"], preprocessing, args.model_images)
    with model_configs(args, pixels, cores) as (configs, default):
        figures["model"] = model_only(args, configs, default, len(pixels))
        print(f"model only: fastest {figures['model']['fastest']} {figures['model']['fastest_rate']:.1f} images/s", flush=True)
        figures["decode"] = decoding(args, sets)
        figures["end_to_end"] = end_to_end(args, sets, cores, configs[figures["model"]["fastest"]], len(pixels))
    print("end to end:", {k: round(v["rates"]["lookalike default"], 1) for k, v in figures["end_to_end"].items()}, flush=True)
    figures["peers"] = featurize_peers.peers(args, sets["large"][: args.naive_n], cores)
    figures["startup"] = featurize_startup.startup(args, sets["small"])
    figures["memory"] = featurize_startup.memory(args, sets["small"])
    figures["targets"] = featurize_report.targets(figures)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("results", "dirty")}
    for name, table in featurize_report.tables(figures, settings).items():
        print(f"\n{name}\n" + results.markdown(table))
    print(f"-> {results.save(args.name, settings, figures, 'featurize_report', args.results, args.dirty)}")


if __name__ == "__main__":
    main()
