"""Smoke test of bench.encoding (few repeats): both paths run, agree, and are reported."""

from __future__ import annotations

import json

import pytest

from bench import encoding, v1_baseline


def _baseline_in_history() -> bool:
    try:
        v1_baseline.git_show(v1_baseline.BASELINE, "serving/classifier_servicer.py")
    except v1_baseline.BaselineUnavailable:
        return False
    return True


@pytest.mark.skipif(not _baseline_in_history(), reason="needs git history with the v1 baseline")
def test_encoding_bench_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "encoding.json"
    argv = ["--sizes", "1", "3", "--top-k", "1", "10", "--repeats", "2", "--number", "3", "--json", str(out)]
    assert encoding.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["baseline_commit"] == v1_baseline.BASELINE and report["repeats"] == 2
    assert set(report["cpu"]) == {"model", "simd_flags"} and report["protobuf"]
    assert [(r["images"], r["top_k"]) for r in report["results"]] == [(1, 1), (1, 10), (3, 1), (3, 10)]
    for row in report["results"]:
        assert row["server_v2_us"] > 0 and row["server_v1_us"] > 0 and row["client_v1_us"] > 0
        assert row["server_ratio_v2_v1"] == pytest.approx(row["server_v2_us"] / row["server_v1_us"], rel=0.01)
        assert 0 < row["bytes_v2"] < row["bytes_v1"]
    assert "| 3 | 10 |" in capsys.readouterr().out


def test_missing_baseline_is_reported_not_raised(monkeypatch, capsys):
    monkeypatch.setattr(v1_baseline, "BASELINE", "0" * 40)
    assert encoding.main(["--sizes", "1", "--repeats", "1", "--number", "1"]) == 1
    assert "v1 baseline is unavailable" in capsys.readouterr().err

