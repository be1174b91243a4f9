"""bench.compare: a paired before/after run, here with the current code on both sides (the
baseline a folder of symlinks to this install's packages), tiny model, tiny request counts;
figures unchecked (the CPU per call of so few calls may round to 0 ticks)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import compare, h2load

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cifar10_core", "cifar10_protos", "cifar10_serving", "cifar10_client")


def run_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.compare", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def baseline(tmp_path) -> Path:
    """A folder holding this install's packages as symlinks."""
    folder = tmp_path / "baseline"
    folder.mkdir()
    for name in PACKAGES:
        (folder / name).symlink_to(Path(importlib.import_module(name).__file__).parent)
    return folder


@pytest.mark.skipif(h2load.binary() is None, reason="h2load not installed (nghttp2-client)")
def test_compare_smoke(tmp_path, baseline, tiny_model_path):
    out = tmp_path / "compare.json"
    done = run_compare("--baseline", str(baseline), "--model", str(tiny_model_path),
                       "--rounds", "2", "--requests", "16", "--cold-starts", "1",
                       "--after-env", "CIFAR10_MAX_BATCH_SIZE=16", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["packages"]["before"] == str(baseline / "cifar10_serving")
    assert not Path(results["packages"]["after"]).is_relative_to(baseline)
    assert results["after_env"] == ["CIFAR10_MAX_BATCH_SIZE=16"]
    rounds = results["rounds"]
    assert [r["order"] for r in rounds] == [["before", "after"], ["after", "before"]]
    timed = [f for f in compare.FIGURES if not f.endswith("cpu_us_per_call")]
    for r in rounds:
        for build in compare.BUILDS:
            figures = r[build]
            assert figures["exit_code"] == 0 and not figures.get("errors"), figures
            assert not figures["errors_logged"], figures
            assert all(figures[f] > 0 for f in timed), figures
            assert all(figures[f] >= 0 for f in compare.FIGURES if f not in timed), figures
    summary = results["summary"]
    assert all(summary["ratio"][f] > 0 for f in timed)
    assert all(len(summary["ratios_by_round"][f]) == 2 for f in compare.FIGURES)
    assert "| 32x4_images_per_s |" in done.stdout and "| cold_start_s |" in done.stdout


def test_after_env_is_for_the_after_build_only():
    assert compare.build_env("/b", ["OTEL_TRACES_EXPORTER=console", "X=a=b"]) == {
        "CIFAR10_METRICS_PORT": "-1", "PYTHONPATH": compare.build_env("/b")["PYTHONPATH"],
        "OTEL_TRACES_EXPORTER": "console", "X": "a=b"}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        compare.build_env(None, ["NOVALUE"])


def test_a_baseline_without_the_server_package_is_refused(tmp_path, tiny_model_path):
    done = run_compare("--baseline", str(tmp_path), "--model", str(tiny_model_path))
    assert done.returncode == 2
    assert "would import cifar10_serving from" in done.stderr


def test_summary_takes_the_median_of_the_per_round_ratios():
    def side(calls: float) -> dict:
        return {f: calls for f in compare.FIGURES}

    rounds = [{"before": side(b), "after": side(a)}
              for b, a in ((100.0, 90.0), (200.0, 200.0), (100.0, 110.0))]
    summary = compare.summarize(rounds)
    assert summary["before"]["1x64_calls_per_s"] == 100.0
    assert summary["after"]["1x64_calls_per_s"] == 110.0
    # ratios 0.9, 1.0, 1.1: the median of the ratios (1.0), not the ratio of the medians (1.1)
    assert summary["ratio"]["1x64_calls_per_s"] == 1.0
    assert summary["ratios_by_round"]["rss_mb"] == [0.9, 1.0, 1.1]
    assert "| 1x64_calls_per_s | 100.0 | 110.0 | 1.000 (0.900, 1.000, 1.100) | higher |" in (
        compare.table(summary))
