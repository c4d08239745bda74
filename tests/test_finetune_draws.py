"""Stochastic depth and dropout draw from the run's own generator: the same seed gives the same weights
and --resume ends where an uninterrupted run ends, for efficientnet_b0 (stochastic depth in 9 blocks)
as for Lite0 (none). Random b0 weights in a file: the draws are what is tested, not the features."""

import pytest
import torch
from finetune_data import textures
from safetensors.torch import load_file
from torch import nn

from lookalike.featurize import get_model_spec
from lookalike.featurize.models.backbone import build_backbone
from lookalike.finetune import FinetuneConfig, finetune
from lookalike.finetune.checkpoint import checkpoint_path
from lookalike.finetune.draws import Draws, SeededDrop, seed_draws
from lookalike.finetune.head import EmbeddingHead, FinetuneNet
from lookalike.finetune.trainer import Progress


@pytest.fixture(scope="module")
def b0_weights(tmp_path_factory):
    from torchvision.models import efficientnet_b0

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "efficientnet_b0.pth"
    torch.save(efficientnet_b0().state_dict(), path)
    return path


def test_the_body_draws_its_masks_from_its_own_generator_never_the_global_one(b0_weights):
    spec = get_model_spec("efficientnet_b0")
    backbone = build_backbone(spec, weights=b0_weights)
    net = FinetuneNet(backbone.module, EmbeddingHead(backbone.dim, 3), spec.preprocessing)
    # torchvision's b0: stochastic depth on the 9 MBConv blocks with a residual connection, p up to 0.2
    assert len(net.random_layers) == 9 and all(n.endswith("stochastic_depth") for n in net.random_layers)
    assert not any(type(m).__name__ == "StochasticDepth" for m in net.modules())
    x = torch.randn(8, 3, 32, 32)
    net.train()
    outputs = []
    for seed, stage, epoch in ((0, 1, 0), (0, 1, 0), (0, 1, 1)):
        net.seed_epoch(seed, stage, epoch)
        before = torch.get_rng_state()
        with torch.no_grad():
            outputs.append(net.body(x))
        assert torch.equal(torch.get_rng_state(), before)  # the global generator was not drawn from
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
    net.eval()
    with torch.no_grad():
        assert not torch.equal(net.body(x), outputs[0])  # in training some blocks were dropped; evaluation drops none


def test_dropout_and_timm_drop_path_are_seeded_too_with_their_formulas():
    from timm.layers import DropPath
    from torchvision.ops import StochasticDepth

    model = nn.Sequential(nn.Identity(), nn.Dropout(0.5), StochasticDepth(0.5, "row"), DropPath(0.5),
                          DropPath(0.5, scale_by_keep=False))
    draws = Draws()
    assert seed_draws(model, draws) == ["1", "2", "3", "4"]
    assert [(m.p, m.mode, m.scale) for m in model[1:]] == [(0.5, "element", True), (0.5, "row", True),
                                                           (0.5, "row", True), (0.5, "row", False)]
    x = torch.ones(64, 4)
    model.train()
    draws.reseed(1)
    dropped = model[1](x)
    assert set(dropped.unique().tolist()) == {0.0, 2.0} and 0 < (dropped == 0).sum() < x.numel()
    rows = model[2](x)
    assert all(len(set(r.tolist())) == 1 for r in rows) and set(rows.unique().tolist()) == {0.0, 2.0}
    assert set(model[4](x).unique().tolist()) == {0.0, 1.0}  # not scaled
    draws.reseed(1)
    assert torch.equal(model[1](x), dropped)
    assert isinstance(model[1], SeededDrop) and model[1].eval()(x) is x


def _run(root, out, weights, *, stop_after=None, resume=False):
    """A tiny b0 fine-tune; returns its checkpoint's tensors after each epoch (interrupted after ``stop_after``)."""
    saved = []

    def epoch_done(row):
        saved.append(load_file(checkpoint_path(out)))
        if stop_after is not None and len(saved) == stop_after:
            raise KeyboardInterrupt  # as Ctrl-C would, after the epoch's checkpoint

    config = FinetuneConfig(model="efficientnet_b0", weights=str(weights), head_epochs=1, epochs=2, unfreeze=2,
                            batch_size=2, val_fraction=0.34, image_size=32, lr=1e-3)
    try:
        finetune(root, out, config, device="cpu", workers=0, resume=resume, progress=Progress(epoch_done=epoch_done))
    except KeyboardInterrupt:
        pass
    return saved


@pytest.fixture(scope="module")
def b0_runs(tmp_path_factory, b0_weights):
    """The same b0 fine-tune twice: uninterrupted, and interrupted after 2 of its 3 epochs, then resumed."""
    root = textures(tmp_path_factory.mktemp("set"), per_class=3)
    out = tmp_path_factory.mktemp("runs")
    whole = _run(root, out / "whole.lkft", b0_weights)
    interrupted = _run(root, out / "resumed.lkft", b0_weights, stop_after=2)
    assert not (out / "resumed.lkft").exists() and checkpoint_path(out / "resumed.lkft").exists()
    resumed = _run(root, out / "resumed.lkft", b0_weights, resume=True)
    return out, whole, interrupted, resumed


def test_the_same_seed_gives_the_same_weights_with_stochastic_depth(b0_runs):
    _, whole, interrupted, _ = b0_runs
    assert len(whole) == 3 and len(interrupted) == 2
    for epoch in range(2):
        a, b = whole[epoch], interrupted[epoch]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"epoch {epoch + 1} differs"
    first, last = whole[0], whole[2]
    assert not torch.equal(first["model.head.linear.weight"], last["model.head.linear.weight"])  # it trained


def test_resume_ends_exactly_where_an_uninterrupted_run_ends_with_stochastic_depth(b0_runs):
    out, whole, _, resumed = b0_runs
    assert len(resumed) == 1  # the third epoch alone
    assert all(torch.equal(whole[2][k], resumed[0][k]) for k in whole[2])
    a, b = load_file(out / "whole.lkft"), load_file(out / "resumed.lkft")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_masks_are_drawn_on_the_gpu_from_its_own_seeded_generator():
    from torchvision.ops import StochasticDepth

    model = nn.Sequential(StochasticDepth(0.5, "row"), nn.Dropout(0.5)).cuda().train()
    draws = Draws()
    seed_draws(model, draws)
    x = torch.ones(256, 8, device="cuda", dtype=torch.float16)
    outputs = []
    for _ in range(2):
        draws.reseed(7)
        before = torch.cuda.get_rng_state()
        outputs.append(model(x))
        assert torch.equal(torch.cuda.get_rng_state(), before)  # the global CUDA generator was not drawn from
    assert torch.equal(outputs[0], outputs[1]) and outputs[0].device.type == "cuda"
    assert set(outputs[0].unique().tolist()) == {0.0, 4.0} and list(draws.generators) == [torch.device("cuda", 0)]
