"""What runs on Ray workers: the embedding actor and the shard-writing task.

Workers import only featurize's public API and ``store.shards``, never cli/ or click. Rows
travel as numpy batches of file metadata; only the actor's output carries vectors, and the
writer turns them into a durable shard file and hands back metadata alone, so that vectors
never pass through the driver.
"""

from __future__ import annotations

import os
import uuid

import numpy as np

FILE_COLUMNS = ("key", "path", "size", "mtime_ns", "ctime_ns", "mode")


class EmbedActor:
    """A Ray Data actor: builds the extractor once, from the store's spec, and embeds batches of files.

    It calls ``Extractor.embed_paths`` (decoding in the actor, ``workers=0``), so every vector
    and every failure reason is the local engine's, by construction. Failed files pass through
    with their reason and a zero vector.
    """

    def __init__(self, spec: dict, weights: str | None, model_file: str | None, options):
        import ray

        from ..featurize import extractor_for_spec

        self.extractor = extractor_for_spec(spec, weights=weights, model_file=model_file, options=options.replace(workers=0))
        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        position = {p: i for i, p in enumerate(paths)}
        vectors = np.zeros((len(paths), self.extractor.dim), dtype=np.float32)
        reasons = [""] * len(paths)
        for done in self.extractor.embed_paths(paths):
            if done.keys:
                vectors[[position[k] for k in done.keys]] = done.vectors
            for failure in done.failures:
                reasons[position[failure.key]] = failure.reason
        out = {name: batch[name] for name in FILE_COLUMNS}
        out.update(vector=vectors, reason=np.array(reasons, dtype=object),
                   embed_node=np.array([self.node] * len(paths), dtype=object),
                   embed_pid=np.full(len(paths), self.pid, dtype=np.int64),
                   embed_runtime=np.array([self.extractor.runtime] * len(paths), dtype=object))
        return out


def write_shard_batch(batch: dict, store: str) -> dict:
    """A Ray task: the embedded rows of one batch become one durable shard file; returns metadata only.

    Every row returned carries the batch's id and size, so the driver commits a batch once all
    its rows have arrived; ``shard`` is "" when no row of the batch was embedded.
    """
    from ..store.shards import write_shard_file

    ok = np.array([r == "" for r in batch["reason"]], dtype=bool)
    shard = write_shard_file(store, batch["vector"][ok]) if ok.any() else ""
    n = len(ok)
    rows = np.full(n, -1, dtype=np.int64)
    rows[ok] = np.arange(int(ok.sum()))
    out = {name: batch[name] for name in FILE_COLUMNS if name != "path"}
    out.update(reason=batch["reason"], shard=np.array([shard] * n, dtype=object), row=rows,
               batch_id=np.array([shard or uuid.uuid4().hex] * n, dtype=object), batch_rows=np.full(n, n),
               embed_node=batch["embed_node"], embed_pid=batch["embed_pid"], embed_runtime=batch["embed_runtime"])
    return out
