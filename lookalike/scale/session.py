"""A Ray connection for one run: join a cluster or start a private local instance, and clean up after.

A local instance started here gets a short private temp dir (Ray's AF_UNIX socket paths must
stay under 108 bytes, and ``/tmp/ray`` belongs to whoever else runs Ray on the machine) that
is also put in ``RAY_TMPDIR``: every process of the instance inherits it, which is how the
stragglers (actors busy in a forward pass can outlive ``ray.shutdown()`` by a minute) are found
and ended afterwards, by pid, never by name. A cluster that was only joined is left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator

from ..errors import LookalikeError, MissingDependencyError, TransientError

logger = logging.getLogger(__name__)

RAY_HINT = "pip install 'lookalike[ray]'"
# Ray's default is 30 minutes; a stalled pipeline (a dead node, actors taking every CPU) should say so sooner.
NO_PROGRESS_TIMEOUT_S = 600
REAP_GRACE_S = 10.0


def require_ray():
    """The ``ray`` module with Ray Data, or an error naming the command that installs it.

    Raises:
        MissingDependencyError: Ray or Ray Data's dependencies are missing.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(f"--engine ray needs Ray Data: {RAY_HINT}") from None
    return ray


@contextlib.contextmanager
def connect(address: str | None = None, *, num_cpus: float | None = None,
            no_progress_timeout_s: float = NO_PROGRESS_TIMEOUT_S) -> Iterator[object]:
    """Connect to Ray for one run; yields the ``ray`` module.

    Args:
        address: None: ``$RAY_ADDRESS``, else the cluster ``ray start`` recorded on this machine,
            else a new private local instance; ``"auto"``: that cluster, or an error;
            ``"local"``: always a new local instance; ``"HOST:PORT"``: that cluster.
            A process already connected (a notebook) keeps its connection, and it is never shut down.
        num_cpus: CPUs of a local instance started here (default: all).
        no_progress_timeout_s: a pipeline that makes no progress this long fails instead of hanging.

    Raises:
        MissingDependencyError: Ray is not installed.
        LookalikeError: no cluster at ``address``.
    """
    ray = require_ray()
    with contextlib.ExitStack() as stack:
        if not ray.is_initialized():
            kwargs = {"log_to_driver": False, "configure_logging": False}
            if address == "local" or (address is None and not _existing_cluster()):
                temp = stack.enter_context(private_temp_dir("lkr-"))
                kwargs.update(address="local", _temp_dir=temp, include_dashboard=False, num_cpus=num_cpus)
            else:
                kwargs["address"] = address or "auto"
            try:
                ray.init(**kwargs)
            except ConnectionError as e:
                raise LookalikeError(f"no Ray cluster at {kwargs['address']} ({e}): start one with `ray start --head`, "
                                     f"or pass --ray-address local") from None
            if kwargs["address"] == "local":
                stack.callback(ray.shutdown)  # before the temp dir's stragglers are reaped (callbacks run last in, first out)
        _configure(ray, no_progress_timeout_s)
        yield ray


@contextlib.contextmanager
def private_temp_dir(prefix: str) -> Iterator[str]:
    """A short private temp dir, in ``RAY_TMPDIR`` for every process started meanwhile.

    On exit the processes still carrying it are waited for, then killed (``reap``), the folder
    is removed and ``RAY_TMPDIR`` is put back as it was. Shut Ray down before leaving.
    """
    saved = os.environ.get("RAY_TMPDIR")
    temp = tempfile.mkdtemp(prefix=prefix, dir=saved or "/tmp")
    os.environ["RAY_TMPDIR"] = temp  # marks every process of this instance (see reap)
    try:
        yield temp
    finally:
        left = reap(temp)
        if left:
            logger.info("ended %d Ray processes that outlived the run", len(left))
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


def _existing_cluster() -> bool:
    if os.environ.get("RAY_ADDRESS"):
        return True
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(None) is not None
    except Exception:  # noqa: BLE001 - a private API: when it moves, start a local instance
        return False


def _configure(ray, no_progress_timeout_s: float) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.execution_no_progress_timeout_s = no_progress_timeout_s  # a DataContext field in 2.60, not execution_options
    ctx.enable_progress_bars = False  # the CLI draws lookalike's own bar, from committed shards
    ctx.retried_map_errors, ctx.max_map_retries = [TransientError.__name__], 3  # I/O hiccups: retried, not recorded
    ctx.actor_task_retry_on_errors = [TransientError]
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # "Progress will be logged ..." and the like


def own_processes(temp: str) -> list[int]:
    """Pids whose environment names ``temp`` as (or under) their ``RAY_TMPDIR``: one Ray instance's processes."""
    marker = f"RAY_TMPDIR={temp}".encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if int(pid) != os.getpid() and any(e == marker or e.startswith(marker + b"/") for e in env):
            pids.append(int(pid))
    return pids


def reap(temp: str, grace_s: float = REAP_GRACE_S) -> list[int]:
    """Wait up to ``grace_s`` for an instance's processes to exit, then SIGKILL the rest; returns those."""
    deadline = time.monotonic() + grace_s
    while own_processes(temp) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = own_processes(temp)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
