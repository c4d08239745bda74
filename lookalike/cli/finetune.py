"""The fine-tuning commands: finetune, advise."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .options import DEFAULTS, RUNTIMES, Interrupted, progressbar, shown


def _unfreeze(ctx, param, value):
    if value == "all":
        return value
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"a number of blocks or 'all', not {value!r}") from None
    if count < 0:
        raise click.BadParameter("a number of blocks (0 or more) or 'all'")
    return count


class _EpochBar:
    """A progress bar per epoch (images done, running loss), then one line with the epoch's figures."""

    def __init__(self):
        self.bar = None

    def started(self, stage, epoch: int, images: int) -> None:
        self.bar = progressbar(images, f"{stage.name} {epoch}/{stage.epochs}").__enter__()

    def step(self, images: int, loss: float) -> None:
        if sys.stderr.isatty():  # off a terminal, click would print each new label on a line of its own
            self.bar.label = self.bar.label.split("  loss")[0] + f"  loss {loss:.3f}"
        self.bar.update(images)

    def done(self, row: dict) -> None:
        self.close()
        val = (f" | val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.3f}" if row["val_loss"] is not None else "")
        best = "  (best so far)" if row["best"] and row["val_loss"] is not None else ""
        click.echo(f"{row['stage']} {row['epoch']}/{row['epochs']}: train loss {row['train_loss']:.3f} "
                   f"acc {row['train_accuracy']:.3f}{val}{best}  [{row['images_per_second']:.1f} images/s]", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .lkft file to write (also OUTPUT.report.json, OUTPUT.curves.png, OUTPUT.confusion.png).")
@click.option("--model", default="efficientnet_lite0", show_default=True, help="The network to start from (`lookalike models`).")
@click.option("--layer", default=None, help="Put the head on an earlier layer (`lookalike layers MODEL`) [default: the embedding].")
@click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A state dict file to start from instead of the pretrained weights.")
@click.option("--head-epochs", default=2, show_default=True, type=click.IntRange(min=0),
              help="Stage 1: epochs with the body frozen, training the new head alone.")
@click.option("--epochs", default=None, type=click.IntRange(min=0),
              help="Stage 2: epochs with the top blocks unfrozen  [default: by data size: 12, 8 or 5].")
@click.option("--unfreeze", default="3", show_default=True, callback=_unfreeze,
              help="Stage 2 trains the top N blocks (N or 'all'), the rest stays frozen.")
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Stage 2's rate for the head; the k-th block below it gets lr * layer-decay^k.")
@click.option("--head-lr", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Stage 1's rate  [default: 10 x --lr].")
@click.option("--layer-decay", default=0.6, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True),
              help="Each block deeper from the head trains at this factor of the rate above it.")
@click.option("--weight-decay", default=0.05, show_default=True, type=click.FloatRange(min=0), help="AdamW's.")
@click.option("--label-smoothing", default=0.1, show_default=True, type=click.FloatRange(min=0, max=1, max_open=True),
              help="Share of each target spread over the other classes (the loss's label smoothing).")
@click.option("--warmup", default=0.1, show_default=True, type=click.FloatRange(min=0, max=1, max_open=True),
              help="Share of each stage's steps with a rising rate, before the cosine decay.")
@click.option("--train-bn", is_flag=True, help="Update BatchNorm statistics in the trained blocks (frozen by default; "
                                                 "with little data, updated statistics hurt).")
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(min=0, max=1, max_open=True),
              help="Stratified share held out for validation and early stopping (0: none, keep the last epoch).")
@click.option("--patience", default=3, show_default=True, type=click.IntRange(min=1),
              help="Stop after this many epochs without a better validation loss.")
@click.option("--augment", type=click.Choice(["auto", "none", "light", "medium", "strong"]), default="auto", show_default=True,
              help="Random resized crop and colour jitter strength; auto: by data size; none: the images as they are.")
@click.option("--no-flip", "no_flip", is_flag=True, help="Don't mirror images left-right (text, digits...).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per optimiser step.")
@click.option("--image-size", default=None, type=click.IntRange(min=32),
              help="Train (and later embed) at this crop size, e.g. 96 for small images: several times faster "
                   "on a CPU  [default: the model's own].")
