"""The ``cifar10-serve`` process from start to exit, ordered for a short cold start.

Most of a cold start is imports (numpy, onnxruntime, grpc, protobuf, Prometheus, all
holding the GIL) and loading the model (onnxruntime sessions and warm-up runs, mostly
outside the GIL). So the model loads on a thread as soon as its own modules are imported,
while this thread imports grpc, protobuf and Prometheus; the port opens once both are done.

SIGTERM or SIGINT: a graceful stop (``cifar10_serving.lifecycle``); SIGHUP reloads the
model. ``--workers N`` runs N such processes on one port (``cifar10_serving.process.workers``).

Exit status: 0 after a graceful stop; 1 for a model that cannot be loaded, a port that
cannot be bound or a worker that failed; 2 for a bad flag or environment value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from cifar10_core.errors import ModelLoadError
from cifar10_serving.process import event_loop
from cifar10_serving.process.logs import setup_logging
from cifar10_serving.process.memory import CycleCollector, bound_allocator
from cifar10_serving.settings import Settings
from cifar10_serving.process.workers import Workers, reserve_port

log = logging.getLogger("cifar10_serving.server")


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    CycleCollector.pause()  # until the server has started (Service.start)
    # A SIGTERM or SIGHUP before the event loop takes the signals over (while the model
    # loads, in a worker just forked) is remembered and honoured once serving, not a kill.
    early_signals: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda sig, _frame: early_signals.append(sig))
    try:
        settings = Settings.from_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"cifar10-serve: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    bound_allocator()
    log.info("settings: %s", " ".join(f"{k}={v}" for k, v in settings.as_dict().items()))
    try:
        loop_name, run = event_loop.runner(settings.event_loop)
    except RuntimeError as exc:
        print(f"cifar10-serve: error: {exc}", file=sys.stderr)
        return 2
    log.info("event loop: %s", loop_name)
    workers = reservation = http_reservation = metrics_dir = None
    if settings.workers > 1:
        try:
            reservation = reserve_port(settings.host, settings.port)
        except OSError as exc:
            print(f"cifar10-serve: error: cannot listen on {settings.host}:{settings.port}: "
                  f"{exc.strerror or exc} (another server? {Settings.how_to_set('port')} "
                  f"changes the port)", file=sys.stderr)
            return 1
        settings = settings.replace(port=reservation.getsockname()[1])
        if settings.http_port >= 0:  # the HTTP port likewise (port 0: one for every worker)
            try:
                http_reservation = reserve_port(settings.host, settings.http_port)
            except OSError as exc:
                print(f"cifar10-serve: error: cannot listen on {settings.host}:"
                      f"{settings.http_port} for HTTP: {exc.strerror or exc} (another server? "
                      f"{Settings.how_to_set('http_port')} changes the port; -1 turns HTTP "
                      f"off)", file=sys.stderr)
                return 1
            settings = settings.replace(http_port=http_reservation.getsockname()[1])
        metrics_dir = tempfile.mkdtemp(prefix="cifar10-metrics-")
        from cifar10_serving.observability.metrics import enable_multiprocess

        enable_multiprocess(metrics_dir)
        workers = Workers(settings.workers)
        workers.fork()  # before any thread, grpc object or onnxruntime session exists
        log.info("worker %d of %d: pid %d, port %d", workers.index, workers.count,
                 os.getpid(), settings.port)
    first = workers is None or workers.is_first
    # numpy and onnxruntime first, then the model loads on its thread while grpc, protobuf
    # and Prometheus import here (see the module docstring).
    from cifar10_serving.assembly import build_plane, load_models

    loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
    loading = loader.submit(load_models, settings)
    loader.shutdown(wait=False)  # the thread ends once the model is loaded
    from cifar10_serving.observability.metrics import Metrics
    from cifar10_serving.service import serve

    metrics = Metrics()
    code = 1
    try:
        plane = build_plane(settings, metrics, loaded=loading.result())
        if settings.metrics_port >= 0 and first:
            try:
                port = metrics.serve(settings.host, settings.metrics_port)
            except OSError as exc:
                raise OSError(
                    f"cannot serve metrics on {settings.host}:{settings.metrics_port}: "
                    f"{exc.strerror or exc} ({Settings.how_to_set('metrics_port')} changes the "
                    f"port; -1 turns it off)") from None
            log.info("Prometheus metrics on http://%s:%d/metrics", settings.host, port)
        log.info("model ready %.0f ms after start", (time.perf_counter() - started) * 1000)
        code = run(serve(settings, metrics, plane, workers, early_signals, announce=_listening))
    except ModelLoadError as exc:
        if first:  # the other workers read the same file: one line says it
            print(f"cifar10-serve: error: {exc}", file=sys.stderr)
    except (OSError, RuntimeError) as exc:
        who = "" if first else f"worker {workers.index}: "
        print(f"cifar10-serve: error: {who}{exc}", file=sys.stderr)
    finally:
        metrics.close()
        if workers is not None and first:
            if workers.children:  # start-up failed here: the others stop too (quietly: the
                workers.signal(signal.SIGTERM)  # error line above says why)
                asyncio.run(workers.wait(settings.grace_seconds + 5.0, report=False))
            reservation.close()
            if http_reservation is not None:
                http_reservation.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if workers is not None and not first:
        # A forked worker ends here, skipping the interpreter's teardown of state it shares
        # with the first process (as multiprocessing's forked children do).
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code


def _listening(port: int) -> None:
    print(f"cifar10-serve: listening on port {port}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
