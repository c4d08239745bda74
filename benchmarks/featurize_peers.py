"""What bench_featurize.py compares lookalike with: other JPEG decoders, a naive loop, img2vec-pytorch."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import stats
import torch
from PIL import Image


def decoders(preprocessing) -> dict:
    """Each decoder as path -> the model's uint8 input (3, crop, crop), after the same resize and crop."""
    from lookalike.featurize.images.batches import file_pixels

    size = preprocessing.resize_size
    found = {
        "lookalike (PIL draft)": lambda path: file_pixels(path, preprocessing)[0],
        "PIL, full decode": lambda path: preprocessing.pixels(Image.open(path).convert("RGB")),
    }
    try:
        import simplejpeg

        def simple(path):
            with open(path, "rb") as f:
                data = f.read()
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            # PIL's draft scale (a power of two); left alone, simplejpeg would pick any n/8 and give other pixels.
            scale = max(s for s in (1, 2, 4, 8) if s <= max(1, min(width // size, height // size)))
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // scale), min_width=-(-width // scale))
            return preprocessing.pixels(Image.fromarray(pixels))

        found["simplejpeg (DCT scaling)"] = simple
    except ImportError:
        print("simplejpeg is not installed (pip install -e '.[bench]'): not measured")

    def torchvision_cpu(path):
        from torchvision.io import decode_jpeg, read_file

        image = decode_jpeg(read_file(path))
        return preprocessing.pixels(Image.fromarray(image.permute(1, 2, 0).numpy()))

    found["torchvision decode_jpeg (CPU)"] = torchvision_cpu
    return found


def peers(args, paths: list[str], cores: int) -> dict:
    """images/s on the same large photos: lookalike, the naive loop (Lite0), img2vec vs lookalike (resnet-18).

    All five side by side in each of --repeats repeats; each peer's ratio is the median of the per-repeat
    ratios of lookalike's rate (Lite0, or resnet18 for img2vec) to the peer's, with its interval.
    """
    from lookalike import create_extractor

    torch.set_num_threads(cores)
    lookalike = create_extractor(args.model, device="cpu")
    configs = {"lookalike": lambda: sum(len(b.keys) for b in lookalike.embed_paths(paths)),
               "naive loop": naive_loop(args.model, paths)}
    with random_resnet18_hub():
        from img2vec_pytorch import Img2Vec

        img2vec = Img2Vec(cuda=False, model="resnet18")
        resnet18 = create_extractor("resnet18", device="cpu")  # the same weights, from the same hub cache
        configs["lookalike resnet18"] = lambda: sum(len(b.keys) for b in resnet18.embed_paths(paths))
        configs["img2vec resnet-18, one image a call"] = lambda: [img2vec.get_vec(_open(p)) for p in paths]
        configs["img2vec resnet-18, lists of 8"] = lambda: [img2vec.get_vec([_open(p) for p in paths[i : i + 8]])
                                                            for i in range(0, len(paths), 8)]
        check_same_network(img2vec, resnet18, paths[0])
        seconds = stats.interleave(configs, args.repeats)
    rates = {name: len(paths) / stats.median_interval(s)["median"] for name, s in seconds.items()}
    ratios = {"naive loop": stats.paired_ratio(seconds["naive loop"], seconds["lookalike"])}  # their time / ours
    ratios.update({name: stats.paired_ratio(s, seconds["lookalike resnet18"])
                   for name, s in seconds.items() if name.startswith("img2vec")})
    img2vec_best = max((name for name in rates if name.startswith("img2vec")), key=lambda name: rates[name])
    return {"rates": rates, "seconds": seconds, "images": len(paths), "ratios": ratios,
            "vs_naive": ratios["naive loop"], "resnet18_vs_img2vec": ratios[img2vec_best]}


def naive_loop(model: str, paths: list[str]):
    """The tutorial pattern: PIL full decode, torchvision transforms, a batch of one, fp32, default layout."""
    from torchvision.transforms import v2 as T

    from lookalike import create_extractor

    extractor = create_extractor(model, device="cpu", runtime="torch")
    pre = extractor.model_spec.preprocessing
    network = extractor.module.to(memory_format=torch.contiguous_format)
    transform = T.Compose([
        T.Resize(pre.resize_size, interpolation=T.InterpolationMode(pre.interpolation), antialias=True),
        T.CenterCrop(pre.crop_size), T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std),
    ])

    def run():
        with torch.inference_mode():
            for path in paths:
                network(transform(Image.open(path).convert("RGB")).unsqueeze(0))

    return run


def _open(path: str) -> Image.Image:
    return Image.open(path).convert("RGB")


@contextlib.contextmanager
def random_resnet18_hub():
    """A temporary torch hub cache holding seeded random resnet18 weights under torchvision's file name."""
    from torchvision.models import ResNet18_Weights, resnet18

    with tempfile.TemporaryDirectory() as home:
        checkpoints = Path(home) / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(resnet18().state_dict(), checkpoints / os.path.basename(ResNet18_Weights.DEFAULT.url))
        before = os.environ.get("TORCH_HOME")
        os.environ["TORCH_HOME"] = home
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("TORCH_HOME", None)
            else:
                os.environ["TORCH_HOME"] = before


def check_same_network(img2vec, extractor, path: str) -> None:
    """Both must run the same weights: their vectors of one photo agree (preprocessing differs a little)."""
    theirs = img2vec.get_vec(_open(path))
    ours = next(extractor.embed_paths([path])).vectors[0]
    cosine = float(theirs @ ours / np.linalg.norm(theirs))
    assert cosine > 0.9, f"img2vec and lookalike don't run the same resnet18 (cosine {cosine:.3f})"
