"""The recipe table on a set unlike ImageNet: what `advise` ranks, against what `train` and `finetune`
reach on their own on held-out images.

    python benchmarks/bench_recipes.py --per-class 30 --test-per-class 20 --json

The set is scikit-learn's handwritten digits (benchmarks/make_digits.py): 8x8 grayscale
scans, as 32x32 PNGs, nothing like ImageNet's photos. Steps, all on the CPU:
1. ``advise`` on the training set: Lite0's embedding and three earlier layers, linear SVM,
   logistic regression and kNN, and with --finetune a fine-tune per fold, on shared folds.
2. Each frozen recipe on its own: ``train`` on all the training images (its store is
   advise's, so nothing is embedded again), scored on a disjoint held-out set.
3. ``finetune`` on all the training images with the settings advise measured, then
   ``evaluate`` on the held-out set.
The table puts advise's cross-validated accuracy next to the held-out accuracy of each
recipe, and the JSON keeps both rankings. Accuracies, not timings: nothing here is a ratio
against a baseline on a noisy machine, and the same seed gives the same accuracies, so each
recipe is measured once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import results
from make_digits import make_digits

from lookalike.featurize.options import EmbedOptions

OPTIONS = EmbedOptions(device="cpu", workers=1)


def held_out_frozen(row, train_dir: Path, test_dir: Path, work: Path) -> float:
    """`train` the recipe on every training image, then score it on the held-out images' vectors."""
    from lookalike.classify.persist import load_model
    from lookalike.training import labelled_vectors, train

    layer = None if row.layer == "flatten" else row.layer
    model = work / f"{row.layer}-{row.recipe}.skops"
    train(train_dir, model, classifier=row.recipe, store=row.store, layer=layer, options=OPTIONS)
    X, y, _, _ = labelled_vectors(test_dir, store=work / f"test-{row.layer}", layer=layer, options=OPTIONS)
    return float((load_model(model).estimator.predict(X) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (stage 2)")
    parser.add_argument("--unfreeze", default="all")
    parser.add_argument("--layer-decay", type=float, default=0.8)
    parser.add_argument("--augment", default="none", help="digits: crops cut strokes, flips make other digits")
    parser.add_argument("--image-size", type=int, default=64, help="fine-tuning crop size (the digits are 32 px)")
    parser.add_argument("--name", default="recipes_digits", help="the results file's name")
    parser.add_argument("--finetune", action="store_true", help="also run advise's fine-tune per fold (slow)")
    parser.add_argument("--layers", default="auto", help="advise's layers: auto, or names (embedding for the default)")
    parser.add_argument("--classifiers", default="svm,logreg,knn")
    parser.add_argument("--json", action="store_true", help="write DIR/NAME.json")
    results.add_arguments(parser)
    args = parser.parse_args()
    if args.json:
        results.check_tree(args.dirty)

    from scipy.stats import spearmanr

    from lookalike.finetune import FinetuneConfig, finetune
    from lookalike.finetune.advise import advise, config_for
    from lookalike.training import evaluate

    work = Path(tempfile.mkdtemp(prefix="lookalike-recipes-"))
    train_dir, test_dir = work / "train", work / "test"
    make_digits(train_dir, args.per_class)
    make_digits(test_dir, args.test_per_class, skip=args.per_class)  # other scans of the same digits
    unfreeze = args.unfreeze if args.unfreeze == "all" else int(args.unfreeze)
    config = FinetuneConfig(epochs=args.epochs, unfreeze=unfreeze, augment=args.augment, flip=False,
                            layer_decay=args.layer_decay, image_size=args.image_size)
    started = time.perf_counter()
    layers = "auto" if args.layers == "auto" else args.layers.split(",")
    advice = advise(train_dir, layers=layers, classifiers=args.classifiers.split(","), folds=args.folds,
                    finetune=args.finetune, finetune_config=config, options=OPTIONS)
    advise_seconds = time.perf_counter() - started
    print(f"advise: {advise_seconds:.0f}s; recommended: {advice.command}", flush=True)

    measured = []
    for row in advice.rows:
        if row.recipe == "finetune":
            continue
        measured.append((row, held_out_frozen(row, train_dir, test_dir, work), None))
        print(f"{row.layer:>11} {row.recipe:<7} advise {row.accuracy:.3f}  held-out {measured[-1][1]:.3f}", flush=True)
    # Fine-tuned as advise fine-tunes: on the best frozen candidate's layer.
    best_frozen = next(r for r in advice.rows if r.recipe != "finetune")
    config = config_for(config, best_frozen)
    # The frozen body at the fine-tune's crop size: the linear probe and head epochs alone (--epochs 0).
    probe = FinetuneConfig.from_dict({**config.to_dict(), "epochs": 0})
    finetune(train_dir, work / "probe.lkft", probe, device="cpu", workers=1)
    probe_accuracy = evaluate(work / "probe.lkft", test_dir, options=OPTIONS)[0]["accuracy"]
    print(f"frozen body, head only at {args.image_size} px: held-out {probe_accuracy:.3f}", flush=True)
    started = time.perf_counter()
    tuned = finetune(train_dir, work / "digits.lkft", config, device="cpu", workers=1)
    finetune_seconds = time.perf_counter() - started
    report, _ = evaluate(work / "digits.lkft", test_dir, options=OPTIONS)
    tuned_row = next((r for r in advice.rows if r.recipe == "finetune"), None)
    measured.append((tuned_row, report["accuracy"], finetune_seconds))
    print(f"finetune: held-out {report['accuracy']:.3f} in {finetune_seconds:.0f}s "
          f"(kept {tuned.report['best_epoch']['stage']} epoch {tuned.report['best_epoch']['epoch']})", flush=True)

    frozen = [(row.accuracy, held_out) for row, held_out, _ in measured if row is not None and row.recipe != "finetune"]
    # How well advise's cross-validated ranking predicts the held-out one (1: the same order).
    spearman = float(spearmanr(*zip(*frozen)).statistic) if len(frozen) > 2 else None
    figures = {"advise_seconds": advise_seconds, "finetune_seconds": finetune_seconds, "recipes": [],
               "frozen_rank_correlation": spearman,
               "frozen_head_only_held_out": probe_accuracy,
               "finetune_kept_epoch": tuned.report["best_epoch"], "finetune_history": tuned.report["history"]}
    ranked = sorted(measured, key=lambda m: -m[1])
    for row, held_out, seconds in measured:
        name = (f"finetune ({args.unfreeze} blocks, {args.image_size} px)" if row is None or row.recipe == "finetune"
                else row.recipe)
        layer = row.layer if row is not None else (config.layer or "flatten")
        figures["recipes"].append({"layer": layer, "recipe": name, "advise_accuracy": row.accuracy if row else None,
                                   "advise_std": row.accuracy_std if row else None, "held_out_accuracy": held_out,
                                   "advise_rank": advice.rows.index(row) + 1 if row is not None else None,
                                   "held_out_rank": ranked.index((row, held_out, seconds)) + 1})
    settings = {"set": "scikit-learn digits, 32x32 PNG", "per_class": args.per_class, "test_per_class": args.test_per_class,
                "folds": args.folds, "finetune": config.to_dict(), "advise_finetune": args.finetune,
                "layers": args.layers, "classifiers": args.classifiers,
                "model": "efficientnet_lite0"}
    print(results.markdown(tables(figures, settings)["digits"]))
    if spearman is not None:
        print(f"rank correlation (Spearman) of advise's and the held-out accuracies, frozen recipes: {spearman:.2f}")
    if args.json:
        print(f"-> {results.save(args.name, settings, figures, 'bench_recipes', args.results, args.dirty)}")


def tables(figures: dict, settings: dict) -> dict:
    """docs/finetune.md's table: each recipe's cross-validated accuracy and rank in advise, and held out."""
    rows = []
    for r in figures["recipes"]:
        cv = f"{r['advise_accuracy']:.3f} ± {r['advise_std']:.3f}" if r["advise_accuracy"] is not None else "(not run)"
        rows.append([f"{r['layer']} · {r['recipe']}", cv, str(r["advise_rank"] or ""), f"{r['held_out_accuracy']:.3f}",
                     str(r["held_out_rank"])])
    tuned = settings["finetune"]
    rows.append([f"{tuned['layer'] or 'flatten'} · frozen body, head only ({tuned['image_size']} px)", "", "",
                 f"{figures['frozen_head_only_held_out']:.3f}", ""])
    columns = ["layer · recipe", f"advise ({settings['folds']}-fold CV)", "advise rank", "held-out accuracy", "held-out rank"]
    return {"digits": {"columns": columns, "rows": rows}}


if __name__ == "__main__":
    main()
