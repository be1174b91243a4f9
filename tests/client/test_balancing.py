"""Client-side balancing over replicas: three real server processes on loopback, one client.

Each replica's share of the calls is read from its own Prometheus endpoint
(``cifar10_requests_total{method="Classify",code="OK"}``); one replica is SIGKILLed in the
middle of a ``cifar10-batch`` run, which must still write every image exactly once. The
figures are printed (``pytest -s``) for docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port
from cifar10_client import AsyncClient, Client
from cifar10_client.connection import channel_target, split_addresses
from cifar10_client.errors import ClientError
from tests.client.helpers import random_image

ROOT = Path(__file__).resolve().parents[2]


class Replica:
    """``python -m cifar10_serving.grpc_api.server`` on ``host`` (127.0.0.1) with its own gRPC
    and metrics ports (``port``: a given gRPC port, else a free one), no HTTP door."""

    def __init__(self, model: Path, *flags: str, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port, self.metrics_port = port or free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIFAR10_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cifar10_serving", "--model-path", str(model),
             "--host", host, "--port", str(self.port), "--metrics-port", str(self.metrics_port), "--http-port", "-1",
             "--reload-interval-s", "0", "--log-level", "WARNING", *flags],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.address = f"{host}:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        with grpc.insecure_channel(self.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=timeout)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample from this replica's metrics endpoint (0 when absent)."""
        with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and sample.labels == (labels or {})
        )

    def classify_calls(self) -> int:
        """Classify calls this replica answered OK."""
        return int(self.metric("cifar10_requests_total", {"door": "grpc", "method": "Classify", "code": "OK"}))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


@pytest.fixture
def replicas(tiny_model_path, request):
    """Three replicas of the tiny model, ready; ``request.param``: extra server flags."""
    flags = getattr(request, "param", ())
    started = [Replica(tiny_model_path, *flags) for _ in range(3)]
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


# --- addresses -> gRPC target -------------------------------------------------------------

