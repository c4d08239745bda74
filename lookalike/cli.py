"""The ``lookalike`` command: parse, call the library, render. Progress bars live here."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from .errors import LookalikeError


class _Group(click.Group):
    """Turns the library's errors into one red line and exit code 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LookalikeError as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lookalike")
def main():
    """Find similar images with a pretrained CNN's embeddings.

    Every image becomes a vector (a pretrained network's penultimate layer,
    L2-normalised); similar images have vectors with a high cosine similarity.
    The default model, EfficientNet-Lite0, ships with the package and works offline.
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json):
    """List the models lookalike knows, with their embedding size and input size.

    OFFLINE says whether the pretrained weights are on this machine now (bundled,
    or in the torch hub cache); the rest download on first use where there is
    internet. Any timm model also works as timm:<name> with the timm extra.
    """
    from .featurize import DEFAULT_MODEL, list_models, weights_available

    rows = [
        {
            "name": spec.name,
            "source": spec.source,
            "dim": spec.dim,
            "input_size": spec.preprocessing.crop_size,
            "offline": weights_available(spec),
            "default": spec.name == DEFAULT_MODEL,
        }
        for spec in list_models()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'MODEL':<22}{'SOURCE':<13}{'DIM':>6}{'INPUT':>7}  OFFLINE")
    for row in rows:
        name = row["name"] + (" *" if row["default"] else "")
        offline = "yes" if row["offline"] else "no"
        click.echo(f"{name:<22}{row['source']:<13}{row['dim']:>6}{row['input_size']:>7}  {offline}")
    click.echo("\n* default.  Also: timm:<name> for any timm model (pip install 'lookalike[timm]').")


@main.command()
@click.argument("model")
def layers(model):
    """List the layers of MODEL that --layer accepts, from input to output.

    An earlier layer gives more generic features, which suit data unlike
    ImageNet (textures, medical, satellite) better; its output is average-pooled.
    """
    from .featurize import get_model_spec, list_layers

    for name in list_layers(get_model_spec(model)):
        click.echo(name)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the .npz: keys, vectors and the spec that made them.")
@click.option("--model", default="efficientnet_lite0", show_default=True, help="A name from `lookalike models`, or timm:<name>.")
@click.option("--layer", default=None, help="Tap an earlier layer (see `lookalike layers MODEL`).")
@click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False), help="A state dict file to use instead.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=None, type=click.IntRange(min=0), help="Decoding processes [default: by device].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto is bf16 autocast on CUDA, fp32 elsewhere.")
@click.option("--max-pixels", default=50_000_000, show_default=True, type=click.IntRange(min=1),
              help="Larger images are skipped as failures.")
def embed(paths, output, model, layer, weights, batch_size, workers, device, precision, max_pixels):
    """Embed image files, and every image under folders, into one .npz file.

    Unreadable files are reported and skipped; they never stop the run.
    Load the result with numpy: keys, vectors (float32, L2-normalised), spec (JSON).
    """
    import numpy as np

    from .featurize import create_extractor

    files = _discover(paths)
    if not files:
        raise click.ClickException(f"no image files under {', '.join(map(str, paths))}")
    _check_writable(output)  # before the long part, not after it
    extractor = create_extractor(model, layer=layer, device=device, batch_size=batch_size, weights=weights,
                                 num_workers=workers, precision=precision, max_pixels=max_pixels)
    keys, vectors, failures = [], [], []
    start = time.perf_counter()
    with click.progressbar(length=len(files), label=f"Embedding with {model}", show_eta=True, show_pos=True,
                           file=sys.stderr) as bar:
        for batch in extractor.embed_paths(files):
            keys += batch.keys
            vectors.append(batch.vectors)
            failures += batch.failures
            bar.update(len(batch.keys) + len(batch.failures))
    elapsed = time.perf_counter() - start
    try:
        _write_npz(output, np.array(keys, dtype=str), np.concatenate(vectors), json.dumps(extractor.spec.to_dict()))
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror or e}") from e
    for failure in failures:
        click.echo(f"skipped {failure.key}: {failure.reason}", err=True)
    click.echo(f"{len(keys)} embedded, {len(failures)} failed in {elapsed:.1f}s "
               f"({(len(keys) + len(failures)) / max(elapsed, 1e-9):.1f} images/s) -> {output}")


def _discover(paths: tuple[Path, ...]) -> list[str]:
    from .featurize import IMAGE_EXTENSIONS

    found = []
    for path in paths:
        if path.is_file():
            found.append(str(path))
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, n) for n in sorted(names)
                      if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    return found


def _check_writable(output: Path) -> None:
    tmp = output.with_name(output.name + ".tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
        tmp.unlink()
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror or e}") from e


def _write_npz(output: Path, keys, vectors, spec_json: str) -> None:
    import numpy as np

    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object, so numpy doesn't append .npz to the temporary name
        np.savez(f, keys=keys, vectors=vectors, spec=np.array(spec_json))
    os.replace(tmp, output)  # never a half-written file under the real name
