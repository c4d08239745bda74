"""The serve command: a local web page and JSON API over a store."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from .options import DEFAULTS, EXIT_INTERRUPTED, open_store_for, seconds, shown, store_option
from .watch import changed, pass_line


@click.command()
@store_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address shows the store to the network.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--classifier", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A model from `lookalike train`: the page shows each query's predicted labels, and POST /api/predict answers.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.option("--max-upload-mb", default=25.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest image accepted as a query.")
@click.option("--max-pixels", default=DEFAULTS.max_pixels, show_default=True, type=click.IntRange(min=1),
              help="Larger query images are refused, as the indexer refuses them.")
@click.option("--device", default=DEFAULTS.device, show_default=True, help="Where uploads are embedded: auto, cpu, cuda, cuda:N or mps.")
@click.option("--allow-actions", is_flag=True,
              help="Allow requests that change something (with the session token) on an address beyond loopback.")
@click.option("--api-docs", is_flag=True,
              help="Serve Swagger UI at /docs and ReDoc at /redoc; their pages load script from a CDN.")
@click.option("--quarantine", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Let the page resolve duplicate groups: the files it removes move here, their paths under the "
                   "indexed folder kept (as `lookalike dupes --move-to`).")
@click.option("--trash", is_flag=True, help="Let the page resolve duplicate groups, sending the files it removes to the OS trash.")
@click.option("--watch", is_flag=True,
              help="Keep the store current while serving, as `lookalike watch` does: new photos show up in the page.")
@click.option("--settle", default="2s", show_default=True, callback=seconds,
              help="With --watch: index a burst of changes once nothing has changed for this long.")
def serve(store, host, port, classifier, open_browser, max_upload_mb, max_pixels, device, allow_actions, api_docs,
          quarantine, trash, watch, settle):
    """Browse the store in a web page: search by dropping an image, click through
    neighbours, review near-duplicates; and a JSON API (described at /openapi.json).

    The page reads the store: `lookalike index` may add images meanwhile, and they
    show up without a restart. With --quarantine DIR or --trash, the Duplicates view
    can also resolve groups (pick the keeper, move the rest, journal first) and undo
    the last action; "not duplicates" and undo work without them. With --watch the
    server also keeps the store current (holding its write lock), so photos added to
    the folder show up in the page. Stop with Ctrl-C.
    """
    # A lone query's scan is shared by FAISS's OpenMP team, whose threads must sleep while they
    # wait, or a busy core makes them spin (ann.index.waits_passively); OpenMP reads this once, at start.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..featurize.options import EmbedOptions
    from ..serve import require_extra

    require_extra()
    from ..serve import Server, create_app
    from ..serve.guard import is_loopback

    options = EmbedOptions(device=device, max_pixels=max_pixels)
    opened = open_store_for(store, options=options)
    watcher = None
    if watch:
        from ..watch import Watcher

        watcher = Watcher(opened.root, store=opened.directory, settle=settle, options=options, on_pass=_said_pass)
    app = create_app(opened, display_path=shown, classifier=classifier, max_upload_bytes=int(max_upload_mb * 1e6),
                     allow_actions=allow_actions, api_docs=api_docs, quarantine=quarantine, trash=trash, watcher=watcher)
    server = Server(app, host, port)  # tells the app the address it is bound to
    if not is_loopback(server.address):
        click.secho(f"warning: listening on {host}: anyone who can reach this machine on the network can see "
                    f"every image in the store and search it; use --host 127.0.0.1 to keep it to this machine",
                    fg="yellow", err=True)
    click.echo(f"Serving {opened.directory} ({len(opened)} images) at {server.url}  (Ctrl-C stops)")
    if open_browser:
        import threading
        import webbrowser

        local = server.url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
        threading.Thread(target=webbrowser.open, args=(local,), daemon=True).start()  # a terminal browser may block
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with Ctrl-C ignored (some launchers do):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # uvicorn re-raises it on the way out, as it should
    try:
        server.run()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        sys.exit(EXIT_INTERRUPTED)  # Ctrl-C, as every command reports it; actions are journaled, the watcher stopped between batches


COMMANDS = (serve,)


def _said_pass(summary, first: bool) -> None:
    """One line for each pass of --watch that changed something, as `lookalike watch` says it."""
    if changed(summary):
        click.echo(f"watch: {pass_line(summary)}", err=True)
