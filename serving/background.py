"""Run the full server on a background thread with its own event loop.

For tests, benchmarks and notebooks: the same ``ServingCore`` and ``ServingServer`` as
``cifar10-serve``, without signals or a subprocess::

    with BackgroundServer(Settings(model_path=..., port=0, metrics_port=-1)) as srv:
        channel = grpc.insecure_channel(srv.address)
        ...
"""

from __future__ import annotations

import asyncio
import threading

from serving.core import ServingCore
from serving.metrics import Metrics
from serving.server import ServingServer, create_server
from serving.settings import Settings


class BackgroundServer:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.core: ServingCore | None = None
        self.server: ServingServer | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

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
            self.loop.close()

    async def _run(self) -> None:
        try:
            self.core = ServingCore.load(self.settings, self.metrics)
            self.server, self.port = create_server(self.settings, self.core)
            await self.server.start()
            if self.settings.metrics_port >= 0:
                self.metrics_port = self.metrics.serve("127.0.0.1", self.settings.metrics_port)
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self.server.wait_for_termination()

    def call(self, coro, timeout: float | None = 60.0):
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def begin_stop(self, grace: float | None = None):
        """Start a graceful stop without waiting (a concurrent.futures.Future)."""

        async def go():
            await self.server.stop(grace)

        return asyncio.run_coroutine_threadsafe(go(), self.loop)

    def stop(self, grace: float | None = 0.0, timeout: float = 30.0) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        if self.server is not None:
            self.begin_stop(grace).result(timeout)
        self._thread.join(timeout)
        self.metrics.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
