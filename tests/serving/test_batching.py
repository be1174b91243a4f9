"""The dynamic batcher alone: no gRPC, no model (a numpy function stands in for it)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from cifar10_serving.batching import Batcher
from cifar10_core.errors import DeadlineExceededError, OverloadedError, UnavailableError


class Recorder:
    """run(): doubles its input, records batch sizes; can be held on a gate."""

    def __init__(self, delay: float = 0.0):
        self.sizes: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch):
        self.entered.set()
        self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        self.sizes.append(len(batch))
        return batch.astype(np.float32) * 2, "tag"


def rows(start: int, n: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_submits_merge_and_each_caller_gets_its_rows():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=64)
        rec.gate.clear()  # hold the first batch so the rest queue up
        first = asyncio.ensure_future(batcher.submit(rows(1000)))
        await asyncio.sleep(0.05)
        assert rec.entered.wait(5)
        tasks = [asyncio.ensure_future(batcher.submit(rows(i * 10, 2))) for i in range(20)]
        await asyncio.sleep(0.05)
        rec.gate.set()
        results = await asyncio.gather(first, *tasks)
        await batcher.close(5)
        return results

    results = run(main())
    assert rec.sizes == [1, 40]  # the 20 queued requests ran as one batch
    assert results[0][0].tolist() == [[2000.0]]
    for i, (out, tag) in enumerate(results[1:]):
        assert tag == "tag"
        assert out.ravel().tolist() == [i * 20.0, i * 20.0 + 2.0]


def test_max_batch_size_is_respected():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=8, max_queue_size=100)
        rec.gate.clear()
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        tasks = [asyncio.ensure_future(batcher.submit(rows(i, 3))) for i in range(6)]
        await asyncio.sleep(0.02)
        rec.gate.set()
        await asyncio.gather(first, *tasks)
        await batcher.close(5)

    run(main())
    assert max(rec.sizes) <= 8
    assert sum(rec.sizes) == 1 + 18
    assert rec.sizes[1:] == [6, 6, 6]  # whole requests only: 3+3 fits, a third does not


def test_request_larger_than_max_batch_is_split_in_order():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=16, max_queue_size=64)
        out, tag = await batcher.submit(rows(0, 40))
        await batcher.close(5)
        return out

    out = run(main())
    assert rec.sizes == [16, 16, 8]
    assert out.ravel().tolist() == [2.0 * i for i in range(40)]


def test_queue_delay_waits_for_a_fuller_batch():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=4, max_queue_delay=0.2)
        started = time.monotonic()
        one = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.03)
        more = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(1, 4)]
        await asyncio.gather(one, *more)  # batch full (4): runs before the delay ends
        full = time.monotonic() - started
        started = time.monotonic()
        await batcher.submit(rows(9))  # alone: waits the whole delay
        alone = time.monotonic() - started
        await batcher.close(5)
        return full, alone

    full, alone = run(main())
    assert rec.sizes == [4, 1]
    assert full < 0.15
    assert 0.18 <= alone < 1.0


def test_zero_delay_runs_a_lone_request_at_once():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=64, max_queue_delay=0.0)
        started = time.monotonic()
        for i in range(20):
            await batcher.submit(rows(i))
        await batcher.close(5)
        return (time.monotonic() - started) / 20

    assert run(main()) < 0.01


def test_full_queue_is_refused_not_grown():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=4, max_queue_size=8)
        rec.gate.clear()
        running = asyncio.ensure_future(batcher.submit(rows(0, 4)))
        await asyncio.sleep(0.02)
        assert rec.entered.wait(5)
        queued = [asyncio.ensure_future(batcher.submit(rows(i, 4))) for i in range(2)]
        await asyncio.sleep(0.01)
        assert batcher.queued == 8
        with pytest.raises(OverloadedError, match="queue is full"):
            await batcher.submit(rows(0))
        with pytest.raises(OverloadedError):
            await batcher.submit(rows(0, 20))  # a split request is refused as a whole
        rec.gate.set()
        await asyncio.gather(running, *queued)
        assert batcher.queued == 0
        await batcher.submit(rows(0))  # accepted again
        await batcher.close(5)

    run(main())


def test_expired_deadline_is_not_computed():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=4)
        rec.gate.clear()
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        doomed = asyncio.ensure_future(batcher.submit(rows(1), deadline=time.monotonic() + 0.05))
        fine = asyncio.ensure_future(batcher.submit(rows(2), deadline=time.monotonic() + 30))
        await asyncio.sleep(0.1)  # the first deadline passes while queued
        rec.gate.set()
        await running
        with pytest.raises(DeadlineExceededError):
            await doomed
        out, _ = await fine
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(rows(3), deadline=time.monotonic() - 1)
        await batcher.close(5)
        return out

    out = run(main())
    assert out.tolist() == [[4.0]]
    assert rec.sizes == [1, 1]  # the expired rows never reached run()


def test_cancelled_request_is_dropped():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=4)
        rec.gate.clear()
        running = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(batcher.submit(rows(1)))
        await asyncio.sleep(0.01)
        gone.cancel()
        rec.gate.set()
        await running
        await batcher.submit(rows(2))
        await batcher.close(5)

    run(main())
    assert rec.sizes == [1, 1]


def test_run_error_reaches_every_caller_of_the_batch_and_worker_survives():
    calls = []

    def failing(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return batch, None

    async def main():
        batcher = Batcher(failing, max_batch_size=8)
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(rows(0))
        out, _ = await batcher.submit(rows(5))
        await batcher.close(5)
        return out

    assert run(main()).tolist() == [[5.0]]


def test_close_finishes_queued_work_then_refuses():
    rec = Recorder(delay=0.01)

    async def main():
        batcher = Batcher(rec, max_batch_size=2)
        tasks = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(10)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.close(5))
        results = await asyncio.gather(*tasks)
        assert await closing
        with pytest.raises(UnavailableError):
            await batcher.submit(rows(0))
        return results

    results = run(main())
    assert [r[0].item() for r in results] == [2.0 * i for i in range(10)]


def test_workers_run_batches_at_the_same_time_and_close_waits_for_all():
    """Two workers (model instances): two batches in flight at once, every caller answered."""
    both_in = threading.Barrier(2, timeout=5)  # breaks (and fails the run) unless two overlap
    threads = set()

    def overlapping(batch):
        threads.add(threading.current_thread().name)
        both_in.wait()
        return batch * 2, "tag"

    async def main():
        batcher = Batcher(overlapping, max_batch_size=1, workers=2, name="w")
        assert batcher.workers == 2
        results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(6)))
        assert await batcher.close(5)
        return results

    results = run(main())
    assert [float(r[0][0, 0]) for r in results] == [2.0 * i for i in range(6)]
    assert threads == {"w-0", "w-1"}


def test_a_second_worker_starts_a_run_beside_the_first_only_for_a_full_batch():
    """Light traffic is not split into many small runs; a full batch runs side by side."""
    rec = Recorder()
    in_flight = []

    def run_fn(batch):
        in_flight.append(len(batch))
        try:
            return rec(batch)
        finally:
            in_flight.remove(len(batch))

    async def main():
        batcher = Batcher(run_fn, max_batch_size=4, workers=2)
        rec.gate.clear()  # hold every run
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.05)
        assert rec.entered.wait(5)
        small = [asyncio.ensure_future(batcher.submit(rows(10 + i))) for i in range(3)]
        await asyncio.sleep(0.1)
        assert in_flight == [1]  # 3 queued images: the idle worker waits
        assert batcher.queued == 3
        fourth = asyncio.ensure_future(batcher.submit(rows(20)))
        await asyncio.sleep(0.1)
        assert sorted(in_flight) == [1, 4]  # a full batch: it runs beside the first
        assert batcher.queued == 0
        rec.gate.set()
        results = await asyncio.gather(first, *small, fourth)
        assert await batcher.close(5)
        return results

    results = run(main())
    assert [float(r[0][0, 0]) for r in results] == [0.0, 20.0, 22.0, 24.0, 40.0]
    assert sorted(rec.sizes) == [1, 4]


def test_a_waiting_worker_takes_a_partial_batch_once_the_other_run_ends():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=8, workers=2)
        rec.gate.clear()
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.05)
        assert rec.entered.wait(5)
        queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        rec.gate.set()  # the first run ends; the 3 queued images run as one batch
        results = await asyncio.gather(first, *queued)
        assert await batcher.close(5)
        return results

    results = run(main())
    assert [float(r[0][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert rec.sizes == [1, 3]


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        Batcher(Recorder(), workers=0)
