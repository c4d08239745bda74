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


def _featurizer_options(default_model: str | None):
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


def _extractor_options(batch_size, workers, device, precision, max_pixels, compile_, gpu_decode) -> dict:
    return {"batch_size": batch_size, "num_workers": workers, "device": device, "precision": precision,
            "max_pixels": max_pixels, "compile": compile_, "jpeg_on_device": gpu_decode}


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the .npz: keys, vectors and the spec that made them.")
@_featurizer_options("efficientnet_lite0")
def embed(paths, output, model, layer, weights, **options):
    """Embed image files, and every image under folders, into one .npz file.

    Unreadable files are reported and skipped; they never stop the run.
    Load the result with numpy: keys, vectors (float32, L2-normalised), spec (JSON).
    """
    import numpy as np

    from .featurize import create_extractor

    files = _image_files(paths)
    if not files:
        raise click.ClickException(f"no image files under {', '.join(map(str, paths))}")
    _check_writable(output)  # before the long part, not after it
    extractor = create_extractor(model, layer=layer, weights=weights,
                                 **_extractor_options(**options))
    keys, vectors, failures = [], [], []
    start = time.perf_counter()
    with _progressbar(len(files), f"Embedding with {model}") as bar:
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


def _image_files(paths: tuple[Path, ...]) -> list[str]:
    from .featurize import IMAGE_EXTENSIONS
    from .index.discover import discover

    found = []
    for path in paths:
        found += [str(path)] if path.is_file() else [f.path for f in discover(path, IMAGE_EXTENSIONS)]
    return found


def _progressbar(length: int, label: str):
    return click.progressbar(length=length, label=label, show_eta=True, show_pos=True, file=sys.stderr)


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


def _store_option(command):
    return click.option(
        "--store", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="LOOKALIKE_STORE",
        help="The store folder [default: DIR/.lookalike for index; else found upward from here, like git].",
    )(command)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_store_option
@_featurizer_options(None)
@click.option("--reset", is_flag=True, help="Delete the store and index from scratch (e.g. to change model).")
@click.option("--index-factory", default=None, help="Force a FAISS index type, e.g. 'IVF1024,Flat' or 'HNSW32'.")
def index(folder, store, model, layer, weights, reset, index_factory, **options):
    """Index the images under FOLDER, so that `lookalike query` can search them.

    Only new or changed files (by size and modification time) go through the CNN;
    deleted ones are removed. Interrupt it at any moment: what was done is kept,
    and running it again resumes.
    """
    from .indexing import index_folder

    state = {}

    def on_start(total):
        state["bar"] = _progressbar(total, "Indexing").__enter__() if total else None
        state["start"], state["done"] = time.perf_counter(), 0

    def on_batch(done):
        state["done"] += done
        rate = state["done"] / max(time.perf_counter() - state["start"], 1e-9)
        state["bar"].label = f"Indexing ({rate:.1f} images/s)"
        state["bar"].update(done)

    try:
        summary = index_folder(
            folder, store=store, model=model, layer=layer, weights=weights, reset=reset, index_factory=index_factory,
            extractor_options=_extractor_options(**options),
            on_start=on_start, on_batch=on_batch,
        )
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: what was indexed is saved; run the same command again to resume") from None
    finally:
        if state.get("bar"):
            state["bar"].__exit__(None, None, None)
    rate = f", {summary.embedded / summary.seconds:.1f} images/s" if summary.embedded else ""
    click.echo(
        f"{summary.added} added, {summary.updated} updated, {summary.removed} removed, {summary.unchanged} unchanged, "
        f"{summary.failed} failed ({summary.embedded} embedded in {summary.seconds:.1f}s{rate}) -> {summary.store}"
    )
    if summary.failed:
        click.echo(f"{summary.failed} files could not be read: `lookalike failures` lists them with reasons", err=True)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="Neighbours per query image.")
