"""bench.perf_analyzer: Triton's perf_analyzer measures our Open Inference Protocol service,
over gRPC and over the REST API (``-i http``: binary tensor data); it reads the model's
metadata, configuration and statistics before inferring. Needs the
separate Triton venv (``bash bench/setup_triton_env.sh``; made here under CI or
TRITON_SETUP=1); skipped without it."""

from __future__ import annotations

import os
import subprocess

import pytest

from bench import perf_analyzer
from bench.paths import ROOT

MODEL_NAME = "tiny-cnn"  # tests/tiny_model.py


def ensure_perf_analyzer() -> None:
    """Skip unless perf_analyzer is installed; under CI (or TRITON_SETUP=1) install it first."""
    if perf_analyzer.binary() is None and (os.environ.get("CI") or os.environ.get("TRITON_SETUP")):
        done = subprocess.run(["bash", str(ROOT / "bench" / "setup_triton_env.sh")],
                              capture_output=True, text=True, timeout=900, cwd=ROOT)
        if perf_analyzer.binary() is None:
            pytest.skip(f"could not install perf_analyzer: {done.stderr.strip()[-500:]}")
    if perf_analyzer.binary() is None:
        pytest.skip("perf_analyzer not installed (bash bench/setup_triton_env.sh)")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_can_benchmark_us(server_factory, protocol):
    ensure_perf_analyzer()
    server = server_factory(max_images_per_request=16, grace_seconds=1.0)
    address = f"127.0.0.1:{server.port if protocol == 'grpc' else server.http_port}"
    for batch in (1, 4):
        result = perf_analyzer.run(MODEL_NAME, address, batch, 2, request_count=20, timeout=60,
                                   protocol=protocol)
        if "error while loading shared libraries" in result.get("error", ""):
            pytest.skip(f"perf_analyzer cannot start here: {result['error']}")
        assert "error" not in result, result
        assert result["images_per_s"] > 0 and result["p99_ms"] > 0
