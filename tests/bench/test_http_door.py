"""bench.http_door still runs end to end: every case answered in full, no request failed
(tiny model, one short round; figures unchecked)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import h2load
from tests.bench.test_bench_smoke import ROOT


@pytest.mark.slow
@pytest.mark.skipif(h2load.binary() is None, reason="h2load not installed (apt: nghttp2-client)")
def test_http_door_benchmark_runs(tmp_path, tiny_model_path):
    out = tmp_path / "http-door.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.http_door", "--model", str(tiny_model_path), "--rounds", "1",
         "--duration", "1", "--warmup", "1", "--idle", "1", "--batches", "2",
         "--concurrencies", "2", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    cases = results["cases"]
    assert {key.split(" ")[0] for key in cases} == {
        "grpc-oip", "rest-json", "rest-binary", "grpc-classify-jpeg", "http-classify-jpeg"}
    assert all(cell["images_per_s"] > 0 for cell in cases.values()), cases
    assert set(results["ratios_to_grpc"]) == {"rest-json b2 c2", "rest-binary b2 c2",
                                              "http-classify-jpeg b2 c2"}
    assert results["memory_mb"]["http_on"]["rss_mb"] > 0
    assert "| rest-binary | 2 | 2 |" in done.stdout