@click.option("--threshold", type=click.FloatRange(-1, 1), default=None, help="Only neighbours at least this similar (cosine).")
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a self-contained contact sheet: each query and its neighbours as thumbnails.")
@_store_option
def query(images, k, threshold, fmt, html, store):
    """Find the stored images most like each of IMAGES.

    An image already in the store reuses its vector (and is left out of its own
    results); any other is embedded with the store's own model. Scores are cosine
    similarities (1 = identical).
    """
    opened = _open(store, near=images)
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise click.ClickException(f"cannot read query image {missing[0]}: no such file")
    # An indexed query image would find itself first: ask for one more and leave it out.
    ask = k + 1 if k < len(opened) else k
    found = opened.search([str(p) for p in images], k=ask)
    results = []
    for image, hits in zip(images, found):
        others = [h for h in hits if os.path.abspath(h.path) != os.path.abspath(image)][:k]
        results.append([h._replace(rank=rank) for rank, h in enumerate(others, 1)])
    if threshold is not None:
        results = [[h for h in hits if h.score >= threshold] for hits in results]
    rows = [(str(q), h) for q, hits in zip(images, results) for h in hits]
    if fmt == "json":
        click.echo(json.dumps([{"query": q, "rank": h.rank, "score": round(h.score, 6), "path": _shown(h.path)}
                               for q, h in rows], indent=2))
    elif fmt == "csv":
        _echo_csv(["query", "rank", "score", "path"], [(q, h.rank, f"{h.score:.6f}", _shown(h.path)) for q, h in rows])
    else:
        for q, hits in zip(images, results):
            click.echo(f"{q}")
            for h in hits:
                click.echo(f"  {h.rank:>3}  {h.score:.4f}  {_shown(h.path)}")
            if not hits:
                click.echo("  (no neighbour above the threshold)")
    if html:
        from .contact_sheet import query_sheet

        _write_text(html, query_sheet([(str(q), hits) for q, hits in zip(images, results)]))
        click.echo(f"contact sheet -> {html}", err=True)


