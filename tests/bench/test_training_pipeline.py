"""The training-pipeline benchmark runs end to end on a few synthetic images (not timed)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.training, pytest.mark.slow]


def test_training_pipeline_bench_smoke(tmp_path):
    from bench import training_pipeline

    out = tmp_path / "result.json"
    assert training_pipeline.main(["--data", "synthetic", "--images", "512", "--steps", "1", "--rounds", "1",
                                   "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["median"]) == 3 and all(rate > 0 for rate in result["median"].values())
    assert result["ratio_ours_over_lab"] > 0
