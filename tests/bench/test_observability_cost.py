"""bench.observability_cost: every configuration runs, here with the current code as the
baseline, the tiny model and a few calls; figures unchecked."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from bench import observability_cost

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cifar10_core", "cifar10_protos", "cifar10_serving", "cifar10_client")


def test_every_configuration_is_measured(tmp_path, tiny_model_path):
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    for name in PACKAGES:
        (baseline / name).symlink_to(Path(importlib.import_module(name).__file__).parent)
    out = tmp_path / "cost.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.observability_cost", "--baseline", str(baseline),
         "--model", str(tiny_model_path), "--rounds", "1", "--calls", "128", "--repeats", "1",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    [figures] = results["rounds"]
    assert set(figures) == set(observability_cost.CONFIGURATIONS)
    assert all(f["wall_us"] > 0 and f["cpu_us"] >= 0 for f in figures.values())
    exports = int(results["sink"].split()[1])
    assert exports > 0  # the traced configurations' spans reached the sink
    assert "| traced |" in done.stdout
