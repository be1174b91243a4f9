"""The one place for the server's configuration: command-line flags with environment fallbacks.

Every setting has a flag (``--max-batch-size``) and an environment variable with the prefix
``CIFAR10_`` (``CIFAR10_MAX_BATCH_SIZE``). Precedence: flag, then environment, then the
default below. ``Settings.from_args(argv, environ)`` builds one (tests pass their own
``environ``); ``cifar10-serve --help`` lists them all.

The reference (every variable, flag, default and meaning) is generated from the fields
below: ``python -m cifar10_serving.settings > docs/configuration.md`` (``make docs``; a test
fails when that file is stale).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from cifar10_core.cpus import available_cpus

ENV_PREFIX = "CIFAR10_"
DEFAULT_REPOSITORY = "models"


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

    model_repository: str | None = field(
        default=None,
        metadata={"help": "the model repository folder to serve: <model name>/<version>/"
                          "model.onnx, versions positive integers, an optional <model name>/"
                          "config.json (version policy, default model; docs/serving.md)",
                  "default": f"{DEFAULT_REPOSITORY} (the bundled models) unless --model-path "
                             "is given"})
    model_path: str | None = field(
        default=None,
        metadata={"help": "instead of a repository, one ONNX model file to serve (the model "
                          "contract), named and versioned by its metadata"})
    model_control: str = field(
        default="poll",
        metadata={"help": "poll: the model repository (or file) is looked at every "
                          "--reload-interval-s and on SIGHUP; explicit: only on SIGHUP and "
                          "through Triton's repository extension (gRPC RepositoryIndex, "
                          "RepositoryModelLoad, RepositoryModelUnload; HTTP POST "
                          "/v2/repository/index, /v2/repository/models/NAME/load and /unload), "
                          "which is served in this mode only (a repository, not --model-path)"})
    default_model: str | None = field(
        default=None,
        metadata={"help": "the model of requests that name none (none: the one whose "
                          "config.json says \"default\": true, else the first by name)"})
    host: str = field(default="0.0.0.0", metadata={
        "help": "bind address of both ports: every interface by default, without TLS "
                "(127.0.0.1: this machine only; --tls-cert/--tls-key: TLS)"})
    port: int = field(default=8500, metadata={"help": "gRPC port (0: a free port)"})
    http_port: int = field(
        default=8501,
        metadata={"help": "HTTP port (TensorFlow Serving's REST port): the Open Inference "
                          "Protocol's REST API under /v2, the image endpoint /v1/classify, "
                          "the web page at /, the API docs at /docs (0: a free port, -1: off)"},
    )
    metrics_port: int = field(
        default=8502, metadata={"help": "HTTP port of /metrics and the health probes "
                                       "/v2/health/live, /v2/health/ready, answered on a "
                                       "thread of their own (0: a free port, -1: off)"}
    )
    event_loop: str = field(
        default="auto",
        metadata={"help": "uvloop, asyncio, or auto (uvloop where installed: less CPU per "
                          "call)"},
    )
    workers: int = field(
        default=1,
        metadata={"help": "server processes sharing the port (SO_REUSEPORT), each with its "
                          "own model and batcher; the kernel spreads connections, not calls, "
                          "over them; metrics are summed (0: one per CPU)"},
    )
    instances: int = field(
        default=0,
        metadata={"help": "model runs at a time per worker, every model's together (Triton's "
                          "instance count; a model's config.json may allow it fewer); a "
                          "second run starts only for a full batch",
                  "default": "2 (1 with fewer than 2 CPUs per worker)"},
    )
    threads: int = field(
        default=0,
        metadata={"help": "onnxruntime intra-op threads of a lone request's run; a busy "
                          "worker's runs get threads / (instances x workers)",
                  "default": "the CPUs this process may use (affinity, cgroup quota)"},
    )
    spinning: bool = field(
        default=False, metadata={"help": "let onnxruntime's threads spin while idle"}
    )
    max_batch_size: int = field(
        default=32, metadata={"help": "largest merged batch (images) of a model whose config.json "
                                      "does not set its own"}
    )
    max_queue_delay_ms: float = field(
        default=0.0, metadata={"help": "extra wait for a batch to fill (0: none)"}
    )
    max_queue_size: int = field(
        default=2048, metadata={"help": "queued images per model version before "
                                       "RESOURCE_EXHAUSTED"}
    )
    max_message_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "max gRPC message size, both ways",
                                            "default": "67108864 (64 MiB)"}
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
        metadata={"help": "request bytes admitted at once; more: RESOURCE_EXHAUSTED (one "
                          "request alone is always admitted)", "default": "134217728 (128 MiB)"},
    )
    max_streams_per_connection: int = field(
        default=1000, metadata={"help": "calls one connection may have open at once (HTTP/2 "
                                       "max concurrent streams); a grpc client's calls past "
                                       "it fail UNAVAILABLE"},
    )
    max_connection_age_s: float = field(
        default=300.0,
        metadata={"help": "close each client connection after about this long (gRPC's "
                          "max_connection_age, jittered by up to 10 percent; its GOAWAY lets "
                          "the client move new calls to a new connection first), so "
                          "long-lived clients reconnect and re-resolve the service name and "
                          "replicas added by a scale-up get their share of calls (0: never)"},
    )
    max_connection_age_grace_s: float = field(
        default=30.0,
        metadata={"help": "after a connection's maximum age, how long the calls in flight "
                          "on it may take to finish before it is closed (gRPC's "
                          "max_connection_age_grace)"},
    )
    receive_slots: int = field(
        default=2, metadata={"help": "requests with images read at once, each up to "
                                    "max_message_bytes; the others wait their turn (a bound "
                                    "on the memory of requests not yet admitted)"},
    )
    decode_threads: int = field(
        default=0, metadata={"help": "threads decoding images with Pillow, off the event loop",
                             "default": "half the CPUs (at least 1)"},
    )
    grace_seconds: float = field(
        default=10.0, metadata={"help": "grace period for in-flight requests at shutdown"}
    )
    reload_interval_s: float = field(
        default=2.0, metadata={"help": "how often the model repository (or file) is looked at "
                                       "for new, changed and removed versions (0: never; "
                                       "SIGHUP still works)"}
    )
    tls_cert: str | None = field(default=None, metadata={"help": "server certificate (PEM)"})
    tls_key: str | None = field(default=None, metadata={"help": "server private key (PEM)"})
    tls_client_ca: str | None = field(
        default=None, metadata={"help": "CA certificate for client certificates (mTLS)"}
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(default="text", metadata={"help": "text or json"})
    request_log_rate: float = field(
        default=0.0,
        metadata={"help": "share of requests (0 to 1, drawn at random) logged as one JSON line "
                          "each: time, door, method, model and version, images, status, "
                          "latency, request id, trace id, client (0: off)"},
    )
    request_log_file: str | None = field(
        default=None, metadata={"help": "file the request log is appended to (none: stderr)"}
    )

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
        for name in ("http_port", "metrics_port"):
            if not -1 <= getattr(self, name) <= 65535:
                problems.append(f"{name} {getattr(self, name)} out of range")
        for name in ("max_batch_size", "max_queue_size", "max_message_bytes",
                     "max_images_per_request", "max_image_pixels", "max_request_pixels",
                     "max_inflight_requests", "max_inflight_bytes", "max_streams_per_connection",
                     "receive_slots"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("max_queue_delay_ms", "grace_seconds", "reload_interval_s",
                     "max_connection_age_s", "max_connection_age_grace_s"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if not 0 <= self.request_log_rate <= 1:
            problems.append(f"request_log_rate must be between 0 and 1, got {self.request_log_rate}")
        if self.max_queue_size < self.max_batch_size:
            problems.append("max_queue_size must be at least max_batch_size")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls_client_ca needs tls_cert and tls_key")
        if self.model_path and self.model_repository:
            problems.append("model_path and model_repository: give one (a file, or a "
                            "repository folder)")
        if self.model_control not in ("poll", "explicit"):
            problems.append(f"model_control must be poll or explicit, got {self.model_control!r}")
        elif self.model_control == "explicit" and self.model_path:
            problems.append("model_control explicit needs a model repository, not model_path")
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
    def repository_api(self) -> bool:
        """Whether Triton's repository extension is served (``--model-control explicit``)."""
        return self.model_control == "explicit"

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
            help_text = f"{f.metadata.get('help', '')} [env {cls.env_name(f.name)}; default {default_text(f)}]"
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


def default_text(f: dataclasses.Field) -> str:
    """A setting's default as a user reads it: computed ones described, none as "none"."""
    if "default" in f.metadata:
        return f.metadata["default"]
    if f.default is None:
        return "none"
    if isinstance(f.default, bool):
        return str(f.default).lower()
    return f"{f.default:g}" if isinstance(f.default, float) else str(f.default)


def reference() -> str:
    """docs/configuration.md: every setting, from the fields above."""
    rows = ["# Server configuration", "",
            "Generated by `python -m cifar10_serving.settings > docs/configuration.md` (`make "
            "docs`) from `serving/cifar10_serving/settings.py`, the one place the settings are "
            "defined; `cifar10-serve --help` shows the same. A flag wins over its environment "
            "variable, which wins over the default; the server logs its settings at start-up.",
            "", "| environment variable | flag | default | meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        flags = f"`{flag}`, `--no-{flag[2:]}`" if _kind(f) == "bool" else f"`{flag}`"
        rows.append(f"| `{Settings.env_name(f.name)}` | {flags} | {default_text(f)} | "
                    f"{f.metadata.get('help', '')} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
