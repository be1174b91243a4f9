"""``cifar10-client``: health, model info and classification from the command line.

    cifar10-client health
    cifar10-client info [--json]
    cifar10-client classify cat.png 'photos/**/*.jpg' - [--json] [--top-k 3]
    cifar10-client --address http://localhost:8501 classify cat.png     # over HTTP

Connection and TLS flags (``--address``, ``--timeout``, ``--wait``, ``--tls``, ...) go
before or after the command. A server that cannot be reached fails at once, in one line
naming the address; ``--wait SECONDS`` waits that long for one that is starting.

Exit codes (shared with ``cifar10-batch``), for scripts:

    0  success
    1  some item failed (an unreadable or undecodable image), or health is not SERVING
    2  usage error (bad flags, no input, unreadable TLS files)
    3  server unavailable: cannot reach it, deadline exceeded or overloaded, after retries
    4  other server error (INTERNAL, UNIMPLEMENTED, UNAUTHENTICATED, ...)
    5  an optional dependency is missing (the message says which extra to install)
    6  message too large: a request over the server's (or the client's) size limit; not
       retried (send smaller batches or smaller images)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

# gRPC's C core logs to stderr on its own (a TLS handshake with a plaintext server: a line
# per try, before our message) and reads GRPC_VERBOSITY once, when grpc is first imported:
# the command-line tools turn that log off here, before any grpc import (the package's
# __init__ imports none), unless the user set GRPC_VERBOSITY or GRPC_TRACE.
if "grpc" not in sys.modules and not {"GRPC_VERBOSITY", "GRPC_TRACE"} & set(os.environ):
    os.environ["GRPC_VERBOSITY"] = "NONE"

import grpc  # noqa: E402

from .connection import (  # noqa: E402
    ADDRESS_ENV,
    DEFAULT_TIMEOUT_S,
    MAX_ATTEMPTS_LIMIT,
    NO_RETRY,
    RetryPolicy,
    TLSConfig,
    default_address,
    split_addresses,
)
from .errors import ClientError, UnreachableError  # noqa: E402
from .schemes import is_https, uses_http  # noqa: E402

EXIT_OK = 0
EXIT_ITEM_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_SERVER_ERROR = 4
EXIT_MISSING_DEPENDENCY = 5
EXIT_TOO_LARGE = 6
EXIT_INTERRUPTED = 130

UNAVAILABLE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
})


def exit_code_for(error: ClientError) -> int:
    if error.too_large is not None:
        return EXIT_TOO_LARGE
    return EXIT_UNAVAILABLE if error.code in UNAVAILABLE_CODES else EXIT_SERVER_ERROR


# Calls wait (within --timeout) for a server that is not up yet: say so when one never answers.
DEADLINE_HINT = " (no answer within --timeout: is the server up at --address?)"


class UsageError(Exception):
    """Bad arguments found after parsing (exit 2)."""


def model_spec(text: str) -> tuple[str, str]:
    """``--model NAME[:VERSION]`` as (name, version); version '' for the newest served."""
    name, _, version = text.partition(":")
    if not name or (":" in text and not version):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME or NAME:VERSION")
    return name, version


def add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=model_spec, default=("", ""), metavar="NAME[:VERSION]",
                        help="the model (and version) to ask (default: the server's default "
                             "model, its newest version; `cifar10-client models` lists them)")


# -- shared by cifar10-client and cifar10-batch -----------------------------------------
def add_connection_args(parser: argparse.ArgumentParser, timeout: float = DEFAULT_TIMEOUT_S,
                        *, with_defaults: bool = True) -> None:
    """The connection and TLS flags. ``with_defaults=False`` gives them no defaults (absent
    flags leave the namespace alone): the copy on each subcommand, so the flags work after
    the subcommand too and one given there wins over one given before it."""

    def default(value):
        return value if with_defaults else argparse.SUPPRESS

    address, retries = default_address(), RetryPolicy().max_attempts - 1
    group = parser.add_argument_group("connection")
    group.add_argument("--address", action="append", default=default(None),
                       help="server host:port (gRPC) or http://host:port, https://host:port "
                            "(the HTTP door); gRPC: several replicas: repeat the flag or "
                            "separate with commas, or dns:///name:port for every address of a "
                            "name; calls are spread over them (round_robin) "
                            f"[env {ADDRESS_ENV}; default {address}]")
    group.add_argument("--timeout", type=float, default=default(timeout),
                       help=f"deadline of each call in seconds, retries included [default {timeout}]")
    group.add_argument("--wait", type=float, default=default(0.0), metavar="SECONDS",
                       help="wait up to SECONDS for a server that is starting to answer; "
                            "0: fail at once, naming the address, when it cannot be reached "
                            "[default 0]")
    group.add_argument("--retries", type=int, default=default(retries),
                       help="retries (0..4) on UNAVAILABLE / RESOURCE_EXHAUSTED (HTTP: 503, "
                            "429 with Retry-After, a failed connection): exponential backoff "
                            f"and jitter, or the server's pushback [default {retries}]")
    group.add_argument("--tls", action="store_true", default=default(False),
                       help="connect with TLS (system CAs unless --ca-cert); an https:// "
                            "address implies it")
    group.add_argument("--ca-cert", metavar="PEM", default=default(None),
                       help="CA certificate to verify the server (implies --tls)")
    group.add_argument("--client-cert", metavar="PEM", default=default(None),
                       help="client certificate for mutual TLS (implies --tls)")
    group.add_argument("--client-key", metavar="PEM", default=default(None),
                       help="client private key for mutual TLS")
    group.add_argument("--server-name", metavar="NAME", default=default(None),
                       help="name to check the server certificate against (implies --tls)")


def connection_kwargs(args: argparse.Namespace, *, wait_for_ready: bool = True) -> dict:
    """The client's settings from the connection flags (``wait_for_ready``: the retry
    policy's; cifar10-batch waits for a lost server itself, within --retry-for)."""
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.wait < 0:
        raise UsageError("--wait must not be negative")
    if not 0 <= args.retries < MAX_ATTEMPTS_LIMIT:
        raise UsageError(f"--retries must be in 0..{MAX_ATTEMPTS_LIMIT - 1} (gRPC's limit)")
    tls = None
    if args.tls or args.ca_cert or args.client_cert or args.client_key or args.server_name:
        if bool(args.client_cert) != bool(args.client_key):
            raise UsageError("--client-cert and --client-key go together")
        for path in (args.ca_cert, args.client_cert, args.client_key):
            if path and not os.path.isfile(path):
                raise UsageError(f"cannot read {path}")
        tls = TLSConfig(args.ca_cert, args.client_cert, args.client_key, args.server_name)
    address = args.address or default_address()
    try:
        addresses = split_addresses(address)
        http = uses_http(addresses)
    except ClientError as exc:
        raise UsageError(f"--address: {exc.message}") from None
    if http and tls is not None and not is_https(addresses[0]):
        raise UsageError("TLS flags with an http:// address: give https://")
    return {
        "address": address,
        "timeout": args.timeout,
        "tls": tls,
        "retry": RetryPolicy(max_attempts=args.retries + 1, wait_for_ready=wait_for_ready)
        if args.retries else NO_RETRY,
    }


