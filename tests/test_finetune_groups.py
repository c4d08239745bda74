"""Blocks and discriminative learning rates: rates fall with depth by exactly layer_decay, the head's is
the highest, frozen blocks get no gradient (the rates the trainer applies, step by step, are
test_finetune_trainer.py's)."""

import pytest
import torch

from lookalike.errors import LookalikeError
from lookalike.featurize import get_model_spec
from lookalike.featurize.models.backbone import build_backbone
from lookalike.finetune.blocks import body_blocks, find_blocks, original_name
from lookalike.finetune.groups import parameter_groups, unfrozen_count
from lookalike.finetune.head import EmbeddingHead, FinetuneNet


@pytest.fixture(scope="module")
def lite0_parts():
    spec = get_model_spec("efficientnet_lite0")
    backbone = build_backbone(spec)
    return spec, backbone, body_blocks(spec.builder, backbone.module, 64)


def test_lite0_blocks_are_the_stem_the_16_mbconv_blocks_and_the_head_convolution(lite0_parts):
    spec, backbone, blocks = lite0_parts
    assert [b.name for b in blocks] == ["_conv_stem"] + [f"_blocks.{i}" for i in range(16)] + ["_conv_head"]
    assert blocks[0].modules == ["_conv_stem", "_bn0"] and blocks[-1].modules == ["_conv_head", "_bn1"]
    body = {original_name(n, backbone.module) for n, _ in backbone.module.named_parameters()}
    counted = [p for b in blocks for p in b.parameters]
    assert len(counted) == len(set(counted))  # each parameter once
    assert body - set(counted) == {"_fc.weight", "_fc.bias"}  # all but the ImageNet classifier the embedding skips


def test_resnet_blocks_follow_its_residual_blocks_and_an_earlier_layer_drops_the_rest():
    model = get_model_spec("resnet18").builder()
    blocks = find_blocks(model)
    assert [b.name for b in blocks] == ["conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                                        "layer3.1", "layer4.0", "layer4.1", "fc"]
    present = {n for n, _ in model.named_parameters() if not n.startswith(("layer4", "fc"))}
    assert [b.name for b in find_blocks(model, present)][-1] == "layer3.1"


@pytest.mark.parametrize("unfreeze", [3, "all"])
def test_rates_fall_with_depth_by_exactly_layer_decay_and_frozen_blocks_get_no_gradient(lite0_parts, unfreeze):
    spec, backbone, blocks = lite0_parts
    head = EmbeddingHead(backbone.dim, 4)
    net = FinetuneNet(backbone.module, head, spec.preprocessing)
    n = unfrozen_count(unfreeze, blocks)
    groups, infos = parameter_groups(net.body, net.head, blocks, unfreeze=n, lr=1e-3, layer_decay=0.6, weight_decay=0.05)

    by_depth = {}
    for info in infos:
        by_depth.setdefault(info.depth, set()).add(info.lr)
    assert all(len(rates) == 1 for rates in by_depth.values())  # decayed and undecayed halves share a rate
    rates = [by_depth[d].pop() for d in sorted(by_depth)]
    assert len(rates) == n + 1 and rates[0] == 1e-3 == max(rates)
    assert all(rates[k] == 1e-3 * 0.6**k for k in range(len(rates)))
    assert [i.block for i in infos if i.depth == 1][0] == blocks[-1].name  # depth 1 is the top block
    assert {i.weight_decay for i in infos} == {0.05, 0.0}

    trained = {name for b in blocks[len(blocks) - n:] for name in b.parameters}
    net.train()
    loss = net(torch.randn(2, 3, 224, 224)).logsumexp(1).sum() + net.head.linear.weight.sum()
    loss.backward()
    for name, p in net.body.named_parameters():
        if original_name(name, net.body) in trained:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert sum(len(g["params"]) for g in groups) == len(trained) + 2
    net.zero_grad(set_to_none=True)


def test_unfreeze_counts_are_checked():
    blocks = find_blocks(get_model_spec("resnet18").builder())
    assert unfrozen_count("all", blocks) == len(blocks) and unfrozen_count(50, blocks) == len(blocks)
    with pytest.raises(LookalikeError, match="number of blocks"):
        unfrozen_count("most", blocks)
