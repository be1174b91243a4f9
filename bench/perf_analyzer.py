"""Run Triton's perf_analyzer against our Open Inference Protocol service (gRPC, or the REST
API with ``-i http``); parse its CSV.

The binary comes from the tritonclient 2.51.0 wheel, installed by
bench/setup_triton_env.sh into .venv-triton/perf-analyzer/bin (``PERF_ANALYZER`` overrides
the path). It needs libb64 (apt: libb64-0d) and libcudart.so.12 (pip:
nvidia-cuda-runtime-cu12 in .venv-triton, put on LD_LIBRARY_PATH here) even on a CPU-only
machine. Before measuring it calls ModelMetadata, ModelConfig and, since we announce the
``statistics`` extension, ModelStatistics.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRITON_VENV = Path(os.environ.get("TRITON_VENV", ROOT / ".venv-triton"))


PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec\. Avg latency: (\d+) usec")


def binary() -> str | None:
    path = os.environ.get("PERF_ANALYZER") or str(TRITON_VENV / "perf-analyzer" / "bin" / "perf_analyzer")
    return path if Path(path).exists() else None


def environment() -> dict[str, str]:
    env = dict(os.environ)
    libs = glob.glob(str(TRITON_VENV / "lib" / "python3*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"))
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libs[0], env.get("LD_LIBRARY_PATH")]))
    return env


def command(model: str, address: str, batch: int, concurrency: int, csv_path: str,
            window_ms: int = 3000, request_count: int = 0, protocol: str = "grpc") -> list[str]:
    """``protocol``: ``grpc``, or ``http`` (the REST API, tensors as binary data)."""
    cmd = [
        binary() or "perf_analyzer", "-m", model, "-u", address, "-i", protocol,
        "-b", str(batch), "--concurrency-range", str(concurrency), "-f", csv_path, "-v",
    ]
    if request_count:
        cmd += ["--request-count", str(request_count)]
    else:
        # Stability: 3 consecutive windows within 30% of each other (the default 10%
        # rarely settles on 2 shared cores), at most 10 windows.
        cmd += ["-p", str(window_ms), "-s", "30", "--max-trials", "10"]
    return cmd


def run(model: str, address: str, batch: int, concurrency: int, window_ms: int = 3000,
        request_count: int = 0, timeout: float = 120.0, protocol: str = "grpc") -> dict:
    """One perf_analyzer measurement: images/s and latency percentiles (ms), or an error.
    ``address``: host:port of the gRPC port, or of the HTTP port with ``protocol="http"``."""
    if binary() is None:
        return {"error": "perf_analyzer not found: run bash bench/setup_triton_env.sh"}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = os.path.join(tmp, "pa.csv")
        cmd = command(model, address, batch, concurrency, csv_path, window_ms, request_count,
                      protocol)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=environment())
        except subprocess.TimeoutExpired:
            return {"error": f"perf_analyzer timed out after {timeout:.0f} s"}
        rows = []
        if os.path.exists(csv_path):
            with open(csv_path) as f:
                rows = list(csv.DictReader(io.StringIO(f.read())))
    if done.returncode != 0 or not rows:
        passes = PASS.findall(done.stdout)
        if "Failed to obtain stable measurement" in done.stdout + done.stderr and passes:
            # No stable 3-window stretch: report the median of the windows, flagged.
            return {
                "images_per_s": round(statistics.median(float(t) for t, _ in passes), 1),
                "mean_ms": round(statistics.median(int(a) for _, a in passes) / 1000, 3),
                "p50_ms": None, "p99_ms": None, "unstable_windows": len(passes),
                "batch": batch, "concurrency": concurrency,
            }
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return {"error": f"perf_analyzer exit {done.returncode}: {' | '.join(tail)}"}
    row = rows[0]
    return {
        "images_per_s": float(row["Inferences/Second"]),  # requests/s * batch size
        "p50_ms": int(row["p50 latency"]) / 1000,
        "p90_ms": int(row["p90 latency"]) / 1000,
        "p99_ms": int(row["p99 latency"]) / 1000,
        "batch": batch,
        "concurrency": concurrency,
    }