@click.option("--seed", default=0, show_default=True, type=int, help="The same seed gives the same weights on a CPU.")
@click.option("--device", default=DEFAULTS.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--workers", default=None, type=click.IntRange(min=0), help="Decoding processes [default: by device].")
@click.option("--max-pixels", default=DEFAULTS.max_pixels, show_default=True, type=click.IntRange(min=1),
              help="Larger images are skipped.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last epoch checkpoint.")
def finetune(source, output, device, workers, max_pixels, resume, no_flip, **settings):
    """Fine-tune a network on labelled images: SOURCE is a folder with one subfolder per
    class, or a CSV of path,label.

    Stage 1 trains a new head with the body frozen; stage 2 unfreezes the top
    blocks with discriminative rates (AdamW, warm-up, cosine decay, label
    smoothing) and stops early on the validation loss, keeping the best epoch.
    The result, OUTPUT.lkft, works wherever a model does: `lookalike predict
    OUTPUT.lkft IMAGES`, and --model OUTPUT.lkft for index, embed, train, advise.
    """
    from ..finetune import FinetuneConfig
    from ..finetune import finetune as run
    from ..finetune.trainer import Progress

    config = FinetuneConfig(flip=not no_flip, **settings)
    bar = _EpochBar()
    progress = Progress(bar.started, bar.step, bar.done)
    try:
        result = run(source, output, config, device=device, workers=workers, resume=resume, max_pixels=max_pixels,
                     progress=progress)
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted("interrupted: `lookalike finetune ... --resume` continues from the last finished epoch") from None
    finally:
        bar.close()
    _show(result)


def _show(result) -> None:
    from ..classify.report import format_report

    for path, reason in result.skipped:
        click.echo(f"skipped {shown(path)}: {reason}", err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    report = result.report
    if result.resumed_epochs:
        click.echo(f"resumed after {result.resumed_epochs} finished epochs")
    recipe = report["recipe"]
    click.echo(f"recipe: {recipe['head_epochs']} head epochs, then {recipe['epochs']} with the top "
               f"{len(report['trained_blocks'])} of {len(report['blocks'])} blocks trained; "
               f"{recipe['augmentation']['strength']} augmentation ({recipe['reason']})")
    best = report["best_epoch"]
    if best and best.get("val_loss") is not None:
        click.echo(f"kept {best['stage']} epoch {best['epoch']} (lowest validation loss, {best['val_loss']:.3f})")
    if report.get("validation"):
        click.echo(format_report(report["validation"]))
    click.echo(f"model -> {result.model_path} (report: {result.model_path}.report.json, "
               f"curves: {result.model_path}.curves.png)")


def _names(ctx, param, value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--models", default="", callback=_names,
              help="Candidate models, comma-separated (registry names or .lkft files)  [default: every model "
                   "whose weights are on this machine, see `lookalike models`].")
@click.option("--model", "more_models", multiple=True, help="A candidate model; repeat for more (same as --models).")
@click.option("--layers", default="auto", show_default=True,
              help="auto: the embedding and up to 3 earlier layers spread over depth; or names, comma-separated "
                   "(`embedding` for the default).")
@click.option("--classifiers", default="svm,logreg,knn", show_default=True, callback=_names,
              help="Cross-validated on every (model, layer): svm, logreg, knn.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=2), help="Stratified folds, shared by every recipe.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--finetune", "with_finetune", is_flag=True,
              help="Also fine-tune the best frozen candidate on each fold (slow on a CPU).")
@click.option("--finetune-epochs", default=4, show_default=True, type=click.IntRange(min=0),
              help="Stage-2 epochs of each fold's fine-tune.")
@click.option("--unfreeze", default="3", show_default=True, callback=_unfreeze, help="Blocks each fold's fine-tune trains.")
@click.option("--layer-decay", default=0.6, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True),
              help="Each fold's fine-tune: the rate's factor per block of depth.")
@click.option("--augment", type=click.Choice(["auto", "none", "light", "medium", "strong"]), default="auto", show_default=True,
              help="Each fold's fine-tune: augmentation strength.")
@click.option("--image-size", default=None, type=click.IntRange(min=32),
              help="Each fold's fine-tune: crop size  [default: the model's own].")
@click.option("--no-flip", "no_flip", is_flag=True, help="Fine-tune without left-right mirroring (text, digits...).")
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where each (model, layer) keeps its store  [default: SOURCE/.lookalike-advise].")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for advice.json and advice.png  [default: the store folder].")
@click.option("--json", "as_json", is_flag=True, help="Print the advice as JSON instead of a table.")
@click.option("--batch-size", default=DEFAULTS.batch_size, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=None, type=click.IntRange(min=0), help="Decoding processes [default: by device].")
@click.option("--device", default=DEFAULTS.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=DEFAULTS.runtime, show_default=True,
              help="What embeds the images: auto is ONNX Runtime on the CPU (each network exported once and "
                   "cached), torch on a GPU; each fold's fine-tune is scored on torch.")
