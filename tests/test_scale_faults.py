"""The Ray engine's driver SIGKILLed mid-run: the rerun embeds only what was not committed."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from ray_helpers import make_photo_folder, shard_rows

from lookalike.scale.session import reap
from lookalike.store.layout import CATALOG, SHARDS
from lookalike.store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
N = 72


def _committed(store_dir) -> tuple[int, int]:
    """(shards, files) the catalog has committed; (0, 0) before it exists."""
    try:
        with sqlite3.connect(f"file:{store_dir / CATALOG}?mode=ro", uri=True, timeout=5) as db:
            return (db.execute("SELECT COUNT(*) FROM shards").fetchone()[0],
                    db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
    except sqlite3.OperationalError:
        return 0, 0


def _index(root, store_dir, temp) -> subprocess.Popen:
    env = {**os.environ, "RAY_TMPDIR": temp}
    return subprocess.Popen([sys.executable, "-m", "lookalike", "index", str(root), "--store", str(store_dir),
                             "--engine", "ray", "--ray-address", "local", "--device", "cpu", "--batch-size", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_a_rerun_after_the_driver_is_killed_embeds_only_uncommitted_files(ray_temp, tmp_path):
    root = make_photo_folder(tmp_path / "photos", N)  # 1 actor: 4 shards of 18 rows
    store_dir = tmp_path / "store"
    driver = _index(root, store_dir, ray_temp)
    deadline = time.monotonic() + 300
    while _committed(store_dir)[0] < 1 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, f"the run ended before it was killed: {driver.communicate()}"
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=30)
    reap(ray_temp, grace_s=15)  # what the killed driver started lingers for a while
    shards, committed = _committed(store_dir)
    assert 1 <= shards and 0 < committed < N, "the driver was killed after its last commit: not mid-run"

    rerun = _index(root, store_dir, ray_temp)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    embedded = int(re.search(r"\((\d+) embedded", out).group(1))
    assert embedded == N - committed, out
    assert f"{N - committed} added" in out and f"{committed} unchanged" in out
    store = Store.open(store_dir)
    assert len(store) == N and shard_rows(store_dir) == N and store.check().ok
    with store.catalog() as catalog:
        names = {f"{s.name}.f32" for s in catalog.shards()}
    assert set(os.listdir(store_dir / SHARDS)) == names  # the killed run's shard in flight is gone
