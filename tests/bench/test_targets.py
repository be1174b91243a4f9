"""bench.targets on hand-made results: the composed floor F and each target met or not."""

from __future__ import annotations

import copy

import pytest

from bench.targets import composed, floor, targets

RESULTS = {
    "ceiling": {"batches": {
        "1": {"images_per_s": 1500.0, "p50_ms": 0.9, "best_instances": 2,
              "by_instances": {"1": {"images_per_s": 1400.0, "p50_ms": 0.5},
                               "2": {"images_per_s": 1500.0, "p50_ms": 0.9}}},
        "16": {"images_per_s": 4000.0, "p50_ms": 7.0, "best_instances": 2},
        "32": {"images_per_s": 3900.0, "p50_ms": 14.0, "best_instances": 1},
    }},
    "cold_start": {"seconds": 0.6},
    "server": {
        "cifar10_loadgen": {"32x4": {"images_per_s": 3000.0}},
        "paired_32x4_vs_ceiling": [{"share": 0.85}, {"share": 0.95}, {"share": 0.92}],
        "cifar10_h2load": {"1x1": {"images_per_s": 1000.0, "p50_ms": 0.9, "p99_ms": 1.9},
                           "1x64": {"images_per_s": 1800.0, "p50_ms": 30.0, "p99_ms": 40.0}},
        "memory_after_load": {"rss_mb": 120.0, "pss_mb": 100.0, "processes": 1},
        "memory_end": {"rss_mb": 130.0, "pss_mb": 110.0, "processes": 1},
    },
    "grpc_floor_h2load": {"1x1": {"images_per_s": 3000.0, "p50_ms": 0.3, "p99_ms": 0.5},
                          "1x64": {"images_per_s": 4000.0, "p50_ms": 15.0, "p99_ms": 20.0}},
}


def test_composed_floor():
    assert composed(4000.0, 4000.0) == 2000.0
    assert composed(3972.0, 3404.0) == pytest.approx(1833.0, abs=0.5)  # the 2026-12-01 run
    assert composed(None, 4000.0) is None and composed(4000.0, 0.0) is None


def test_floor():
    floors = floor(RESULTS)
    assert floors["cifar10"] == {"E_calls_per_s": 4000.0, "E_c1_p50_ms": 0.3, "F_images_per_s": 2000.0}
    assert floors["oip"] == {"E_calls_per_s": None, "E_c1_p50_ms": None, "F_images_per_s": None}
    # R: the best images/s over every batch size; the batch-1 p50 of one run on all threads.
    assert (floors["R_images_per_s"], floors["R_batch"], floors["R_instances"]) == (4000.0, 16, 2)
    assert floors["R_batch1_p50_ms"] == 0.5


def test_targets():
    out = targets(RESULTS, floor(RESULTS))
    assert list(out) == [
        "cifar10_single_c64_vs_floor", "cifar10_single_c1_p50_ms", "cifar10_single_c1_p99_over_p50",
        "oip_single_c64_vs_floor", "oip_single_c1_p50_ms", "oip_single_c1_p99_over_p50",
        "batch32_c4_vs_ceiling", "cold_start_s", "rss_mb"]
    assert all(set(v) >= {"value", "target", "op", "met", "label"} for v in out.values())
    c64 = out["cifar10_single_c64_vs_floor"]
    assert (c64["value"], c64["target"], c64["op"], c64["met"]) == (0.9, 0.9, ">=", True)
    p50 = out["cifar10_single_c1_p50_ms"]
    assert (p50["value"], p50["target"], p50["met"]) == (0.9, 1.0, True)  # 0.3 + 0.5 + 0.2
    tail = out["cifar10_single_c1_p99_over_p50"]
    assert (tail["value"], tail["target"], tail["met"]) == (2.11, 2.0, False)
    for name in ("oip_single_c64_vs_floor", "oip_single_c1_p50_ms", "oip_single_c1_p99_over_p50"):
        assert out[name]["value"] is None and out[name]["met"] is None  # no oip figures
    assert (out["batch32_c4_vs_ceiling"]["value"], out["batch32_c4_vs_ceiling"]["met"]) == (0.92, True)
    assert (out["cold_start_s"]["value"], out["cold_start_s"]["target"], out["cold_start_s"]["met"]) == (
        0.6, 0.5, False)
    memory = out["rss_mb"]  # the larger measurement, one process: 150 MB
    assert (memory["value"], memory["target"], memory["met"]) == (130.0, 150.0, True)
    assert (memory["processes"], memory["pss_mb"]) == (1, 110.0)


