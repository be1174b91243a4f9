"""Part (f): the single-image targets' own figures, measured side by side, repeat by repeat.

For each repeat: R (a short raw onnxruntime ceiling, bench.ceiling) and, per API, the echo
server (E) and our server one right after the other with h2load, 1-image calls at
concurrency 64 and then at concurrency 1 (which of the two servers goes first alternates
from repeat to repeat). Each repeat so has its own composed floor F = 1 / (1/E + 1/R), our
share of it, and its own concurrency-1 limit (E's p50 + onnxruntime's batch-1 p50 + 0.2 ms);
the targets (bench.targets) take the medians of those per-repeat figures.

Why: a shared host's speed drifts within minutes. Measured in separate phases minutes apart
(parts (a), (d) and (e)), E and R would come from other minutes than our server's figure;
side by side, a slow minute slows numerator and denominator alike.

Both servers stay up for the whole part; the one not measured is idle.
"""

from __future__ import annotations

from bench import h2load
from bench.measurements import ceiling_now, h2load_once
from bench.server_process import echo_server
from bench.stats import median
from bench.targets import LATENCY_MARGIN_MS, composed

SHORT_CEILING_BATCHES = "1,2,8,32,64"


def short_ceiling(model: str, smoke: bool) -> dict:
    """R now: the best images/s of a few batch sizes in each session layout (1 s each), and
    onnxruntime's batch-1 p50 of one run on all threads (the first layout)."""
    layouts = ceiling_now(model, SHORT_CEILING_BATCHES, smoke, 3)
    best = max(v["images_per_s"] for figures in layouts.values() for v in figures.values())
    return {"R_images_per_s": round(best, 1), "batch1_p50_ms": layouts[1]["1"]["p50_ms"]}


def one_pair(raw: dict, echo: dict, ours: dict, echo_c1: dict, ours_c1: dict) -> dict:
    """One repeat's figures for one API from its measurements (R, then E and ours at
    concurrency 64 and at concurrency 1)."""
    e, r = echo.get("images_per_s"), raw["R_images_per_s"]
    f = composed(e, r)
    images = ours.get("images_per_s")
    parts = (echo_c1.get("p50_ms"), raw["batch1_p50_ms"])
    p50, p99 = ours_c1.get("p50_ms"), ours_c1.get("p99_ms")
    return {
        "R_images_per_s": r, "E_calls_per_s": e, "F_images_per_s": f,
        "images_per_s": images, "share_of_F": round(images / f, 3) if images and f else None,
        "E_c1_p50_ms": parts[0], "R_batch1_p50_ms": parts[1],
        "c1_limit_ms": None if None in parts else round(sum(parts) + LATENCY_MARGIN_MS, 3),
        "c1_p50_ms": p50, "c1_p99_ms": p99,
        "c1_p99_over_p50": round(p99 / p50, 2) if p99 and p50 else None,
        "errors": [m["error"] for m in (echo, ours, echo_c1, ours_c1) if m.get("error")],
    }


def summarize(pairs: list[dict]) -> dict:
    """Medians of the per-repeat figures; the pairs themselves under ``repeats``."""
    keys = ("share_of_F", "F_images_per_s", "images_per_s", "E_calls_per_s", "R_images_per_s",
            "c1_p50_ms", "c1_limit_ms", "c1_p99_over_p50", "E_c1_p50_ms", "R_batch1_p50_ms")
    return {**{k: median([p.get(k) for p in pairs]) for k in keys}, "repeats": pairs}


def run(model: str, address: str, model_name: str, args) -> dict:
    """Part (f) against our running server at ``address``: ``{api: summarize(pairs)}``."""
    pairs: dict[str, list[dict]] = {api: [] for api in h2load.APIS}
    with echo_server() as echo_address:
        for repeat in range(args.repeats):
            raw = short_ceiling(model, args.smoke)
            for api in h2load.APIS:
                first, second = (echo_address, address)[::1 if repeat % 2 == 0 else -1]
                figures: dict[tuple[str, int], dict] = {}
                for concurrency in (64, 1):
                    for target in (first, second):
                        figures[(target, concurrency)] = h2load_once(
                            target, 1, concurrency, api, args, model_name)
                pairs[api].append(one_pair(
                    raw, figures[(echo_address, 64)], figures[(address, 64)],
                    figures[(echo_address, 1)], figures[(address, 1)]))
    return {api: summarize(p) for api, p in pairs.items()}
