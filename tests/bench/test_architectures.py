"""bench.architectures still runs end to end: raw onnxruntime and server figures for each
model of a repository, and their ratios to the first (tiny models, one short round; figures
unchecked)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.bench.test_bench_smoke import ROOT
from tests.tiny_model import write_tiny_model


@pytest.mark.slow
def test_architectures_benchmark_runs(tmp_path):
    for name, seed in (("small", 1), ("other", 2)):
        (tmp_path / "repo" / name / "1").mkdir(parents=True)
        write_tiny_model(tmp_path / "repo" / name / "1" / "model.onnx", name=name, version="1", seed=seed)
    out = tmp_path / "architectures.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.architectures", "--repository", str(tmp_path / "repo"),
         "--models", "small,other", "--rounds", "1", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for name in ("small", "other"):
        model = figures["models"][name]
        assert model["raw_images_per_s"]["1"] > 0 and model["raw_images_per_s"]["32"] > 0
        assert model["server_images_per_s"] > 0 and model["server_errors"] == 0
    assert figures["ratios"]["small"] == {"raw b1": 1.0, "raw b32": 1.0, "server": 1.0}
