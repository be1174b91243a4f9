"""Medians over repeated runs: one figure per scenario from several load runs."""

from __future__ import annotations

import statistics


def median(values) -> float | None:
    """Median of the values that are not None, rounded to 3 places; None if there are none."""
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize_runs(runs: list[dict]) -> dict:
    """Medians of images/s, latency and CPU cost over load runs, their errors collected."""
    return {
        "images_per_s": median([r.get("images_per_s") for r in runs]),
        "p50_ms": median([r.get("p50_ms") for r in runs]),
        "p99_ms": median([r.get("p99_ms") for r in runs]),
        "images_per_s_all": [r.get("images_per_s") for r in runs],
        "server_cpu_us_per_image": median([r.get("server_cpu_us_per_image") for r in runs]),
        "client_cpu_us_per_call": median([r.get("client_cpu_us_per_call") for r in runs]),
        "unstable_runs": sum(1 for r in runs if r.get("unstable_windows")),
        "errors": [r["errors"] for r in runs if r.get("errors")] +
                  [r["error"] for r in runs if r.get("error")],
    }
