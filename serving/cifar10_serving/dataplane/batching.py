"""Dynamic batching: concurrent requests merged into one model run. No gRPC in here.

``Batcher.submit(images, deadline)`` is awaited from an asyncio event loop. Requests wait
in a bounded queue; a worker thread takes as many queued images as fit in
``max_batch_size``, runs them as one batch off the event loop, splits the answer and
hands each caller its rows back through ``loop.call_soon_threadsafe``. ``workers`` (default
1) worker threads share the queue: Triton's model instances, one model run per worker.

Scheduling, in the spirit of Triton's dynamic batcher with a small delay:

* While the worker is busy, new requests queue up; when it is free it takes everything
  queued (up to ``max_batch_size``) at once. With ``max_queue_delay`` 0 (the default, chosen
  by measurement: on a CPU the model run itself is the natural batching window) an idle
  worker never waits, so a lone request pays no batching delay.
* ``max_queue_delay`` > 0 makes the worker wait up to that long for a batch to fill.
* Each key's queue holds at most ``max_queue_size`` images; beyond that ``submit`` raises
  ``OverloadedError`` (RESOURCE_EXHAUSTED) at once instead of letting latency grow.
* A request whose deadline passed while it waited is not computed: it gets
  ``DeadlineExceededError``. A cancelled caller's request is dropped the same way.
* A request larger than ``max_batch_size`` is split into chunks that run in order;
  the caller gets the rows back concatenated.
* Each request carries a ``key`` (the data plane's: the model version it selected), and
  each key has a queue of its own: only requests of one key share a run, every chunk of a
  request runs with its key, and a flood for one key fills its queue, not another's. The
  worker threads are shared: a free worker takes the next key's batch, the keys taking
  turns, so two models called at once each get full batches and an idle one costs no
  thread. ``limits_of(key)`` may give a key its own largest batch and most runs at once
  (a model's config.json); the workers stay the most runs at once of all keys together.
* With one worker there is one model run at a time, which then uses every CPU we may use.
  With ``workers`` > 1, that many runs overlap; a run that starts beside another should get
  a share of the CPUs (``cifar10_serving.onnx_model``'s elastic threads), so a worker that loses its CPU
  for a moment delays only its own batch instead of every thread of one shared run.
* A worker starts a run beside another only for a full batch (``max_batch_size`` images
  queued); otherwise it leaves the queue to fill until a run ends. So extra workers add
  parallel runs under heavy traffic (big requests, deep queues) and never split light
  traffic into many small runs.
* An idle worker is woken only when a run may start, and it is the one that went idle last:
  under light load one thread does every run (``_wake``).

``run`` is any callable ``run(batch, key) -> outputs`` with one output row per input row;
``key`` is the one its requests were submitted with. A request submitted with a ``RunTiming``
gets its queue wait and model run timed (for tracing; untimed requests cost nothing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from cifar10_core.errors import DeadlineExceededError, OverloadedError, UnavailableError

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray, Any], np.ndarray]


class RunTiming:
    """When one request waited and ran (``time.time_ns()``): ``queued_ns`` when submitted,
    ``started_ns``/``ended_ns`` of its model runs (0 until one started), ``runs`` (more than
    one for a request split into chunks) and ``batch_images``, the images of those runs,
    other requests' included."""

    __slots__ = ("queued_ns", "started_ns", "ended_ns", "runs", "batch_images")

    def __init__(self) -> None:
        self.queued_ns = self.started_ns = self.ended_ns = self.runs = self.batch_images = 0

    def ran(self, started_ns: int, ended_ns: int, images: int) -> None:
        """One run of (some of) the request's images; a worker thread calls it (unlocked: two
        chunks of one request ending at once on two workers could blur the span's times,
        never a result)."""
        if not self.runs or started_ns < self.started_ns:
            self.started_ns = started_ns
        self.ended_ns = max(self.ended_ns, ended_ns)
        self.runs += 1
        self.batch_images += images


