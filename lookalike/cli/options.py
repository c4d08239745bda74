"""What the command modules share: featurizer options, the store option, progress bars, output formats."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


def featurizer_options(default_model: str | None):
    """The options every command that runs the CNN shares."""
    model_help = "A name from `lookalike models`, or timm:<name>." + (
        "" if default_model else "  [default: the store's model, else efficientnet_lite0]")
    options = [
        click.option("--model", default=default_model, show_default=bool(default_model), help=model_help),
        click.option("--layer", default=None, help="Tap an earlier layer (see `lookalike layers MODEL`)."),
        click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False),
                     help="A state dict file to use instead of the pretrained weights."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1)),
        click.option("--workers", default=None, type=click.IntRange(min=0), help="Decoding processes [default: by device]."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True, help="auto is fp16 autocast on CUDA, fp32 elsewhere."),
        click.option("--max-pixels", default=50_000_000, show_default=True, type=click.IntRange(min=1),
                     help="Larger images are skipped as failures."),
        click.option("--compile", "compile_", is_flag=True,
                     help="Run the network through torch.compile: a slow first batch, then faster (best on a GPU)."),
        click.option("--gpu-decode/--no-gpu-decode", default=None,
                     help="Decode JPEGs on the GPU with nvJPEG  [default: on, where there is a GPU]."),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def extractor_options(batch_size, workers, device, precision, max_pixels, compile_, gpu_decode) -> dict:
    return {"batch_size": batch_size, "num_workers": workers, "device": device, "precision": precision,
            "max_pixels": max_pixels, "compile": compile_, "jpeg_on_device": gpu_decode}


def progressbar(length: int, label: str):
    return click.progressbar(length=length, label=label, show_eta=True, show_pos=True, file=sys.stderr)


def check_writable(output: Path) -> None:
    tmp = output.with_name(output.name + ".tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
        tmp.unlink()
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror or e}") from e


def store_option(command):
    return click.option(
        "--store", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="LOOKALIKE_STORE",
        help="The store folder [default: DIR/.lookalike for index; else found upward from here, like git].",
    )(command)


def shown(path: str) -> str:
    """A path as the user would type it: relative to here when inside here."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def echo_csv(header, rows) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    click.echo(buffer.getvalue(), nl=False)


def write_text(path: Path, text: str) -> None:
    from ..atomic import write_atomically

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text.encode("utf-8"))
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror or e}") from e


def open_store_for(store, near=()):
    """The store named, else the one found upward from here, else upward from the first query image."""
    from ..errors import StoreNotFoundError
    from ..indexing import open_store

    if store is not None:
        return open_store(store, exact=True)
    try:
        return open_store()
    except StoreNotFoundError:
        for image in near:
            try:
                return open_store(Path(image).resolve().parent)
            except StoreNotFoundError:
                continue
        raise




def engine_options(command):
    """--engine and --ray-address: where `index` runs (the Ray engine is imported only when chosen)."""
    command = click.option(
        "--ray-address", default=None, metavar="auto|local|HOST:PORT",
        help="With --engine ray: the cluster to use. auto: the one `ray start` made; local: a private instance "
             "on this machine  [default: $RAY_ADDRESS, else that cluster, else a private instance].")(command)
    return click.option(
        "--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
        help="local: this machine. ray: a Ray cluster (pip install 'lookalike[ray]'); FOLDER and the store "
             "must be on storage every node sees at the same path.")(command)
