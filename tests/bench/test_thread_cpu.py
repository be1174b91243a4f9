"""bench.thread_cpu against a real bench.echo_server process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import h2load, thread_cpu
from bench.paths import ROOT


def test_thread_cpu_of_the_running_test_process_names_the_main_thread():
    import os

    cpu = thread_cpu.thread_cpu(os.getpid())
    assert "main" in cpu and cpu["main"] >= 0


@pytest.mark.skipif(h2load.binary() is None, reason="h2load not installed")
def test_cpu_per_call_of_the_echo_server():
    echo = subprocess.Popen([sys.executable, "-m", "bench.echo_server", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(echo.stdout.readline().split()[-1])
        result = thread_cpu.measure(echo.pid, f"127.0.0.1:{port}", concurrency=4, duration=1,
                                    warmup=1)
    finally:
        echo.terminate()
        echo.wait(30)
    assert result["calls_per_s"] > 0
    assert result["main_thread_us_per_call"] > 0  # the event loop does work for every call
    assert result["server_us_per_call"] >= result["main_thread_us_per_call"]
    assert result["h2load_us_per_call"] > 0


def test_request_path_pieces_are_timed_and_summed():
    from bench import request_path

    result = request_path.measure(number=50, repeats=1)
    pieces = {k: v for k, v in result.items() if k != "sum"}
    assert len(pieces) == 8 and all(v > 0 for v in pieces.values())
    assert result["sum"] == pytest.approx(sum(pieces.values()), abs=0.05)