class _Lane:
    """One key's queue (items in order, ``queued`` images) and runs in flight, with the key's
    largest batch and most runs at once. In the batcher's turn order while it has either."""

    __slots__ = ("key", "items", "queued", "running", "max_batch_size", "max_runs")

    def __init__(self, key: Any, max_batch_size: int, max_runs: int):
        self.key = key
        self.items: deque[_Item] = deque()
        self.queued = 0
        self.running = 0
        self.max_batch_size = max_batch_size
        self.max_runs = max_runs


class _Item:
    __slots__ = ("images", "size", "future", "loop", "deadline", "key", "timing")

    def __init__(self, images, size, future, loop, deadline, key, timing):
        self.images = images
        self.size = size
        self.future = future
        self.loop = loop
        self.deadline = deadline
        self.key = key
        self.timing = timing


def _timed(batch: list[_Item], started_ns: int, images: int) -> None:
    """Record a run on the timings of the batch's timed requests, if any."""
    ended_ns = 0
    for item in batch:
        if item.timing is not None:
            ended_ns = ended_ns or time.time_ns()
            item.timing.ran(started_ns, ended_ns, images)


def _deliver(results: list) -> None:
    """Runs on the event loop: resolve the futures of one batch."""
    for future, value, exc in results:
        if not future.done():
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)


