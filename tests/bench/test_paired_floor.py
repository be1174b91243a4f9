"""bench.paired_floor on hand-made measurements: each repeat's F, share and limit, the medians."""

from __future__ import annotations

import pytest

from bench.paired_floor import one_pair, summarize

RAW = {"R_images_per_s": 3000.0, "batch1_p50_ms": 0.5}


def test_one_repeat_has_its_own_floor_share_and_limit():
    pair = one_pair(RAW, {"images_per_s": 3000.0}, {"images_per_s": 1350.0},
                    {"p50_ms": 0.3}, {"p50_ms": 1.1, "p99_ms": 1.65})
    assert pair["F_images_per_s"] == 1500.0  # 1 / (1/3000 + 1/3000)
    assert pair["share_of_F"] == 0.9
    assert pair["c1_limit_ms"] == 1.0  # 0.3 + 0.5 + 0.2
    assert (pair["c1_p50_ms"], pair["c1_p99_over_p50"]) == (1.1, 1.5)
    assert pair["errors"] == []


def test_a_failed_measurement_leaves_its_figures_empty_and_names_the_error():
    pair = one_pair(RAW, {"error": "h2load exited with 1"}, {"images_per_s": 1350.0},
                    {"p50_ms": 0.3}, {"error": "the server did not answer"})
    assert pair["F_images_per_s"] is None and pair["share_of_F"] is None
    assert pair["c1_p50_ms"] is None and pair["c1_p99_over_p50"] is None
    assert pair["errors"] == ["h2load exited with 1", "the server did not answer"]


def test_summary_takes_the_median_of_each_figure_over_the_repeats():
    pairs = [one_pair({"R_images_per_s": r, "batch1_p50_ms": 0.5}, {"images_per_s": e},
                      {"images_per_s": ours}, {"p50_ms": 0.3}, {"p50_ms": p50, "p99_ms": 2 * p50})
             for r, e, ours, p50 in ((3000.0, 3000.0, 1200.0, 1.0), (2000.0, 2000.0, 900.0, 1.4),
                                     (3000.0, 3000.0, 1500.0, 1.2))]
    summary = summarize(pairs)
    assert summary["repeats"] == pairs
    # shares 0.8, 0.9, 1.0: the median of the ratios, not the ratio of the medians
    assert summary["share_of_F"] == pytest.approx(0.9)
    assert summary["F_images_per_s"] == 1500.0 and summary["c1_p50_ms"] == 1.2
    assert summary["c1_limit_ms"] == 1.0 and summary["c1_p99_over_p50"] == 2.0
