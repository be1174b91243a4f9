"""The benchmark's Markdown report, rendered from its JSON results (see bench/run.py)."""

from __future__ import annotations

from bench.targets import APIS, H2LOAD_KEYS


def fmt(value, spec: str) -> str:
    """``value`` formatted with ``spec``, or "n/a" for None."""
    return "n/a" if value is None else format(value, spec)


LATENCY = (("images_per_s", ",.0f"), ("p50_ms", ".2f"), ("p99_ms", ".2f"))
PAIRED = (("R_images_per_s", ",.0f"), ("E_calls_per_s", ",.0f"), ("F_images_per_s", ",.0f"),
          ("images_per_s", ",.0f"), ("share_of_F", ".3f"), ("E_c1_p50_ms", ".3f"),
          ("R_batch1_p50_ms", ".3f"), ("c1_limit_ms", ".3f"), ("c1_p50_ms", ".3f"),
          ("c1_p99_over_p50", ".2f"))


def _cells(values: dict, columns) -> list[str]:
    """``values``' figures of ``columns`` ((key, format spec), ...), formatted by ``fmt``."""
    return [fmt(values.get(key), spec) for key, spec in columns]


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(caption: str, columns: list[str], left: int = 0) -> list[str]:
    """A table's caption, a blank line and its header rows: the first ``left`` columns
    aligned left, the rest right."""
    return [caption, "", "| " + " | ".join(columns) + " |",
            "|" + "---|" * left + "---:|" * (len(columns) - left)]


def render(results: dict) -> str:
    """The whole report: setting, parts (a) to (f), the 32x4 shares, the composed floor and
    the targets."""
    lines = _setting(results)
    lines += _ceiling(results)
    lines += _server(results)
    lines += _cpu_cost(results)
    lines += _cold_start_and_memory(results)
    lines += _grpc_floor(results)
    lines += _h2load(results)
    lines += _paired_shares(results)
    lines += _paired_floor(results)
    lines += _floor(results)
    lines += _targets(results)
    return "\n".join(lines) + "\n"


def _cpu(env: dict) -> str:
    """`` (model, flags)`` of the run's CPU, for results that record it."""
    cpu = env.get("cpu")
    if not cpu:
        return ""
    flags = ", ".join(cpu["vector_flags"]) or "no AVX2"
    return f" ({cpu['model'] or 'unknown model'}; {flags})"


def _setting(results: dict) -> list[str]:
    env = results["environment"]
    lines = [f"Model: `{results['model']['path']}` ({results['model']['name']} "
             f"version {results['model']['version']}); {env['cpus']} CPUs{_cpu(env)}, "
             f"onnxruntime {env['onnxruntime']}, grpcio {env['grpcio']}, "
             f"Python {env['python']}; medians of {results['repeats']} runs"
             f"{' (SMOKE: tiny request counts, figures meaningless)' if results['smoke'] else ''}."]
    before, after = env["load_before"], env["load_after"]
    lines.append(f"Machine load: 1-min load average {before['loadavg_1m']} before, "
                 f"{after['loadavg_1m']} after; other busy processes (share of one CPU) before: "
                 f"{', '.join(before['busy_processes']) or 'none'}; after: "
                 f"{', '.join(after['busy_processes']) or 'none'}.")
    served = results.get("server_settings")
    if served:
        lines.append("Server settings (defaults unless CIFAR10_* set): " + ", ".join(
            f"{k} {v}" for k, v in served.items()) + ".")
    return [*lines, ""]


