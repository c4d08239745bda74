"""The Ray engine's indexing run: plan on the driver, embed on a cluster, commit shard by shard.

    driver  prepare_run (the local engine's plan: new, changed and failed files; removals)
    Ray     from_items(file rows) -> EmbedActor actors (extractor built once per actor, from the
            store's spec) -> write_shard_batch tasks (one durable shards/<name>.f32 per batch)
    driver  iter_batches over the metadata; once all rows of a batch have arrived, one catalog
            transaction commits the shard and its files (StoreWriter.commit_shard)
    then    the index from the shards, built by Ray tasks and merged on disk (``build``)

A killed run, driver included, leaves at most the shards in flight, never committed: the next
writer deletes them as orphans, and the rerun's plan skips every committed file. Actors get a
fraction of a node's CPUs so that writer tasks keep room (with whole CPUs on a 2-CPU node
Ray Data starves its other operators and hangs; the no-progress timeout turns that into an error).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from ..errors import LookalikeError, first_line
from ..featurize.options import EmbedOptions
from ..planning import (
    IndexRun,
    IndexSummary,
    prepare_run,
    record_facts,
    record_unreadable,
)
from .build import ray_map_parts
from .session import NO_PROGRESS_TIMEOUT_S, connect
from .tasks import EmbedActor, write_shard_batch

logger = logging.getLogger(__name__)

WRITE_CPUS = 0.1
# The EmbedOptions fields the embedding actors honour: each actor builds its extractor with them.
# ``workers`` is not among them: an actor decodes its own files in its own process (Ray decides
# how many actors run, see ``actor_resources``), so asking for decoding workers is refused.
ACTOR_FIELDS = ("device", "batch_size", "threads", "precision", "runtime", "max_pixels", "compile", "gpu_decode",
                "forward_batch")
SHARD_BYTES = 256 << 20  # a shard file at most: 52,428 rows of 1280-d



def index_with_ray(root: str | os.PathLike, *, store: str | os.PathLike | None = None, ray_address: str | None = None,
                   actors: int | None = None, rows_per_shard: int | None = None,
                   no_progress_timeout_s: float = NO_PROGRESS_TIMEOUT_S,
                   on_start: Callable[[int], None] | None = None, on_batch: Callable[[int], None] | None = None,
                   on_commit: Callable[[dict], None] | None = None, index_factory: str | None = None,
                   options: EmbedOptions | None = None, **plan_options) -> IndexSummary:
    """Index the images under ``root`` on a Ray cluster, into a store on storage every node sees.

    Args:
        root: the folder (every node must see it at the same path).
        store: the store folder (default ``root/.lookalike``), on shared storage too.
        ray_address: see ``session.connect``.
        actors: embedding actors (default: one per GPU, else one per node).
        rows_per_shard: files per shard file (default from the run's size and the actors).
        no_progress_timeout_s: a stalled pipeline fails after this long instead of hanging.
        on_start, on_batch: as ``index_folder``: the planned count, then each committed batch.
        on_commit: told each committed batch's metadata (keys, embed_node, embed_pid, embed_runtime...).
        options: as ``index_folder``; the actors honour every field in ``ACTOR_FIELDS``.
        index_factory, plan_options: as ``index_folder`` (model, layer, weights, reset, retry_failed, only).

    Returns:
        The same ``IndexSummary`` as ``index_folder``.

    Raises:
        MissingDependencyError: Ray is not installed.
        LookalikeError: an option the actors cannot honour (``workers``).
        LookalikeError: as ``index_folder``, or Ray failed (the committed shards are kept).
    """
    started = time.perf_counter()
    options = actor_options(options)
    run = prepare_run(root, store=store, index_factory=index_factory, options=options, **plan_options)
    if on_start:
        on_start(len(run.todo))
    # Nothing to embed or remove: no cluster is needed (a rerun with nothing new takes no Ray start-up);
    # an index still to build is then built here, on disk, as Ray tasks would build it.
    needs_ray = bool(run.todo or run.removed)
    session = connect(ray_address, no_progress_timeout_s=no_progress_timeout_s) if needs_ray else nullcontext()
    with session as ray, run.store.writer(map_parts=ray_map_parts if needs_ray else map) as writer:
        writer.use_factory(index_factory)
        writer.use_model_file(run.model_file)
        writer.move(run.moved)
        writer.remove(run.removed)
        record_unreadable(writer, run)
        record_facts(writer, run)
        if run.todo:
            _embed(ray, run, writer, options, actors, rows_per_shard, on_batch, on_commit)
            writer.remove_orphans()  # a retried writer task's first attempt
    run.summary.seconds = time.perf_counter() - started
    return run.summary


def actor_options(options: EmbedOptions | None) -> EmbedOptions:
    """The options the actors run with (decoding in the actor); a field they cannot honour is an error.

    Raises:
        LookalikeError: ``workers`` was set.
    """
    options = options or EmbedOptions()
    refused = sorted(set(options.changed()) - set(ACTOR_FIELDS))
    if refused:
        raise LookalikeError(f"--engine ray does not take {', '.join('--' + f.replace('_', '-') for f in refused)}: "
                             f"each Ray actor decodes its own files; drop it, or use --engine local")
    return options.replace(workers=0)


def _embed(ray, run: IndexRun, writer, options: EmbedOptions, actors, rows_per_shard, on_batch, on_commit) -> None:
    """Run the Dataset and commit each batch's shard as its metadata arrives; nothing but metadata comes back."""
    resources = actor_resources(ray, actors)
    embed_batch = options.batch_size
    per_shard = rows_per_shard or _rows_per_shard(len(run.todo), resources["actors"], run.store.dim, embed_batch)
    embed_batch = min(embed_batch, per_shard)
    dataset = _dataset(ray, run, options, resources, per_shard, embed_batch)
    pending: dict[str, list[dict]] = defaultdict(list)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["key"])):
                row = {name: batch[name][i] for name in batch}
                rows = pending[row["batch_id"]]
                rows.append(row)
                if len(rows) == row["batch_rows"]:
                    _commit(writer, pending.pop(row["batch_id"]), run.summary, on_batch, on_commit)
    except Exception as e:
        if isinstance(e, LookalikeError):
            raise
        done = run.summary.embedded + run.summary.failed
        raise LookalikeError(f"the Ray run stopped ({type(e).__name__}: {first_line(e)}). The {done} files "
                             f"committed are kept: run the same command again to resume") from e
    if pending:
        raise LookalikeError(f"{len(pending)} batches came back incomplete from Ray: run the same command again")


