"""The serving-speed targets (issue 14), each measured in one run of ``python -m bench``.

The composed floor, per API, with h2load as the client: E, the calls/s of bench.echo_server
(1-image calls at concurrency 64; it parses each request and computes nothing); R, the best
raw onnxruntime images/s (the ceiling: best layout, any batch size); F = 1 / (1/E + 1/R),
what a server that added nothing to gRPC's and onnxruntime's own costs would reach.

1. 1-image calls at concurrency 64 (h2load): at least 0.9 of F;
2. 1-image calls at concurrency 1 (h2load): p50 at most E's p50 (echo server, concurrency 1)
   + onnxruntime's batch-1 p50 (one run on all threads: the ceiling's first layout) + 0.2 ms;
   p99 at most twice the p50;
3. 32-image calls at concurrency 4 (bench.loadgen): at least 0.9 of the ceiling measured right
   before (best layout);
4. cold start (process start to the first answer) at most 0.5 s;
5. resident memory at most 150 MB for one server process; at most 250 MB for all of them
   together when the server runs several (``CIFAR10_WORKERS``);
6. 1 and 2 hold for both APIs: ``cifar10`` (cifar10.v2.Classifier/Classify) and ``oip``
   (the Open Inference Protocol's inference.GRPCInferenceService/ModelInfer).

Targets 1 and 2 are judged on part (f)'s figures where the run has them
(bench.paired_floor): E, R and our server measured side by side in each repeat, so that the
host's drift between phases does not enter the ratios.

``floor(results)`` gives E, R and F; ``targets(results, floors)`` each target's entry
``{"value", "target", "op", "met", "label"}`` (``met`` None when the figure is missing).
"""

from __future__ import annotations

from bench.stats import median

APIS = {"cifar10": "cifar10.v2 Classify", "oip": "OIP ModelInfer"}
# Where each API's h2load figures are: our server's (in results["server"]), the echo server's.
H2LOAD_KEYS = {"cifar10": ("cifar10_h2load", "grpc_floor_h2load"),
               "oip": ("oip_h2load", "oip_grpc_floor_h2load")}

SHARE_OF_FLOOR = 0.9
LATENCY_MARGIN_MS = 0.2
P99_OVER_P50 = 2.0
SHARE_OF_CEILING = 0.9
COLD_START_S = 0.5
RSS_ONE_PROCESS_MB = 150.0
RSS_ALL_PROCESSES_MB = 250.0


def composed(echo_calls_per_s: float | None, raw_images_per_s: float | None) -> float | None:
    """F = 1 / (1/E + 1/R), images/s; None without both."""
    if not echo_calls_per_s or not raw_images_per_s:
        return None
    return round(1 / (1 / echo_calls_per_s + 1 / raw_images_per_s), 1)


def _figure(table: dict | None, scenario: str, name: str) -> float | None:
    return ((table or {}).get(scenario) or {}).get(name)


def floor(results: dict) -> dict:
    """E (calls/s at concurrency 64, p50 at concurrency 1) and F per API; R (images/s, its
    batch size and layout) and onnxruntime's batch-1 p50 of one run on all threads."""
    batches = results["ceiling"]["batches"]
    best = max(batches, key=lambda b: batches[b]["images_per_s"])
    raw = batches[best]["images_per_s"]
    one = batches.get("1") or {}
    lone = (one.get("by_instances") or {}).get("1", one)  # one run at a time, all threads
    out: dict = {}
    for api, (_, echo_key) in H2LOAD_KEYS.items():
        echo = results.get(echo_key)
        calls = _figure(echo, "1x64", "images_per_s")  # 1-image calls: calls/s
        out[api] = {"E_calls_per_s": calls, "E_c1_p50_ms": _figure(echo, "1x1", "p50_ms"),
                    "F_images_per_s": composed(calls, raw)}
    out.update(R_images_per_s=raw, R_batch=int(best), R_instances=batches[best].get("best_instances"),
               R_batch1_p50_ms=lone.get("p50_ms"))
    return out


def entry(value: float | None, op: str, target: float | None, label: str, **extra) -> dict:
    """One target: ``op`` is ">=" (at least ``target``) or "<=" (at most)."""
    met = None if value is None or target is None else (
        value >= target if op == ">=" else value <= target)
    return {"value": value, "target": target, "op": op, "met": met, "label": label, **extra}


