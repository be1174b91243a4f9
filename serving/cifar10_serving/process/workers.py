"""Several server processes on one port (``--workers N``), as in grpc's multiprocessing example.

Why: a grpc.aio process answers its calls on one Python thread (the GIL), which costs
about as much CPU per call as the model's run for one image (docs/benchmarks.md). With N processes
sharing the port, the kernel spreads connections over them (``SO_REUSEPORT``) and each answers
on its own core, with its own onnxruntime session and dynamic batcher.

How: the first process reserves the port (a socket bound with ``SO_REUSEPORT``, held open
while serving, so port 0 resolves once for every worker), then forks N-1 workers *before*
anything starts a thread: no grpc server, channel or onnxruntime session exists yet (grpc
and onnxruntime do not survive a fork). Each process then loads the model and serves on the
reserved port. The first process (worker 0) also serves the metrics of them all (Prometheus
multiprocess mode, ``cifar10_serving.observability.metrics``) and supervises the others:

* SIGTERM, SIGINT and SIGHUP reach every worker: each stops gracefully (or reloads) itself;
* a worker that exits while the server is not stopping stops the whole server, exit status
  1, so that the orchestrator (Kubernetes, compose ``restart:``) starts a fresh one, instead
  of a server that quietly runs at half its capacity;
* a worker whose parent dies gets SIGTERM (``PR_SET_PDEATHSIG``): no orphan keeps the port.

Connections, not calls, are spread: one client connection is served by one worker, so a
single-connection client reaches one worker (and its batcher) only.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT (port 0: a free one); keep it open
    while the workers serve on ``sock.getsockname()[1]``. OSError if the port is taken by a
    listener without SO_REUSEPORT (a single-process server, another program)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:
    """In a forked worker: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError, TypeError):
        pass


class Workers:
    """The first process's view of the workers it forked (none in a forked worker)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.index = 0  # this process's worker number; 0: the first process
        self.children: dict[int, int] = {}  # pid -> worker number, while running
        self.failed: list[str] = []  # workers that exited on their own, described
        self.stopping = False

    @property
    def is_first(self) -> bool:
        return self.index == 0

    def fork(self) -> int:
        """Fork ``count - 1`` workers; returns this process's worker number. Call before any
        thread, grpc object or onnxruntime session exists."""
        parent = os.getpid()
        for index in range(1, self.count):
            pid = os.fork()
            if pid == 0:
                _die_with_parent()
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                self.index, self.children = index, {}
                return index
            self.children[pid] = index
        return 0

    def signal(self, sig: int) -> None:
        """Pass ``sig`` on to every running worker (first process only)."""
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def reap(self, on_exit: Callable[[int, int], None] | None = None,
             report: bool = True) -> None:
        """Collect the workers that have exited (non-blocking); an exit while not stopping,
        or a non-zero one, is a failure (``failed``; logged if ``report``);
        ``on_exit(pid, status)`` for each."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            index = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if not self.stopping or code != 0:
                what = f"worker {index} (pid {pid}) exited with status {code}"
                self.failed.append(what)
                if report:
                    log.error("%s%s", what, "" if self.stopping else "; stopping the server")
            if on_exit is not None:
                on_exit(pid, code)

    async def wait(self, timeout: float, on_exit: Callable[[int, int], None] | None = None,
                   report: bool = True) -> bool:
        """Until every worker has exited, at most ``timeout``; then SIGKILL the rest.
        True if all exited in time."""
        end = time.monotonic() + timeout
        while self.children and time.monotonic() < end:
            self.reap(on_exit, report)
            if self.children:
                await asyncio.sleep(0.02)
        if not self.children:
            return True
        for pid, index in list(self.children.items()):
            log.error("worker %d (pid %d) did not stop within %.1f s; killed", index, pid, timeout)
            self.failed.append(f"worker {index} (pid {pid}) killed")
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            if on_exit is not None:
                on_exit(pid, -signal.SIGKILL)
        self.children.clear()
        return False
