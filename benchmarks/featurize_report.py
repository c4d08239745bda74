"""bench_featurize.py's figures as docs/performance.md's tables, and the issue's targets with a verdict each.

``tables(figures, settings)`` is the layout ``results.py`` renders featurize_cpu.json with;
``targets(figures)`` judges the issue's targets when the run is saved. Ratios are medians of
paired repeats with their bootstrap 95% intervals (benchmarks/stats.py); a target is met
when the interval's worse end meets it.
"""

from __future__ import annotations

import stats

BATCHES = ("1", "2", "4", "8", "16", "32")
DEFAULT = "lookalike|default|default"


def targets(f: dict) -> dict:
    """The issue's targets (#9), each with its measured figure, aim and verdict."""
    model, e2e, peers, start = f["model"], f["end_to_end"], f["peers"], f["startup"]
    aims = {
        "model only, lookalike's default / fastest configuration": (model["ratios"][DEFAULT], 0.9, "higher"),
        "end to end, small photos / fastest model only": (e2e["small"]["to_model"]["lookalike default"], 0.85, "higher"),
        "end to end, large photos / bound (decoding and model sharing the cores)":
            (e2e["large"]["to_bound"]["lookalike default"], 0.8, "higher"),
        "end to end, large photos / naive loop": (peers["vs_naive"], 4.0, "higher"),
        "resnet18, lookalike / img2vec-pytorch (large photos)": (peers["resnet18_vs_img2vec"], 5.0, "higher"),
        f"re-index an unchanged folder of {start['files']:,} files, s": (start["re-index, unchanged"]["seconds"], 0.5, "lower"),
        "query an indexed image (fresh process), s": (start["query, indexed image"]["seconds"], 0.5, "lower"),
        "query a new image (fresh process), s": (start["query, new image"]["seconds"], 1.0, "lower"),
        "peak memory, 4x the images / 1x": (f["memory"]["growth"], 1.1, "lower"),
    }
    return {name: {"measured": measured, "target": target, "better": better, "pass": stats.meets(target, measured, better)}
            for name, (measured, target, better) in aims.items()}


def tables(f: dict, settings: dict) -> dict:
    """Every table of the featurizing section, from the figures alone."""
    return {
        "targets": _targets(f["targets"]),
        "photos": _photos(f["photos"]),
        "model": _model(f["model"]),
        "model_sweep": _sweep(f["model"]),
        "decode": _decode(f["decode"]),
        "end_to_end": _end_to_end(f["end_to_end"], f["cores"]),
        "peers": _peers(f["peers"]),
        "startup": _startup(f["startup"]),
    }


def _fmt(value: float) -> str:
    """Three decimals below 2, so that a ratio a hair under its aim doesn't print as the aim."""
    return ".3f" if value < 2 else ".2f" if value < 100 else ",.0f"


def _targets(verdicts: dict) -> dict:
    rows = []
    for name, v in verdicts.items():
        measured = v["measured"]
        rows.append([name, stats.shown(measured, _fmt(stats.value(measured))),
                     f"{'>=' if v['better'] == 'higher' else '<='} {v['target']:g}", stats.verdict(v["pass"], measured)])
    return {"columns": ["target", "measured", "aim", ""], "rows": rows}


def _photos(photos: dict) -> dict:
    rows = [[kind, str(s["files"]), f"{s['mean_mp']:.1f}", f"{s['mb_per_mp']:.3f}", f"{s['mb_per_12mp']:.1f}"]
            for kind, s in photos.items()]
    return {"columns": ["photos", "files", "mean MP", "MB per MP", "MB per 12 MP"], "rows": rows}


def _split(name: str) -> tuple[str, str, str]:
    runtime, threads, batch = name.split("|")
    return runtime, threads, batch


