"""The benchmark still runs end to end (tiny model, tiny request counts; figures unchecked).

Not a timed test: it only checks that every part produces its figures, that no request
failed and that the server exited cleanly, so bench/ cannot rot unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import h2load

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke(tmp_path):
    out = tmp_path / "results.json"
    report = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["model"]["name"] == "tiny-cnn"
    assert all(v["images_per_s"] > 0 for v in results["ceiling"]["batches"].values())
    assert 0 < results["cold_start"]["seconds"] < 60
    server = results["server"]
    assert server["exit_code"] == 0 and not server["server_errors_logged"]
    for key, value in server["cifar10_loadgen"].items():
        assert value["images_per_s"] > 0 and not value["errors"], (key, value)
    pa = server.get("oip_perf_analyzer", {})
    for key, value in pa.items():
        # perf_analyzer needs the separate Triton venv (bench/setup_triton_env.sh).
        if any("not found" in str(e) for e in value["errors"]):
            continue
        assert value["images_per_s"] and not value["errors"], (key, value)
    memory = server["memory_end"]
    assert memory["rss_mb"] > 0 and memory["processes"] == len(memory["per_process_rss_mb"]) >= 1
    assert server["children_left_after_exit"] == []
    assert results["server_settings"]["workers"] >= 1
    floor = results["grpc_floor"]
    assert set(floor) == {"1x1", "1x64"}
    assert all(v["images_per_s"] > 0 and not v["errors"] for v in floor.values()), floor
    targets = results["targets"]
    assert set(targets) == {f"{api}_{name}" for api in ("cifar10", "oip") for name in (
        "single_c64_vs_floor", "single_c1_p50_ms", "single_c1_p99_over_p50")} | {
        "batch32_c4_vs_ceiling", "cold_start_s", "rss_mb"}
    assert targets["cold_start_s"]["met"] is not None and targets["rss_mb"]["met"] is not None
    assert results["floor"]["R_images_per_s"] > 0 and results["floor"]["R_batch1_p50_ms"] > 0
    text = report.read_text()
    assert "Targets (issue 14)" in text and "(d) The gRPC floor" in text and "Composed floor" in text
    if h2load.binary() is not None:  # part (e); CI installs h2load (nghttp2-client)
        for part in ("cifar10_h2load", "oip_h2load"):
            for key, value in server[part].items():
                assert value["images_per_s"] > 0 and not value["errors"], (part, key, value)
        for part in ("grpc_floor_h2load", "oip_grpc_floor_h2load"):
            lean_floor = results[part]
            assert set(lean_floor) == {"1x1", "1x64"}
            assert all(v["images_per_s"] > 0 and not v["errors"] for v in lean_floor.values()), lean_floor
        for api in ("cifar10", "oip"):
            assert results["floor"][api]["F_images_per_s"] > 0
            assert targets[f"{api}_single_c64_vs_floor"]["value"] > 0
            assert targets[f"{api}_single_c1_p50_ms"]["target"] > 0
        assert "| oip | 1 | 64 |" in text
        for api in ("cifar10", "oip"):  # part (f): side by side, one repeat in a smoke run
            paired = server["paired_floor"][api]
            assert len(paired["repeats"]) == 1 and paired["repeats"][0]["errors"] == []
            assert paired["share_of_F"] > 0 and paired["c1_limit_ms"] > paired["E_c1_p50_ms"] > 0
            assert targets[f"{api}_single_c64_vs_floor"]["value"] == paired["share_of_F"]
        assert "(f) Side by side" in text


def test_settings_sweep_smoke(tmp_path, tiny_model_path):
    """bench.sweep: one configuration per value, each served and loaded, ratios to defaults."""
    out = tmp_path / "sweep.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "--model", str(tiny_model_path), "--set", "instances=2",
         "--set", "max_batch_size=8", "--config", "instances=2,max_batch_size=4", "--scenarios", "1x4,4x2", "--repeats", "1", "--requests", "8",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    configs = json.loads(out.read_text())["configs"]
    assert list(configs) == ["defaults", "instances=2", "max_batch_size=8",
                             "instances=2, max_batch_size=4"]
    for name, config in configs.items():
        assert config["peak_rss_mb"] > 0
        scenarios = config["scenarios"]
        assert set(scenarios) == {"1x4", "4x2"}
        for value in scenarios.values():
            assert value["images_per_s"] > 0 and not value["errors"], (name, value)
    assert all(v["vs_defaults"] == 1.0 for v in configs["defaults"]["scenarios"].values())
    assert "| instances=2 | 1x4 |" in done.stdout