def _ceiling(results: dict) -> list[str]:
    """(a): images/s per batch for each session layout, and the best layout's CPU cost."""
    cpus = results["environment"]["cpus"]
    layouts = results["ceiling"]["instances"]
    threads = results["ceiling"]["threads_by_instances"]
    names = [f"{k} x {threads[str(k)]} threads" for k in layouts]
    lines = _table("(a) Ceiling, raw onnxruntime in-process, images/s for each layout (instances x "
                   "intra-op threads; K instances = K runs side by side on one session, from K "
                   "threads); p50 of one run in the first layout; CPU cost of the best layout:",
                   ["batch", *names, f"p50 ms per run ({names[0]})", "CPU us/image",
                    f"images/s if {cpus} CPUs were all ours"])
    for batch, value in results["ceiling"]["batches"].items():
        by = value.get("by_instances") or {"1": value}
        cells = [f"{by[str(k)]['images_per_s']:,.0f}" if str(k) in by else "n/a" for k in layouts]
        first = by.get(str(layouts[0]), {})
        cost = value.get("cpu_us_per_image")
        tail = f"{cost} | {cpus * 1e6 / cost:,.0f}" if cost else "n/a | n/a"
        lines.append(f"| {batch} | " + " | ".join(cells)
                     + f" | {fmt(first.get('p50_ms'), '.3f')} | {tail} |")
    return [*lines, ""]


def _server(results: dict) -> list[str]:
    """(b) and (c): our server through cifar10.v2 and the Open Inference Protocol."""
    server = results["server"]
    has_oip_ours = "oip_loadgen" in server
    lines = _table("(b) our server over cifar10.v2 (bench.loadgen) and (c) over the Open Inference "
                   "Protocol (perf_analyzer):",
                   ["images/call", "concurrency", "cifar10 images/s", "p50 ms", "p99 ms",
                    "OIP (perf_analyzer) images/s", "p50 ms", "p99 ms"]
                   + (["OIP (bench.loadgen) images/s", "p50 ms", "p99 ms"] if has_oip_ours else []))
    for key, ours in server["cifar10_loadgen"].items():  # in the order the scenarios ran
        batch, concurrency = key.split("x")
        theirs = server.get("oip_perf_analyzer", {}).get(key, {})
        lines.append(
            f"| {batch} | {concurrency} | {fmt(ours['images_per_s'], ',.0f')} | "
            f"{fmt(ours['p50_ms'], '.2f')} | {fmt(ours['p99_ms'], '.2f')} | "
            f"{fmt(theirs.get('images_per_s'), ',.0f')}{'*' if theirs.get('unstable_runs') else ''} | "
            f"{fmt(theirs.get('p50_ms'), '.2f')} | "
            f"{fmt(theirs.get('p99_ms'), '.2f')} |"
            + (f" {fmt(server['oip_loadgen'][key]['images_per_s'], ',.0f')} | "
               f"{fmt(server['oip_loadgen'][key]['p50_ms'], '.2f')} | "
               f"{fmt(server['oip_loadgen'][key]['p99_ms'], '.2f')} |" if has_oip_ours else ""))
    if any(v.get("unstable_runs") for v in server.get("oip_perf_analyzer", {}).values()):
        lines += ["", "\\* perf_analyzer found no 3 consecutive windows within 30% of each other in "
                      "at least one run; such a run counts with the median of its windows "
                      "(no percentiles)."]
    return [*lines, ""]


def _cpu_cost(results: dict) -> list[str]:
    """Server and client CPU per image of each load-generator scenario."""
    cpus = results["environment"]["cpus"]
    server = results["server"]
    lines = _table("CPU cost per image (whole runs, warm-up included; server: all threads of the "
                   "server's processes; client: the load generator process):",
                   ["API", "images/call", "concurrency", "server CPU us/image", "client CPU us/call",
                    f"server images/s if {cpus} CPUs were all its own"], left=1)
    for part, api in (("cifar10_loadgen", "cifar10"), ("oip_loadgen", "oip")):
        for key, row in server.get(part, {}).items():
            if not row.get("server_cpu_us_per_image"):
                continue
            batch, concurrency = key.split("x")
            cost = row["server_cpu_us_per_image"]
            lines.append(f"| {api} | {batch} | {concurrency} | {cost} | "
                         f"{row['client_cpu_us_per_call']} | {cpus * 1e6 / cost:,.0f} |")
    return [*lines, ""]


