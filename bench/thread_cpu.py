"""Where a server's CPU goes, call by call: CPU time per call of each of its threads under h2load.

Reads every thread's user + system time (``/proc/PID/task/TID/stat``) before and after one
h2load run against a running server (ours or ``bench.echo_server``), and divides by the calls
answered: microseconds of CPU per call for the event loop thread (``main``), the other
Python threads (batcher workers, grpc's poller, onnxruntime's pool: all named ``python``) and
grpc's ``event_engine`` threads, the server in all, and h2load itself (the client shares the
CPUs). Linux only.

    python -m bench.thread_cpu --pid PID --address 127.0.0.1:8500 --concurrency 64 --duration 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

from bench import h2load, proctree

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``: ``main`` for the main thread, else
    ``<name>-<tid>``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            command, fields = proctree.stat(pid, int(tid))
        except OSError:  # the thread ended meanwhile
            continue
        name = "main" if tid == str(pid) else f"{command}-{tid}"
        out[name] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def measure(pid: int, address: str, concurrency: int, duration: float, warmup: float = 1.0,
            api: str = "cifar10", model_name: str = "") -> dict:
    """One h2load run of 1-image calls; CPU microseconds per call by thread."""
    message = h2load.request_message(1, api=api, model_name=model_name)
    with tempfile.TemporaryDirectory() as tmp:
        body = os.path.join(tmp, "request.bin")
        with open(body, "wb") as f:
            f.write(h2load.grpc_frame(message))
        cmd = h2load.command(address, body, concurrency, duration, warmup, 0,
                             os.path.join(tmp, "log"), api=api)
        before, client_before = thread_cpu(pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        stdout = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        after, client_after = thread_cpu(pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = h2load.FINISHED.search(stdout)
    if not finished:
        raise RuntimeError(f"cannot read h2load's summary: {stdout[-500:]}")
    rate = float(finished.group(2))
    calls = rate * (duration + warmup)  # the CPU counters span the warm-up too
    per_call = {name: round(1e6 * (after[name] - before.get(name, 0.0)) / calls, 1)
                for name in after if after[name] - before.get(name, 0.0) > 0}
    client = (client_after.ru_utime + client_after.ru_stime
              - client_before.ru_utime - client_before.ru_stime)
    return {
        "concurrency": concurrency, "calls_per_s": rate,
        "server_us_per_call": round(sum(per_call.values()), 1),
        "main_thread_us_per_call": per_call.get("main", 0.0),
        "other_python_threads_us_per_call": round(sum(
            v for k, v in per_call.items() if k.startswith("python-")), 1),
        "event_engine_us_per_call": round(sum(
            v for k, v in per_call.items() if k.startswith("event_engine")), 1),
        "h2load_us_per_call": round(1e6 * client / calls, 1),
        "threads_us_per_call": per_call,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True, help="the server process")
    parser.add_argument("--address", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--api", choices=("cifar10", "oip"), default="cifar10")
    parser.add_argument("--model-name", default="", help="for --api oip")
    args = parser.parse_args(argv)
    if h2load.binary() is None:
        print("error: h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 2
    print(json.dumps(measure(args.pid, args.address, args.concurrency, args.duration,
                             api=args.api, model_name=args.model_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
