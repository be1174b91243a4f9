"""bench.model_repository end to end in smoke mode: every figure is there, and the new
version is served under load without a failed call."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.paths import ROOT


@pytest.mark.slow
def test_the_benchmark_runs_and_a_new_version_fails_no_call():
    done = subprocess.run([sys.executable, "-m", "bench.model_repository", "--smoke",
                           "--warmup", "0.2", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert set(figures["rss"]["rss_mb"]) == {"1", "2", "4"}
    assert figures["one_alone"]["images_per_s"] > 0 and figures["split"]["images_per_s"] > 0
    swap = figures["new_version"]
    assert swap["failed_calls"] == 0 and swap["seconds_to_serve"] is not None
    assert ["a", "2"] in swap["served_after"] and ["a", "1"] not in swap["served_after"]
