"""The HTTP door beside gRPC, on one server in one run (issue 28's benchmark).

One ``cifar10-serve`` process with its default settings serves every case; h2load (C, lean)
sends the load: HTTP/2 for gRPC, HTTP/1.1 with one connection per request in flight for
HTTP, as HTTP clients do. Cases, each at 1 and 32 images per call:

* ``grpc-oip``: gRPC Open Inference Protocol ModelInfer, raw UINT8 pixels;
* ``rest-json``: the same pixels through OIP REST as a JSON tensor;
* ``rest-binary``: the same through OIP REST with the binary tensor data extension;
* ``grpc-classify-jpeg``: gRPC cifar10.v2 Classify with JPEG files (examples/labelled);
* ``http-classify-jpeg``: the same JPEGs to ``POST /v1/classify`` (one: the raw body; more:
  multipart).

Rounds run every case in turn (the order rotated each round); figures are medians over
rounds, and each ratio (HTTP case / its gRPC counterpart: REST / grpc-oip, the image
endpoint / grpc-classify-jpeg) is the median of the ratios measured in the same round.
A case fails the run when more than 1 % of its requests failed (counted from the server's
own metrics: h2load cannot see a gRPC error); fewer are reported with the figures. Then memory a moment after the load, and idle CPU,
beside a second server with HTTP off given the same gRPC load.

    python -m bench.http_door [--rounds 3] [--duration 5] [--out docs/bench-results/http-door.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from bench import h2load, machine
from bench.loadgen import CIFAR10_METHOD, OIP_METHOD
from bench.paths import ROOT
from bench.server_process import Server
from bench.stats import median

MODEL = str(ROOT / "models" / "cifar10-cnn.onnx")
JPEGS = ROOT / "examples" / "labelled"
CASES = ("grpc-oip", "rest-json", "rest-binary", "grpc-classify-jpeg", "http-classify-jpeg")
MAX_FAILED_SHARE = 0.01  # more failed requests than this and the case's figure is not kept
SETTLE_S = 5.0  # idle time before memory is read: the server trims its heap after a burst
COUNTERPART = {"rest-json": "grpc-oip", "rest-binary": "grpc-oip",
               "http-classify-jpeg": "grpc-classify-jpeg"}


def jpegs(count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` JPEG files of examples/labelled (name, bytes)."""
    files = sorted(JPEGS.rglob("*.jpg"))[:count]
    return [(f.name, f.read_bytes()) for f in files]


def pixels(batch: int) -> np.ndarray:
    rng = np.random.default_rng(1234)
    return rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)


