"""An experiment kept for measuring (issue 14): batching run by the event loop, onnxruntime's
``run_async`` instead of a worker thread per instance.

``bench.minimal_server --loop-batcher`` answers with this instead of our ``Batcher``. The
scheduling is the same rule (a run starts when an instance is free and either no run is in
flight or a full batch is queued); what differs is who does it and where the model runs:

* the event loop takes the batch, joins its rows and starts the run, and the end of each run
  is posted back to it (``call_soon_threadsafe``), which answers the callers and starts the
  next one: no Python worker thread, no lock;
* a run beside another (the server is busy) goes to ``InferenceSession.run_async`` on one
  of ``instances`` sessions of 2 intra-op threads: onnxruntime runs it on that session's own
  pool thread, as a 1-thread run (a nested parallel section runs on the calling pool
  thread), and holds the GIL only for its callback;
* a lone request (nothing else in flight) runs on all ``threads`` through
  ``OnnxModel.predict`` on one Python thread, as the server does: ``run_async`` on a 1-image
  batch after an idle gap was 0.16-0.73 ms slower at concurrency 1 (docs/benchmarks.md).

Part (f) of ``python -m bench`` measures it beside the minimal server in every run.
Not used by the server: in the same minutes it answered about 5 % more 1-image calls at
concurrency 64 than the minimal server with our batcher, below the 0.9 of F that issue 14
asks for, and it would bring native threads calling back into Python during shutdown and a
session per instance to the request path (docs/benchmarks.md, "third session of 2026-12-02").
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from cifar10_core import contract


def async_session(path: str) -> ort.InferenceSession:
    """A session whose ``run_async`` runs on its one pool thread (1-thread runs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2  # run_async needs a pool thread: 1 besides the caller
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class LoopBatcher:
    """``await submit(images)`` from one event loop: rows back, computed in a dynamic batch."""

    def __init__(self, model, sessions: list[ort.InferenceSession], max_batch_size: int):
        self._model = model  # OnnxModel: a lone request's run, on all its threads
        self._idle = list(sessions)
        self._instances = len(sessions)
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._queued = 0
        self._max = max_batch_size
        self._lone = ThreadPoolExecutor(1, thread_name_prefix="lone-run")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, images: np.ndarray) -> np.ndarray:
        self._loop = self._loop or asyncio.get_running_loop()
        future = self._loop.create_future()
        self._queue.append((images, future))
        self._queued += len(images)
        self._schedule()
        return await future

    def _schedule(self) -> None:
        while self._queue and self._idle and (len(self._idle) == self._instances
                                              or self._queued >= self._max):
            self._start()

    def _start(self) -> None:
        items, total = [], 0
        while self._queue and total + len(self._queue[0][0]) <= self._max:
            items.append(self._queue.popleft())
            total += len(items[-1][0])
        self._queued -= total
        batch = items[0][0] if len(items) == 1 else np.concatenate([i[0] for i in items])
        session = self._idle.pop()
        if total == 1 and len(self._idle) == self._instances - 1:  # alone: all threads
            running = self._loop.run_in_executor(self._lone, self._model.predict, batch)
            running.add_done_callback(lambda done: self._finished(
                session, items, None if done.exception() else [done.result()],
                done.exception()))
            return
        session.run_async([contract.OUTPUT_NAME], {contract.INPUT_NAME: batch}, self._callback,
                          (session, items, batch))  # batch: kept alive until the run ends

    def close_nowait(self) -> None:
        self._lone.shutdown(wait=False)

    def _callback(self, outputs, user_data, error: str) -> None:
        """On onnxruntime's pool thread: post the end of the run to the loop (with the check
        ``OnnxModel.predict`` makes on the other path)."""
        session, items, _ = user_data
        if not error and not np.isfinite(outputs[0].sum()):
            error = "the model produced non-finite probabilities"
        try:
            self._loop.call_soon_threadsafe(
                self._finished, session, items, outputs, RuntimeError(error) if error else None)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _finished(self, session, items, outputs, error: BaseException | None) -> None:
        self._idle.append(session)
        start = 0
        for images, future in items:
            end = start + len(images)
            if not future.done():
                if error is None:
                    future.set_result(outputs[0][start:end])
                else:
                    future.set_exception(error)
            start = end
        self._schedule()
