"""The dynamic batcher alone: no gRPC, no model (a numpy function stands in for it).

No sleeps and no wall-time asserts: a run is held on a gate (an event) while requests
queue up, and ``await asyncio.sleep(0)`` only lets the submitting tasks queue their rows
(``submit`` queues synchronously, before its first real wait).
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from cifar10_serving.dataplane.batching import Batcher
from cifar10_core.errors import DeadlineExceededError, OverloadedError, UnavailableError


class Recorder:
    """run(batch, key): doubles its input, records (size, key); can be held on a gate."""

    def __init__(self):
        self.sizes: list[int] = []
        self.keys: list[object] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch, key):
        self.entered.set()
        assert self.gate.wait(10), "gate never opened"
        self.sizes.append(len(batch))
        self.keys.append(key)
        return batch.astype(np.float32) * 2


def rows(start: int, n: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


def run(coro):
    return asyncio.run(coro)


async def queue_all() -> None:
    """Let every task created so far run up to its first wait: their rows are queued."""
    await asyncio.sleep(0)


async def hold_first_run(rec: Recorder, batcher: Batcher, images: np.ndarray, **kwargs) -> asyncio.Future:
    """Submit ``images`` with the gate closed; return once the worker is inside its run."""
    rec.gate.clear()
    first = asyncio.ensure_future(batcher.submit(images, **kwargs))
    await queue_all()
    assert rec.entered.wait(10)
    return first


def test_concurrent_submits_merge_and_each_caller_gets_its_rows():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=64)
        first = await hold_first_run(rec, batcher, rows(1000))  # the rest queue up meanwhile
        tasks = [asyncio.ensure_future(batcher.submit(rows(i * 10, 2))) for i in range(20)]
        await queue_all()
        assert batcher.queued == 40
        rec.gate.set()
        results = await asyncio.gather(first, *tasks)
        await batcher.close(5)
        return results

    results = run(main())
    assert rec.sizes == [1, 40]  # the 20 queued requests ran as one batch
    assert results[0].tolist() == [[2000.0]]
    for i, out in enumerate(results[1:]):
        assert out.ravel().tolist() == [i * 20.0, i * 20.0 + 2.0]


def test_max_batch_size_is_respected():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=8, max_queue_size=100)
        first = await hold_first_run(rec, batcher, rows(0))
        tasks = [asyncio.ensure_future(batcher.submit(rows(i, 3))) for i in range(6)]
        await queue_all()
        rec.gate.set()
        await asyncio.gather(first, *tasks)
        await batcher.close(5)

    run(main())
    assert rec.sizes == [1, 6, 6, 6]  # whole requests only: 3+3 fits, a third does not


def test_request_larger_than_max_batch_is_split_in_order():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=16, max_queue_size=64)
        out = await batcher.submit(rows(0, 40), key="k")
        await batcher.close(5)
        return out

    out = run(main())
    assert rec.sizes == [16, 16, 8]
    assert rec.keys == ["k", "k", "k"]
    assert out.ravel().tolist() == [2.0 * i for i in range(40)]


def test_requests_of_different_keys_never_share_a_run():
    """The serving core's key is the model version a request selected: each has a queue of
    its own, so queued requests of one version run together, apart from the other's, each
    queue in order, the queues taking turns."""
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=8, max_queue_size=64)
        first = await hold_first_run(rec, batcher, rows(0), key="v1")
        old = [asyncio.ensure_future(batcher.submit(rows(i), key="v1")) for i in range(1, 3)]
        new = [asyncio.ensure_future(batcher.submit(rows(i), key="v2")) for i in range(3, 5)]
        late_old = asyncio.ensure_future(batcher.submit(rows(5), key="v1"))
        await queue_all()
        rec.gate.set()
        await asyncio.gather(first, *old, *new, late_old)
        await batcher.close(5)

    run(main())
    assert list(zip(rec.sizes, rec.keys)) == [(1, "v1"), (3, "v1"), (2, "v2")]


def test_each_key_has_its_own_queue_limit_and_the_keys_take_turns():
    """A flood for one model version fills its own queue, not another's; full batches of
    two versions alternate."""
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=2, max_queue_size=4)
        first = await hold_first_run(rec, batcher, rows(0), key="a")
        a = [asyncio.ensure_future(batcher.submit(rows(i, 2), key="a")) for i in (1, 3)]
        await queue_all()
        with pytest.raises(OverloadedError, match="4 of 4 images queued"):
            await batcher.submit(rows(5), key="a")
        b = [asyncio.ensure_future(batcher.submit(rows(i, 2), key="b")) for i in (6, 8)]
        await queue_all()
        assert (batcher.queued, batcher.queued_of("a"), batcher.queued_of("b")) == (8, 4, 4)
        rec.gate.set()
        await asyncio.gather(first, *a, *b)
        await batcher.close(5)

    run(main())
    assert rec.keys == ["a", "a", "b", "a", "b"]


def test_every_chunk_of_a_split_request_runs_with_its_key_across_a_swap():
    """A request of 2.5 batches is queued under v1; a newer v2 request is queued between its
    chunks' runs (the swap): every v1 chunk still runs with v1, in order, the v2 rows with v2
    (the two queues taking turns)."""
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=4, max_queue_size=64)
        first = await hold_first_run(rec, batcher, rows(100), key="v1")
        split = asyncio.ensure_future(batcher.submit(rows(0, 10), key="v1"))
        await queue_all()
        newer = asyncio.ensure_future(batcher.submit(rows(50, 2), key="v2"))  # after the swap
        await queue_all()
        rec.gate.set()
        results = await asyncio.gather(first, split, newer)
        await batcher.close(5)
        return results

    _, split, newer = run(main())
    assert list(zip(rec.sizes, rec.keys)) == [(1, "v1"), (4, "v1"), (2, "v2"), (4, "v1"), (2, "v1")]
    assert split.ravel().tolist() == [2.0 * i for i in range(10)]
    assert newer.ravel().tolist() == [100.0, 102.0]


def test_queue_delay_waits_for_a_fuller_batch_and_close_ends_the_wait():
    rec = Recorder()

    async def main():
        # A delay far longer than the test: a batch runs early only because it is full...
        batcher = Batcher(rec, max_batch_size=4, max_queue_delay=3600)
        one = asyncio.ensure_future(batcher.submit(rows(0)))
        await queue_all()
        more = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(1, 4)]
        await asyncio.wait_for(asyncio.gather(one, *more), 30)
        # ...or because the batcher closes, which runs what is queued at once.
        alone = asyncio.ensure_future(batcher.submit(rows(9)))
        await queue_all()
        assert not alone.done() and batcher.queued == 1
        assert await batcher.close(30)
        return await alone

    assert run(main()).tolist() == [[18.0]]
    assert rec.sizes == [4, 1]


def test_zero_delay_runs_a_lone_request_at_once():
    """With no delay a lone request runs by itself, never waiting for company."""
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=64, max_queue_delay=0.0)
        for i in range(20):
            out = await asyncio.wait_for(batcher.submit(rows(i)), 30)
            assert out.tolist() == [[2.0 * i]]
        await batcher.close(5)

    run(main())
    assert rec.sizes == [1] * 20


def test_full_queue_is_refused_not_grown():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=4, max_queue_size=8)
        running = await hold_first_run(rec, batcher, rows(0, 4))
        queued = [asyncio.ensure_future(batcher.submit(rows(i, 4))) for i in range(2)]
        await queue_all()
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
        running = await hold_first_run(rec, batcher, rows(0))
        # queued behind the held run; one deadline has already passed when the worker looks
        doomed = asyncio.ensure_future(batcher.submit(rows(1), deadline=time.monotonic() - 1))
        fine = asyncio.ensure_future(batcher.submit(rows(2), deadline=time.monotonic() + 60))
        await queue_all()
        rec.gate.set()
        await running
        with pytest.raises(DeadlineExceededError):
            await doomed
        out = await fine
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
        running = await hold_first_run(rec, batcher, rows(0))
        gone = asyncio.ensure_future(batcher.submit(rows(1)))
        await queue_all()
        gone.cancel()
        await queue_all()
        rec.gate.set()
        await running
        await batcher.submit(rows(2))
        await batcher.close(5)

    run(main())
    assert rec.sizes == [1, 1]


def test_run_error_reaches_every_caller_of_the_batch_and_worker_survives():
    calls = []

    def failing(batch, key):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return batch

    async def main():
        batcher = Batcher(failing, max_batch_size=8)
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(rows(0))
        out = await batcher.submit(rows(5))
        await batcher.close(5)
        return out

    assert run(main()).tolist() == [[5.0]]


def test_close_finishes_queued_work_then_refuses():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=2)
        first = await hold_first_run(rec, batcher, rows(0))
        tasks = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(1, 10)]
        await queue_all()
        closing = asyncio.ensure_future(batcher.close(30))
        await queue_all()
        with pytest.raises(UnavailableError):
            await batcher.submit(rows(0))
        rec.gate.set()  # everything queued before the close still runs
        results = await asyncio.gather(first, *tasks)
        assert await closing
        return results

    results = run(main())
    assert [r.item() for r in results] == [2.0 * i for i in range(10)]
    assert sum(rec.sizes) == 10


def test_workers_run_batches_at_the_same_time_and_close_waits_for_all():
    """Two workers (model instances): two batches in flight at once, every caller answered."""
    both_in = threading.Barrier(2, timeout=10)  # breaks (and fails the run) unless two overlap
    threads = set()

    def overlapping(batch, key):
        threads.add(threading.current_thread().name)
        both_in.wait()
        return batch * 2

    async def main():
        batcher = Batcher(overlapping, max_batch_size=1, workers=2, name="w")
        assert batcher.workers == 2
        results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(6)))
        assert await batcher.close(5)
        return results

    results = run(main())
    assert [float(r[0, 0]) for r in results] == [2.0 * i for i in range(6)]
    assert threads == {"w-0", "w-1"}


def test_a_second_worker_starts_a_run_beside_the_first_only_for_a_full_batch():
    """Light traffic is not split into many small runs; a full batch runs side by side."""
    rec = Recorder()
    in_flight = []
    full_batch_in = threading.Event()

    def run_fn(batch, key):
        in_flight.append(len(batch))
        if len(batch) == 4:
            full_batch_in.set()
        try:
            return rec(batch, key)
        finally:
            in_flight.remove(len(batch))

    async def main():
        batcher = Batcher(run_fn, max_batch_size=4, workers=2)
        first = await hold_first_run(rec, batcher, rows(0))  # every run is held
        small = [asyncio.ensure_future(batcher.submit(rows(10 + i))) for i in range(3)]
        await queue_all()
        assert in_flight == [1] and batcher.queued == 3  # 3 queued images: the idle worker waits
        fourth = asyncio.ensure_future(batcher.submit(rows(20)))
        await queue_all()
        assert full_batch_in.wait(10)  # a full batch: it runs beside the first
        assert sorted(in_flight) == [1, 4]
        assert batcher.queued == 0
        rec.gate.set()
        results = await asyncio.gather(first, *small, fourth)
        assert await batcher.close(5)
        return results

    results = run(main())
    assert [float(r[0, 0]) for r in results] == [0.0, 20.0, 22.0, 24.0, 40.0]
    assert sorted(rec.sizes) == [1, 4]


def test_a_waiting_worker_takes_a_partial_batch_once_the_other_run_ends():
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=8, workers=2)
        first = await hold_first_run(rec, batcher, rows(0))
        queued = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(1, 4)]
        await queue_all()
        rec.gate.set()  # the first run ends; the 3 queued images run as one batch
        results = await asyncio.gather(first, *queued)
        assert await batcher.close(5)
        return results

    results = run(main())
    assert [float(r[0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert rec.sizes == [1, 3]


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        Batcher(Recorder(), workers=0)


def test_under_light_load_one_worker_does_every_run():
    """Requests one at a time: the worker that went idle last takes the next one (a stack),
    so one thread does every run instead of the workers taking turns (a lone run is about
    1.5 times slower on a thread whose core did not just run the model)."""
    threads = []

    def run(batch, key):
        threads.append(threading.get_ident())
        return np.zeros((len(batch), 10), np.float32)

    async def scenario():
        batcher = Batcher(run, max_batch_size=4, workers=3)
        try:
            for _ in range(20):
                await batcher.submit(np.zeros((1, 32, 32, 3), np.uint8))
                await asyncio.sleep(0.005)  # the worker is back asleep before the next one
        finally:
            await batcher.close(5)

    asyncio.run(scenario())
    assert len(threads) == 20
    assert len(set(threads[1:])) == 1, threads


def test_a_key_with_its_own_batch_size_is_merged_and_split_by_it():
    """``limits_of`` gives a key (a model whose config.json says so) its own largest batch."""
    rec = Recorder()

    async def main():
        batcher = Batcher(rec, max_batch_size=8, max_queue_size=64,
                          limits_of=lambda key: (3, 1) if key == "small" else (8, 1))
        first = await hold_first_run(rec, batcher, rows(0), key="big")
        small = [asyncio.ensure_future(batcher.submit(rows(i, 2), key="small")) for i in (10, 20)]
        split = asyncio.ensure_future(batcher.submit(rows(30, 7), key="small"))
        big = [asyncio.ensure_future(batcher.submit(rows(i, 2), key="big")) for i in (40, 50, 60)]
        await queue_all()
        rec.gate.set()
        results = await asyncio.gather(first, *small, split, *big)
        await batcher.close(5)
        return results

    results = run(main())
    by_key = {key: [size for size, k in zip(rec.sizes, rec.keys) if k == key] for key in ("small", "big")}
    assert by_key == {"small": [2, 2, 3, 3, 1], "big": [1, 6]}
    assert results[3].ravel().tolist() == [2.0 * i for i in range(30, 37)]


def test_a_key_runs_at_most_its_own_runs_at_once_on_the_shared_workers():
    """Two workers; key "one" may have one run at a time: with its run held and full batches
    of it queued, the free worker leaves them and takes key "two"'s."""
    gate = threading.Event()
    lock = threading.Lock()
    started: list[str] = []
    running = {"one": 0, "two": 0}
    most = dict(running)

    def run_fn(batch, key):
        with lock:
            started.append(key)
            running[key] += 1
            most[key] = max(most[key], running[key])
        assert gate.wait(10)
        with lock:
            running[key] -= 1
        return batch * 2

    def wait_started(count: int) -> None:
        end = time.monotonic() + 10
        while len(started) < count:
            assert time.monotonic() < end
            time.sleep(0.001)

    async def main():
        batcher = Batcher(run_fn, max_batch_size=2, max_queue_size=16, workers=2,
                          limits_of=lambda key: (2, 1 if key == "one" else 2))
        ones = [asyncio.ensure_future(batcher.submit(rows(i, 2), key="one")) for i in (0, 2, 4)]
        await queue_all()
        await asyncio.to_thread(wait_started, 1)
        twos = [asyncio.ensure_future(batcher.submit(rows(i, 2), key="two")) for i in (10, 12)]
        await queue_all()
        await asyncio.to_thread(wait_started, 2)
        assert started == ["one", "two"]  # not a second "one", though two batches of it wait
        gate.set()
        results = await asyncio.gather(*ones, *twos)
        assert await batcher.close(5)
        return results

    results = run(main())
    assert most["one"] == 1 and sorted(started) == ["one"] * 3 + ["two"] * 2
    assert results[0].ravel().tolist() == [0.0, 2.0]


def test_limits_the_queue_cannot_hold_are_refused():
    async def main():
        batcher = Batcher(Recorder(), max_batch_size=4, max_queue_size=8, limits_of=lambda key: (16, 1))
        with pytest.raises(ValueError, match="batches of 16 images in a queue of 8"):
            await batcher.submit(rows(0), key="k")
        await batcher.close(5)

    run(main())