def test_oip_targets_from_its_own_floor():
    results = copy.deepcopy(RESULTS)
    results["oip_grpc_floor_h2load"] = {"1x1": {"p50_ms": 0.4}, "1x64": {"images_per_s": 3000.0}}
    results["server"]["oip_h2load"] = {"1x1": {"p50_ms": 1.2, "p99_ms": 2.0},
                                       "1x64": {"images_per_s": 1000.0}}
    floors = floor(results)
    assert floors["oip"]["F_images_per_s"] == pytest.approx(1714.3)  # 1 / (1/3000 + 1/4000)
    out = targets(results, floors)
    assert (out["oip_single_c64_vs_floor"]["value"], out["oip_single_c64_vs_floor"]["met"]) == (0.583, False)
    assert (out["oip_single_c1_p50_ms"]["target"], out["oip_single_c1_p50_ms"]["met"]) == (1.1, False)
    assert out["oip_single_c1_p99_over_p50"]["value"] == 1.67


@pytest.mark.parametrize("processes, rss, met", [(1, 160.0, False), (3, 240.0, True), (3, 260.0, False)])
def test_memory_limit_depends_on_the_process_count(processes, rss, met):
    results = copy.deepcopy(RESULTS)
    results["server"]["memory_end"] = {"rss_mb": rss, "pss_mb": rss - 50, "processes": processes}
    memory = targets(results, floor(results))["rss_mb"]
    assert memory["target"] == (150.0 if processes == 1 else 250.0)
    assert (memory["value"], memory["met"], memory["processes"]) == (rss, met, processes)


def test_missing_parts_leave_targets_unmet_not_failed():
    results = copy.deepcopy(RESULTS)
    del results["grpc_floor_h2load"], results["server"]["cifar10_h2load"]
    results["server"]["paired_32x4_vs_ceiling"] = []  # then against R: 3000 / 4000
    out = targets(results, floor(results))
    assert out["cifar10_single_c1_p50_ms"]["target"] is None
    assert all(out[k]["met"] is None for k in out if k.startswith(("cifar10_", "oip_")))
    assert out["batch32_c4_vs_ceiling"]["value"] == 0.75


def test_report_renders_several_processes_and_missing_figures():
    from bench import report

    results = copy.deepcopy(RESULTS)
    results["server"]["memory_end"] = {"rss_mb": 240.0, "pss_mb": 150.0, "processes": 3,
                                       "per_process_rss_mb": [90.0, 75.0, 75.0]}
    results["floor"] = floor(results)
    results["targets"] = targets(results, results["floor"])
    results["server_settings"] = {"workers": 2}
    lines = report._targets(results)
    assert "| server resident memory, MB, its 3 processes together | 240.0 (PSS 150.0) | <= 250.0 | yes |" in lines
    assert any(line.startswith("| OIP ModelInfer: 1-image calls, concurrency 64") and
               line.endswith("| — | >= 0.9 | — |") for line in lines)
    floor_line = report._floor(results)[0]
    assert "cifar10.v2 Classify: E 4,000 calls/s" in floor_line and "F 2,000 images/s" in floor_line
    assert "R 4,000 images/s" in floor_line and "Server workers: 2." in floor_line
    assert report._memory(results["server"]["memory_end"]) == (
        "240.0 MB in 3 processes (90.0 + 75.0 + 75.0; PSS 150.0 MB)")


def _pair(share: float, p50: float, limit: float, tail: float) -> dict:
    return {"share_of_F": share, "c1_p50_ms": p50, "c1_limit_ms": limit, "c1_p99_over_p50": tail}


def test_single_image_targets_use_the_side_by_side_figures():
    from bench.paired_floor import summarize

    results = copy.deepcopy(RESULTS)
    pairs = [{**_pair(0.95, 1.0, 1.1, 1.5), "F_images_per_s": 1500.0},
             {**_pair(0.85, 1.3, 1.0, 2.5), "F_images_per_s": 1400.0},
             {**_pair(0.91, 1.2, 1.3, 1.8), "F_images_per_s": 1450.0}]
    results["server"]["paired_floor"] = {"cifar10": summarize(pairs)}
    out = targets(results, floor(results))
    c64, p50, tail = (out[f"cifar10_single_{k}"] for k in ("c64_vs_floor", "c1_p50_ms", "c1_p99_over_p50"))
    # medians of the repeats' own figures, not parts (d) and (e): 1800 / 2000 there
    assert (c64["value"], c64["met"]) == (0.91, True)
    assert (p50["value"], p50["target"], p50["met"]) == (1.2, 1.1, False)
    assert (tail["value"], tail["met"]) == (1.8, True)
    assert "median of 3 repeats" in c64["label"]
    # an API without side-by-side figures keeps the separate phases' (none here for oip)
    assert out["oip_single_c64_vs_floor"]["value"] is None