def _memory(memory: dict) -> str:
    """RSS of all the server's processes; with several, each one's and their PSS."""
    if memory.get("processes", 1) == 1:
        return f"{memory['rss_mb']} MB"
    return (f"{memory['rss_mb']} MB in {memory['processes']} processes "
            f"({' + '.join(map(str, memory['per_process_rss_mb']))}; PSS {fmt(memory['pss_mb'], '')} MB)")


def _cold_start_and_memory(results: dict) -> list[str]:
    server = results["server"]
    parts = ("cifar10_loadgen", "oip_loadgen", "oip_perf_analyzer",
             *(ours for ours, _ in H2LOAD_KEYS.values()))
    errors = {f"{part} {k}": v["errors"] for part in parts
              for k, v in server.get(part, {}).items() if v["errors"]}
    cold = results["cold_start"]
    return [f"Cold start (process start to first answer): median {cold['seconds']} s "
            f"of {cold['all']}. Server memory: {_memory(server['memory_after_load'])} "
            f"RSS after (b), {_memory(server['memory_end'])} after (c), peak "
            f"{server['memory_end']['peak_rss_mb']} MB. Server exit status on SIGTERM: "
            f"{server['exit_code']}; its children left running after it exited (killed): "
            f"{server.get('children_left_after_exit') or 'none'}. "
            f"Request errors: {errors or 'none'}.", ""]


def _grpc_floor(results: dict) -> list[str]:
    """(d): the echo server against our server, 1-image calls."""
    floor = results.get("grpc_floor")
    if not floor:
        return []
    server = results["server"]
    lines = _table("(d) The gRPC floor: the same 1-image calls (bench.loadgen, cifar10.v2) against "
                   "bench.echo_server, which parses each request and answers without computing:",
                   ["images/call", "concurrency", "echo calls/s", "p50 ms", "p99 ms",
                    "our server images/s", "our server / echo"])
    for key, row in floor.items():
        batch, concurrency = key.split("x")
        ours = server["cifar10_loadgen"][key]["images_per_s"]
        share = f"{ours / row['images_per_s']:.2f}" if ours and row["images_per_s"] else "n/a"
        lines.append(f"| {batch} | {concurrency} | {row['images_per_s']:,.0f} | {row['p50_ms']:.2f} "
                     f"| {row['p99_ms']:.2f} | {ours:,.0f} | {share} |")
    return [*lines, ""]


def _h2load(results: dict) -> list[str]:
    """(e): our server and the echo server with h2load as the client, both APIs."""
    measured = [(api, results["server"][ours], results.get(echo) or {})
                for api, (ours, echo) in H2LOAD_KEYS.items() if results["server"].get(ours)]
    if not measured:
        return []
    lines = _table("(e) The same calls with h2load (a C HTTP/2 client; bench.h2load) as the client, "
                   "over cifar10.v2 Classify and the Open Inference Protocol's ModelInfer, our "
                   "server and, for 1-image calls, bench.echo_server:",
                   ["API", "images/call", "concurrency", "our server images/s", "p50 ms", "p99 ms",
                    "echo calls/s", "echo p50 ms", "echo p99 ms", "our server / echo"], left=1)
    for api, ours, echo in measured:
        for key, row in ours.items():
            batch, concurrency = key.split("x")
            floor = echo.get(key, {})
            share = (f"{row['images_per_s'] / floor['images_per_s']:.2f}"
                     if row.get("images_per_s") and floor.get("images_per_s") else "")
            lines.append(_row(api, batch, concurrency, *_cells(row, LATENCY),
                              *(_cells(floor, LATENCY) if floor else ("", "", "")), share))
    return [*lines, ""]


