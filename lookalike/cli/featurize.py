"""The featurizer commands: models, layers, embed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .options import check_writable, embed_options, featurizer_options, progressbar


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json):
    """List the models lookalike knows, with their embedding size and input size.

    OFFLINE says whether the pretrained weights are on this machine now (bundled,
    or in the torch hub cache); the rest download on first use where there is
    internet. Any timm model also works as timm:<name> with the timm extra.
    """
    from ..featurize import DEFAULT_MODEL, list_models, weights_available

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


@click.command()
@click.argument("model")
def layers(model):
    """List the layers of MODEL that --layer accepts, from input to output.

    An earlier layer gives more generic features, which suit data unlike
    ImageNet (textures, medical, satellite) better; its output is average-pooled.
    """
    from ..featurize import list_layers, resolve_model

    for name in list_layers(resolve_model(model)):
        click.echo(name)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the .npz: keys, vectors and the spec that made them.")
@featurizer_options("efficientnet_lite0")
def embed(paths, output, model, layer, weights, **options):
    """Embed image files, and every image under folders, into one .npz file.

    Unreadable files are reported and skipped; they never stop the run.
    Load the result with numpy: keys, vectors (float32, L2-normalised), spec (JSON).
    """
    import numpy as np

    from ..featurize import create_extractor

    files = _image_files(paths)
    if not files:
        raise click.ClickException(f"no image files under {', '.join(map(str, paths))}")
    check_writable(output)  # before the long part, not after it
    extractor = create_extractor(model, layer=layer, weights=weights, options=embed_options(**options))
    keys, vectors, failures = [], [], []
    start = time.perf_counter()
    with progressbar(len(files), f"Embedding with {model}") as bar:
        for batch in extractor.embed_paths(files):
            keys += batch.keys
            vectors.append(batch.vectors)
            failures += batch.failures
            bar.update(len(batch.keys) + len(batch.failures))
    elapsed = time.perf_counter() - start
    for failure in failures:
        click.echo(f"skipped {failure.key}: {failure.reason}", err=True)
    if not keys:
        raise click.ClickException(f"nothing embedded: all {len(failures)} files failed (above); {output} was not written")
    try:
        _write_npz(output, np.array(keys, dtype=str), np.concatenate(vectors), json.dumps(extractor.spec.to_dict()))
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror or e}") from e
    click.echo(f"{len(keys)} embedded, {len(failures)} failed in {elapsed:.1f}s "
               f"({(len(keys) + len(failures)) / max(elapsed, 1e-9):.1f} images/s) -> {output}")


def _image_files(paths: tuple[Path, ...]) -> list[str]:
    from ..featurize import IMAGE_EXTENSIONS, discover

    found = []
    for path in paths:
        found += [str(path)] if path.is_file() else [f.path for f in discover(path, IMAGE_EXTENSIONS)]
    return found


def _write_npz(output: Path, keys, vectors, spec_json: str) -> None:
    """Written whole or not at all (a file object, so numpy doesn't append .npz to the temporary name)."""
    import numpy as np

    from ..atomic import replace_atomically

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, keys=keys, vectors=vectors, spec=np.array(spec_json))

    replace_atomically(output, write)


COMMANDS = (models, layers, embed)
