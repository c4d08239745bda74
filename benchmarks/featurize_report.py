"""bench_featurize.py's figures as the README's tables, and the issue's targets with a verdict each."""

from __future__ import annotations

BATCHES = ("1", "2", "4", "8", "16", "32")


def tables_and_targets(f: dict, cores: int) -> tuple[dict, dict]:
    model, e2e, peers, start = f["model"], f["end_to_end"], f["peers"], f["startup"]
    fastest = model["fastest_rate"]
    decode_large = f["decode"]["large"]["lookalike (PIL draft)"]["images_per_s"]
    decode_small = f["decode"]["small"]["lookalike (PIL draft)"]["images_per_s"]
    bounds = {kind: 1 / (1 / fastest + 1 / (cores * rate)) for kind, rate in (("small", decode_small), ("large", decode_large))}
    f["bounds"] = bounds
    memory = list(f["memory"].values())
    growth = max(memory[-1]["peak_mib"] / memory[0]["peak_mib"], memory[-1]["largest_worker_mib"] / memory[0]["largest_worker_mib"])
    lookalike_model = model["rates"]["lookalike|default|default"]
    targets = {
        "model only, lookalike's default / fastest configuration": (lookalike_model / fastest, 0.9, ">="),
        "end to end, small photos / fastest model only": (e2e["small"]["rates"]["lookalike default"] / fastest, 0.85, ">="),
        "end to end, large photos / bound (decoding and model sharing the cores)":
            (e2e["large"]["rates"]["lookalike default"] / bounds["large"], 0.8, ">="),
        "end to end, large photos / naive loop": (peers["vs_naive"], 4.0, ">="),
        "resnet18, lookalike / img2vec-pytorch (large photos)": (peers["resnet18_vs_img2vec"], 5.0, ">="),
        f"re-index an unchanged folder of {start['files']:,} files, s": (start["re-index, unchanged"]["median_s"], 0.5, "<="),
        "query an indexed image (fresh process), s": (start["query, indexed image"]["median_s"], 0.5, "<="),
        "query a new image (fresh process), s": (start["query, new image"]["median_s"], 1.0, "<="),
        "peak memory, 4x the images / 1x": (growth, 1.1, "<="),
    }
    verdicts = {name: {"measured": value, "target": target, "pass": value >= target if op == ">=" else value <= target}
                for name, (value, target, op) in targets.items()}
    tables = {
        "targets": {"columns": ["target", "measured", "aim", ""],
                    "rows": [[name, _fmt(v["measured"]), f"{targets[name][2]} {targets[name][1]:g}",
                              "pass" if v["pass"] else "**miss**"] for name, v in verdicts.items()]},
        "photos": _photos(f["photos"]),
        "model": _model(model),
        "model_sweep": _sweep(model),
        "decode": _decode(f["decode"]),
        "end_to_end": _end_to_end(e2e, fastest, bounds, cores),
        "peers": _peers(peers),
        "startup": _startup(start),
    }
    return tables, verdicts


def _fmt(value: float) -> str:
    """Three decimals below 2, so that a ratio a hair under its aim doesn't print as the aim."""
    return f"{value:.3f}" if value < 2 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


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
    rows = [[f"{runtime}, {threads} threads, batch {batch}", f"{rate:.1f}", f"{rate / model['fastest_rate']:.2f}"]
            for (runtime, threads), (rate, batch) in sorted(best.items(), key=lambda kv: -kv[1][0])]
    settings = model["lookalike_settings"]
    rate = model["rates"]["lookalike|default|default"]
    where = (f"{settings['workers']} processes of {max(1, settings['threads'] // settings['workers'])} thread(s)"
             if settings.get("workers", 0) > 1 else f"{settings['threads']} threads")
    rows.append([f"**lookalike's default** (ONNX Runtime, {where}, batch {settings['forward_batch']})",
                 f"**{rate:.1f}**", f"**{rate / model['fastest_rate']:.2f}**"])
    return {"columns": ["model only, best batch of each", "images/s", "/ fastest"], "rows": rows}


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


def _end_to_end(e2e: dict, fastest: float, bounds: dict, cores: int) -> dict:
    rows = []
    for name in e2e["small"]["rates"]:
        small, large = e2e["small"]["rates"][name], e2e["large"]["rates"][name]
        cells = [f"{small:.1f}", f"{small / bounds['small']:.2f}", f"{large:.1f}", f"{large / bounds['large']:.2f}"]
        if name == "lookalike default":
            s = e2e["small"]["default_settings"]
            label = f"**lookalike's default** ({s['workers']} workers, {s['threads']} threads, batch {s['forward_batch']})"
            rows.append([label] + [f"**{cell}**" for cell in cells])
        else:
            rows.append([name] + cells)
    rows.append(["model only, fastest configuration", f"{fastest:.1f}", "", f"{fastest:.1f}", ""])
    rows.append([f"bound: decoding and the model sharing {cores} cores", f"{bounds['small']:.1f}", "1", f"{bounds['large']:.1f}", "1"])
    return {"columns": ["end to end (`embed_paths`)", "small (<= 1 MP), images/s", "/ bound", "large (4-12 MP), images/s", "/ bound"],
            "rows": rows}


def _peers(peers: dict) -> dict:
    rates = peers["rates"]
    best_img2vec = max(rate for name, rate in rates.items() if name.startswith("img2vec"))
    rows = [["lookalike, efficientnet_lite0", f"{rates['lookalike']:.1f}", ""],
            ["naive loop, efficientnet_lite0 (PIL, torchvision transforms, batch of 1)", f"{rates['naive loop']:.1f}",
             f"{peers['vs_naive']:.1f}x slower"],
            ["lookalike, resnet18", f"{rates['lookalike resnet18']:.1f}", ""]]
    rows += [[name, f"{rate:.1f}", f"{rates['lookalike resnet18'] / rate:.1f}x slower" + (" (its fastest)" if rate == best_img2vec else "")]
             for name, rate in rates.items() if name.startswith("img2vec")]
    return {"columns": [f"on the same {peers['images']} large photos", "images/s", "than lookalike"], "rows": rows}


def _startup(start: dict) -> dict:
    rows = [[name, f"{r['median_s']:.2f}", "yes" if r["imports_torch"] else "no"]
            for name, r in start.items() if isinstance(r, dict)]
    return {"columns": [f"fresh process (store of {start['files']:,} files)", "median s", "imports torch"], "rows": rows}
