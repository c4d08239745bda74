"""The training loop: stages of epochs with AdamW, warm-up then cosine decay, label smoothing,
early stopping on the validation loss, and a checkpoint after every epoch.

On CUDA it runs in fp16 autocast with a gradient scaler and channels_last; on the CPU in
fp32 (channels_last too, as the extractor runs). Nothing here draws from global random
state: the data's draws are seeded by (seed, stage, epoch, image) (see ``dataset``), the
network's stochastic depth and dropout by (seed, stage, epoch) (see ``draws``), so a run
resumed from a checkpoint continues exactly as the interrupted one would have.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .blocks import Block
from .checkpoint import TrainingState, save_checkpoint
from .dataset import LabelledImages, epoch_order, loader
from .groups import parameter_groups
from .head import FinetuneNet
from .recipe import FinetuneConfig

logger = logging.getLogger(__name__)

PROBE_STEPS, PROBE_LR = 200, 1e-2  # full-batch AdamW on a convex problem: converged on 300 digits' embeddings


@dataclass(frozen=True)
class Stage:
    """A stage: ``epochs`` with the top ``unfreeze`` blocks trained and the head at ``lr``."""

    name: str
    epochs: int
    unfreeze: int
    lr: float


@dataclass
class Progress:
    """What the loop reports as it goes (the CLI draws a bar from these); each may be None."""

    epoch_started: Callable[[Stage, int, int], None] | None = None  # (stage, epoch from 1, images)
    step_done: Callable[[int, float], None] | None = None  # (images, running train loss)
    epoch_done: Callable[[dict], None] | None = None  # the history row


@dataclass
class Training:
    """One run's fixed parts: the network, its blocks, the data, where it runs and checkpoints."""

    net: FinetuneNet
    blocks: list[Block]
    config: FinetuneConfig
    train_set: LabelledImages
    val_set: LabelledImages | None
    device: torch.device
    workers: int
    checkpoint: object  # a Path, or None not to checkpoint
    fingerprint: dict
    progress: Progress


def lr_factor(step: int, total: int, warmup: float) -> float:
    """The schedule: linear warm-up over ``warmup`` of the steps, then cosine decay to 0."""
    warm = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def fit(training: Training, stages: list[Stage], state: TrainingState) -> TrainingState:
    """Run the stages from where ``state`` stands; returns the final state (best weights inside)."""
    net, config = training.net, training.config
    if not state.history:  # a fresh head (a resumed one comes from the checkpoint)
        probe_head(training)
    amp = training.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if state.scaler and amp:
        scaler.load_state_dict(state.scaler)
    for index, stage in enumerate(stages):
        if index < state.stage:
            continue
        top = training.blocks[len(training.blocks) - stage.unfreeze:] if stage.unfreeze else []
        groups, _ = parameter_groups(net.body, net.head, training.blocks, unfreeze=stage.unfreeze, lr=stage.lr,
                                     layer_decay=config.layer_decay, weight_decay=config.weight_decay)
        net.set_bn_trainable(top, config.train_bn)
        optimizer = torch.optim.AdamW(groups, lr=stage.lr)
        start = state.epoch if index == state.stage else 0
        if start and state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
        for epoch in range(start, stage.epochs):
            if _should_stop(state.history, stage.name, config.patience):
                logger.info("early stop in %s after %d epochs: no better validation loss", stage.name, epoch)
                break
            row = _epoch(training, stage, index, epoch, optimizer, scaler)
            _record(state, row, net)
            state.stage, state.epoch = index, epoch + 1
            state.optimizer, state.scaler = optimizer.state_dict(), scaler.state_dict() if amp else None
            if training.checkpoint is not None:
                save_checkpoint(training.checkpoint, net.state_dict(), state, training.fingerprint)
            if training.progress.epoch_done:
                training.progress.epoch_done(row)
        state.stage, state.epoch, state.optimizer = index + 1, 0, None
    return state


@torch.no_grad()
def _embeddings(training: Training) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen body's embeddings of the training images as the model evaluates them (no augmentation)."""
    data = training.train_set
    plain = LabelledImages(data.paths, data.targets, data.preprocessing, max_pixels=data.max_pixels)
    training.net.eval()
    vectors, targets = [], []
    for pixels, batch_targets in loader(plain, range(len(plain)), training.config.batch_size, training.workers):
        x = training.net.preprocessing.normalize(pixels.to(training.device)).contiguous(memory_format=torch.channels_last)
        vectors.append(training.net.body(x).float())
        targets.append(batch_targets.to(training.device))
    return torch.cat(vectors), torch.cat(targets)


