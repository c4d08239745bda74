"""Fine-tuning throughput: lookalike's training loop against a plain torch loop, side by side in one run.

    python benchmarks/bench_finetune.py --json                                      # CPU, about 7 minutes on 2 cores
    python benchmarks/bench_finetune.py --device cuda --n 1024 --batch-size 128 --json  # GPU

Both loops train the same network (Lite0's body cut at its embedding, a new head), on the
same real-photo JPEGs (benchmarks/make_photos.py), with the same batch size, the same
augmentation (random resized crop, flip, colour jitter at lookalike's "medium" strength),
the same frozen blocks and frozen BatchNorm statistics, AdamW and label smoothing, the
same decoding workers and threads, channels_last, and on CUDA the same fp16 autocast.
The plain loop is what a tutorial writes, given every speed-up lookalike has on the model
side: an ImageFolder-like dataset decoding each file with PIL, torchvision's v2 transforms
to a float tensor on the workers, a DataLoader. Measured per configuration, for the head
alone (stage 1) and the top 3 blocks (stage 2's default): after one warm-up epoch each, the
two loops' epochs side by side (the order alternating), --epochs pairs; the ratio is the
median of the per-epoch ratios with its bootstrap 95% interval (benchmarks/stats.py). 7
pairs by default (about 7 minutes on 2 cores at 64 photos): enough for an interval that
leaves out the most extreme epoch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import results
import stats


def _network(device, unfreeze: int, classes: int):
    import torch

    from lookalike.featurize import get_model_spec
    from lookalike.featurize.models.backbone import build_backbone
    from lookalike.finetune.blocks import body_blocks
    from lookalike.finetune.groups import parameter_groups
    from lookalike.finetune.head import EmbeddingHead, FinetuneNet
    from lookalike.finetune.recipe import FinetuneConfig

    spec = get_model_spec("efficientnet_lite0")
    backbone = build_backbone(spec)
    net = FinetuneNet(backbone.module, EmbeddingHead(backbone.dim, classes), spec.preprocessing)
    blocks = body_blocks(spec.builder, backbone.module, spec.preprocessing.crop_size)
    config = FinetuneConfig()
    groups, _ = parameter_groups(net.body, net.head, blocks, unfreeze=unfreeze, lr=config.lr,
                                 layer_decay=config.layer_decay, weight_decay=config.weight_decay)
    net.set_bn_trainable(blocks[len(blocks) - unfreeze:] if unfreeze else [], False)
    net.to(device, memory_format=torch.channels_last)
    return net, blocks, torch.optim.AdamW(groups, lr=config.lr)


def lookalike_loop(paths, targets, args, unfreeze: int):
    """lookalike's own loop (trainer._epoch): seeded augmentation on uint8, draft-mode JPEG decoding.

    Returns a function that runs one epoch and gives its images/s.
    """
    import torch

    from lookalike.finetune.dataset import AUGMENTATIONS, LabelledImages
    from lookalike.finetune.recipe import FinetuneConfig
    from lookalike.finetune.trainer import Progress, Stage, Training, _epoch

    device = torch.device(args.device)
    net, blocks, optimizer = _network(device, unfreeze, max(targets) + 1)
    data = LabelledImages(paths, targets, net.preprocessing, augment=AUGMENTATIONS["medium"])
    config = FinetuneConfig(batch_size=args.batch_size, unfreeze=unfreeze)
    training = Training(net, blocks, config, data, None, device, args.workers, None, {}, Progress())
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    stage = Stage("bench", args.epochs + 1, unfreeze, config.lr)
    epoch = iter(range(args.epochs + 1))
    return lambda: _epoch(training, stage, 1, next(epoch), optimizer, scaler)["images_per_second"]


def plain_loop(paths, targets, args, unfreeze: int):
    """A plain torch loop: PIL + torchvision v2 transforms to float on the workers, the same network and step.

    Returns a function that runs one epoch and gives its images/s.
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    from lookalike.finetune.dataset import AUGMENTATIONS

    device = torch.device(args.device)
    net, _, optimizer = _network(device, unfreeze, max(targets) + 1)
    pre, aug = net.preprocessing, AUGMENTATIONS["medium"]
    transform = T.Compose([
        T.RandomResizedCrop(pre.crop_size, scale=(aug.min_scale, 1.0), interpolation=InterpolationMode(pre.interpolation)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(aug.jitter, aug.jitter, aug.jitter),
        T.PILToTensor(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std),
    ])

    class Files(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            with Image.open(paths[i]) as image:
                return transform(image.convert("RGB")), targets[i]

    loader = DataLoader(Files(), batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def epoch() -> float:
        net.train()
        _sync(device)
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = F.cross_entropy(net(x).float(), y, label_smoothing=0.1)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            seen += len(y)
        _sync(device)
        return seen / (time.perf_counter() - start)

    return epoch


def interleaved(paths, targets, args, unfreeze: int) -> tuple[list[float], list[float]]:
    """Epochs of the two loops side by side, which goes first alternating, so a change in the machine's load hits
    both alike; the images/s of each epoch."""
    loops = {"lookalike": lookalike_loop(paths, targets, args, unfreeze), "plain": plain_loop(paths, targets, args, unfreeze)}
    for loop in loops.values():
        loop()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for epoch in range(args.epochs):
        for name in loops if epoch % 2 == 0 else reversed(loops):
            rates[name].append(loops[name]())
    return rates["lookalike"], rates["plain"]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tables(figures: dict, settings: dict) -> dict:
    """docs/finetune.md's table: images/s of each loop (medians) and their paired ratio with its interval."""
    rows = []
    for label, key in (("head only (stage 1)", "unfreeze_0"), ("top 3 blocks (stage 2)", "unfreeze_3")):
        f = figures[key]
        rows.append([label, f"{f['lookalike_images_per_s']:.1f}", f"{f['plain_images_per_s']:.1f}",
                     stats.shown(f["ratio"], ".2f", "x")])
    return {"throughput": {"columns": ["trained", "lookalike images/s", "plain torch images/s",
                                       "lookalike / plain (paired epochs)"], "rows": rows}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="photos per epoch")
    parser.add_argument("--epochs", type=int, default=7, help="measured epochs of each loop (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--photos", type=Path, default=Path("/tmp/lookalike-bench-photos"))
    parser.add_argument("--json", action="store_true", help="write DIR/finetune_<device>.json")
    results.add_arguments(parser)
    args = parser.parse_args()
    if args.json:
        results.check_tree(args.dirty)
    import torch
    from make_photos import make_photos

    torch.manual_seed(0)
    paths = [str(p) for p in make_photos(args.photos, args.n)]
    targets = [i % 4 for i in range(len(paths))]
    figures = {}
    for label, unfreeze in (("head only (stage 1)", 0), ("top 3 blocks (stage 2)", 3)):
        mine_epochs, plain_epochs = interleaved(paths, targets, args, unfreeze)
        mine, plain = statistics.median(mine_epochs), statistics.median(plain_epochs)
        ratio = stats.paired_ratio(mine_epochs, plain_epochs)  # rates: lookalike's images/s over the plain loop's
        figures[f"unfreeze_{unfreeze}"] = {"lookalike_images_per_s": mine, "plain_images_per_s": plain, "ratio": ratio,
                                           "lookalike_epochs": mine_epochs, "plain_epochs": plain_epochs}
        print(f"{label:<24} lookalike {mine:7.1f} img/s   plain torch {plain:7.1f} img/s   "
              f"ratio {stats.shown(ratio, '.2f')}", flush=True)
    settings = {"n": args.n, "epochs": args.epochs, "batch_size": args.batch_size, "workers": args.workers,
                "device": args.device, "threads": torch.get_num_threads(), "model": "efficientnet_lite0",
                "augmentation": "medium"}
    print(results.markdown(tables(figures, settings)["throughput"]))
    if args.json:
        name = f"finetune_{torch.device(args.device).type}"
        print(f"-> {results.save(name, settings, figures, 'bench_finetune', args.results, args.dirty)}")


if __name__ == "__main__":
    main()
