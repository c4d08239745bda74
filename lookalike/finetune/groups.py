"""Discriminative learning rates: which blocks train, and the rate of each.

The head gets ``lr``; the k-th block below it gets ``lr * layer_decay**k``, so the new
head learns fast and the pretrained layers change little, less the deeper they are.
Blocks below the top ``unfreeze`` are frozen: no gradient, no optimizer state. Each
block is two groups, with and without weight decay (biases and normalisation
parameters are not decayed), at the same rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import LookalikeError
from .blocks import Block, original_name


@dataclass(frozen=True)
class GroupInfo:
    """What a parameter group is, for reports and tests: its block, depth below the head, rate."""

    block: str
    depth: int  # 0 is the head, 1 the block under it...
    lr: float
    weight_decay: float


def unfrozen_count(unfreeze: int | str, blocks: list[Block]) -> int:
    """How many blocks from the top ``unfreeze`` ("all" or N) trains.

    Raises:
        LookalikeError: N is negative or not a number.
    """
    if unfreeze == "all":
        return len(blocks)
    try:
        count = int(unfreeze)
    except (TypeError, ValueError):
        raise LookalikeError(f"--unfreeze takes a number of blocks or 'all', not {unfreeze!r}") from None
    if count < 0:
        raise LookalikeError(f"--unfreeze takes a number of blocks (0 or more) or 'all', not {count}")
    return min(count, len(blocks))


def parameter_groups(body: nn.Module, head: nn.Module, blocks: list[Block], *, unfreeze: int, lr: float,
                     layer_decay: float, weight_decay: float) -> tuple[list[dict], list[GroupInfo]]:
    """Freeze all but the top ``unfreeze`` blocks of ``body`` and give each trained block its rate.

    Args:
        body: the tapped network; its parameter names are the blocks' names.
        head: the new classifier (always trained, at ``lr``).
        blocks: ``find_blocks`` of the base model, input to output, restricted to ``body``'s parameters.
        unfreeze: how many blocks from the top train (0: the head alone).
        lr: the head's rate. layer_decay: the factor per block of depth. weight_decay: AdamW's.

    Returns:
        (groups for the optimizer, one ``GroupInfo`` per group).
    """
    params = {original_name(n, body): p for n, p in body.named_parameters()}
    for p in params.values():
        p.requires_grad_(False)
    named = [("head", 0, list(head.named_parameters()))]
    for depth, block in enumerate(reversed(blocks[len(blocks) - unfreeze:] if unfreeze else []), start=1):
        named.append((block.name, depth, [(n, params[n]) for n in block.parameters]))
    groups, infos = [], []
    for name, depth, members in named:
        rate = lr * layer_decay**depth
        for p in (p for _, p in members):
            p.requires_grad_(True)
        decayed = [p for n, p in members if p.ndim > 1]
        plain = [p for n, p in members if p.ndim <= 1]
        for chosen, decay in ((decayed, weight_decay), (plain, 0.0)):
            if chosen:
                groups.append({"params": chosen, "lr": rate, "initial_lr": rate, "weight_decay": decay})
                infos.append(GroupInfo(name, depth, rate, decay))
    return groups, infos