def advise(source, models, more_models, layers, classifiers, folds, seed, with_finetune, finetune_epochs, unfreeze,
           layer_decay, augment, image_size, no_flip, store_dir, output, as_json, batch_size, workers, device, runtime):
    """Measure which backbone, layer and recipe suit SOURCE's labels (one subfolder per
    class, or a CSV of path,label), and print the command that trains the recommended one.

    Every (model, layer) is embedded once into a store of its own (a rerun embeds
    nothing), then linear SVM, logistic regression and kNN are cross-validated on
    the same stratified folds; --finetune adds a short fine-tune per fold of the
    best frozen candidate. The best is recommended only if it beats every other
    row by more than the folds' noise (a 95% interval of the paired fold
    differences); otherwise it is tied, and the simplest tied recipe is
    recommended. The ranking is also written as JSON and a PNG chart.
    """
    from ..featurize.options import EmbedOptions
    from ..finetune import FinetuneConfig
    from ..finetune.advise import advise as run
    from ..finetune.advise import write_advice
    from ..finetune.trainer import Progress

    bars = []

    def on_embedding(label, total):
        bars.append(progressbar(total, f"Embedding ({label})").__enter__())
        return bars[-1].update

    epoch_bar = _EpochBar()
    config = FinetuneConfig(epochs=finetune_epochs, unfreeze=unfreeze, layer_decay=layer_decay, augment=augment,
                            image_size=image_size, flip=not no_flip, batch_size=batch_size, seed=seed)
    try:
        advice = run(source, models=list(models) + list(more_models), layers="auto" if layers == "auto" else _names(None, None, layers),
                     classifiers=classifiers, folds=folds, seed=seed, finetune=with_finetune, finetune_config=config,
                     store_dir=store_dir, on_embedding=on_embedding,
                     options=EmbedOptions(device=device, batch_size=batch_size, workers=workers, runtime=runtime),
                     finetune_progress=Progress(epoch_bar.started, epoch_bar.step, epoch_bar.done))
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)
        epoch_bar.close()
    json_path, png_path = write_advice(advice, output or Path(next(iter(advice.embedding.values()))["store"]).parent)
    if as_json:
        click.echo(json.dumps(advice.to_dict(), indent=2))
        return
    _show_advice(advice, json_path, png_path)


def _show_advice(advice, json_path: Path, png_path: Path) -> None:
    for path, reason in advice.skipped:
        click.echo(f"skipped {shown(path)}: {reason}", err=True)
    rows = [(f"{i}*" if i - 1 == advice.recommended else str(i), r.model if not r.model.endswith(".lkft") else shown(r.model),
             r.layer, r.recipe, f"{r.accuracy:.3f} ± {r.accuracy_std:.3f}", f"{r.macro_f1:.3f}", f"{r.seconds:.1f}s",
             _versus_best(r, i == 1, advice.verdict)) for i, r in enumerate(advice.rows, 1)]
    header = ("rank", "model", "layer", "recipe", "accuracy", "macro-F1", "time", "vs best")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    taps = advice.embedding
    click.echo(f"\n{advice.folds}-fold cross-validation; accuracy is the mean ± std over folds; time is fitting and "
               f"scoring; vs best: 95% interval of the best's accuracy minus the row's, fold by fold (tied: it "
               f"includes 0). {len(taps)} (model, layer) taps, {advice.embedded} images embedded now "
               f"({sum(t['seconds'] for t in taps.values()):.0f}s), the rest from their stores.")
    click.echo(f"reading: {advice.reading}")
    click.echo(f"recommended (rank {advice.recommended + 1}*):\n  {advice.command}")
    click.echo(f"advice -> {json_path}, {png_path}")


def _versus_best(row, best: bool, verdict: str) -> str:
    if best:
        return "winner" if verdict == "winner" else "best, tied"
    if row.versus_best is None:
        return "tied (other folds)"
    low, high = row.versus_best
    return f"{'tied' if row.tied else 'behind'} [{low:+.3f}, {high:+.3f}]"


COMMANDS = (finetune, advise)
