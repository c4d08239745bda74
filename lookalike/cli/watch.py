"""The watch command: a store kept current while files come and go."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from .options import Interrupted, embed_options, featurizer_options, seconds, store_option


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@store_option
@click.option("--settle", default="2s", show_default=True, callback=seconds,
              help="Wait until nothing has changed for this long, then index what changed; a file is read only "
                   "once it has rested this long (a copy in progress is never read half-written).")
@featurizer_options(None)
def watch(folder, store, settle, model, layer, weights, **options):
    """Keep FOLDER's store current as files are added, changed, moved or deleted.

    It indexes what changed while it was not running first, then every burst of
    changes in one run once the folder has been quiet for --settle. It holds the
    store's write lock while it runs. Ctrl-C or SIGTERM stops it after the batch in
    hand; a kill loses at most that batch, and the next start catches up.
    """
    from ..watch import Watcher

    terminal = sys.stderr.isatty()

    def on_pass(summary, first):
        if first or changed(summary):
            click.echo(pass_line(summary) + (" -- watching (Ctrl-C stops)" if first else ""))

    def on_batch(done):
        if not terminal:
            click.echo(f"{time.strftime('%H:%M:%S')} committed a batch of {done} files", err=True)

    watcher = Watcher(folder, store=store, settle=settle, options=embed_options(**options), model=model, layer=layer,
                      weights=weights, on_pass=on_pass, on_batch=on_batch)

    def stop(signum, frame):
        if watcher.stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        click.echo("stopping after the batch in hand (Ctrl-C again stops now)", err=True)
        watcher.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        watcher.run()
    except KeyboardInterrupt:
        raise Interrupted("interrupted: every batch committed is kept; the next start catches up") from None
    click.echo("stopped", err=True)


def changed(summary) -> bool:
    """Whether a pass of the watcher changed the store."""
    return bool(summary.embedded or summary.removed or summary.moved or summary.failed)


def pass_line(summary) -> str:
    """A pass of the watcher in one line, with the time of day."""
    moved = f"{summary.moved} moved, " if summary.moved else ""
    return (f"{time.strftime('%H:%M:%S')} {summary.added} added, {summary.updated} updated, {moved}"
            f"{summary.removed} removed, {summary.failed} failed ({summary.embedded} embedded)")


COMMANDS = (watch,)