def _shown(path: str) -> str:
    """A path as the user would type it: relative to here when inside here."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _echo_csv(header, rows) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    click.echo(buffer.getvalue(), nl=False)


def _write_text(path: Path, text: str) -> None:
    from .atomic import write_atomically

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text.encode("utf-8"))
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror or e}") from e


def _open(store, near=()):
    """The store named, else the one found upward from here, else upward from the first query image."""
    from .errors import StoreNotFoundError
    from .indexing import open_store

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


@main.command()
@click.option("--threshold", type=click.FloatRange(-1, 1, min_open=True), default=0.95, show_default=True,
              help="Least cosine similarity that makes two images duplicates.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=2), help="Neighbours looked at per image.")
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a contact sheet.")
@_store_option
def dupes(threshold, k, fmt, html, store):
    """Find groups of near-duplicate images in the store.

    Two images are linked when their cosine similarity reaches the threshold;
    groups are the connected clusters. Memory stays bounded by the store size
    (a k-nearest-neighbour graph, never an all-pairs matrix).
    """
    from .index.dupes import duplicate_groups

    opened = _open(store)
    ids, keys, vectors = opened.vectors()
    index = opened.current_index()
    with _progressbar(len(ids), "Comparing") as bar:
        done = {"rows": 0}

        def progress(rows):
            bar.update(rows - done["rows"])
            done["rows"] = rows

        groups = duplicate_groups(vectors, ids, lambda q, n: index.search(q, min(n, index.ntotal)),
                                  threshold=threshold, k=min(k, max(len(ids), 2)), progress=progress)
    root = opened.root  # a property that resolves the path: once, not per key
    path_of = dict(zip(ids.tolist(), (str(root / key) for key in keys)))
    named = [[(path_of[i], score) for i, score in zip(g.ids, g.scores)] for g in groups]
    if fmt == "json":
        click.echo(json.dumps([[{"path": _shown(p), "score": round(s, 6)} for p, s in g] for g in named], indent=2))
    elif fmt == "csv":
        _echo_csv(["group", "path", "score"], [(n, _shown(p), f"{s:.6f}") for n, g in enumerate(named, 1) for p, s in g])
    else:
        for number, group in enumerate(named, 1):
            click.echo(f"group {number} ({len(group)} images)")
            for path, score in group:
                click.echo(f"  {score:.4f}  {_shown(path)}")
        click.echo(f"{len(named)} groups of near-duplicates at threshold {threshold}", err=True)
    if html:
        from .contact_sheet import groups_sheet

        _write_text(html, groups_sheet(named))
        click.echo(f"contact sheet -> {html}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_store_option
def info(as_json, store):
    """Describe the store: model, counts, index type and sizes on disk."""
    details = _open(store).info()
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    spec = details["spec"]
    click.echo(f"store:     {details['store']}\nroot:      {details['root']}")
    click.echo(f"model:     {spec['model']} (layer {spec['layer']}, {spec['dim']}-d, weights {spec['weights_sha256'][:12]})")
    click.echo(f"images:    {details['embedded']} embedded, {details['failed']} failed")
    click.echo(f"index:     {details['index_factory'] or 'not built yet'}")
    click.echo("on disk:   " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in details["bytes"].items()))


@main.command()
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")
@_store_option
def failures(fmt, store):
    """List the files that could not be indexed, with the reason for each."""
    opened = _open(store)
    root = opened.root
    rows = [(_shown(str(root / r.path)), r.reason) for r in opened.failures()]
    if fmt == "json":
        click.echo(json.dumps([{"path": p, "reason": reason} for p, reason in rows], indent=2))
    elif fmt == "csv":
        _echo_csv(["path", "reason"], rows)
    else:
        for path, reason in rows:
            click.echo(f"{path}: {reason}")
        click.echo(f"{len(rows)} files failed", err=True)


@main.command()
@_store_option
def check(store):
    """Verify that catalog, vectors and index agree; rebuild the index from the vectors if not."""
    opened = _open(store)
    with opened.writer(sync=False):  # no writer may change the store while it is checked
        problems = opened.check()
    if not problems:
        click.echo(f"consistent: {len(opened)} vectors, catalog, vectors and index agree")
        return
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    opened.repair()
    remaining = opened.check()
    if remaining:
        raise click.ClickException(f"still inconsistent after rebuilding the index ({remaining[0]}): re-index with --reset")
    click.echo(f"repaired: rebuilt the index from {len(opened)} stored vectors")


@main.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["npy", "parquet"]), default="npy", show_default=True,
              help="npy: OUTPUT (vectors, float32) and OUTPUT.paths.json; parquet: one table of path and vector.")
@_store_option
def export(output, fmt, store):
    """Write every stored vector with its path, for use in other tools."""
    import numpy as np

    opened = _open(store)
    _, keys, vectors = opened.vectors()
    root = opened.root
    paths = [str(root / key) for key in keys]
    _check_writable(output)
    chunk = 65536  # rows at a time: a million vectors never sit in memory at once
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise click.ClickException("parquet export needs pyarrow: pip install pyarrow") from None
        schema = pa.schema([("path", pa.string()), ("vector", pa.list_(pa.float32(), opened.dim))])
        with pq.ParquetWriter(output, schema) as writer:
            for start in range(0, len(paths), chunk):
                rows = vectors[start : start + chunk]
                column = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), opened.dim)
                writer.write_table(pa.table({"path": paths[start : start + chunk], "vector": column}, schema=schema))
    else:
        out = np.lib.format.open_memmap(output, mode="w+", dtype=np.float32, shape=(len(paths), opened.dim))
        for start in range(0, len(paths), chunk):
            out[start : start + chunk] = vectors[start : start + chunk]
        out.flush()
        del out
        _write_text(output.with_name(output.name + ".paths.json"), json.dumps(paths))
    click.echo(f"{len(paths)} vectors -> {output}")


def _register_classifier_commands() -> None:
    from .cli_classify import evaluate, predict, train

    for command in (train, predict, evaluate):
        main.add_command(command)


_register_classifier_commands()