def error_line(error: ClientError, prog: str) -> str:
    """The one line a failed call prints: an unreachable server's message reads on its own."""
    if isinstance(error, UnreachableError):
        return f"{prog}: error: {error.message}"
    hint = DEADLINE_HINT if error.code == grpc.StatusCode.DEADLINE_EXCEEDED else ""
    return f"{prog}: error: {error.code.name}: {error.message}{hint}"


def run_main(body: Callable[[], int], prog: str) -> int:
    """Run a command body; turn expected failures into a message and an exit code."""
    try:
        return body()
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as exc:
        print(error_line(exc, prog), file=sys.stderr)
        return exit_code_for(exc)
    except ImportError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_MISSING_DEPENDENCY
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK


# -- cifar10-client ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar10-client",
        description="Talk to a cifar10-serving server: over gRPC (cifar10.v2, host:port) or "
                    "HTTP (--address http://host:port or https://...).",
        epilog="exit codes: 0 ok, 1 some item failed or not SERVING, 2 usage, 3 server "
               "unavailable (after retries), 4 other server error, 5 missing optional "
               "dependency, 6 message too large, 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="connection flags go before or after it")

    health = commands.add_parser("health", help="print the server's health status (with --wait: "
                                                        "once SERVING, or at the end of the wait)")
    health.add_argument("--service", default="", help="gRPC service name (default: the whole server; HTTP "
                                                    "has none: the server's readiness)")
    health.add_argument("--json", action="store_true", help="print JSON")

    info = commands.add_parser("info", help="model name, version, labels and input spec")
    info.add_argument("--json", action="store_true", help="print JSON")
    add_model_arg(info)

    models = commands.add_parser("models", help="the models and versions served, with their "
                                                "accuracy")
    models.add_argument("--json", action="store_true", help="print JSON")

    classify = commands.add_parser("classify", help="classify image files")
    classify.add_argument("files", nargs="+", metavar="FILE",
                          help="image files or glob patterns ('**' recurses); '-' reads stdin")
    classify.add_argument("--top-k", type=int, default=1, help="classes to show per image (1..10)")
    classify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    classify.add_argument("--batch-size", type=int, default=64, help="images per request")
    classify.add_argument("--preprocess", choices=("server", "client"), default="server",
                          help="decode and resize on the server (send files as-is) or here "
                               "(send 32x32 pixels) [default %(default)s]")
    add_model_arg(classify)
    for command in (health, info, models, classify):
        add_connection_args(command, with_defaults=False)
    return parser


