"""Overload and soak benchmark: what clients get, and what the server holds, when they push.

Starts ``python -m cifar10_serving`` in its own process (``bench.server_process``) and runs, in order:

* ``flood``: 4,000 single-image Classify calls at once, over 4 and over 16 connections;
* ``big``: 96 concurrent 1024-image requests (3 MiB each);
* ``soak``: 32 clients sending 1024-image requests back to back for ``--soak`` seconds;
* ``decode``: the largest legal image (4000 x 4000 PNG) decoding;
* ``largest_messages``: 24 messages of 60 MiB at once over 8 connections;

with health probes every 10 ms throughout, from their own process (``bench.probe``): gRPC
health Check, and HTTP ``/v2/health/ready`` on the metrics port. It reports the calls of
each phase by status code, the server's RSS peak (VmHWM) and RSS after ``--idle`` seconds of
rest, and the slowest health check of each kind in each phase::

    python -m bench.overload [--model models/cifar10-cnn.onnx] [--soak 20] [--idle 10] \
        [--out docs/bench-results/reliability.json]

Results and the command of a run: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import struct
import sys
import time
import zlib

import grpc
import numpy as np

from bench.machine import background_load, cpu
from bench.paths import ROOT
from bench.probe import Probes
from bench.server_process import Server
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

log = logging.getLogger("bench.overload")

CLASSIFY = "/cifar10.v2.Classifier/Classify"


def classify_bytes(images: int = 1, encoded: bytes | None = None) -> bytes:
    if encoded is not None:
        return pb.ClassifyRequest(images=[pb.Image(encoded=encoded)]).SerializeToString()
    data = np.random.default_rng(1).integers(0, 256, 3072, dtype=np.uint8).tobytes()
    image = pb.Image(raw=pb.RawImage(data=data, height=32, width=32, channels=3))
    return pb.ClassifyRequest(images=[image] * images).SerializeToString()


def largest_png(side: int = 4000) -> bytes:
    """A legal 4000 x 4000 RGB PNG (16,000,000 pixels), built without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" + bytes(3 * side)) * side
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


def channels(address: str, count: int) -> list[grpc.aio.Channel]:
    """``count`` channels, each its own TCP connection."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1),
               ("grpc.max_receive_message_length", -1)]
    return [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]


async def call(channel: grpc.aio.Channel, data: bytes, codes: collections.Counter,
               timeout: float) -> None:
    method = channel.unary_unary(CLASSIFY)
    try:
        await method(data, timeout=timeout)
        codes["OK"] += 1
    except grpc.aio.AioRpcError as exc:
        codes[exc.code().name] += 1


async def phase(name: str, server: Server, work) -> dict:
    """Run ``work()`` with health probes (gRPC and HTTP, from their own process): the codes
    it counted, its time, the slowest check of each kind."""
    probes = Probes(server.address, server.metrics_base())
    await asyncio.sleep(0.5)  # the probe process up and checking
    started = time.perf_counter()
    codes = await work()
    seconds = time.perf_counter() - started
    health = probes.stop()
    result = {"phase": name, "codes": dict(codes), "seconds": round(seconds, 2),
              "health": health, **server.memory_mb()}
    log.info("%s: %s", name, json.dumps(result))
    return result


async def at_once(address: str, data: bytes, calls: int, connections: int,
                  timeout: float) -> collections.Counter:
    """``calls`` Classify calls of ``data`` at once over ``connections`` connections: the
    codes they ended with."""
    codes: collections.Counter = collections.Counter()
    chans = channels(address, connections)
    await asyncio.gather(*(call(chans[i % connections], data, codes, timeout) for i in range(calls)))
    for channel in chans:
        await channel.close()
    return codes


async def flood(address: str, connections: int, calls: int = 4000) -> collections.Counter:
    return await at_once(address, classify_bytes(1), calls, connections, 60)


async def big(address: str, requests: int = 96) -> collections.Counter:
    return await at_once(address, classify_bytes(1024), requests, 8, 120)


async def soak(address: str, seconds: float, clients: int = 32) -> collections.Counter:
    codes: collections.Counter = collections.Counter()
    chans = channels(address, 8)
    data = classify_bytes(1024)
    end = time.monotonic() + seconds

    async def client(i: int) -> None:
        while time.monotonic() < end:
            await call(chans[i % 8], data, codes, 60)

    await asyncio.gather(*(client(i) for i in range(clients)))
    for channel in chans:
        await channel.close()
    return codes


async def largest_messages(address: str, calls: int = 24, connections: int = 8,
                           mib: int = 60) -> collections.Counter:
    """``calls`` messages of ``mib`` MiB at once (an image that does not decode: the
    server reads each whole before it can refuse it)."""
    return await at_once(address, classify_bytes(encoded=bytes(mib << 20)), calls, connections, 120)


async def decode(address: str, repeats: int = 3) -> collections.Counter:
    codes: collections.Counter = collections.Counter()
    data = classify_bytes(encoded=largest_png())
    async with grpc.aio.insecure_channel(address) as channel:
        for _ in range(repeats):
            await call(channel, data, codes, 60)
    return codes


async def run(args: argparse.Namespace) -> dict:
    load = background_load()
    server = Server(args.model)
    try:
        server.first_answer()
        idle = server.memory_mb()
        phases = [
            await phase("flood, 4 connections", server, lambda: flood(server.address, 4)),
            await phase("flood, 16 connections", server, lambda: flood(server.address, 16)),
            await phase("96 x 1024 images at once", server, lambda: big(server.address)),
            await phase(f"soak, 32 clients x 1024 images, {args.soak:g} s", server,
                        lambda: soak(server.address, args.soak)),
            await phase("largest legal image (4000 x 4000 PNG)", server,
                        lambda: decode(server.address)),
            await phase("24 x 60 MiB messages at once, 8 connections", server,
                        lambda: largest_messages(server.address)),
        ]
        await asyncio.sleep(args.idle)
        after = server.memory_mb()
        log_text = server.log_text()
    finally:
        code = server.stop()
    return {
        "command": "python -m bench.overload " + " ".join(sys.argv[1:]),
        "cpu": cpu(),
        "load_before": load,
        "model": args.model,
        "rss_mb_at_start": idle["rss_mb"],
        "phases": phases,
        "peak_rss_mb": after["peak_rss_mb"],
        "rss_mb_after_idle": after["rss_mb"],
        "idle_s": args.idle,
        "exit_code": code,
        "server_log_errors": sum("ERROR" in line for line in log_text.splitlines()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "cifar10-cnn.onnx"))
    parser.add_argument("--soak", type=float, default=20.0, help="soak seconds")
    parser.add_argument("--idle", type=float, default=10.0, help="rest before the last RSS")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