def _dataset(ray, run: IndexRun, options: EmbedOptions, resources: dict, per_shard: int, embed_batch: int):
    rows = [{"key": f.key, "path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "ctime_ns": f.ctime_ns,
             "mode": f.mode} for f in run.todo]
    blocks = min(len(rows), max(2 * resources["actors"], math.ceil(len(rows) / embed_batch)))
    manifest = run.store.manifest
    return (ray.data.from_items(rows, override_num_blocks=blocks)
            .map_batches(EmbedActor, batch_size=embed_batch, batch_format="numpy",
                         # all actors from the start; down to one if a node is lost and can't be replaced
                         compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources["actors"],
                                                            initial_size=resources["actors"]),
                         num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"],
                         fn_constructor_kwargs={"spec": manifest.spec, "weights": manifest.weights,
                                                "model_file": manifest.model_file, "options": options})
            .map_batches(write_shard_batch, batch_size=per_shard, batch_format="numpy", num_cpus=WRITE_CPUS,
                         fn_kwargs={"store": os.fspath(Path(run.store.directory).resolve())}))


def _commit(writer, rows: list[dict], summary: IndexSummary, on_batch, on_commit) -> None:
    """One transaction: the batch's shard and every file of the batch, embedded or failed."""
    def stat(r):
        return (str(r["key"]), int(r["size"]), int(r["mtime_ns"]), int(r["ctime_ns"]), int(r["mode"]))

    embedded = [(*stat(r), int(r["row"])) for r in rows if r["reason"] == ""]
    failed = [(*stat(r), str(r["reason"])) for r in rows if r["reason"] != ""]
    writer.commit_shard(str(rows[0]["shard"]), embedded, failed)
    summary.embedded += len(embedded)
    summary.failed += len(failed)
    if on_batch:
        on_batch(len(rows))
    if on_commit:
        on_commit({name: [r[name] for r in rows]
                   for name in ("key", "reason", "embed_node", "embed_pid", "embed_runtime", "shard")})


def actor_resources(ray, actors: int | None = None) -> dict:
    """How many embedding actors, and what each asks for: one per GPU, else one per node.

    On CPU an actor takes ``cpus - max(0.4, cpus / 4)`` of the smallest node's CPUs: more than
    half a node, so two never share one, and never all of it, so writer tasks keep room.
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = sum(int(n["Resources"].get("GPU", 0)) for n in nodes)
    if gpus:
        return {"actors": actors or gpus, "num_gpus": 1, "num_cpus": 1}
    cpus = min((n["Resources"].get("CPU", 1) for n in nodes), default=1)
    return {"actors": actors or max(1, len(nodes)), "num_gpus": 0, "num_cpus": round(cpus - max(0.4, cpus / 4), 2)}


def _rows_per_shard(total: int, actors: int, dim: int, batch: int) -> int:
    """About a quarter of an actor's share, so the bar moves and a crash loses little; at most ``SHARD_BYTES``.

    That makes at most ``4 * actors`` shards a run until shards reach their size cap (1B images at
    1280-d: about 19k files of 256 MiB).
    """
    return int(max(1, min(max(total // (4 * actors), batch), SHARD_BYTES // (4 * dim))))
