"""GPU vectors against CPU vectors, on the same photos: the correctness half of gpu_check.sh.

    python benchmarks/gpu_vectors.py --folder /tmp/lookalike-bench-photos --n 64

Three comparisons, each printed as min / mean cosine over the photos:
- network: the same uint8 pixels (PIL on CPU) through the network on the GPU in each
  precision against fp32 on the CPU; this is the number that must stay >= 0.999;
- pipeline vs full decode: ``embed_paths`` on the GPU (nvJPEG) against ``embed_images`` on
  the CPU (PIL, full decode, no draft mode);
- pipeline, as shipped: ``embed_paths`` on the GPU against ``embed_paths`` on the CPU,
  where large JPEGs decode in PIL's draft mode (the GPU imitates it by block averaging).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import results as results_module
import torch
from PIL import Image

from lookalike import create_extractor
from lookalike.featurize import load_image


def _cosines(a: np.ndarray, b: np.ndarray) -> dict:
    c = (a * b).sum(1)
    return {"min": float(c.min()), "mean": float(c.mean())}


def _vectors(extractor, paths):
    keys, vectors = [], []
    for batch in extractor.embed_paths(paths):
        keys += batch.keys
        vectors.append(batch.vectors)
    assert keys == paths, "every photo must get a vector, in order"
    return np.concatenate(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/lookalike-bench-photos"))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="cpu only to try this script where there is no GPU")
    parser.add_argument("--json", type=Path, default=None)
    results_module.add_arguments(parser)
    args = parser.parse_args()
    if args.device != "cpu":
        results_module.check_tree(args.dirty)
    paths = sorted(str(p) for p in args.folder.glob("*.jpg"))[: args.n]

    cpu = create_extractor(device="cpu", batch_size=32, runtime="torch")  # the reference: torch fp32 on the CPU
    pixels = torch.stack([cpu.model_spec.preprocessing(load_image(p)) for p in paths])
    reference = cpu._forward(pixels)
    results = {}
    for precision in ("fp32", "bf16", "fp16"):
        gpu = create_extractor(device=args.device, batch_size=32, precision=precision)
        results[f"network {precision}"] = _cosines(gpu._forward(pixels), reference)
    gpu = create_extractor(device=args.device, batch_size=32, gpu_decode=True)  # as shipped: auto precision, nvJPEG
    on_gpu = _vectors(gpu, paths)
    full = cpu.embed_images([Image.open(p) for p in paths])
    results["pipeline vs full decode"] = _cosines(on_gpu, full)
    results["pipeline, as shipped"] = _cosines(on_gpu, _vectors(cpu, paths))

    device_name = torch.cuda.get_device_name(0) if gpu.device.type == "cuda" else "no GPU: a dry run on the CPU"
    print(f"GPU vs CPU vectors on {len(paths)} photos ({device_name}; "
          f"shipped precision {gpu.autocast_dtype}, gpu decode {gpu.jpeg_on_device})")
    print(f"{'comparison':<26}{'min cos':>10}{'mean cos':>10}")
    for name, r in results.items():
        print(f"{name:<26}{r['min']:>10.5f}{r['mean']:>10.5f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if gpu.device.type == "cuda":  # DIR/featurize_gpu_vectors.json, for the docs to render
        path = results_module.save("featurize_gpu_vectors", {"photos": len(paths), "gpu": device_name}, results,
                                   "gpu_vectors", args.results, args.dirty)
        print(f"-> {path}")


def tables(figures: dict, settings: dict) -> dict:
    """Each comparison's least and mean cosine over the photos (measured once: cosines, not timings)."""
    rows = [[name, f"{r['min']:.5f}", f"{r['mean']:.5f}"] for name, r in figures.items()]
    return {"cosines": {"columns": ["GPU against CPU", "min cosine", "mean cosine"], "rows": rows}}


if __name__ == "__main__":
    main()
