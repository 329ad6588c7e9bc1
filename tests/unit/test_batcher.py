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


def _held(batcher, gate, calls, queued):
    """Hold one inline call and one worker call at `gate`, queue `queued` behind them, then open the gate.

    The worker's next batch is then exactly what queued while it was busy: `max_batch` and
    error fan-out are the worker's, which a lone caller (always inline) never reaches.
    """
    pool = concurrent.futures.ThreadPoolExecutor(len(queued) + 2)
    futures = [pool.submit(batcher.submit, np.zeros((1,) + queued[0].shape[1:]))]
    while len(calls) < 1:  # the first caller runs its rows itself and waits at the gate
        threading.Event().wait(0.005)
    futures.append(pool.submit(batcher.submit, np.zeros((1,) + queued[0].shape[1:])))
    while len(calls) < 2:  # the worker runs the second and waits at the gate too
        threading.Event().wait(0.005)
    for rows in queued:
        futures.append(pool.submit(batcher.submit, rows))
    while batcher._inflight < 1 + len(queued):
        threading.Event().wait(0.005)
    gate.set()
    return pool, futures


def test_a_request_larger_than_max_batch_runs_alone():
    calls = []
    gate = threading.Event()

    def run(rows):
        calls.append(len(rows))
        gate.wait(5)
        return [rows[:, 0]]

    batcher = MicroBatcher(run, max_batch=4, max_wait_s=0)
    big = np.arange(20.0).reshape(10, 2)
    pool, futures = _held(batcher, gate, calls, [big, np.ones((1, 2)), np.full((1, 2), 2.0)])
    results = [f.result(5) for f in futures]
    pool.shutdown()
    batcher.close()
    # Queued behind the held calls: the 10-row request runs alone (it fills max_batch), the two 1-row ones together.
    assert calls == [1, 1, 10, 2]
    np.testing.assert_array_equal(results[2][0], np.arange(0.0, 20.0, 2.0))
    np.testing.assert_array_equal(results[3][0], [1.0])
    np.testing.assert_array_equal(results[4][0], [2.0])


def test_an_error_reaches_every_caller_of_the_batch_and_the_batcher_goes_on():
    calls = []
    gate = threading.Event()

    def run(rows):
        calls.append(len(rows))
        gate.wait(5)
        if (rows < 0).any():
            raise ValueError("negative input")
        return [rows]

    batcher = MicroBatcher(run, max_batch=8, max_wait_s=0)
    pool, futures = _held(batcher, gate, calls, [np.array([[1.0]]), np.array([[-1.0]])])
    for f in futures[:2]:
        np.testing.assert_array_equal(f.result(5)[0], [[0.0]])
    for f in futures[2:]:  # one batch in the worker: its error reaches both of its callers
        with pytest.raises(ValueError, match="negative input"):
            f.result(5)
    pool.shutdown()
    assert calls == [1, 1, 2]
    np.testing.assert_array_equal(batcher.submit(np.array([[1.0]]))[0], [[1.0]])
    batcher.close()


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda rows: [rows], max_batch=0)
