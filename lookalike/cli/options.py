"""What the command modules share: featurizer options, the store option, progress bars, output formats."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import click

from ..featurize.options import PRECISIONS, RUNTIMES, EmbedOptions

DEFAULTS = EmbedOptions()  # every embedding option's default, declared once in the library


def featurizer_options(default_model: str | None):
    """The options every command that runs the CNN shares; ``embed_options`` turns them into one ``EmbedOptions``."""
    default = DEFAULTS
    model_help = "A name from `lookalike models`, timm:<name>, or a .lkft file from `lookalike finetune`." + (
        "" if default_model else "  [default: the store's model, else efficientnet_lite0]")
    options = [
        click.option("--model", default=default_model, show_default=bool(default_model), help=model_help),
        click.option("--layer", default=None, help="Tap an earlier layer (see `lookalike layers MODEL`)."),
        click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False),
                     help="A state dict file to use instead of the pretrained weights."),
        *embedding_options(default),
        click.option("--compile", "compile_", is_flag=True,
                     help="Run the network through torch.compile: a slow first batch, then faster (best on a GPU)."),
        click.option("--gpu-decode/--no-gpu-decode", default=default.gpu_decode,
                     help="Decode JPEGs on the GPU with nvJPEG  [default: on, where there is a GPU]."),
        click.option("--runtime", type=click.Choice(RUNTIMES), default=default.runtime, show_default=True,
                     help="auto: ONNX Runtime on the CPU (the network exported once and cached in "
                          "$LOOKALIKE_CACHE, default ~/.cache/lookalike), torch on a GPU. Vectors from both mix in one store."),
        click.option("--precision", type=click.Choice(PRECISIONS), default=default.precision,
                     show_default=True, help="auto is fp16 autocast on CUDA, fp32 elsewhere."),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def embedding_options(default) -> list:
    """--batch-size, --workers, --device, --max-pixels: what commands that embed but choose no model share too."""
    return [
        click.option("--batch-size", default=default.batch_size, show_default=True, type=click.IntRange(min=1),
                     help="Images per batch: decoded, embedded and written together."),
        click.option("--workers", default=default.workers, type=click.IntRange(min=0),
                     help="Worker processes: on the CPU each decodes and embeds its files; on a GPU they decode "
                          "[default: one per core on the CPU]."),
        click.option("--device", default=default.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--max-pixels", default=default.max_pixels, show_default=True, type=click.IntRange(min=1),
                     help="Larger images are skipped as failures."),
    ]


def embed_options(batch_size, workers, device, max_pixels, compile_=False, gpu_decode=None, runtime="auto",
                  precision="auto"):
    """The one ``EmbedOptions`` a command passes on, from its flags."""
    return EmbedOptions(device=device, batch_size=batch_size, workers=workers, precision=precision, runtime=runtime,
                        max_pixels=max_pixels, compile=compile_, gpu_decode=gpu_decode)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process Ctrl-C ended


class Interrupted(click.ClickException):
    """Ctrl-C: one line saying what was kept, and exit code 130 (every command ends so)."""

    exit_code = EXIT_INTERRUPTED


def progressbar(length: int, label: str):
    """A progress bar on a terminal; elsewhere (a log, a pipe, CI) a few plain lines (``SparseProgress``)."""
    if not _is_terminal(sys.stderr):
        return SparseProgress(length, label)
    return click.progressbar(length=length, label=label, show_eta=True, show_pos=True, file=sys.stderr)


class SparseProgress:
    """Progress for a stream that is not a terminal: a line at each quarter, and at least one a minute.

    It takes what ``click.progressbar`` takes from the commands (``update``, a changing
    ``label``, use as a context manager), but only ever prints whole lines, each with the
    label of that moment.
    """

    STEPS = 4
    EVERY_S = 60.0

    def __init__(self, length: int, label: str):
        self.length, self.label = length, label
        self.pos, self._shown = 0, 0
        self._start = self._last = time.monotonic()

    def __enter__(self) -> SparseProgress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.pos != self._shown:
            self._line()

    def update(self, n: int) -> None:
        before = self.pos * self.STEPS // max(self.length, 1)
        self.pos = min(self.pos + n, self.length)
        quarter = self.pos * self.STEPS // max(self.length, 1) > before
        if quarter or time.monotonic() - self._last >= self.EVERY_S:
            self._line()

    def _line(self) -> None:
        self._shown, self._last = self.pos, time.monotonic()
        percent = 100 * self.pos // max(self.length, 1)
        click.echo(f"{self.label}: {self.pos}/{self.length} ({percent}%, {self._last - self._start:.0f}s)", err=True)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _WarningLine(logging.Handler):
    """The library's warnings as one line each on stderr (``warning: ...``), and its notes about a
    pause (exporting a network the first time, compiling one, a long index build's progress) as plain lines."""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        if record.levelno >= logging.WARNING:
            text = click.style("warning: ", fg="yellow") + text
        elif record.name not in PAUSE_NOTES:
            return
        click.echo(text, err=True)


# Loggers whose INFO records explain a pause the user would otherwise wonder about.
PAUSE_NOTES = ("lookalike.featurize.runtimes.onnx_export", "lookalike.featurize.runtimes.torch_extractor",
               "lookalike.ann.progress")


@contextlib.contextmanager
def warning_lines():
    """While a command runs, show lookalike's logged warnings (and first-time notes) one line each, and nothing twice."""
    logger = logging.getLogger("lookalike")
    handler = _WarningLine(logging.INFO)
    propagate = logger.propagate
    notes = [logging.getLogger(name) for name in PAUSE_NOTES]
    levels = [note.level for note in notes]
    logger.addHandler(handler)
    logger.propagate = False
    for note in notes:
        note.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        for note, level in zip(notes, levels):
            note.setLevel(level)


def seconds(ctx, param, value: str) -> float:
    """A click callback: a duration such as ``2s``, ``500ms`` or ``1.5`` (seconds)."""
    text = value.strip().lower()
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return float(text[:-1]) if text.endswith("s") else float(text)
    except ValueError:
        raise click.BadParameter(f"a time such as 2s, 500ms or 1.5, not {value!r}") from None


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
        help="The store: its folder, or the folder it indexes  [default: DIR/.lookalike for index; else found "
             "upward from here, like git].",
    )(command)


def shown(path: str) -> str:
    """A path as the user would type it: relative to here when inside here."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def format_options(command):
    """--json and --csv: one output format at most (``chosen_format`` says which, and refuses both)."""
    command = click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")(command)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


def chosen_format(as_json: bool, as_csv: bool) -> str | None:
    """``"json"``, ``"csv"`` or None (text); both asked for is a usage error, never a silent pick."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv can't be used together: choose one output format")
    return "json" if as_json else "csv" if as_csv else None


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


def open_store_for(store, near=(), options=None):
    """The store named, else the one found upward from here, else upward from the first query image.

    ``options`` (``EmbedOptions``) say how images outside the store are embedded.
    """
    from ..errors import StoreNotFoundError
    from ..indexing import open_store

    if store is not None:
        return open_store(store, exact=True, options=options)
    try:
        return open_store(options=options)
    except StoreNotFoundError:
        for image in near:
            try:
                return open_store(Path(image).resolve().parent, options=options)
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


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless one: "1 group", "3 files"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