def _single_image(api: str, results: dict, floors: dict) -> dict:
    """Targets 1 and 2 for one API: from part (f)'s side-by-side repeats (bench.paired_floor;
    medians of each repeat's share, p50, limit and p99/p50) where the run has them, else from
    parts (d) and (e) and the ceiling, measured in separate phases."""
    paired = (results["server"].get("paired_floor") or {}).get(api)
    name = APIS[api]
    if paired and paired.get("share_of_F") is not None:
        share, p50 = paired["share_of_F"], paired["c1_p50_ms"]
        limit, tail = paired["c1_limit_ms"], paired["c1_p99_over_p50"]
        n = len(paired["repeats"])
        how = f"(h2load, beside echo and R: median of {n} repeat{'s' if n != 1 else ''})"
    else:
        ours, api_floor = results["server"].get(H2LOAD_KEYS[api][0]), floors[api]
        images, f = _figure(ours, "1x64", "images_per_s"), api_floor["F_images_per_s"]
        share = round(images / f, 3) if images and f else None
        p50, p99 = _figure(ours, "1x1", "p50_ms"), _figure(ours, "1x1", "p99_ms")
        parts = (api_floor["E_c1_p50_ms"], floors["R_batch1_p50_ms"])
        limit = None if None in parts else round(sum(parts) + LATENCY_MARGIN_MS, 3)
        tail = round(p99 / p50, 2) if p99 and p50 else None
        how = "(h2load)"
    return {
        f"{api}_single_c64_vs_floor": entry(
            share, ">=", SHARE_OF_FLOOR, f"{name}: 1-image calls, concurrency 64 {how}, share of F"),
        f"{api}_single_c1_p50_ms": entry(
            p50, "<=", limit, f"{name}: 1-image calls, concurrency 1 {how}, p50 ms (limit: echo "
                              f"p50 + onnxruntime batch-1 p50 + {LATENCY_MARGIN_MS} ms)"),
        f"{api}_single_c1_p99_over_p50": entry(
            tail, "<=", P99_OVER_P50, f"{name}: 1-image calls, concurrency 1 {how}, p99 / p50"),
    }


def _memory(server: dict) -> dict:
    """Target 5 on the larger of the two measurements (after (b), at the end)."""
    measured = [m for m in (server.get("memory_after_load"), server.get("memory_end")) if m]
    if not measured:
        return entry(None, "<=", RSS_ONE_PROCESS_MB, "server resident memory, MB")
    memory = max(measured, key=lambda m: m["rss_mb"])
    processes = memory.get("processes", 1)
    if processes == 1:
        return entry(memory["rss_mb"], "<=", RSS_ONE_PROCESS_MB,
                     "server resident memory, MB (one process)", processes=1,
                     pss_mb=memory.get("pss_mb"))
    return entry(memory["rss_mb"], "<=", RSS_ALL_PROCESSES_MB,
                 f"server resident memory, MB, its {processes} processes together",
                 processes=processes, pss_mb=memory.get("pss_mb"))


def targets(results: dict, floors: dict) -> dict:
    """Every target's entry, keyed by name, in the report's order (``floors``: ``floor(results)``)."""
    out: dict = {}
    for api in APIS:
        out.update(_single_image(api, results, floors))
    server = results["server"]
    paired = server.get("paired_32x4_vs_ceiling") or []
    b32c4 = _figure(server.get("cifar10_loadgen"), "32x4", "images_per_s")
    raw = floors["R_images_per_s"]
    # Median over repeats of (32x4 images/s) / (ceiling measured just before it); R without.
    share = median([p["share"] for p in paired]) if paired else (
        round(b32c4 / raw, 3) if b32c4 and raw else None)
    out["batch32_c4_vs_ceiling"] = entry(
        share, ">=", SHARE_OF_CEILING,
        "32-image calls, concurrency 4 (bench.loadgen, cifar10.v2), share of the ceiling (best layout)")
    out["cold_start_s"] = entry((results.get("cold_start") or {}).get("seconds"), "<=", COLD_START_S,
                                "cold start (process start to the first answer), s")
    out["rss_mb"] = _memory(server)
    return out
