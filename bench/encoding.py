"""Response encoding: cifar10.v2 (protobuf's own serializer) against v1's hand-written encoder.

    python -m bench.encoding [--sizes 1 8 32] [--top-k 1 3] [--repeats 15] [--number 2000]
        [--json docs/encoding.json]

For each batch size and top_k, one run times, interleaved repeat by repeat so that load on
a shared machine hits all alike:

* server, v2: ``build_response(...)`` + ``SerializeToString()``, what the server does per
  Classify answer (grpcio calls the generated serializer);
* server, v1: the old ``ResponseEncoder.encode``, which wrote the wire bytes by hand, loaded
  from git history (``bench.v1_baseline``; the commit before v2);
* client, v2 and v1: parsing those bytes into ``Classification`` objects (``FromString`` +
  the client library's parsing of the day).

Each repeat is the mean of ``--number`` calls; the report gives the median of the repeats
in microseconds per response and per image, and the ratio v2 / v1 (below 1: v2 is
cheaper). Both paths' answers are checked to hold the same probabilities first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import v1_baseline
from cifar10_core import contract
from cifar10_serving.grpc_api.classifier import build_response
from cifar10_client.messages import outcomes
from cifar10_serving.dataplane.plane import Prediction
from cifar10_serving.onnx_model import ModelInfo
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

INFO = ModelInfo(name="cifar10-cnn", version="1", labels=contract.CLASS_NAMES, metadata={})
REQUEST_ID = "17"


def cpu() -> dict:
    """The CPU model and its SIMD flags (lscpu), for the record."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    simd = [f for f in flags if f.startswith(("sse", "ssse", "avx", "fma", "f16c"))]
    return {"model": fields.get("Model name", platform.processor()).strip(), "simd_flags": simd}


def cases(v1: v1_baseline.V1, size: int, top_k: int) -> dict:
    """name -> zero-argument callable, for one batch size and top_k."""
    probabilities = np.random.default_rng(size).dirichlet(np.ones(10), size=size).astype(np.float32)
    pred = Prediction(probabilities, INFO)
    encoder = v1.ResponseEncoder(INFO.labels)  # the old servicer kept one per label set
    new_bytes = build_response(pred, top_k, REQUEST_ID).SerializeToString()
    old_bytes = encoder.encode(pred, top_k, REQUEST_ID)
    new_results = outcomes(pb.ClassifyResponse.FromString(new_bytes), size)
    old_results = v1.responses_to_results(v1.pb.ClassifyResponse.FromString(old_bytes))
    assert [r.probabilities for r in new_results] == [r.probabilities for r in old_results]
    assert [[s.index for s in r.top] for r in new_results] == [[s.index for s in r.top] for r in old_results]
    return {
        "server_v2": lambda: build_response(pred, top_k, REQUEST_ID).SerializeToString(),
        "server_v1": lambda: encoder.encode(pred, top_k, REQUEST_ID),
        "client_v2": lambda: outcomes(pb.ClassifyResponse.FromString(new_bytes), size),
        "client_v1": lambda: v1.responses_to_results(v1.pb.ClassifyResponse.FromString(old_bytes)),
        "_bytes": (len(new_bytes), len(old_bytes)),
    }


def measure(sizes: list[int], top_ks: list[int], repeats: int, number: int) -> list[dict]:
    v1 = v1_baseline.load()
    table = {(n, k): cases(v1, n, k) for n in sizes for k in top_ks}
    samples: dict[tuple[int, int, str], list[float]] = {}
    for _ in range(repeats):
        for (n, k), calls in table.items():
            for name, call in calls.items():
                if name.startswith("_"):
                    continue
                started = time.perf_counter()
                for _ in range(number):
                    call()
                samples.setdefault((n, k, name), []).append((time.perf_counter() - started) / number * 1e6)
    rows = []
    for (n, k), calls in table.items():
        row = {"images": n, "top_k": k, "bytes_v2": calls["_bytes"][0], "bytes_v1": calls["_bytes"][1]}
        for name in ("server_v2", "server_v1", "client_v2", "client_v1"):
            median = statistics.median(samples[(n, k, name)])
            row[f"{name}_us"] = round(median, 2)
            row[f"{name}_us_per_image"] = round(median / n, 3)
        for side in ("server", "client"):
            row[f"{side}_ratio_v2_v1"] = round(row[f"{side}_v2_us"] / row[f"{side}_v1_us"], 3)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| images | top_k | server v2 us | server v1 us | v2/v1 | us/image v2 | us/image v1 "
             "| client v2 us | client v1 us | v2/v1 | bytes v2 | bytes v1 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['images']} | {r['top_k']} | {r['server_v2_us']:.1f} | {r['server_v1_us']:.1f} "
            f"| {r['server_ratio_v2_v1']:.2f} | {r['server_v2_us_per_image']:.2f} "
            f"| {r['server_v1_us_per_image']:.2f} | {r['client_v2_us']:.1f} | {r['client_v1_us']:.1f} "
            f"| {r['client_ratio_v2_v1']:.2f} | {r['bytes_v2']} | {r['bytes_v1']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32], help="images per response")
    parser.add_argument("--top-k", type=int, nargs="+", default=[1, 3], dest="top_k")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats (median reported)")
    parser.add_argument("--number", type=int, default=2000, help="calls per repeat")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        rows = measure(args.sizes, args.top_k, args.repeats, args.number)
    except v1_baseline.BaselineUnavailable as exc:
        print(f"bench.encoding: the v1 baseline is unavailable: {exc}", file=sys.stderr)
        return 1
    import google.protobuf
    from google.protobuf.internal import api_implementation

    report = {
        "command": "python -m bench.encoding " + " ".join(sys.argv[1:] if argv is None else argv),
        "baseline_commit": v1_baseline.BASELINE, "cpu": cpu(), "python": platform.python_version(),
        "protobuf": f"{google.protobuf.__version__} ({api_implementation.Type()})",
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "repeats": args.repeats, "number": args.number, "results": rows,
    }
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