class Batcher:
    """Merges concurrent ``submit`` calls into batched ``run`` calls on one worker thread."""

    def __init__(
        self,
        run: RunFn,
        max_batch_size: int = 64,
        max_queue_delay: float = 0.0,
        max_queue_size: int = 2048,
        on_batch: Callable[[int], None] | None = None,
        name: str = "batcher",
        workers: int = 1,
        limits_of: Callable[[Any], tuple[int, int]] | None = None,
    ):
        """``limits_of(key)``: the key's largest batch and most runs at once, asked when its
        queue opens (None: ``max_batch_size`` and ``workers`` for every key); a batch size
        above ``max_queue_size`` is refused at submit."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_queue_size < max_batch_size:
            raise ValueError("max_queue_size must be at least max_batch_size")
        self._run = run
        self.max_batch_size = int(max_batch_size)
        self.max_queue_delay = float(max_queue_delay)
        self.max_queue_size = int(max_queue_size)
        self._on_batch = on_batch
        self._limits_of = limits_of
        # A lane per key (the data plane's: per model version), in turn order; a key's lane
        # goes once it has nothing queued or running. The workers are shared by every key.
        self._lanes: dict[Any, _Lane] = {}
        self._queued = 0  # images in all of them
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the lock, for ``with``
        self._sleepers: list[threading.Condition] = []  # idle workers, most recent last
        self._closing = False
        self._running = 0  # model runs in flight
        self._threads = [
            threading.Thread(target=self._work, name=name if workers == 1 else f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def workers(self) -> int:
        return len(self._threads)

    @property
    def queued(self) -> int:
        """Images waiting in the queues (not yet taken into a batch)."""
        return self._queued

    def queued_of(self, key: Any) -> int:
        """Images waiting in ``key``'s queue."""
        lane = self._lanes.get(key)
        return 0 if lane is None else lane.queued

    async def submit(self, images: np.ndarray, deadline: float | None = None,
                     key: Any = None, timing: RunTiming | None = None) -> np.ndarray:
        """Queue ``images`` (N rows, N >= 1) and wait for their ``run(batch, key)`` outputs.

        ``deadline`` is a ``time.monotonic()`` instant; None waits as long as needed. Only
        requests with the same ``key`` share a run; every chunk of a request larger than
        ``max_batch_size`` runs with its ``key``. ``timing``: filled in as the request is
        queued and run. Raises OverloadedError, UnavailableError (closed),
        DeadlineExceededError, or whatever ``run`` raised for a batch of these rows.
        """
        n = len(images)
        loop = asyncio.get_running_loop()
        futures = []
        if timing is not None:
            timing.queued_ns = time.time_ns()
        with self._cond:
            if self._closing:
                raise UnavailableError("server is shutting down")
            if n > self.max_queue_size:
                raise OverloadedError(
                    f"request of {n} images can never fit in the queue of {self.max_queue_size} "
                    f"images; send fewer", retry_after_ms=None,
                )
            lane = self._lanes.get(key) or self._open_lane(key)
            if lane.queued + n > self.max_queue_size:
                raise OverloadedError(
                    f"request queue is full ({lane.queued} of {self.max_queue_size} images "
                    f"queued, {n} more asked); retry later or send fewer"
                )
            step = lane.max_batch_size
            for start in range(0, n, step):
                chunk = images[start:start + step] if n > step else images
                futures.append(loop.create_future())
                lane.items.append(_Item(chunk, len(chunk), futures[-1], loop, deadline, key, timing))
            self._lanes[key] = lane
            lane.queued += n
            self._queued += n
            self._wake()
        if len(futures) == 1:
            return await futures[0]
        try:
            parts = await asyncio.gather(*futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return np.concatenate(parts)

    def _open_lane(self, key: Any) -> _Lane:
        """A new lane for ``key`` (not yet in the turn order: ``submit`` adds it once its
        request fits); ValueError for limits the queue cannot hold."""
        max_batch_size, max_runs = ((self.max_batch_size, self.workers) if self._limits_of is None
                                    else self._limits_of(key))
        if not 1 <= max_batch_size <= self.max_queue_size or max_runs < 1:
            raise ValueError(f"limits of {key!r}: batches of {max_batch_size} images in a queue of "
                             f"{self.max_queue_size}, {max_runs} runs at once")
        return _Lane(key, max_batch_size, max_runs)

    def _wake(self) -> None:
        """Under the lock: if a run may start now, wake the idle worker that went idle last.

        Only then: a wake is a system call on the event loop's thread and a context switch
        to a worker that needs the GIL, and with a run in flight and less than a full batch
        queued a woken worker would only go back to sleep (``_may_start``). A worker that ends
        a run looks at the queue itself; one that takes a batch passes the wake on if another
        run may still start (``_work``).

        The last one (a stack, not a queue): under light load one worker then does every
        run, on a core whose caches still hold the model (taking turns, a condition
        variable's order, made lone runs slower: docs/benchmarks.md)."""
        if self._sleepers and self._may_start():
            self._sleepers.pop().notify()

    def _sleep(self, mine: threading.Condition, timeout: float | None = None) -> None:
        """Under the lock: wait on ``mine`` (this worker's) for a wake, or ``timeout``."""
        self._sleepers.append(mine)
        try:
            mine.wait(timeout)
        finally:
            if mine in self._sleepers:  # timed out (or closing) without being woken
                self._sleepers.remove(mine)

    # -- worker thread ------------------------------------------------------------------

    def _startable(self, lane: _Lane) -> bool:
        """Under the lock: a run of ``lane`` may start now (see the module docstring)."""
        return (lane.queued > 0 and lane.running < lane.max_runs
                and (self._running == 0 or self._closing or lane.queued >= lane.max_batch_size))

    def _may_start(self) -> bool:
        """Under the lock: a run of some lane may start now."""
        return bool(self._queued) and any(map(self._startable, self._lanes.values()))

    def _filled(self) -> bool:
        """Under the lock: the queue delay is over early: ``max_batch_size`` images queued, or
        a lane's full batch."""
        return (self._queued >= self.max_batch_size
                or any(lane.queued >= lane.max_batch_size for lane in self._lanes.values()))

    def _take(self) -> tuple[list[_Item], _Lane | None, list[_Item]]:
        """Under the lock: pop the next batch (queued items of one startable lane in order, up
        to its largest batch; the lanes take turns), its lane, and the expired or cancelled
        items."""
        dropped: list[_Item] = []
        for lane in list(self._lanes.values()):
            if self._startable(lane):
                batch = self._take_of(lane, dropped)
                if batch:
                    return batch, lane, dropped
        return [], None, dropped

    def _take_of(self, lane: _Lane, dropped: list[_Item]) -> list[_Item]:
        batch: list[_Item] = []
        total = 0
        now = None
        queue = lane.items
        while queue:
            item = queue[0]
            if item.future.done():  # cancelled by the caller
                queue.popleft()
                lane.queued -= item.size
                self._queued -= item.size
                continue
            if item.deadline is not None:
                if now is None:
                    now = time.monotonic()
                if item.deadline <= now:
                    queue.popleft()
                    lane.queued -= item.size
                    self._queued -= item.size
                    dropped.append(item)
                    continue
            if total + item.size > lane.max_batch_size:
                break
            queue.popleft()
            lane.queued -= item.size
            self._queued -= item.size
            batch.append(item)
            total += item.size
        if batch:
            lane.running += 1
        del self._lanes[lane.key]  # its turn is over: to the end of the order, or gone
        if queue or lane.running:
            self._lanes[lane.key] = lane
        return batch

    def _ran(self, lane: _Lane) -> None:
        """Under the lock: one of ``lane``'s runs ended."""
        self._running -= 1
        lane.running -= 1
        if not lane.running and not lane.items and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]
        if self._closing:  # a worker asleep behind a lane's limit may now take or end
            while self._sleepers:
                self._sleepers.pop().notify()

    def _work(self) -> None:
        cond = self._cond
        mine = threading.Condition(self._lock)
        while True:
            with cond:
                while not self._may_start():
                    if self._closing and not self._queued:
                        return
                    self._sleep(mine)
                if self.max_queue_delay > 0 and not self._filled():
                    end = time.monotonic() + self.max_queue_delay
                    while not self._filled() and not self._closing:
                        remaining = end - time.monotonic()
                        if remaining <= 0:
                            break
                        self._sleep(mine, remaining)
                batch, lane, dropped = self._take()
                if batch:
                    self._running += 1
                self._wake()  # more than one run's worth is queued: the next worker
            if dropped:
                self._fail(dropped, None)
            if batch:
                try:
                    self._run_batch(batch)
                finally:
                    with cond:
                        self._ran(lane)
            # let go of the batch's keys before sleeping: a model version no longer served
            # is freed with its last request, not with this worker's next run
            batch = lane = dropped = None

    def _run_batch(self, batch: list[_Item]) -> None:
        started = time.time_ns()
        try:
            if len(batch) == 1:
                inputs = batch[0].images
            else:
                inputs = np.concatenate([item.images for item in batch])
            outputs = self._run(inputs, batch[0].key)
        except BaseException as exc:  # handed to every caller of the batch
            _timed(batch, started, sum(item.size for item in batch))
            self._fail(batch, exc)
            return
        _timed(batch, started, len(inputs))
        if self._on_batch is not None:
            try:
                self._on_batch(len(inputs))
            except Exception:
                log.exception("on_batch callback failed")
        if len(batch) == 1:
            item = batch[0]
            self._post(item.loop, [(item.future, outputs, None)])
            return
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        start = 0
        for item in batch:
            end = start + item.size
            by_loop.setdefault(item.loop, []).append((item.future, outputs[start:end], None))
            start = end
        for loop, results in by_loop.items():
            self._post(loop, results)

    def _fail(self, items: list[_Item], exc: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for item in items:
            error = exc if exc is not None else DeadlineExceededError(
                "deadline expired while the request was queued; not computed"
            )
            by_loop.setdefault(item.loop, []).append((item.future, None, error))
        for loop, results in by_loop.items():
            self._post(loop, results)

    @staticmethod
    def _post(loop: asyncio.AbstractEventLoop, results: list) -> None:
        try:
            loop.call_soon_threadsafe(_deliver, results)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass

    # -- lifecycle ------------------------------------------------------------------------

    def close_nowait(self) -> None:
        """Refuse new requests; the worker finishes what is queued, then exits."""
        with self._cond:
            self._closing = True
            while self._sleepers:
                self._sleepers.pop().notify()

    async def close(self, timeout: float | None = None) -> bool:
        """Refuse new requests, finish the queued ones; True if the workers ended in time."""
        self.close_nowait()
        return await asyncio.get_running_loop().run_in_executor(None, self.join, timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every worker (``timeout`` for all of them together); True if all ended."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)
