"""A long build's progress lines: throttled, and the time left taken from the pace so far."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lookalike.ann import build as ann_build
from lookalike.ann import progress as progress_module
from lookalike.ann.progress import Progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    return clock


def test_time_left_follows_the_measured_pace_not_a_constant(clock):
    fast, slow = Progress("fast", 100, "rows"), Progress("slow", 100, "rows")
    clock.now += 10
    fast.step(50)
    slow.step(10)
    assert fast.line() == "fast: 50/100 rows in 10 s, about 10 s left"
    assert slow.line() == "slow: 10/100 rows in 10 s, about 90 s left"


def test_lines_are_logged_at_most_every_few_seconds_and_once_at_the_end(clock, caplog):
    caplog.set_level(logging.INFO, logger="lookalike.ann.progress")
    progress = Progress("adding", 10, "rows")
    for _ in range(9):
        clock.now += 2
        progress.step()
    progress.finish()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["adding: 3/10 rows in 6 s, about 14 s left", "adding: 6/10 rows in 12 s, about 8 s left",
                     "adding: 9/10 rows in 18 s, about 2 s left", "adding: 10/10 rows in 18 s"]


def test_a_step_shorter_than_the_interval_stays_silent(clock, caplog):
    caplog.set_level(logging.INFO, logger="lookalike.ann.progress")
    progress = Progress("quick", 3, "rows")
    progress.step(3)
    progress.finish()
    assert caplog.records == []


def test_a_build_logs_its_training_then_its_adding(monkeypatch, caplog):
    monkeypatch.setattr(Progress, "EVERY_S", 0.0)
    monkeypatch.setattr(ann_build.row_views, "READ_CHUNK_ROWS", 10_000)
    caplog.set_level(logging.INFO, logger="lookalike.ann.progress")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30_000, 16), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ann_build.build_index(vectors, np.arange(len(vectors)), "IVF256,SQ8")
    lines = [record.getMessage() for record in caplog.records]
    training = [i for i, line in enumerate(lines) if line.startswith("training 256 lists on 25,600 rows: ")]  # 100 a list
    adding = [i for i, line in enumerate(lines) if line.startswith("adding 30,000 vectors to the index: ")]
    assert training and adding and max(training) < min(adding)
    assert "25,600/25,600 rows in " in lines[max(training)] and "left" not in lines[max(training)]
    assert any(" s left" in lines[i] for i in training)