def test_addresses_are_a_list_a_comma_separated_string_or_one_target():
    assert split_addresses(["a:1", "b:2,c:3"]) == ["a:1", "b:2", "c:3"]
    assert split_addresses("a:1, b:2") == ["a:1", "b:2"]
    assert split_addresses("dns:///cifar10.default.svc:8500") == ["dns:///cifar10.default.svc:8500"]
    assert split_addresses("ipv4:10.0.0.1:1,10.0.0.2:1") == ["ipv4:10.0.0.1:1,10.0.0.2:1"]
    assert channel_target(["localhost:8500"]) == "localhost:8500"
    assert channel_target(["127.0.0.1:1", "localhost:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target(["[::1]:1", "[::1]:2"]) == "ipv6:[::1]:1,[::1]:2"
    for bad in (["dns:///a:1", "b:2"], ["127.0.0.1:1", "[::1]:2"], ["a", "b:1"]):
        with pytest.raises(ClientError) as caught:
            channel_target(bad)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_service_config_asks_for_round_robin():
    from cifar10_client.connection import RetryPolicy

    config = json.loads(RetryPolicy().service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert "UNAVAILABLE" in config["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"]


# --- three replicas --------------------------------------------------------------------------

CALLS = 300


def shares(replicas: list[Replica], before: list[int]) -> list[float]:
    counts = [r.classify_calls() - b for r, b in zip(replicas, before)]
    assert sum(counts) == CALLS, counts
    return [c / CALLS for c in counts]


def assert_fair(fractions: list[float], label: str) -> None:
    # round_robin takes the ready replicas in turn: once the three connections are up the
    # split is exact (100 each). The bound leaves room for the calls sent while a
    # connection was still coming up (up to 25 of 300 sent elsewhere) and nothing more.
    print(f"\n{label}: share of {CALLS} calls per replica: "
          + ", ".join(f"{f:.1%}" for f in fractions))
    assert all(0.25 <= f <= 0.42 for f in fractions), fractions


def test_one_client_spreads_its_calls_over_three_replicas(replicas):
    before = [r.classify_calls() for r in replicas]
    image = random_image(0)
    with Client([r.address for r in replicas]) as client:
        for _ in range(CALLS):
            client.classify(image)
    assert_fair(shares(replicas, before), "Client([a, b, c])")


def test_the_asyncio_client_takes_a_comma_separated_string(replicas):
    import asyncio

    async def run() -> None:
        async with AsyncClient(",".join(r.address for r in replicas)) as client:
            for _ in range(CALLS):
                await client.classify(random_image(1))

    before = [r.classify_calls() for r in replicas]
    asyncio.run(run())
    assert_fair(shares(replicas, before), "AsyncClient('a,b,c')")


def test_the_cli_takes_repeated_and_comma_separated_addresses(replicas, tmp_path, capsys):
    from cifar10_client.cli import main
    from tests.client.helpers import write_png

    paths = [str(write_png(tmp_path / f"{i}.png", random_image(i))) for i in range(6)]
    before = [r.classify_calls() for r in replicas]
    code = main(["--address", replicas[0].address, "--address",
                 f"{replicas[1].address},{replicas[2].address}", "classify", "--json",
                 "--batch-size", "1", *paths])
    assert code == 0
    assert len(json.loads(capsys.readouterr().out)) == 6
    # Every call reached one of the three (which ones depends on when each connection is up).
    assert sum(r.classify_calls() - b for r, b in zip(replicas, before)) == 6


def test_a_dns_target_works(replicas):
    with Client(f"dns:///localhost:{replicas[0].port}") as client:
        assert client.classify(random_image(2)).label


# Each call waits up to 40 ms for its batch to fill (no batch of 8 ever fills 32), so the
# run lasts seconds and the kill lands in its middle.
SLOW = ("--max-queue-delay-ms", "40", "--max-batch-size", "32")


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [SLOW], indirect=True)
def test_killing_a_replica_mid_batch_loses_no_image(replicas, tmp_path):
    images = 480
    np.save(tmp_path / "images.npy", np.stack([random_image(i) for i in range(images)]))
    out = tmp_path / "out.jsonl"
    victim = replicas[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIFAR10_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.Popen(
        [sys.executable, "-m", "cifar10_client.batch", str(tmp_path / "images.npy"),
         "-o", str(out), "--batch-size", "8", "--concurrency", "3", "--no-progress",
         "--address", replicas[0].address, "--address", f"{victim.address},{replicas[2].address}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Kill once it has answered twice and holds images waiting for their batch: a call
        # in flight on it, which its client must retry elsewhere.
        deadline = time.monotonic() + 60
        while victim.classify_calls() < 2 or not (queued := victim.metric("cifar10_queue_depth_images")):
            assert run.poll() is None, "the run ended before the victim was busy"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        written_at_kill = len(out.read_text().splitlines()) if out.exists() else 0
        assert run.poll() is None and written_at_kill < images, "the kill was not mid-run"
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    items = [json.loads(line)["item"] for line in out.read_text().splitlines()]
    lost = images - len(set(items))
    duplicated = len(items) - len(set(items))
    survivors = [r.classify_calls() for r in (replicas[0], replicas[2])]
    print(f"\nkilled one of 3 replicas with {queued:.0f} images queued on it, after "
          f"{written_at_kill}/{images} images were written: "
          f"{lost} lost, {duplicated} duplicated; survivors answered {survivors} calls")
    assert lost == 0 and duplicated == 0
    assert sorted(items) == sorted(set(items)) and len(items) == images
    assert all(count > 0 for count in survivors)


def test_tls_over_several_replicas_checks_the_first_host_name(server_factory, tmp_path):
    from cifar10_client import TLSConfig
    from tests.client.helpers import make_certs

    certs = make_certs(tmp_path / "certs")
    servers = [server_factory(tls_cert=str(certs["server.pem"]), tls_key=str(certs["server.key"]))
               for _ in range(2)]
    addresses = [f"localhost:{s.port}" for s in servers]  # the certificate names localhost
    with Client(addresses, tls=TLSConfig(ca_cert=certs["ca.pem"]), timeout=10.0) as client:
        assert client.target.startswith("ipv4:127.0.0.1:")
        for _ in range(4):
            assert client.classify(random_image(3)).label
    served = [s.metrics.registry.get_sample_value(
        "cifar10_requests_total", {"door": "grpc", "method": "Classify", "code": "OK"}) for s in servers]
    assert all(served) and sum(served) == 4, served