def _paired_shares(results: dict) -> list[str]:
    """Each repeat's 32x4 images/s against the ceiling measured right before it."""
    paired = results["server"].get("paired_32x4_vs_ceiling") or []
    if not paired:
        return []
    return ["32-image calls at concurrency 4 against the ceiling (batch 8-128, best) "
            "measured right before each run: " + "; ".join(
                f"{p['images_per_s']:,.0f} / {p['ceiling_images_per_s']:,.0f} = "
                f"{p['share']:.2f}" for p in paired) + ".",
            "The same against the one-run layout alone (one onnxruntime run on all "
            "threads, as the issue's ceiling was measured): " + "; ".join(
                f"{p['images_per_s']:,.0f} / {p['one_run_ceiling_images_per_s']:,.0f} "
                f"= {p['share_one_run']:.2f}" for p in paired) + ".",
            ""]


def _paired_floor(results: dict) -> list[str]:
    """(f): each repeat's R, E and our server side by side (bench.paired_floor)."""
    paired = results["server"].get("paired_floor") or {}
    if not any(p.get("repeats") for p in paired.values()):
        return []
    lines = _table("(f) Side by side, per repeat (bench.paired_floor): a short ceiling R, then "
                   "bench.echo_server (E) and our server one right after the other with h2load, "
                   "1-image calls; F = 1 / (1/E + 1/R); the concurrency-1 limit is E's p50 + "
                   "onnxruntime's batch-1 p50 + 0.2 ms. Targets 1 and 2 take the medians (last "
                   "row of each API):",
                   ["API", "repeat", "R images/s", "E calls/s", "F images/s", "ours c64 images/s",
                    "share of F", "E c1 p50 ms", "batch-1 p50 ms", "c1 limit ms", "ours c1 p50 ms",
                    "ours c1 p99 / p50"],
                   left=2)
    for api, summary in paired.items():
        rows = [(str(i + 1), p) for i, p in enumerate(summary.get("repeats") or [])]
        for label, p in [*rows, ("median", summary)]:
            lines.append(_row(api, label, *_cells(p, PAIRED)))
    return [*lines, ""]


def _floor(results: dict) -> list[str]:
    """E per API, R and F per API (bench.targets.floor)."""
    floor = results["floor"]
    apis = "; ".join(
        f"{name}: E {fmt(floor[api]['E_calls_per_s'], ',.0f')} calls/s (p50 "
        f"{fmt(floor[api]['E_c1_p50_ms'], '.3f')} ms at concurrency 1), "
        f"F {fmt(floor[api]['F_images_per_s'], ',.0f')} "
        f"images/s" for api, name in APIS.items())
    return [f"Composed floor F = 1 / (1/E + 1/R), E from bench.echo_server with h2load (1-image "
            f"calls, concurrency 64): {apis}. R {floor['R_images_per_s']:,.0f} images/s (raw "
            f"onnxruntime, batch {floor['R_batch']}, {floor['R_instances']} instance(s)); "
            f"onnxruntime's batch-1 p50 (one run at a time) {fmt(floor['R_batch1_p50_ms'], '.3f')} ms. "
            f"Server workers: {results['server_settings']['workers']}."
            + (" Targets 1 and 2 below use part (f)'s side-by-side figures instead."
               if results["server"].get("paired_floor") else ""), ""]


def _targets(results: dict) -> list[str]:
    """The serving-speed targets (bench.targets): measured, target or limit, met."""
    lines = ["Targets (issue 14):", "", "| target | measured | target / limit | met |",
             "|---|---:|---:|---|"]
    for t in results["targets"].values():
        met = {True: "yes", False: "no", None: "—"}[t["met"]]
        measured = "—" if t["value"] is None else str(t["value"])
        if t.get("pss_mb") is not None:
            measured += f" (PSS {t['pss_mb']})"
        limit = "—" if t["target"] is None else f"{t['op']} {t['target']}"
        lines.append(f"| {t['label']} | {measured} | {limit} | {met} |")
    return lines
