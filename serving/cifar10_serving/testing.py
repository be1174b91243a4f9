"""Run the full server on a background thread with its own event loop.

For tests, benchmarks and notebooks: the same ``Service`` as ``cifar10-serve``, without
signals or a subprocess::

    with BackgroundServer(Settings(model_path=..., port=0, http_port=0, metrics_port=-1)) as srv:
        channel = grpc.insecure_channel(srv.address)
        ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

from cifar10_serving.observability.metrics import Metrics
from cifar10_serving.service import Service
from cifar10_serving.settings import Settings


class BackgroundServer:
    """``Service`` on a thread of its own (``service``: it, once started; ``port``: its port)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 tracer_provider: Any = None):
        """``tracer_provider``: an OpenTelemetry tracer provider for the service's spans
        (None: as the ``OTEL_*`` environment says)."""
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.tracer_provider = tracer_provider
        self.service: Service | None = None
        self.port: int | None = None
        self.http_port: int | None = None  # None: HTTP off (http_port -1)
        self.metrics_port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()  # guards _loop_ending against begin_stop
        self._loop_ending = False

    @property
    def plane(self):
        """The service's data plane (``cifar10_serving.dataplane.plane.DataPlane``)."""
        return self.service.plane

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    @property
    def http_address(self) -> str:
        """``http://localhost:PORT`` of the HTTP door."""
        return f"{'https' if self.settings.tls else 'http'}://localhost:{self.http_port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread = threading.Thread(target=self._main, name="grpc-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("server did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._run())
        finally:
            with self._lock:
                self._loop_ending = True
            # Run what begin_stop scheduled just before the end, so its futures complete.
            self.loop.run_until_complete(self._finish_pending())
            self.loop.close()

    @staticmethod
    async def _finish_pending() -> None:
        await asyncio.sleep(0)
        current = asyncio.current_task()
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not current),
                             return_exceptions=True)

    async def _run(self) -> None:
        try:
            self.service = Service(self.settings, self.metrics, tracer_provider=self.tracer_provider)
            self.port = self.service.port
            self.http_port = self.service.http_port
            await self.service.start()
            if self.settings.metrics_port >= 0:
                self.metrics_port = self.metrics.serve("127.0.0.1", self.settings.metrics_port)
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self.service.wait()

    def call(self, coro, timeout: float | None = 60.0):
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def begin_stop(self, grace: float | None = None) -> concurrent.futures.Future:
        """Start a graceful stop without waiting (a concurrent.futures.Future).

        Once the server has ended on its own, the future is already done.
        """

        async def go():
            await self.service.stop(grace)

        with self._lock:
            if not self._loop_ending:
                return asyncio.run_coroutine_threadsafe(go(), self.loop)
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(None)
        return done

    def stop(self, grace: float | None = 0.0, timeout: float = 30.0) -> None:
        """Stop gracefully and wait for the server thread to end (TimeoutError if it does not)."""
        if self._thread is None:
            return
        end = time.monotonic() + timeout
        if self._thread.is_alive() and self.service is not None:
            future = self.begin_stop(grace)
            while not future.done() and self._thread.is_alive() and time.monotonic() < end:
                self._thread.join(0.05)
        self._thread.join(max(0.0, end - time.monotonic()))
        if self._thread.is_alive():
            raise TimeoutError(f"server did not stop within {timeout:.0f} s")
        self.metrics.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
