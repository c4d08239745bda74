"""The store commands: index, query, dupes, info, failures, check, export."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..store.layout import STORE_DIRNAME
from .options import (
    Interrupted,
    chosen_format,
    counted,
    echo_csv,
    embed_options,
    engine_options,
    featurizer_options,
    format_options,
    open_store_for,
    progressbar,
    shown,
    store_option,
    write_text,
)

EXIT_TRANSIENT = 75  # sysexits.h EX_TEMPFAIL: try again later


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@store_option
@featurizer_options(None)
@click.option("--reset", is_flag=True, help="Delete the store and index from scratch (e.g. to change model).")
@click.option("--index-factory", default=None, help="Force a FAISS index type, e.g. 'IVF1024,Flat' or 'HNSW32'.")
@click.option("--retry-failed", is_flag=True,
              help="Try again every file that failed before, changed or not (changed ones always are).")
@engine_options
def index(folder, store, model, layer, weights, reset, index_factory, retry_failed, engine, ray_address, **options):
    """Index the images under FOLDER, so that `lookalike query` can search them.

    Only new or changed files (by size and modification time) go through the CNN;
    deleted ones are removed. A file that failed is tried again once it changes
    (size, modification time, or its permissions: ctime and mode), or with
    --retry-failed. Interrupt it at any moment, or kill it: what was done is kept,
    and running it again resumes. A transient error (out of memory, an I/O error)
    stops it with exit code 75, recording nothing against any file. It ends by
    saying which image files it did not read, by type (RAW files need the `raw`
    extra); a RAW file beside a JPEG of the same name is read through the JPEG.
    """
    from ..errors import TransientError
    from ..indexing import index_folder

    if engine == "ray":
        index_folder = _ray_engine(ray_address)
    state = {}

    def on_start(total):
        state["bar"] = progressbar(total, "Indexing").__enter__() if total else None
        state["start"], state["done"] = time.perf_counter(), 0

    def on_batch(done):
        state["done"] += done
        rate = state["done"] / max(time.perf_counter() - state["start"], 1e-9)
        state["bar"].label = f"Indexing ({rate:.1f} images/s)"
        state["bar"].update(done)

    try:
        summary = index_folder(
            folder, store=store, model=model, layer=layer, weights=weights, reset=reset, index_factory=index_factory,
            retry_failed=retry_failed, options=embed_options(**options),
            on_start=on_start, on_batch=on_batch,
        )
    except KeyboardInterrupt:
        kept = _kept(store or folder / STORE_DIRNAME)
        raise Interrupted(f"interrupted: {kept}; run the same command again to resume") from None
    except TransientError as e:
        error = click.ClickException(str(e))
        error.exit_code = EXIT_TRANSIENT
        raise error from None
    finally:
        if state.get("bar"):
            state["bar"].__exit__(None, None, None)
    embedding = summary.embed_seconds or summary.seconds  # the Ray engine times its run as a whole
    rate = f", {summary.embedded / embedding:.1f} images/s" if summary.embedded and embedding else ""
    setup = f"; {summary.seconds:.1f}s in all" if summary.seconds - embedding >= 1 else ""  # a first export, say
    retried = f"{summary.retried} retried, " if summary.retried else ""
    retried = (f"{summary.moved} moved, " if summary.moved else "") + retried
    click.echo(
        f"{summary.added} added, {summary.updated} updated, {summary.removed} removed, {summary.unchanged} unchanged, "
        f"{retried}{summary.failed} failed ({summary.embedded} embedded in {embedding:.1f}s{rate}{setup}) -> {summary.store}"
    )
    if summary.failed:
        click.echo(f"{summary.failed} files could not be read: `lookalike failures` lists them with reasons", err=True)
    for line in _scan_lines(summary.skipped, summary.sidecars):
        click.echo(line, err=True)


def _scan_lines(skipped: dict[str, int], sidecars: int) -> list[str]:
    """What an indexing run left, in words: files of types not read (with what to install), RAW files read as JPEGs."""
    from ..featurize.images.formats import missing_install

    lines = []
    if skipped:
        counts = ", ".join(f"{extension} {count}" for extension, count in skipped.items())
        hints = dict.fromkeys(f"{install} for {kind}" for kind, install in filter(None, map(missing_install, skipped)))
        lines.append(f"skipped {counted(sum(skipped.values()), 'file')} of types not read: {counts}"
                     + "".join(f": {hint}" for hint in hints))
    if sidecars:
        lines.append(f"{counted(sidecars, 'RAW file')} read through the JPEG of the same name beside "
                     f"{'it' if sidecars == 1 else 'them'} (a query of the RAW file answers for its JPEG)")
    return lines


def _kept(store) -> str:
    """What an interrupted index left in the store, read from the store itself."""
    from ..store.layout import store_folder
    from ..store.store import Store

    try:
        with Store.open(store_folder(store)).catalog() as catalog:
            embedded, failed = catalog.count("ok"), catalog.count("failed")
    except Exception:  # noqa: BLE001 - no store yet, or one being made: nothing in it counts
        return "nothing was saved"
    return f"the store keeps every batch committed so far: {embedded} images embedded, {failed} failed"


def _ray_engine(address):
    """``index_with_ray`` bound to ``address``, called like ``index_folder``; a one-line error without Ray."""
    from ..errors import MissingDependencyError

    try:
        from ..scale import index_with_ray, require_ray

        require_ray()
    except MissingDependencyError as e:
        raise click.ClickException(str(e)) from None
    return lambda *args, **kwargs: index_with_ray(*args, ray_address=address, **kwargs)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="Neighbours per query image.")
@click.option("--threshold", type=click.FloatRange(-1, 1), default=None, help="Only neighbours at least this similar (cosine).")
@format_options
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a self-contained contact sheet: each query and its neighbours as thumbnails.")
@store_option
def query(images, k, threshold, as_json, as_csv, html, store):
    """Find the stored images most like each of IMAGES.

    An image already in the store reuses its vector (and is left out of its own
    results); any other is embedded with the store's own model. Scores are cosine
    similarities (1 = identical).
    """
    fmt = chosen_format(as_json, as_csv)
    opened = open_store_for(store, near=images)
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise click.ClickException(f"cannot read query image {missing[0]}: no such file")
    results = opened.similar_many([str(p) for p in images], k=k, threshold=threshold)
    rows = [(str(q), h) for q, hits in zip(images, results) for h in hits]
    if fmt == "json":
        click.echo(json.dumps([{"query": q, "rank": h.rank, "score": round(h.score, 6), "path": shown(h.path)}
                               for q, h in rows], indent=2))
    elif fmt == "csv":
        echo_csv(["query", "rank", "score", "path"], [(q, h.rank, f"{h.score:.6f}", shown(h.path)) for q, h in rows])
    else:
        for q, hits in zip(images, results):
            click.echo(f"{q}")
            for h in hits:
                click.echo(f"  {h.rank:>3}  {h.score:.4f}  {shown(h.path)}")
            if not hits:
                click.echo("  (no neighbour above the threshold)")
    if html:
        from .contact_sheet import query_sheet

        write_text(html, query_sheet([(str(q), hits) for q, hits in zip(images, results)]))
        click.echo(f"contact sheet -> {html}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def info(as_json, store):
    """Describe the store: model, counts, index, sizes on disk, files skipped.

    "last index" says which image files the last `lookalike index` did not read, by type.
    """
    details = open_store_for(store).info()
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    spec = details["spec"]
    click.echo(f"store:     {details['store']}\nroot:      {details['root']}")
    click.echo(f"model:     {spec['model']} (layer {spec['layer']}, {spec['dim']}-d, weights {spec['weights_sha256'][:12]})")
    click.echo(f"images:    {details['embedded']} embedded, {details['failed']} failed")
    click.echo(f"index:     {details['index_factory'] or 'not built yet'}")
    click.echo("on disk:   " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in details["bytes"].items()))
    scanned = details["last_index"]
    lines = _scan_lines(scanned.get("skipped", {}), scanned.get("sidecars", 0)) if scanned else []
    click.echo("last index: " + ("; ".join(lines) if lines else "read every image file it found" if scanned else
                                 "nothing recorded of what it skipped (indexed before lookalike kept it, or with Ray)"))


@click.command()
@format_options
@store_option
def failures(as_json, as_csv, store):
    """List the files that could not be indexed: the reason for each, and when it was recorded.

    A failed file is tried again when it changes (size, modification time, permissions),
    or by `lookalike index --retry-failed`.
    """
    fmt = chosen_format(as_json, as_csv)
    opened = open_store_for(store)
    root = opened.root
    rows = [(shown(str(root / r.path)) + ("/" if r.path.endswith("/") else ""), r) for r in opened.failures()]
    if fmt == "json":
        click.echo(json.dumps([{"path": p, "reason": r.reason, "recorded": r.recorded_utc} for p, r in rows], indent=2))
    elif fmt == "csv":
        echo_csv(["path", "reason", "recorded"], [(p, r.reason, r.recorded_utc or "") for p, r in rows])
    else:
        for path, r in rows:
            local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.recorded)) if r.recorded is not None else "before format 2"
            click.echo(f"{path}: {r.reason}  [recorded {local}]")
        click.echo(f"{len(rows)} files failed", err=True)


@click.command()
@store_option
def check(store):
    """Verify that catalog, vectors and index agree; rebuild the index from the vectors if not.

    An index behind the catalog (after an interrupted or killed run) is brought up to date.
    """
    opened = open_store_for(store)
    report = opened.check(repair=True)
    if not report.problems:
        if report.caught_up:
            written, generation = report.caught_up
            how = "rebuilt" if report.rebuilt else f"brought up to date (it reflected generation {written} of {generation})"
            click.echo(f"consistent: {report.vectors} vectors, catalog and vectors agree; the index was {how}")
        else:
            click.echo(f"consistent: {report.vectors} vectors, catalog, vectors and index agree")
        return
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if report.remaining:
        raise click.ClickException(f"still inconsistent after rebuilding the index ({report.remaining[0]}): "
                                   f"re-index with --reset")
    click.echo(f"repaired: rebuilt the index from {report.vectors} stored vectors")


@click.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["npy", "parquet"]), default="npy", show_default=True,
              help="npy: OUTPUT (vectors, float32) and OUTPUT.paths.json; parquet: one table of path and vector.")
@store_option
def export(output, fmt, store):
    """Write every stored vector with its path, for use in other tools."""
    count = open_store_for(store).export(output, fmt)
    click.echo(f"{count} vectors -> {output}")


COMMANDS = (index, query, info, failures, check, export)
