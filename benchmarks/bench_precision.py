"""int8 against fp32 for the bundled Lite0 on this CPU: fidelity of the vectors, and speed of the network.

    python benchmarks/bench_precision.py                  # -> results/precision_cpu.json

The fp32 network is the ONNX export lookalike caches and runs. Each int8 network is that file
quantized by ONNX Runtime (``quantize_static``, QDQ, u8 activations and s8 per-channel
weights, the fastest int8 configuration measured on a VNNI Xeon), calibrated on
--calibration photos that are not in the evaluation sets; once as is, once with
``reduce_range`` (7-bit weights, for CPUs without VNNI, whose u8 x s8 products saturate).

Fidelity, each int8 network against fp32, on sets made offline:

- cosine of each image's int8 vector to its fp32 vector (mean, 1st percentile, min), over
  every image embedded below;
- retrieval: --photos photo collages (``make_photos``, small kind) and three planted variants
  of each (a 10% crop resized to half, a JPEG re-save at quality 60, 8% brighter); each
  variant queries the set of photos and variants: recall@1 is its own photo found first
  (the other variants of it left out), and overlap@10 the share of fp32's top 10 that the
  int8 vectors rank in their top 10;
- a classifier: 5-fold cross-validated accuracy of logistic regression on scikit-learn's
  digits (``make_digits``, --digits a class) embedded at each precision.

Speed: model only, one single-thread session at batch 2 (the layout of the fastest fp32
configuration, one such session a core), over the same --speed-images pixels, fp32 and int8
side by side in each of --repeats repeats; the figure is the median of the per-repeat ratios
fp32 time / int8 time with its bootstrap 95% interval (``stats``).

The CPU's instruction sets are read from /proc/cpuinfo: int8 is fast and faithful where the
CPU has VNNI (``avx512_vnni`` or ``avx_vnni``), and loses accuracy where it has AVX2 only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import results
import stats
from make_digits import make_digits
from make_photos import make_photos
from PIL import Image, ImageEnhance

PRECISIONS = {"int8": {"reduce_range": False}, "int8, reduce_range": {"reduce_range": True}}
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_flags() -> dict:
    """Which of ``ISA_FLAGS`` /proc/cpuinfo lists (Linux), and the CPU's model name."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags, model = set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "model name" and not model:
            model = value.strip()
    return {"model": model, **{flag: flag in flags for flag in ISA_FLAGS}}


