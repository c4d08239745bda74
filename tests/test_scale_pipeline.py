"""The Ray engine on a local Ray instance: the local engine's results, incremental reruns, a killed actor."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_corpus
from ray_helpers import (
    NO_PROGRESS_S,
    PAUSE_GATE,
    assert_same_as_local,
    make_photo_folder,
    shard_rows,
)

from lookalike.cli import main
from lookalike.errors import LookalikeError
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder
from lookalike.scale import index_with_ray
from lookalike.scale.pipeline import actor_options
from lookalike.scale.session import own_processes
from lookalike.store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
CPU = ["--device", "cpu", "--batch-size", "4"]


def _summary(output: str) -> str:
    """The summary line without its timing."""
    line = [ln for ln in output.splitlines() if " added, " in ln][-1]
    return re.sub(r" in [0-9.]+s(, [0-9.]+ images/s)?(; [0-9.]+s in all)?", "", re.sub(r" -> .*", "", line))


def test_the_cli_on_ray_gives_the_local_engines_paths_failures_vectors_and_summary(local_ray, tmp_path, unreadable_as_root):
    root = tmp_path / "corpus"
    make_corpus(root)
    runner = CliRunner()
    local = runner.invoke(main, ["index", str(root), "--store", str(tmp_path / "local"), *CPU, "--workers", "0"])
    assert local.exit_code == 0, local.output
    ray_run = runner.invoke(main, ["index", str(root), "--store", str(tmp_path / "ray"), *CPU, "--engine", "ray"])
    assert ray_run.exit_code == 0, ray_run.output
    assert _summary(ray_run.stdout) == _summary(local.stdout) == "17 added, 0 updated, 0 removed, 0 unchanged, 5 failed (12 embedded)"
    assert "Indexing" in ray_run.stderr and "`lookalike failures` lists them" in ray_run.stderr
    assert_same_as_local(tmp_path / "local", tmp_path / "ray")
    assert shard_rows(tmp_path / "ray") == 12 and Store.open(tmp_path / "ray").check().ok

    os.utime(root / "03_coffee.png", ns=(1, 1))  # the rerun finds one file changed, one gone, the rest unchanged
    (root / "05_coffee.webp").unlink()
    changed = runner.invoke(main, ["index", str(root), "--store", str(tmp_path / "ray"), *CPU, "--engine", "ray"])
    assert _summary(changed.stdout) == "0 added, 1 updated, 1 removed, 15 unchanged, 0 failed (1 embedded)"
    store = Store.open(tmp_path / "ray")
    assert store.check().ok and len(store) == 11
    hits = store.search([root / "03_coffee.png"], k=2)[0]  # 14_rgba.png is the same photo
    assert {os.path.basename(h.path) for h in hits} == {"03_coffee.png", "14_rgba.png"} and hits[1].score > 0.9999


def _embedding_actors(temp: str) -> list[int]:
    """Pids of this Ray instance's embedding actors (found by the private RAY_TMPDIR they carry)."""
    pids = []
    for pid in own_processes(temp):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"MapBatches(EmbedActor)" in f.read():
                pids.append(pid)
    return pids


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(local_ray, ray_temp, tmp_path):
    root = make_photo_folder(tmp_path / "photos", 48)
    pids, killed = [], []
    gate = Path(ray_temp) / PAUSE_GATE
    gate.write_text("3")  # the actor stops inside its 3rd batch of 12: two are embedded, one in flight

    def kill_the_paused_actor():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            for paused in Path(ray_temp).glob("paused-*"):
                pid = int(paused.name.split("-")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                gate.unlink()  # its replacement runs through
            time.sleep(0.02)

    def on_commit(batch):
        pids.append({int(p) for p in batch["embed_pid"]})

    killer = threading.Thread(target=kill_the_paused_actor, daemon=True)
    killer.start()
    try:
        summary = index_with_ray(root, store=tmp_path / "store", rows_per_shard=4, on_commit=on_commit,
                                 options=EmbedOptions(device="cpu", batch_size=4), index_factory="IVF2,Flat",
                                 no_progress_timeout_s=NO_PROGRESS_S)
    finally:
        gate.unlink(missing_ok=True)
    killer.join(1)
    assert (summary.added, summary.embedded, summary.failed) == (48, 48, 0)
    assert len(killed) == 1 and any(killed[0] not in p for p in pids), f"{killed} {pids}: no batch embedded after the kill"
    store = Store.open(tmp_path / "store")
    assert len(store) == 48 and shard_rows(tmp_path / "store") == 48
    with store.catalog() as catalog:
        assert sorted(r.path for r in catalog.records("ok")) == sorted(os.listdir(root))
    assert store.check().ok
    assert list(store.directory.glob("index.*.ivfdata")), "the forced IVF index was not built on disk"
    hits = store.search([root / "p005.jpg"], k=4)[0]
    assert hits[0].path.endswith("p005.jpg")
    # a fresh process maps the merged lists; its JSON stays clean of what FAISS prints to fd 1
    out = subprocess.run([sys.executable, "-m", "lookalike", "query", str(root / "p005.jpg"), "--store",
                          str(tmp_path / "store"), "-k", "3", "--json"], capture_output=True, text=True, timeout=120,
                         cwd="/", check=True).stdout
    assert [os.path.basename(h["path"]) for h in json.loads(out)] == [os.path.basename(h.path) for h in hits[1:]]


def test_engine_ray_without_ray_is_one_line_naming_the_install_command(tmp_path, monkeypatch):
    make_photo_folder(tmp_path / "photos", 1)
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = CliRunner().invoke(main, ["index", str(tmp_path / "photos"), "--engine", "ray"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: --engine ray needs Ray Data: pip install 'lookalike[ray]'"]
    assert not (tmp_path / "photos" / ".lookalike").exists()


def test_actors_refuse_an_option_they_cannot_honour_in_one_line():
    with pytest.raises(LookalikeError, match="^--engine ray does not take --workers: each Ray actor decodes its own"):
        actor_options(EmbedOptions(workers=2))
    assert actor_options(EmbedOptions(runtime="torch", batch_size=3)) == EmbedOptions(runtime="torch", batch_size=3, workers=0)


def test_the_local_engine_on_a_store_ray_wrote_appends_to_shard_zero(local_ray, tmp_path):
    """The Ray actors honour --runtime torch (the local engine runs ONNX Runtime on the CPU)."""
    root = make_photo_folder(tmp_path / "photos", 6)
    runtimes = set()
    index_with_ray(root, store=tmp_path / "store", rows_per_shard=3, options=EmbedOptions(device="cpu", batch_size=3,
                   runtime="torch"), on_commit=lambda batch: runtimes.update(batch["embed_runtime"]))
    assert runtimes == {"torch"}
    make_photo_folder(tmp_path / "more", 8)
    os.rename(tmp_path / "more" / "p007.jpg", root / "p007.jpg")
    summary = index_folder(root, store=tmp_path / "store", options=EmbedOptions(device="cpu", workers=0))
    assert (summary.added, summary.embedded) == (1, 1)
    store = Store.open(tmp_path / "store")
    assert len(store) == 7 and store.check().ok
    with store.catalog() as catalog:
        assert {r.path: r.shard for r in catalog.records("ok")}["p007.jpg"] == 0