def expand_files(patterns: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(name, problem)`` per input: globs expanded; a pattern matching nothing is a problem."""
    out: list[tuple[str, str | None]] = []
    for pattern in patterns:
        if pattern == "-" or not glob.has_magic(pattern):
            out.append((pattern, None))
            continue
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            out.append((pattern, "no file matches this pattern"))
        out.extend((m, None) for m in matches)
    return out


def _cmd_health(client, args) -> int:
    if args.wait > 0:  # what connecting left of --wait
        try:
            client.wait_until_serving(args.wait, args.service)
        except ClientError:
            pass  # fall through: answer with whatever the server says now
    status = client.health(args.service)
    if args.json:
        print(json.dumps({"service": args.service, "status": status}))
    else:
        print(status)
    return EXIT_OK if status == "SERVING" else EXIT_ITEM_FAILED


def _cmd_models(client, args) -> int:
    served = client.list_models()
    if args.json:
        print(json.dumps(served.to_dict(), indent=2))
        return EXIT_OK
    headers = ["MODEL", "VERSION", "DEFAULT", "VALIDATION", "TEST", "CREATED"]
    rows = []
    for info in served.models:
        figures = [f"{100 * info.accuracy[part].accuracy:.2f} %" if part in info.accuracy
                   else "-" for part in ("validation", "test")]
        rows.append([info.name, info.version, "yes" if info.name == served.default_model else "",
                     *figures, info.metadata.get("created_utc", "-")])
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return EXIT_OK


def _cmd_info(client, args) -> int:
    name, version = args.model
    info = client.model_info(model_name=name, model_version=version)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return EXIT_OK
    print(f"name:           {info.name}")
    print(f"version:        {info.version}")
    print(f"labels:         {', '.join(info.labels)}")
    print(f"input:          {info.input.name} {info.input.dtype} {list(info.input.shape)}")
    print(f"output:         {info.output.name} {info.output.dtype} {list(info.output.shape)}")
    if info.max_batch_size:
        print(f"max batch size: {info.max_batch_size}")
    # The model's own accuracy figures (the training job's metrics), where it carries them:
    # what a user wants to know before trusting an answer.
    for part, figure in info.accuracy.items():
        print(f"{part} accuracy: {100 * figure.accuracy:.2f} % ({figure.images:,} images)")
    for key in sorted(info.metadata):
        value = info.metadata[key]
        print(f"  {key}: {value if len(value) <= 100 else value[:97] + '...'}")
    return EXIT_OK


def _check_classify(args) -> None:
    if not 1 <= args.top_k <= 10:
        raise UsageError("--top-k must be in 1..10")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.files.count("-") > 1:
        raise UsageError("'-' (stdin) may appear only once")


def _cmd_classify(client, args) -> int:
    from .inputs import to_image

    preprocess = args.preprocess == "client"
    expanded = expand_files(args.files)
    names = [name for name, _ in expanded]
    outcomes: dict[int, object] = {}
    # Read and send one batch at a time, so a long list of files is never all in memory.
    for start in range(0, len(expanded), args.batch_size):
        pending: list[tuple[int, object]] = []
        for index in range(start, min(start + args.batch_size, len(expanded))):
            name, problem = expanded[index]
            if problem:
                outcomes[index] = ClientError(grpc.StatusCode.INVALID_ARGUMENT, problem, item=name)
                continue
            try:
                source = sys.stdin.buffer.read() if name == "-" else name
                pending.append((index, to_image(source, preprocess)))
            except ClientError as error:
                outcomes[index] = error
        if pending:
            results = client.classify_each([image for _, image in pending], top_k=args.top_k,
                                           model_name=args.model[0], model_version=args.model[1])
            for (index, _), result in zip(pending, results):
                outcomes[index] = result
    records, problems = [], []
    for index, name in enumerate(names):
        outcome = outcomes[index]
        if isinstance(outcome, ClientError):
            records.append({"file": name, "error": outcome.to_dict()})
            problems.append(_problem_line(name, outcome))
        else:
            records.append({"file": name, **outcome.to_dict()})
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        _print_table(records, args.top_k)
    for line in problems:
        print(f"cifar10-client: {line}", file=sys.stderr)
    return EXIT_ITEM_FAILED if problems else EXIT_OK


def _problem_line(name: str, error: ClientError) -> str:
    """What went wrong with one input: a problem found here (a file that cannot be read) in
    its own words, naming the file; one the server reported with its status code."""
    if error.local:
        return error.message if name in error.message else f"{name}: {error.message}"
    return f"{name}: {error.code.name}: {error.message}"


def _print_table(records: list[dict], top_k: int) -> None:
    headers = ["FILE", "LABEL", "PROBABILITY"] + [f"TOP-{i}" for i in range(2, top_k + 1)]
    rows = []
    for r in records:
        if "error" in r:
            rows.append([r["file"], "ERROR", r["error"]["code"]] + [""] * (top_k - 1))
            continue
        rest = [f"{t['label']} {t['probability']:.4f}" for t in r["top"][1:top_k]]
        rows.append([r["file"], r["label"], f"{r['probability']:.4f}"] + rest + [""] * (top_k - 1 - len(rest)))
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> int:
        from .transports import open_client

        if args.command == "classify":
            _check_classify(args)  # a usage error before any connection
        with open_client(**connection_kwargs(args)) as client:
            started = time.monotonic()
            client.connect(args.wait)
            # --wait bounds connecting and (health) waiting for SERVING together.
            args.wait = max(0.0, args.wait - (time.monotonic() - started))
            command = {"health": _cmd_health, "info": _cmd_info, "models": _cmd_models,
                       "classify": _cmd_classify}[args.command]
            return command(client, args)

    return run_main(body, "cifar10-client")


if __name__ == "__main__":
    sys.exit(main())
