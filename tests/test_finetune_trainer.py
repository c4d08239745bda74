"""The training loop as it runs: the rate each parameter group gets at every step (read off the
optimizer, checked against numbers written from the documented formula), early stopping on a
validation loss that stops improving, and the best epoch's weights in the .lkft."""

import pytest
import torch
from finetune_data import textures
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import lookalike.finetune.run as run
import lookalike.finetune.trainer as trainer
from lookalike.finetune import FinetuneConfig, finetune
from lookalike.finetune.blocks import original_name
from lookalike.finetune.checkpoint import checkpoint_path
from lookalike.finetune.trainer import Progress

# 6 images, batches of 2: 3 steps an epoch. Stage 1 (head) 1 epoch, 3 steps; stage 2 3 epochs, 9 steps.
# --warmup 0.4: W = round(0.4 x steps) warm-up steps, step s (from 0) at (s + 1) / W of the peak, then
# 1/2 (1 + cos(pi (s - W) / (steps - W))). Stage 1: W = round(1.2) = 1; stage 2: W = round(3.6) = 4.
SCHEDULE = {"head_epochs": 1, "epochs": 3, "unfreeze": 2, "batch_size": 2, "val_fraction": 0.0, "image_size": 32,
            "lr": 1e-3, "head_lr": 1e-2, "layer_decay": 0.5, "warmup": 0.4, "augment": "none"}
STAGE_1 = [1.0, 1.0, 0.5]  # W = 1: the peak at once; then cos(0), cos(pi/2)
STAGE_2 = [0.25, 0.5, 0.75, 1.0,  # warm-up: 1/4, 2/4, 3/4, 4/4
           1.0, 0.9045084971874737, 0.6545084971874737, 0.34549150281252633, 0.09549150281252633]  # cos(k pi/5)
# The head at --lr, each block below it at lr * 0.5^k: the head convolution (k=1), then Lite0's last MBConv (k=2).
STAGE_2_RATES = {"head": 1e-3, "_conv_head": 5e-4, "_blocks.15": 2.5e-4}


def _watch(monkeypatch):
    """Every optimizer step of a finetune run: [(optimizer, {(block, weight decay): lr})], in order."""
    seen, parts = [], {}

    def fit(training, stages, state):
        parts["net"], parts["blocks"] = training.net, training.blocks
        return real_fit(training, stages, state)

    def block_of(parameter) -> str:
        if not parts.get("names"):
            body = parts["net"].body
            names = {id(p): original_name(n, body) for n, p in body.named_parameters()}
            owner = {p: b.name for b in parts["blocks"] for p in b.parameters}
            parts["names"] = {i: owner[n] for i, n in names.items() if n in owner}
            parts["names"].update({id(p): "head" for p in parts["net"].head.parameters()})
        return parts["names"][id(parameter)]

    def before_step(optimizer, args, kwargs):
        seen.append((optimizer, {(block_of(g["params"][0]), g["weight_decay"]): g["lr"] for g in optimizer.param_groups}))

    real_fit = run.fit
    monkeypatch.setattr(run, "fit", fit)
    handle = register_optimizer_step_pre_hook(before_step)
    return seen, handle


def test_each_group_trains_at_its_block_rate_on_the_documented_schedule(tmp_path, monkeypatch):
    root = textures(tmp_path / "set", per_class=2)
    seen, handle = _watch(monkeypatch)
    try:
        finetune(root, tmp_path / "m.lkft", FinetuneConfig(**SCHEDULE), device="cpu", workers=0)
    finally:
        handle.remove()
    optimizers = list(dict.fromkeys(id(o) for o, _ in seen))
    assert len(optimizers) == 3  # the linear probe, stage 1, stage 2
    probe, stage_1, stage_2 = ([rates for o, rates in seen if id(o) == i] for i in optimizers)
    assert all({block for block, _ in rates} == {"head"} for rates in probe)

    assert len(stage_1) == len(STAGE_1)
    for step, (rates, factor) in enumerate(zip(stage_1, STAGE_1)):
        assert rates == {("head", 0.05): pytest.approx(1e-2 * factor, rel=1e-12),
                         ("head", 0.0): pytest.approx(1e-2 * factor, rel=1e-12)}, step

    assert len(stage_2) == len(STAGE_2)  # the schedule restarts at the stage boundary: warm-up again
    for step, (rates, factor) in enumerate(zip(stage_2, STAGE_2)):
        expected = {(block, decay): pytest.approx(rate * factor, rel=1e-12)
                    for block, rate in STAGE_2_RATES.items() for decay in (0.05, 0.0)}
        assert rates == expected, step  # and no other block (_blocks.14 and below stay frozen)


def _scripted_losses(monkeypatch, losses):
    """The validation loss of each epoch, in turn, instead of the measured one (the rest is measured)."""
    real = trainer.evaluate
    queue = list(losses)

    def evaluate(*args, **kwargs):
        _, accuracy, predicted = real(*args, **kwargs)
        return queue.pop(0), accuracy, predicted

    monkeypatch.setattr(trainer, "evaluate", evaluate)


def test_early_stopping_ends_a_plateau_and_the_best_epoch_is_the_one_saved(tmp_path, monkeypatch):
    root = textures(tmp_path / "set", per_class=3)
    out = tmp_path / "m.lkft"
    # head 1.0; stage 2: 0.9, 0.8 (the best), 0.85, 0.95: two epochs without a better loss (patience 2): stop.
    _scripted_losses(monkeypatch, [1.0, 0.9, 0.8, 0.85, 0.95, 0.7, 0.6])
    saved = []  # the checkpoint's network after each epoch: that epoch's weights
    progress = Progress(epoch_done=lambda row: saved.append(load_file(checkpoint_path(out))))
    config = FinetuneConfig(head_epochs=1, epochs=6, unfreeze=1, batch_size=4, val_fraction=0.34, image_size=32,
                            lr=1e-3, patience=2)
    result = finetune(root, out, config, device="cpu", workers=0, progress=progress)

    history = result.report["history"]
    assert [(r["stage"], r["epoch"], r["val_loss"]) for r in history] == [
        ("head", 1, 1.0), ("finetune", 1, 0.9), ("finetune", 2, 0.8), ("finetune", 3, 0.85), ("finetune", 4, 0.95)]
    assert [r["best"] for r in history] == [True, True, True, False, False]
    assert (result.report["best_epoch"]["stage"], result.report["best_epoch"]["epoch"]) == ("finetune", 2)

    kept = load_file(out)
    best, last = saved[2], saved[4]
    pairs = [("head.weight", "model.head.linear.weight"), ("head.bias", "model.head.linear.bias"),
             ("body._conv_head.weight", "model.body.body.model._conv_head.weight"),
             ("body._bn1.bias", "model.body.body.model._bn1.bias")]
    for mine, theirs in pairs:
        assert torch.equal(kept[mine], best[theirs]), mine
        assert not torch.equal(best[theirs], last[theirs]), theirs  # it trained on after the best epoch
