"""The HTTP door in real ``cifar10-serve`` processes: ``--workers 2`` answer HTTP on one port
(SO_REUSEPORT), and an idle server with HTTP on costs no more CPU than one with it off
(uvicorn runs without its 10 Hz main loop: ``cifar10_serving.http_api.server``)."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from tests.ports import free_port
from tests.serving.test_lifecycle import _start
from tests.serving.test_workers import CONNECTIONS, _children, _port_of, _sockets, _spawn, _stop

IDLE_S = 20.0


def test_two_workers_answer_http_on_one_port(tiny_model_path):
    http_port = free_port()
    proc = _spawn(tiny_model_path, "--http-port", str(http_port))
    try:
        _port_of(proc)
        workers = [proc.pid, *_children(proc.pid)]
        assert len(workers) == 2
        # both workers take connections once both listen: until then, try again
        end, gained = time.monotonic() + 60, {}
        while time.monotonic() < end:
            before = {pid: _sockets(pid) for pid in workers}
            clients = [httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
                       for _ in range(CONNECTIONS)]
            try:  # each its own connection, held open while the sockets are counted
                answers = [client.get("/v2/health/ready") for client in clients]
                gained = {pid: _sockets(pid) - before[pid] for pid in workers}
            finally:
                for client in clients:
                    client.close()
            assert [a.status_code for a in answers] == [200] * CONNECTIONS
            if all(gained.values()):
                break
            time.sleep(0.5)
        assert all(count > 0 for count in gained.values()), gained
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert "ERROR" not in err and "Traceback" not in err


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_idle_cpu_with_http_on_is_not_above_http_off(tiny_model_path):
    """Both servers idle side by side over the same seconds; their CPU time compared."""
    servers = {}
    try:
        for name, http_port in (("on", free_port()), ("off", -1)):
            proc, channel = _start(tiny_model_path, "--http-port", str(http_port),
                                   "--reload-interval-s", "0")
            channel.close()
            servers[name] = proc
            if http_port >= 0:
                assert httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready",
                                 timeout=30).status_code == 200
        time.sleep(2.0)  # past start-up's last steps (Pillow is imported 0.2 s after it)
        before = {name: _cpu_seconds(proc.pid) for name, proc in servers.items()}
        time.sleep(IDLE_S)
        used = {name: _cpu_seconds(proc.pid) - before[name] for name, proc in servers.items()}
    finally:
        for proc in servers.values():
            _stop(proc)
    print(f"CPU seconds over {IDLE_S:.0f} s idle: HTTP on {used['on']:.2f}, "
          f"off {used['off']:.2f}")
    # a clock tick (10 ms) of slack either way over the 20 s, twice
    assert used["on"] <= used["off"] + 0.02, used
