"""``finetune``: labelled images in, a ``.lkft`` file out, with its report and curves beside it.

    OUT.lkft               the network and the head (safetensors; see featurize/models/finetuned.py)
    OUT.lkft.report.json   the configuration, the recipe chosen, every epoch, the validation report
    OUT.lkft.curves.png    loss and accuracy per epoch, train and validation
    OUT.lkft.confusion.png the validation confusion matrix of the kept epoch
    OUT.lkft.checkpoint    while running: what --resume continues from (removed at the end)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..errors import CheckpointError, DatasetError, LookalikeError
from ..featurize.images.decode import DEFAULT_MAX_PIXELS
from ..featurize.models.registry import ModelSpec
from ..featurize.models.resolve import resolve_model
from .checkpoint import TrainingState, checkpoint_path, load_checkpoint
from .dataset import LabelledImages, check_images, stratified_split
from .recipe import FinetuneConfig, Recipe, choose_recipe, input_preprocessing
from .trainer import Progress, Stage, Training, evaluate, fit

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """What a run made: the model file, its report, the images it skipped and why, and warnings."""

    model_path: Path
    report: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resumed_epochs: int = 0  # epochs a --resume found done


def finetune(source: str | os.PathLike, output: str | os.PathLike, config: FinetuneConfig | None = None,
             **options) -> FinetuneResult:
    """Fine-tune a network on labelled images: one subfolder per class, or a CSV of path,label.

    Args:
        source: the labelled images.
        output: the ``.lkft`` file to write.
        config: what to train and how (``FinetuneConfig``); defaults throughout if None.
        options: for ``finetune_images``: device, workers, resume, max_pixels, progress.

    Returns:
        A ``FinetuneResult``.

    Raises:
        DatasetError: fewer than two classes, a class with fewer than two readable images.
        CheckpointError: a checkpoint is in the way (without ``resume``), or can't be resumed.
        UnknownModelError, UnknownLayerError, WeightsNotFoundError, LookalikeError (bad settings).
    """
    from ..classify.labels import read_labelled
    from ..featurize.images.decode import IMAGE_EXTENSIONS

    (config or FinetuneConfig()).check()
    images = read_labelled(source, IMAGE_EXTENSIONS)
    return finetune_images(images.paths, images.labels, output, config, where=str(source), **options)


def finetune_images(paths: Sequence[str], labels: Sequence[str], output: str | os.PathLike,
                    config: FinetuneConfig | None = None, *, device: str | None = None, workers: int | None = None,
                    resume: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, progress: Progress | None = None,
                    where: str = "the labelled images") -> FinetuneResult:
    """``finetune`` on lists: ``labels[i]`` is the class of ``paths[i]``. See ``finetune``."""
    from ..featurize.images.reader import default_num_workers
    from ..featurize.runtimes.devices import resolve_device

    config = config or FinetuneConfig()
    config.check()
    output = Path(output)
    base = _base_model(config.model)
    torch_device = resolve_device(device)
    workers = default_num_workers(torch_device) if workers is None else workers
    checkpoint = checkpoint_path(output)
    if checkpoint.exists() and not resume:
        raise CheckpointError(f"{checkpoint} holds an interrupted run: add --resume to continue it, "
                              f"or delete it to start over")
    _check_writable(output)
    preprocessing = input_preprocessing(base.preprocessing, config.image_size)
    good, skipped = check_images(list(paths), preprocessing, max_pixels, workers)
    paths, labels = [paths[i] for i in good], [labels[i] for i in good]
    warnings = _check_classes(labels, where)
    classes = sorted(set(labels))
    targets = [classes.index(label) for label in labels]
    train_idx, val_idx = stratified_split(targets, config.val_fraction, config.seed)
    recipe = choose_recipe(config, len(train_idx))
    fingerprint = {"config": config.to_dict(), "images": [[os.path.abspath(p), l] for p, l in zip(paths, labels)]}
    state = TrainingState()
    if resume and checkpoint.exists():
        weights, state = load_checkpoint(checkpoint, fingerprint)
    elif resume:
        warnings.append(f"no checkpoint at {checkpoint}: starting from the beginning")
    training, stages, body = _prepare(base, preprocessing, config, recipe, paths, targets, train_idx, val_idx,
                                      torch_device, workers)
    training.checkpoint, training.fingerprint, training.progress = checkpoint, fingerprint, progress or Progress()
    resumed = len(state.history)
    if resumed:
        training.net.load_state_dict(weights)
    started = time.perf_counter()
    state = fit(training, stages, state)
    report = _finish(training, state, output, base, body, recipe, classes, skipped, time.perf_counter() - started)
    checkpoint.unlink(missing_ok=True)
    return FinetuneResult(output, report, skipped, warnings, resumed)


def _base_model(name: str) -> ModelSpec:
    base = resolve_model(name)
    if base.source == "timm":
        raise LookalikeError(f"{name}: timm models can't be fine-tuned yet; pick a model from `lookalike models`")
    if base.builder is None or base.source == "finetuned":
        raise LookalikeError(f"{name} can't be fine-tuned: start from a model in `lookalike models`")
    return base


def _check_writable(output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LookalikeError(f"cannot write the model to {output}: {e.strerror or e}") from None
    if not os.access(output.parent, os.W_OK):
        raise LookalikeError(f"cannot write the model to {output}: the folder is not writable")


def _check_classes(labels: list[str], where: str) -> list[str]:
    """Raise where no fine-tune can work; warn where it will work poorly."""
    counts = Counter(labels)
    if len(counts) < 2:
        only = f"only {next(iter(counts))!r}" if counts else "no readable images"
        raise DatasetError(f"fine-tuning needs at least two classes with readable images; found {only} in {where}")
    small = sorted(label for label, n in counts.items() if n < 2)
    if small:
        raise DatasetError(
            f"class {small[0]!r} has {counts[small[0]]} readable image{'s' if counts[small[0]] != 1 else ''} "
            f"({len(small)} such class{'es' if len(small) > 1 else ''}): fine-tuning needs at least 2 per class, "
            f"one to train on and one to validate; add images or remove the class"
        )
    fewest = min(counts.values())
    return [f"the smallest class has {fewest} images: validation will be noisy"] if fewest < 5 else []


def _prepare(base: ModelSpec, preprocessing, config: FinetuneConfig, recipe: Recipe, paths, targets, train_idx,
             val_idx, device, workers):
    """The network (body as featurize builds it, new head), its blocks, the stages and the data."""
    from ..featurize.models.backbone import build_backbone
    from .blocks import body_blocks
    from .groups import unfrozen_count
    from .head import EmbeddingHead, FinetuneNet

    backbone = build_backbone(base, layer=config.layer, weights=config.weights)
    head = EmbeddingHead(backbone.dim, len(set(targets)))
    net = FinetuneNet(backbone.module, head, preprocessing)
    net.to(device, memory_format=torch.channels_last)
    blocks = body_blocks(base.builder, backbone.module, preprocessing.crop_size)
    unfreeze = unfrozen_count(config.unfreeze, blocks)
    stages = [s for s in (Stage("head", recipe.head_epochs, 0, recipe.head_lr),
                          Stage("finetune", recipe.epochs, unfreeze, config.lr)) if s.epochs > 0]
    pick = lambda idx: ([paths[i] for i in idx], [targets[i] for i in idx])  # noqa: E731
    train = LabelledImages(*pick(train_idx), preprocessing, augment=recipe.augmentation, seed=config.seed)
    val = LabelledImages(*pick(val_idx), preprocessing) if val_idx else None
    training = Training(net, blocks, config, train, val, device, workers, None, {}, Progress())
    return training, stages, backbone


def _finish(training: Training, state: TrainingState, output: Path, base: ModelSpec, backbone, recipe: Recipe,
            classes: list[str], skipped, seconds: float) -> dict:
    """Keep the best epoch's weights, score it on the validation images, write the model and its report."""
    from ..classify.report import confusion_png, score
    from .charts import curves_png
    from .lkft import full_state, write_lkft

    net, config = training.net, training.config
    if state.best_weights is not None:
        net.load_state_dict(state.best_weights)
    _, _, predicted = evaluate(net, training.val_set, config, training.device, training.workers)
    validation = None
    if training.val_set is not None:
        validation = score([classes[t] for t in training.val_set.targets], [classes[p] for p in predicted], classes)
        validation["kind"] = "validation"
    report = {"recipe": recipe.to_dict(), "blocks": [b.name for b in training.blocks],
              "trained_blocks": [b.name for b in training.blocks[len(training.blocks) - _unfrozen(training):]],
              "train_images": len(training.train_set), "validation_images": len(training.val_set or []),
              "history": state.history, "best_epoch": state.best, "validation": validation,
              "skipped": [{"path": p, "reason": r} for p, r in skipped], "seconds": round(seconds, 1)}
    document = {
        "spec": {"base_model": base.name, "base_weights_sha256": backbone.weights_sha256,
                 "preprocessing": training.net.preprocessing.to_dict(), "layer": backbone.layer, "dim": backbone.dim},
        "classes": classes, "config": config.to_dict(), "report": report,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    document = write_lkft(output, full_state(net, base, config.weights), net, document)
    report = {**document["report"], "spec": document["spec"], "classes": classes, "config": document["config"]}
    (output.parent / (output.name + ".report.json")).write_text(json.dumps(report, indent=2) + "\n")
    curves_png(state.history, output.parent / (output.name + ".curves.png"), title=f"{base.name} fine-tuned: {output.name}")
    if validation is not None:
        confusion_png(validation, output.parent / (output.name + ".confusion.png"))
    return report


def _unfrozen(training: Training) -> int:
    from .groups import unfrozen_count

    return unfrozen_count(training.config.unfreeze, training.blocks) if training.config.epochs != 0 else 0
