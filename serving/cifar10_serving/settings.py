"""The one place for the server's configuration: command-line flags with environment fallbacks.

Every setting has a flag (``--max-batch-size``) and an environment variable with the prefix
``CIFAR10_`` (``CIFAR10_MAX_BATCH_SIZE``). Precedence: flag, then environment, then the
default below. ``Settings.from_args(argv, environ)`` builds one (tests pass their own
``environ``); ``cifar10-serve --help`` lists them all.

=============================  ==========================  ====================================
environment variable           default                     meaning
=============================  ==========================  ====================================
CIFAR10_MODEL_PATH             models/cifar10-cnn.onnx     the ONNX model (model contract)
CIFAR10_HOST                   0.0.0.0                     gRPC bind address
CIFAR10_PORT                   8500                        gRPC port; 0 picks a free port
CIFAR10_METRICS_PORT           8501                        HTTP: /metrics and health probes; 0 free
                                                           port, -1 turns it off
CIFAR10_EVENT_LOOP             auto                        uvloop, asyncio, or auto (uvloop if
                                                           installed: the serve extra has it)
CIFAR10_WORKERS                1                           server processes sharing the port
                                                           (SO_REUSEPORT); 0 = one per CPU
                                                           (cifar10_serving.process.workers)
CIFAR10_INSTANCES              2 (1 with under 2 CPUs a    model runs at a time per worker
                               worker)                     (Triton's instance count)
CIFAR10_THREADS                CPUs this process may use   onnxruntime intra-op threads of a
                               (affinity and cgroup        lone request's run; a busy worker's
                               quota)                      runs get threads / (instances x
                                                           workers)
CIFAR10_SPINNING               false                       onnxruntime intra-op thread spinning
CIFAR10_MAX_BATCH_SIZE         32                          largest merged session run (images)
CIFAR10_MAX_QUEUE_DELAY_MS     0                           extra wait for a batch to fill; 0 =
                                                           run whatever is queued at once
CIFAR10_MAX_QUEUE_SIZE         2048                        queued images before
                                                           RESOURCE_EXHAUSTED
CIFAR10_MAX_MESSAGE_BYTES      67108864 (64 MiB)           gRPC max receive/send message size
CIFAR10_MAX_IMAGES_PER_REQUEST 1024                        images in one request
CIFAR10_MAX_IMAGE_PIXELS       16000000                    width*height of one decoded image
CIFAR10_MAX_REQUEST_PIXELS     64000000                    pixels one request may decode in all
CIFAR10_MAX_INFLIGHT_REQUESTS  256                         requests admitted at once, before
                                                           RESOURCE_EXHAUSTED
CIFAR10_MAX_INFLIGHT_BYTES     134217728 (128 MiB)         request bytes admitted at once
CIFAR10_DECODE_THREADS         half the CPUs (at least 1)  threads decoding images with Pillow
CIFAR10_MAX_STREAMS_PER_CONNECTION 1000                    calls open at once on one connection
CIFAR10_RECEIVE_SLOTS          2                           image requests read at once (each up
                                                           to max_message_bytes); the rest wait
                                                           (cifar10_serving.grpc_api.receive_gate)
CIFAR10_GRACE_SECONDS          10                          in-flight grace period at shutdown
CIFAR10_RELOAD_INTERVAL_S      2                           model file polling; 0 = off (SIGHUP
                                                           still reloads)
CIFAR10_TLS_CERT / _TLS_KEY    (none)                      server certificate and key (PEM)
CIFAR10_TLS_CLIENT_CA          (none)                      CA for client certificates (mTLS)
CIFAR10_LOG_LEVEL              INFO                        DEBUG, INFO, WARNING, ERROR
CIFAR10_LOG_FORMAT             text                        text or json (one object per line)
=============================  ==========================  ====================================
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from cifar10_core.cpus import available_cpus

ENV_PREFIX = "CIFAR10_"


def _bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _opt_str(value: str) -> str | None:
    return value or None


@dataclass(frozen=True)
class Settings:
    """All server settings. Field ``foo_bar`` is flag ``--foo-bar`` and env ``CIFAR10_FOO_BAR``."""

    model_path: str = field(default="models/cifar10-cnn.onnx", metadata={"help": "ONNX model file"})
    host: str = field(default="0.0.0.0", metadata={"help": "gRPC bind address"})
    port: int = field(default=8500, metadata={"help": "gRPC port (0: a free port)"})
    metrics_port: int = field(
        default=8501, metadata={"help": "HTTP port of /metrics and the health probes "
                                       "/v2/health/live, /v2/health/ready (0: a free port, "
                                       "-1: off)"}
    )
    event_loop: str = field(
        default="auto",
        metadata={"help": "uvloop, asyncio, or auto (uvloop where installed)"},
    )
    workers: int = field(
        default=1,
        metadata={"help": "server processes sharing the port, each with its own model and "
                          "batcher (0: one per CPU); docs/benchmarks.md"},
    )
    instances: int = field(
        default=0,
        metadata={"help": "model runs at a time (0: 2, or 1 on a single CPU); a second run "
                          "starts only for a full batch (docs/benchmarks.md)"},
    )
    threads: int = field(
        default=0,
        metadata={"help": "onnxruntime intra-op threads of a lone request's run (0: the CPUs we "
                          "may use); a busy worker's runs get threads / (instances x workers)"},
    )
    spinning: bool = field(
        default=False, metadata={"help": "let onnxruntime's threads spin while idle"}
    )
    max_batch_size: int = field(default=32, metadata={"help": "largest merged batch (images)"})
    max_queue_delay_ms: float = field(
        default=0.0, metadata={"help": "extra wait for a batch to fill (0: none)"}
    )
    max_queue_size: int = field(
        default=2048, metadata={"help": "queued images before RESOURCE_EXHAUSTED"}
    )
    max_message_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "max gRPC message size, both ways"}
    )
    max_images_per_request: int = field(default=1024, metadata={"help": "images per request"})
    max_image_pixels: int = field(
        default=16_000_000, metadata={"help": "max width*height of one decoded image"}
    )
    max_request_pixels: int = field(
        default=64_000_000,
        metadata={"help": "pixels one request may decode in all (its images' width*height)"},
    )
    max_inflight_requests: int = field(
        default=256, metadata={"help": "requests admitted at once; more: RESOURCE_EXHAUSTED"}
    )
    max_inflight_bytes: int = field(
        default=128 * 1024 * 1024,
        metadata={"help": "request bytes admitted at once; more: RESOURCE_EXHAUSTED"},
    )
    max_streams_per_connection: int = field(
        default=1000, metadata={"help": "calls one connection may have open at once (HTTP/2 "
                                       "max concurrent streams); a grpc client's calls past "
                                       "it fail UNAVAILABLE"},
    )
    receive_slots: int = field(
        default=2, metadata={"help": "requests with images read at once, each up to "
                                    "max_message_bytes; the others wait their turn (a bound "
                                    "on the memory of requests not yet admitted)"},
    )
    decode_threads: int = field(
        default=0, metadata={"help": "threads decoding images with Pillow (0: half the CPUs, "
                                     "at least 1)"},
    )
    grace_seconds: float = field(
        default=10.0, metadata={"help": "grace period for in-flight requests at shutdown"}
    )
    reload_interval_s: float = field(
        default=2.0, metadata={"help": "model file polling interval (0: off; SIGHUP still works)"}
    )
    tls_cert: str | None = field(default=None, metadata={"help": "server certificate (PEM)"})
    tls_key: str | None = field(default=None, metadata={"help": "server private key (PEM)"})
    tls_client_ca: str | None = field(
        default=None, metadata={"help": "CA certificate for client certificates (mTLS)"}
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(default="text", metadata={"help": "text or json"})

    def __post_init__(self) -> None:
        problems = []
        if self.workers < 0:
            problems.append("workers must not be negative (0: one per CPU)")
        elif self.workers == 0:
            object.__setattr__(self, "workers", available_cpus())
        if self.instances < 0:
            problems.append("instances must not be negative (0: the default)")
        else:
            if self.instances == 0:  # 2 per worker while each gets 2 CPUs or more
                object.__setattr__(self, "instances",
                                   max(1, min(2, available_cpus() // max(1, self.workers))))
            if self.threads <= 0:
                object.__setattr__(self, "threads", available_cpus())
        if self.decode_threads < 0:
            problems.append("decode_threads must not be negative (0: the default)")
        elif self.decode_threads == 0:
            object.__setattr__(self, "decode_threads", max(1, available_cpus() // 2))
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} out of range")
        if not -1 <= self.metrics_port <= 65535:
            problems.append(f"metrics_port {self.metrics_port} out of range")
        for name in ("max_batch_size", "max_queue_size", "max_message_bytes",
                     "max_images_per_request", "max_image_pixels", "max_request_pixels",
                     "max_inflight_requests", "max_inflight_bytes", "max_streams_per_connection",
                     "receive_slots"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("max_queue_delay_ms", "grace_seconds", "reload_interval_s"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if self.max_queue_size < self.max_batch_size:
            problems.append("max_queue_size must be at least max_batch_size")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls_client_ca needs tls_cert and tls_key")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            problems.append(f"event_loop must be auto, uvloop or asyncio, got {self.event_loop!r}")
        if self.log_format not in ("text", "json"):
            problems.append(f"log_format must be text or json, got {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            problems.append(f"unknown log_level {self.log_level!r}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))
        object.__setattr__(self, "log_level", self.log_level.upper())

    @property
    def overlap_threads(self) -> int:
        """Intra-op threads of a run that is not alone: one that starts beside another run,
        or (with several instances or workers) one for a worker busy with more than one
        request, since the other workers are likely busy too: the CPUs shared out."""
        return max(1, self.threads // (self.instances * self.workers))

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def env_name(field_name: str) -> str:
        return ENV_PREFIX + field_name.upper()

    @classmethod
    def how_to_set(cls, field_name: str) -> str:
        """How a user changes a setting, for error messages: ``--port or CIFAR10_PORT``."""
        return f"--{field_name.replace('_', '-')} or {cls.env_name(field_name)}"

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog="cifar10-serve",
            description="Serve a CIFAR-10 ONNX model over gRPC (cifar10.v2, Open Inference "
            "Protocol, health, reflection) with onnxruntime.",
            epilog="Every flag falls back to the environment variable CIFAR10_<FLAG_NAME> "
            "(e.g. CIFAR10_MAX_BATCH_SIZE), then to its default.",
        )
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if _kind(f) == "bool":  # a plain on/off flag: --spinning / --no-spinning
                help_text = (f"{f.metadata.get('help', '')} [env {cls.env_name(f.name)}: true or "
                             f"false; default {str(f.default).lower()}]")
                parser.add_argument(flag, dest=f.name, default=None, help=help_text,
                                    action=argparse.BooleanOptionalAction)
                continue
            help_text = f"{f.metadata.get('help', '')} [env {cls.env_name(f.name)}; default {f.default}]"
            parser.add_argument(flag, dest=f.name, default=None, type=str, help=help_text)
        return parser

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Build Settings from flags (``argv``, default none) and ``environ`` (default os.environ).

        Raises ValueError naming the setting for a malformed value.
        """
        environ = os.environ if environ is None else environ
        args = cls.parser().parse_args(list(argv or []))
        values = {}
        for f in fields(cls):
            raw = getattr(args, f.name)
            source = "--" + f.name.replace("_", "-")
            if raw is None:
                raw = environ.get(cls.env_name(f.name))
                source = cls.env_name(f.name)
            if raw is None:
                continue
            values[f.name] = raw if isinstance(raw, bool) else _convert(f, raw, source)
        return cls(**values)


def _kind(f: dataclasses.Field) -> str:
    """The field's type as written (``"int"``, ``"str | None"``, ...)."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _convert(f: dataclasses.Field, raw: str, source: str):
    kind = _kind(f)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return _bool(raw)
        if kind == "str | None":
            return _opt_str(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"invalid value for {source}: {raw!r} ({exc})") from None
