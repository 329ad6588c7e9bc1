"""The micro-batcher: every caller gets its own rows' outputs, batches stay within bounds, errors reach every caller."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest

from plantwatch.inference.batcher import MicroBatcher


def test_concurrent_callers_get_their_own_rows_from_shared_calls():
    calls = []
    gate = threading.Event()

    def run(rows):
        calls.append(len(rows))
        gate.wait(5)  # hold the first call so the others queue up behind it
        return [rows * 2, rows.sum(axis=1)]

    batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.01)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(batcher.submit, np.full((1, 3), float(i))) for i in range(20)]
        while batcher._inflight < 19:  # the first caller runs its row itself, held at the gate; the rest queue
            threading.Event().wait(0.01)
        gate.set()
        results = [f.result(5) for f in futures]
    batcher.close()
    for i, (doubled, summed) in enumerate(results):
        np.testing.assert_array_equal(doubled, np.full((1, 3), 2.0 * i))
        np.testing.assert_array_equal(summed, [3.0 * i])
    assert sum(calls) == 20 and max(calls) <= 8 and len(calls) < 20
    assert calls[0] == 1  # nobody was waiting when the first came: it did not wait for company
    assert (batcher.batches, batcher.rows) == (len(calls), 20)


def test_a_request_larger_than_max_batch_runs_alone():
    batcher = MicroBatcher(lambda rows: [rows[:, 0]], max_batch=4)
    (out,) = batcher.submit(np.arange(20.0).reshape(10, 2))
    batcher.close()
    np.testing.assert_array_equal(out, np.arange(0.0, 20.0, 2.0))


def test_an_error_reaches_the_caller_and_the_batcher_goes_on():
    def run(rows):
        if (rows < 0).any():
            raise ValueError("negative input")
        return [rows]

    batcher = MicroBatcher(run)
    with pytest.raises(ValueError, match="negative input"):
        batcher.submit(np.array([[-1.0]]))
    np.testing.assert_array_equal(batcher.submit(np.array([[1.0]]))[0], [[1.0]])
    batcher.close()


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda rows: [rows], max_batch=0)
