"""The index from shards with Ray tasks: ``store.ondisk`` plans the parts, Ray runs them.

``store.ondisk.build_ondisk`` takes a ``map_parts(add_part, jobs)``: locally the built-in
``map``; here one Ray task per part, each reading its shards by path from the shared store and
writing its part file there, so no vector passes through the driver. Training stays on the
driver (one node, as the issue asks); the merge is sequential I/O over the part files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

ADD_CPUS = 1  # faiss's add is multi-threaded over a part's chunks; one logical CPU a task


def ray_map_parts(add_part: Callable, jobs: Sequence) -> list:
    """Run ``add_part(job)`` for every job as Ray tasks, results in job order (used inside ``session.connect``)."""
    import ray

    if not jobs:
        return []
    remote = ray.remote(num_cpus=ADD_CPUS, max_retries=2)(add_part)
    return ray.get([remote.remote(job) for job in jobs])