def bodies(batch: int, model: str) -> dict[str, tuple[str, bytes, tuple[str, ...], bool]]:
    """Each case's (URL path, body, headers, HTTP/1.1?) for ``batch`` images."""
    from cifar10_protos.cifar10.v2 import classifier_pb2 as cpb
    from cifar10_protos.inference import grpc_service_pb2 as opb

    images = pixels(batch)
    files = jpegs(batch)
    shape = list(images.shape)
    oip = opb.ModelInferRequest(model_name=model)
    oip.inputs.add(name="images", datatype="UINT8", shape=shape)
    oip.raw_input_contents.append(images.tobytes())
    classify = cpb.ClassifyRequest(images=[cpb.Image(encoded=data) for _, data in files])
    as_json = json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": shape,
                                      "data": images.ravel().tolist()}]}).encode()
    header = json.dumps({
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": shape,
                    "parameters": {"binary_data_size": images.nbytes}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    if batch == 1:
        upload, upload_type = files[0][1], "image/jpeg"
    else:
        boundary = uuid.uuid4().hex
        parts = [b"--%s\r\nContent-Disposition: form-data; name=\"images\"; filename=\"%s\"\r\n"
                 b"Content-Type: image/jpeg\r\n\r\n%s\r\n" % (boundary.encode(), name.encode(), data)
                 for name, data in files]
        upload = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
        upload_type = f"multipart/form-data; boundary={boundary}"
    infer = f"/v2/models/{model}/infer"
    return {
        "grpc-oip": (OIP_METHOD, h2load.grpc_frame(oip.SerializeToString()),
                     h2load.GRPC_HEADERS, False),
        "rest-json": (infer, as_json, ("content-type: application/json",), True),
        "rest-binary": (infer, header + images.tobytes(),
                        ("content-type: application/octet-stream",
                         f"inference-header-content-length: {len(header)}"), True),
        "grpc-classify-jpeg": (CIFAR10_METHOD, h2load.grpc_frame(classify.SerializeToString()),
                               h2load.GRPC_HEADERS, False),
        "http-classify-jpeg": ("/v1/classify", upload, (f"content-type: {upload_type}",), True),
    }


def check(server: Server, case: str, path: str, body: bytes, headers: tuple[str, ...],
          batch: int) -> None:
    """Send the case's request once and require a full, successful answer (h2load counts
    statuses only, and a gRPC error is an HTTP 200)."""
    import grpc
    import httpx

    if case.startswith("grpc"):
        with grpc.insecure_channel(server.address) as channel:
            answer = channel.unary_unary(path)(body[5:], timeout=30, wait_for_ready=True)
        if case == "grpc-oip":
            from cifar10_protos.inference import grpc_service_pb2 as opb

            count = len(opb.ModelInferResponse.FromString(answer).raw_output_contents[0]) // 40
        else:
            from cifar10_protos.cifar10.v2 import classifier_pb2 as cpb

            count = len(cpb.ClassifyResponse.FromString(answer).top_indices)
    else:
        response = httpx.post(f"http://127.0.0.1:{server.http_port}{path}", content=body,
                              headers=dict(h.split(": ", 1) for h in headers), timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{case}: HTTP {response.status_code}: {response.text[:500]}")
        if case == "http-classify-jpeg":
            count = sum("error" not in r for r in response.json()["results"])
        elif case == "rest-binary":
            count = (len(response.content) - int(response.headers["inference-header-content-length"])) // 40
        else:
            count = len(response.json()["outputs"][0]["data"]) // 10
    if count != batch:
        raise RuntimeError(f"{case}: {count} of {batch} images answered")


def metrics_text(server: Server) -> str:
    import httpx

    return httpx.get(f"{server.metrics_base()}/metrics", timeout=30).text


def answered(server: Server) -> dict[str, float]:
    """Requests the server has answered so far, by status (``cifar10_requests_total``: gRPC
    code names, HTTP statuses): h2load cannot see a gRPC error (an HTTP 200 with error
    trailers), so every case's successes are counted here."""
    text = metrics_text(server)
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cifar10_requests_total{"):
            labels, value = line[len("cifar10_requests_total{"):].rsplit("} ", 1)
            code = dict(item.split("=", 1) for item in labels.split(","))["code"].strip('"')
            counts[code] = counts.get(code, 0.0) + float(value)
    return counts


def wait_drained(server: Server, timeout: float = 60.0) -> None:
    """Until the server holds no request (queue depth 0): the calls h2load left in flight
    when it stopped are still being computed, and the next case must not meet them."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = metrics_text(server)
        depth = [float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("cifar10_queue_depth_images ")]
        if depth and depth[0] == 0:
            time.sleep(0.5)  # the last runs' answers
            return
        time.sleep(0.1)
    raise RuntimeError("the server's queue did not drain")


def failures(before: dict[str, float], after: dict[str, float]) -> tuple[float, dict[str, float]]:
    """(the share of the requests answered between two ``answered`` readings that failed,
    the failed ones by status)."""
    delta = {code: after.get(code, 0.0) - before.get(code, 0.0) for code in after}
    for left in ("CANCELLED", "499"):  # the calls in flight when h2load stops: not failures
        delta.pop(left, None)
    total = sum(delta.values())
    failed = {code: n for code, n in delta.items() if n and code not in ("OK", "200")}
    return (0.0 if total == 0 else round(sum(failed.values()) / total, 4)), failed


def served_model(server: Server) -> str:
    import grpc

    from cifar10_protos.inference import grpc_service_pb2 as opb

    with grpc.insecure_channel(server.address) as channel:
        answer = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")(
            opb.ModelMetadataRequest().SerializeToString(), timeout=30, wait_for_ready=True)
    return opb.ModelMetadataResponse.FromString(answer).name


def idle_cpu(servers: dict[str, Server], seconds: float) -> dict[str, float]:
    """CPU seconds per minute each server used while idle, measured over the same ``seconds``."""
    start = {name: s.cpu_seconds() for name, s in servers.items()}
    time.sleep(seconds)
    return {name: round((s.cpu_seconds() - start[name]) * 60 / seconds, 4)
            for name, s in servers.items()}


def run(rounds: int, duration: float, warmup: float, batches: tuple[int, ...],
        concurrencies: tuple[int, ...], idle_s: float, model_path: str = MODEL) -> dict:
    server = Server(model_path)
    quiet = Server(model_path, {"CIFAR10_HTTP_PORT": "-1"})
    try:
        server.first_answer()
        quiet.first_answer()
        model = served_model(server)
        time.sleep(SETTLE_S)  # past the start's own work (Pillow's import a moment after)
        idle = idle_cpu({"http_on": server, "http_off": quiet}, idle_s)
        requests = {batch: bodies(batch, model) for batch in batches}  # built once
        cells: dict[str, list[dict]] = {}
        for batch in batches:
            for case, (path, body, headers, _) in requests[batch].items():
                check(server, case, path, body, headers, batch)
        for round_index in range(rounds):
            for batch in batches:
                order = CASES[round_index % len(CASES):] + CASES[:round_index % len(CASES)]
                for concurrency in concurrencies:
                    for case in order:
                        path, body, headers, http1 = requests[batch][case]
                        port = server.http_port if http1 else server.port
                        wait_drained(server)
                        before = answered(server)
                        result = h2load.measure(f"http://127.0.0.1:{port}{path}", body, headers,
                                                batch, concurrency, duration, warmup, http1=http1)
                        if "error" in result:
                            raise RuntimeError(f"{case} batch {batch} c{concurrency}: {result['error']}")
                        result["failed_share"], result["failed"] = failures(before, answered(server))
                        if result["failed_share"] > MAX_FAILED_SHARE:
                            raise RuntimeError(f"{case} batch {batch} c{concurrency}: "
                                               f"{result['failed_share']:.1%} of the requests "
                                               f"failed: {result['failed']}")
                        cells.setdefault(f"{case} b{batch} c{concurrency}", []).append(result)
                        print(f"round {round_index + 1}: {case:20s} b{batch:<3d} c{concurrency:<3d} "
                              f"{result['images_per_s']:9.1f} images/s  p50 {result.get('p50_ms')} "
                              f"ms  p99 {result.get('p99_ms')} ms", file=sys.stderr)
        time.sleep(SETTLE_S)
        memory = server.memory_mb()
        # the same load without HTTP, for its memory
        for batch in batches:
            for case in ("grpc-oip", "grpc-classify-jpeg"):
                path, body, headers, _ = requests[batch][case]
                h2load.measure(f"http://127.0.0.1:{quiet.port}{path}", body, headers, batch,
                               max(concurrencies), duration, warmup)
        time.sleep(SETTLE_S)
        quiet_memory = quiet.memory_mb()
    finally:
        server.stop()
        quiet.stop()
    table = {}
    for key, runs in cells.items():
        table[key] = {
            "images_per_s": median([r["images_per_s"] for r in runs]),
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "failed": [r["failed"] for r in runs if r["failed"]],
            "rounds": [r["images_per_s"] for r in runs],
        }
    ratios = {}
    for key, runs in cells.items():
        case, rest = key.split(" ", 1)
        if case in COUNTERPART:
            base = cells[f"{COUNTERPART[case]} {rest}"]
            ratios[key] = round(median([a["images_per_s"] / b["images_per_s"]
                                        for a, b in zip(runs, base)]), 3)
    return {"cpu": machine.cpu(), "rounds": rounds, "duration_s": duration, "cases": table,
            "ratios_to_grpc": ratios, "memory_mb": {"http_on": memory, "http_off": quiet_memory},
            "idle_cpu_s_per_min": idle}


def render(results: dict) -> str:
    lines = ["| case | images/call | concurrency | images/s | p50 ms | p99 ms | / gRPC |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, cell in results["cases"].items():
        case, batch, concurrency = key.split(" ")
        ratio = results["ratios_to_grpc"].get(key)
        lines.append(f"| {case} | {batch[1:]} | {concurrency[1:]} | {cell['images_per_s']:,.1f} | "
                     f"{cell['p50_ms']} | {cell['p99_ms']} | {'' if ratio is None else ratio} |")
    memory = results["memory_mb"]
    lines += ["", f"RSS after the load: HTTP on {memory['http_on']['rss_mb']} MB, HTTP off "
              f"{memory['http_off']['rss_mb']} MB; idle CPU s/min: {results['idle_cpu_s_per_min']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--concurrencies", default="1,64")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured")
    parser.add_argument("--model", default=MODEL, help="the ONNX model served")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args.rounds, args.duration, args.warmup,
                  tuple(int(b) for b in args.batches.split(",")),
                  tuple(int(c) for c in args.concurrencies.split(",")), args.idle, args.model)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