def _model(model: dict) -> dict:
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for name, rate in model["rates"].items():
        runtime, threads, batch = _split(name)
        if runtime != "lookalike":
            best[(runtime, threads)] = max(best.get((runtime, threads), (0.0, "")), (rate, batch))
    rows = [[f"{runtime}, {threads} threads, batch {batch}", f"{rate:.1f}",
             stats.shown(model["ratios"][f"{runtime}|{threads}|{batch}"], ".2f")]
            for (runtime, threads), (rate, batch) in sorted(best.items(), key=lambda kv: -kv[1][0])]
    settings = model["lookalike_settings"]
    where = (f"{settings['workers']} processes of {max(1, settings['threads'] // settings['workers'])} thread(s)"
             if settings.get("workers", 0) > 1 else f"{settings['threads']} threads")
    rows.append([f"**lookalike's default** (ONNX Runtime, {where}, batch {settings['forward_batch']})",
                 f"**{model['rates'][DEFAULT]:.1f}**", f"**{stats.shown(model['ratios'][DEFAULT], '.2f')}**"])
    return {"columns": ["model only, best batch of each", "images/s", "/ fastest (paired)"], "rows": rows}


def _sweep(model: dict) -> dict:
    table: dict[str, dict[str, float]] = {}
    for name, rate in model["rates"].items():
        runtime, threads, batch = _split(name)
        if runtime != "lookalike":
            table.setdefault(f"{runtime}, {threads} threads", {})[batch] = rate
    rows = [[config] + [f"{rates[b]:.1f}" if b in rates else "" for b in BATCHES] for config, rates in table.items()]
    return {"columns": ["images/s at forward batch"] + list(BATCHES), "rows": rows}


def _decode(decode: dict) -> dict:
    names = list(decode["large"])
    rows = [[name, f"{decode['small'][name]['images_per_s']:.1f}", f"{decode['large'][name]['images_per_s']:.1f}",
             str(max(decode["small"][name]["max_level_difference"], decode["large"][name]["max_level_difference"]))]
            for name in names]
    return {"columns": ["decoder, then the same resize (one core)", "small, images/s", "large, images/s",
                        "largest difference from lookalike's input (levels)"], "rows": rows}


def _end_to_end(e2e: dict, cores: int) -> dict:
    small, large = e2e["small"], e2e["large"]
    rows = []
    for name in small["to_bound"]:
        cells = [f"{small['rates'][name]:.1f}", stats.shown(small["to_bound"][name], ".2f"),
                 f"{large['rates'][name]:.1f}", stats.shown(large["to_bound"][name], ".2f")]
        if name == "lookalike default":
            s = small["default_settings"]
            label = f"**lookalike's default** ({s['workers']} workers, {s['threads']} threads, batch {s['forward_batch']})"
            rows.append([label] + [f"**{cell}**" for cell in cells])
        else:
            rows.append([name] + cells)
    rows.append(["model only, fastest configuration", f"{small['model_only_rate']:.1f}", "",
                 f"{large['model_only_rate']:.1f}", ""])
    rows.append([f"bound: decoding and the model sharing {cores} cores", f"{small['bound_rate']:.1f}", "1",
                 f"{large['bound_rate']:.1f}", "1"])
    return {"columns": ["end to end (`embed_paths`)", "small (<= 1 MP), images/s", "/ bound (paired)",
                        "large (4-12 MP), images/s", "/ bound (paired)"], "rows": rows}


def _peers(peers: dict) -> dict:
    rates, ratios = peers["rates"], peers["ratios"]
    img2vec = [name for name in rates if name.startswith("img2vec")]
    best = max(img2vec, key=lambda name: rates[name])
    rows = [["lookalike, efficientnet_lite0", f"{rates['lookalike']:.1f}", ""],
            ["naive loop, efficientnet_lite0 (PIL, torchvision transforms, batch of 1)", f"{rates['naive loop']:.1f}",
             stats.shown(ratios["naive loop"], ".1f", "x slower")],
            ["lookalike, resnet18", f"{rates['lookalike resnet18']:.1f}", ""]]
    rows += [[name, f"{rates[name]:.1f}", stats.shown(ratios[name], ".1f", "x slower") + (", its fastest" if name == best else "")]
             for name in img2vec]
    return {"columns": [f"on the same {peers['images']} large photos", "images/s", "than lookalike (paired)"], "rows": rows}


def _startup(start: dict) -> dict:
    rows = [[name, stats.shown(r["seconds"], ".2f"), "yes" if r["imports_torch"] else "no"]
            for name, r in start.items() if isinstance(r, dict)]
    return {"columns": [f"fresh process (store of {start['files']:,} files)", "median s", "imports torch"], "rows": rows}
