"""Worker processes that decode and embed: the same batches, keys and vectors as one process, and no leftovers."""

import os

import numpy as np
import pytest
from conftest import alive

from lookalike import create_extractor
from lookalike.errors import TransientError
from lookalike.featurize.runtimes.embed_pool import TASK_IMAGES


@pytest.fixture(scope="module")
def paths(corpus_dir):
    root, expected = corpus_dir
    return [str(root / name) for name in sorted(expected)] * 3  # good and bad files, more than a few tasks


@pytest.mark.parametrize("batch_size", [1, 3, TASK_IMAGES + 1, 64])
def test_workers_yield_the_batches_keys_vectors_and_failures_of_one_process(lite0_onnx, paths, batch_size):
    with create_extractor(device="cpu", runtime="onnx", batch_size=batch_size, workers=2) as pooled:
        batches = list(pooled.embed_paths(paths))
        assert pooled._pool is not None and pooled._pool.workers == 2  # the workers did it
    here = list(pooled.embed_paths(paths, num_workers=0))
    assert [(b.keys, b.failures) for b in batches] == [(b.keys, b.failures) for b in here]
    assert [len(b.keys) + len(b.failures) for b in batches] == [len(b.keys) + len(b.failures) for b in here]
    for ours, reference in zip(batches, here):
        np.testing.assert_array_equal(ours.vectors, reference.vectors)
    assert len(batches) == -(-len(paths) // batch_size)  # a batch is the unit the store commits: never merged


@pytest.mark.parametrize("shared_memory", [True, False], ids=["memfd", "pickled"])
def test_many_images_are_shared_out_and_one_stays_here(photos, shared_memory, monkeypatch):
    import contextlib

    from lookalike.featurize.runtimes import embed_pool

    if not shared_memory:  # as on a platform without memfd: the pixels travel in the tasks
        monkeypatch.setattr(embed_pool, "_shared", lambda pixels: contextlib.nullcontext(None))
    images = list(photos.values()) * 4
    extractor = create_extractor(device="cpu", runtime="onnx", workers=2)
    single = extractor.embed_images(images[:1])
    assert extractor._pool is None  # one image: no processes to start
    shared = extractor.embed_images(images)
    assert extractor._pool is not None
    extractor.close()
    here = create_extractor(device="cpu", runtime="onnx", workers=0).embed_images(images)
    np.testing.assert_allclose(shared, here, atol=1e-6)
    np.testing.assert_allclose(single, here[:1], atol=1e-6)


def test_close_ends_the_workers_and_the_extractor_still_works(paths):
    extractor = create_extractor(device="cpu", runtime="onnx", workers=2)
    first = np.concatenate([b.vectors for b in extractor.embed_paths(paths)])
    workers = list(extractor._pool._executor._processes)
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    extractor.close()
    assert not any(alive(pid) for pid in workers)
    again = np.concatenate([b.vectors for b in extractor.embed_paths(paths)])
    np.testing.assert_array_equal(first, again)
    extractor.close()


def test_a_killed_worker_is_a_transient_error_and_the_next_call_starts_afresh(paths):
    import signal

    extractor = create_extractor(device="cpu", runtime="onnx", batch_size=2, workers=2)
    batches = extractor.embed_paths(paths)
    next(batches)
    os.kill(next(iter(extractor._pool._executor._processes)), signal.SIGKILL)
    with pytest.raises(TransientError, match="died|killed"):
        list(batches)
    assert extractor._pool is None
    assert sum(len(b.keys) + len(b.failures) for b in extractor.embed_paths(paths)) == len(paths)
    extractor.close()


@pytest.mark.slow
def test_workers_started_by_spawn_as_on_macos_give_the_same_vectors(paths, monkeypatch):
    """Where there is no fork, the workers get their settings pickled and open the export by path."""
    import multiprocessing

    from lookalike.featurize.runtimes import embed_pool

    real = multiprocessing.get_context
    monkeypatch.setattr(embed_pool.multiprocessing, "get_context", lambda method=None: real("spawn"))
    with create_extractor(device="cpu", runtime="onnx", batch_size=8, workers=2) as spawned:
        batches = list(spawned.embed_paths(paths))
        assert spawned._pool._executor._mp_context.get_start_method() == "spawn"
    here = list(spawned.embed_paths(paths, num_workers=0))
    assert [(b.keys, b.failures) for b in batches] == [(b.keys, b.failures) for b in here]
    np.testing.assert_array_equal(np.concatenate([b.vectors for b in batches]), np.concatenate([b.vectors for b in here]))