def variants(photo: Path, folder: Path) -> list[Path]:
    """Three planted copies of a photo: cropped and halved, re-saved at quality 60, 8% brighter."""
    image = Image.open(photo).convert("RGB")
    w, h = image.size
    made = []
    for name, copy, quality in (
        ("crop", image.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((w // 2, h // 2)), 90),
        ("q60", image, 60),
        ("bright", ImageEnhance.Brightness(image).enhance(1.08), 90),
    ):
        path = folder / f"{photo.stem}-{name}.jpg"
        copy.save(path, quality=quality)
        made.append(path)
    return made


def pixels(paths: list[Path], preprocessing) -> np.ndarray:
    from lookalike.featurize.images.batches import decode_batch

    batch = decode_batch([str(p) for p in paths], preprocessing)
    if batch.failures:
        raise RuntimeError(f"could not decode {batch.failures[0]}")
    return batch.pixels


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed(network, x: np.ndarray, batch: int = 2) -> np.ndarray:
    name = network.get_inputs()[0].name
    out = np.concatenate([network.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def quantize(source: Path, out: Path, calibration: np.ndarray, reduce_range: bool) -> float:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = session(source).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter([{name: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.rows, None)

    started = time.perf_counter()
    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared))
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range)
    return time.perf_counter() - started


def retrieval(vectors: np.ndarray, fp32: np.ndarray, owner: np.ndarray, is_query: np.ndarray) -> dict:
    """recall@1 (a variant's own photo first, its sibling variants left out) and overlap@10 with fp32's top 10."""
    queries = np.flatnonzero(is_query)
    found1, overlap = [], []
    for q in queries:
        keep = (owner != owner[q]) | ~is_query  # its own photo stays, its sibling variants go
        keep[q] = False
        pool = np.flatnonzero(keep)
        mine = pool[np.argsort(-(vectors[pool] @ vectors[q]), kind="stable")[:10]]
        theirs = pool[np.argsort(-(fp32[pool] @ fp32[q]), kind="stable")[:10]]
        found1.append(owner[mine[0]] == owner[q] and not is_query[mine[0]])
        overlap.append(len(np.intersect1d(mine, theirs)) / 10)
    return {"recall_at_1": float(np.mean(found1)), "overlap_at_10": float(np.mean(overlap))}


def kfold_accuracy(vectors: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(LogisticRegression(max_iter=2000), vectors, labels, cv=folds).mean())


def tables(figures: dict, settings: dict) -> dict:
    cpu = figures["cpu"]
    isa = ", ".join(flag for flag in ISA_FLAGS if cpu.get(flag)) or "none of " + ", ".join(ISA_FLAGS)
    setup = [["CPU", f"{cpu['model']} ({isa})"],
             ["network", "efficientnet_lite0 ONNX export, one single-thread session, batch 2"],
             ["int8", f"ONNX Runtime quantize_static, QDQ, u8 activations, s8 per-channel weights, "
                      f"calibrated on {settings['calibration']} other photos"],
             ["retrieval set", f"{settings['photos']} photo collages and 3 planted variants of each"],
             ["classifier", f"logistic regression, 5-fold, digits {settings['digits']} a class"],
             ["speed", f"{settings['repeats']} paired repeats over {settings['speed_images']} images: median, "
                       "bootstrap 95% interval"]]
    fp32 = figures["fp32"]
    rows = [["fp32", "1", "1.000 / 1.000 / 1.000", f"{fp32['recall_at_1']:.3f}", "1.000", f"{fp32['kfold_accuracy']:.3f}"]]
    for name in PRECISIONS:
        run = figures[name]
        c = run["cosine"]
        rows.append([name, stats.shown(run["speed"], ".2f", "x"), f"{c['mean']:.3f} / {c['p1']:.3f} / {c['min']:.3f}",
                     f"{run['recall_at_1']:.3f}", f"{run['overlap_at_10']:.3f}", f"{run['kfold_accuracy']:.3f}"])
    return {"setup": {"columns": ["setting", "value"], "rows": setup},
            "precision": {"columns": ["precision", "speed vs fp32", "cosine to fp32: mean / 1st pct / min",
                                      "recall@1", "overlap@10 with fp32", "5-fold accuracy"], "rows": rows}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--digits", type=int, default=30, help="digits a class for the classifier")
    parser.add_argument("--speed-images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--name", default="precision_cpu", help="the results file: DIR/NAME.json")
    results.add_arguments(parser)
    args = parser.parse_args()
    results.check_tree(args.dirty)
    settings = {key: value for key, value in vars(args).items() if key not in ("results", "dirty")}

    from lookalike import create_extractor

    extractor = create_extractor(device="cpu")
    source, preprocessing = Path(extractor.network.source), extractor.model_spec.preprocessing
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as work:
        work = Path(work)
        photos = make_photos(work / "photos", args.photos, kind="small", seed=0)
        planted = [v for p in photos for v in variants(p, work / "photos")]
        calibration = pixels(make_photos(work / "calibration", args.calibration, kind="small", seed=1), preprocessing)
        digits = make_digits(work / "digits", args.digits)
        labels = np.array([p.parent.name for p in digits])
        x_retrieval = pixels([*photos, *planted], preprocessing)
        x_digits = pixels(digits, preprocessing)
        owner = np.concatenate([np.arange(len(photos)), np.repeat(np.arange(len(photos)), 3)])
        is_query = np.concatenate([np.zeros(len(photos), bool), np.ones(len(planted), bool)])

        fp32_net = session(source)
        fp32 = {"retrieval": embed(fp32_net, x_retrieval), "digits": embed(fp32_net, x_digits)}
        figures = {"cpu": cpu_flags(), "fp32": {**retrieval(fp32["retrieval"], fp32["retrieval"], owner, is_query),
                                                "kfold_accuracy": kfold_accuracy(fp32["digits"], labels)}}
        speed_x = x_retrieval[: args.speed_images]
        for name, options in PRECISIONS.items():
            quantized = work / f"{name.replace(', ', '-')}.onnx"
            seconds = quantize(source, quantized, calibration, **options)
            net = session(quantized)
            mine = {"retrieval": embed(net, x_retrieval), "digits": embed(net, x_digits)}
            cosine = np.concatenate([(mine[k] * fp32[k]).sum(1) for k in mine])
            times = stats.interleave({"fp32": lambda: embed(fp32_net, speed_x), "int8": lambda: embed(net, speed_x)},
                                     args.repeats)
            figures[name] = {
                "quantize_s": seconds,
                "cosine": {"mean": float(cosine.mean()), "p1": float(np.percentile(cosine, 1)), "min": float(cosine.min())},
                **retrieval(mine["retrieval"], fp32["retrieval"], owner, is_query),
                "kfold_accuracy": kfold_accuracy(mine["digits"], labels),
                "speed": stats.paired_ratio(times["fp32"], times["int8"]),
                "ms_per_image": {k: stats.median_interval([t / len(speed_x) * 1000 for t in v]) for k, v in times.items()},
            }
            print(name, {k: v for k, v in figures[name].items() if k != "ms_per_image"}, flush=True)
    for table in tables(figures, settings).values():
        print("\n" + results.markdown(table))
    print(f"-> {results.save(args.name, settings, figures, 'bench_precision', args.results, args.dirty)}")


if __name__ == "__main__":
    main()
