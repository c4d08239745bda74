"""Ray fixtures for the scale tests: private, short temp dirs; nothing left running; nothing skipped.

Ray is imported plainly: without the extra the tests fail. Every instance gets a short private
``RAY_TMPDIR`` (Ray's socket paths must stay under 108 bytes, so pytest's tmp_path is too long)
and ``address="local"``, so no test joins a cluster someone else started on the machine.
Teardown waits for the processes carrying that ``RAY_TMPDIR`` and fails the test if any had to
be killed, after killing them (by pid, never by name).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from lookalike.scale.session import reap

REPO = str(Path(__file__).resolve().parent.parent)
# Workers are separate processes: what tests patch in them (conftest's unreadable_as_root, the pause gate) is installed in each.
RUNTIME_ENV = {"worker_process_setup_hook": "tests.ray_helpers.worker_setup", "env_vars": {"PYTHONPATH": REPO}}
NO_PROGRESS_S = 180  # generous: on 2 busy cores a second node's actors take a minute to import torch
PAUSE_GATE = "pause-embedder"  # in $RAY_TMPDIR: holds N; each actor's Nth batch then waits there
_real_open = builtins.open


def worker_setup() -> None:
    unreadable_as_root()
    pause_gate()


def pause_gate() -> None:
    """Let a test stop an embedding actor inside its Nth batch, to kill it at that exact point.

    While ``$RAY_TMPDIR/pause-embedder`` exists and holds N, an actor that has embedded its Nth
    batch writes ``paused-<pid>`` beside it and waits (at most 2 minutes) for the gate to go,
    before returning that batch: a kill there lands mid-run with that batch in flight.
    """
    from lookalike.scale import tasks

    gate = Path(os.environ["RAY_TMPDIR"]) / PAUSE_GATE
    embed = tasks.EmbedActor.__call__
    calls = []

    def gated(self, batch):
        out = embed(self, batch)
        calls.append(1)
        with contextlib.suppress(OSError, ValueError):
            if len(calls) == int(gate.read_text()):
                (gate.parent / f"paused-{os.getpid()}").write_text("")
                deadline = time.monotonic() + 120
                while gate.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
        return out

    tasks.EmbedActor.__call__ = gated


def unreadable_as_root() -> None:
    """What conftest's ``unreadable_as_root`` fixture does, as a Ray worker setup hook."""
    if os.geteuid() != 0:
        return

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).endswith("unreadable.jpg"):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return _real_open(file, *args, **kwargs)

    builtins.open = guarded


@pytest.fixture(scope="module")
def ray_temp():
    temp = tempfile.mkdtemp(prefix="lkt_", dir="/tmp")
    os.makedirs(os.path.join(temp, "ray"))  # where Cluster writes ray_current_cluster: never /tmp/ray
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ADDRESS")}
    os.environ["RAY_TMPDIR"] = temp
    os.environ.pop("RAY_ADDRESS", None)
    yield temp
    killed = reap(temp)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(temp, ignore_errors=True)
    assert not killed, f"Ray processes outlived their test and were killed: {killed}"


@pytest.fixture(scope="module")
def local_ray(ray_temp):
    import ray

    ray.init(address="local", num_cpus=2, _temp_dir=os.path.join(ray_temp, "ray"), include_dashboard=False,
             log_to_driver=False, configure_logging=False, runtime_env=RUNTIME_ENV)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(ray_temp):
    """Two 1-CPU nodes on this machine; an embedding actor takes 0.6 CPU, so one runs on each."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "temp_dir": os.path.join(ray_temp, "ray"), "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes(timeout=120)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False, runtime_env=RUNTIME_ENV)
    yield ray, cluster
    ray.shutdown()
    cluster.shutdown()


def store_contents(store_dir) -> tuple[dict, dict]:
    """({key: vector}, {key: reason}) of a store."""
    from lookalike.store.store import Store

    store = Store.open(store_dir)
    return {store.relative(p): v for p, v in store}, {r.path: r.reason for r in store.failures()}


def assert_same_as_local(local_dir, ray_dir) -> None:
    """Same embedded paths, same failures with the same reasons, vectors with cosine >= 0.9999."""
    local_vectors, local_failures = store_contents(local_dir)
    ray_vectors, ray_failures = store_contents(ray_dir)
    assert sorted(ray_vectors) == sorted(local_vectors) and local_vectors
    assert ray_failures == local_failures and local_failures
    cosines = [float(local_vectors[k] @ ray_vectors[k]) for k in local_vectors]
    assert min(cosines) >= 0.9999, min(cosines)


def shard_rows(store_dir) -> int:
    from lookalike.store.store import Store

    with Store.open(store_dir).catalog() as catalog:
        return sum(s.rows for s in catalog.shards())


def make_photo_folder(root: Path, n: int) -> Path:
    """``n`` small distinct JPEGs cut from real photos (enough to spread over several shards)."""
    from conftest import photo

    root.mkdir(parents=True, exist_ok=True)
    names = ("chelsea", "coffee", "astronaut", "rocket", "coins", "camera")
    for i in range(n):
        image = photo(names[i % len(names)]).convert("RGB")
        w, h = image.size
        box = (i * 7 % (w // 3), i * 5 % (h // 3), w - i * 3 % (w // 4), h - i * 11 % (h // 4))
        image.crop(box).resize((96, 96)).save(root / f"p{i:03d}.jpg", quality=90)
    return root