def probe_head(training: Training) -> None:
    """Start the head at a linear probe: fitted, full batch, on the frozen body's embeddings.

    Fine-tuning from a fitted head moves the pretrained features less than from a random
    one (Kumar et al. 2022, "LP-FT"), and costs one forward pass over the training images.
    """
    config, head = training.config, training.net.head
    vectors, targets = _embeddings(training)
    optimizer = torch.optim.AdamW(head.parameters(), lr=PROBE_LR, weight_decay=config.weight_decay)
    head.train()
    for _ in range(PROBE_STEPS):
        loss = F.cross_entropy(head(vectors), targets, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    accuracy = float((head(vectors).argmax(1) == targets).float().mean())
    logger.info("linear probe: train loss %.3f, accuracy %.3f", float(loss.detach()), accuracy)


def _epoch(training: Training, stage: Stage, index: int, epoch: int, optimizer, scaler) -> dict:
    net, config, device = training.net, training.config, training.device
    data = training.train_set
    data.epoch = (index, epoch)
    net.seed_epoch(config.seed, index, epoch)
    order = epoch_order(len(data), config.seed, index, epoch)
    steps = math.ceil(len(data) / config.batch_size)
    if training.progress.epoch_started:
        training.progress.epoch_started(stage, epoch + 1, len(data))
    net.train()
    started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    for step, (pixels, targets) in enumerate(loader(data, order, config.batch_size, training.workers)):
        factor = lr_factor(epoch * steps + step, stage.epochs * steps, config.warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        logits, targets = _forward(net, pixels, targets, device)
        loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        seen += len(targets)
        loss_sum += float(loss.detach()) * len(targets)
        correct += int((logits.argmax(1) == targets).sum())
        if training.progress.step_done:
            training.progress.step_done(len(targets), loss_sum / seen)
    seconds = time.perf_counter() - started
    val_loss, val_accuracy, _ = evaluate(net, training.val_set, config, device, training.workers)
    return {"stage": stage.name, "epoch": epoch + 1, "epochs": stage.epochs, "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen, "val_loss": val_loss, "val_accuracy": val_accuracy,
            "lr": stage.lr, "seconds": round(seconds, 3), "images_per_second": round(seen / seconds, 2)}


def _forward(net: FinetuneNet, pixels: torch.Tensor, targets: torch.Tensor, device: torch.device):
    x = net.preprocessing.normalize(pixels.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()
    with autocast:
        logits = net(x)
    return logits.float(), targets.to(device)


@torch.inference_mode()
def evaluate(net: FinetuneNet, data: LabelledImages | None, config: FinetuneConfig, device: torch.device,
             workers: int) -> tuple[float | None, float | None, list[int]]:
    """(loss, accuracy, predicted class per image) on ``data`` as the model evaluates (no augmentation)."""
    if data is None or len(data) == 0:
        return None, None, []
    net.eval()
    loss_sum, predicted = 0.0, []
    for pixels, targets in loader(data, range(len(data)), config.batch_size, workers):
        logits, targets = _forward(net, pixels, targets, device)
        loss_sum += float(F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing, reduction="sum"))
        predicted += logits.argmax(1).tolist()
    correct = sum(p == t for p, t in zip(predicted, data.targets))
    return loss_sum / len(data), correct / len(data), predicted


def _record(state: TrainingState, row: dict, net: FinetuneNet) -> None:
    """Append the row; keep the weights if this is the best validation loss (or the latest, without validation)."""
    best = state.best
    improved = row["val_loss"] is None or best is None or row["val_loss"] < best["val_loss"]
    row["best"] = improved
    state.history.append(row)
    if improved:
        state.best = dict(row)
        state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def _should_stop(history: list[dict], stage: str, patience: int) -> bool:
    """``patience`` epochs of this stage in a row without a better validation loss."""
    rows = [r for r in history if r["stage"] == stage]
    if not rows or rows[-1]["val_loss"] is None:
        return False
    since = 0
    for row in reversed(rows):
        if row["best"]:
            break
        since += 1
    return since >= patience
