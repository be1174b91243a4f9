"""The oneDNN training-step benchmark runs end to end, each arm in its own process (not timed)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.training, pytest.mark.slow]


def test_training_step_bench_smoke(tmp_path):
    from bench import training_step

    out = tmp_path / "result.json"
    assert training_step.main(["--rounds", "1", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["networks"]) == {"seed-cnn", "airbench94"}
    for row in result["networks"].values():
        assert row["median_off"] > 0 and row["median_on"] > 0 and row["ratio_on_over_off"] > 0
    assert result["cpu"]["model"] is not None
