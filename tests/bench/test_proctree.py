"""bench.proctree on a real process tree: a Python child that starts a child of its own."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from bench import proctree

# Starts a grandchild holding 20 MB, waits until it is ready, prints its pid; on SIGTERM it
# stops the grandchild first (like the server's parent process) unless told not to.
PARENT = """
import signal, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c",
    "import sys, time; b = bytearray(20 << 20); print('ready', flush=True); time.sleep(60)"],
    stdout=subprocess.PIPE, text=True)
grandchild.stdout.readline()
def stop(*_):
    if sys.argv[1] == "stops-children":
        grandchild.terminate()
        grandchild.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(grandchild.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def family(request):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, request.param],
                              stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    started = proctree.identities([parent.pid, grandchild])
    yield parent, grandchild
    proctree.kill_survivors(started, grace=0)
    parent.wait(10)


@pytest.mark.parametrize("family", ["stops-children"], indirect=True)
def test_memory_and_cpu_of_the_tree(family):
    parent, grandchild = family
    assert proctree.tree(parent.pid) == [parent.pid, grandchild]
    memory = proctree.memory_mb(parent.pid)
    assert memory["processes"] == 2 and len(memory["per_process_rss_mb"]) == 2
    assert memory["rss_mb"] == pytest.approx(sum(memory["per_process_rss_mb"]), abs=0.2)
    assert memory["per_process_rss_mb"][1] > 20  # the grandchild's 20 MB
    assert memory["peak_rss_mb"] >= memory["rss_mb"] > 0
    assert 0 < memory["pss_mb"] <= memory["rss_mb"]
    assert proctree.cpu_seconds(parent.pid) > 0


@pytest.mark.parametrize("family", ["stops-children"], indirect=True)
def test_no_survivors_when_the_parent_stops_its_children(family):
    parent, grandchild = family
    children = proctree.identities(proctree.tree(parent.pid)[1:])
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(10) == 0
    assert proctree.kill_survivors(children) == []


@pytest.mark.parametrize("family", ["leaves-children"], indirect=True)
def test_survivors_are_killed(family):
    parent, grandchild = family
    children = proctree.identities(proctree.tree(parent.pid)[1:])
    parent.send_signal(signal.SIGTERM)
    parent.wait(10)
    assert proctree.kill_survivors(children, grace=0.2) == [grandchild]
    assert proctree.kill_survivors(children, grace=1.0) == []  # gone (or a reaped zombie)


def test_memory_of_a_missing_process_raises():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    with pytest.raises(FileNotFoundError):
        proctree.memory_mb(int(done.stdout))
