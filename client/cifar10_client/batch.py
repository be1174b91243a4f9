"""``cifar10-batch``: classify a folder, a list, an array or the CIFAR-10 archive, resumably.

    cifar10-batch examples/labelled -o preds.csv -o preds.jsonl
    cifar10-batch cifar-10-python.tar.gz --split test -o test.jsonl
    cifar10-batch images.npy -o out.csv --local models/cifar10-cnn.onnx    # no server

Sends batches (``--batch-size``) over up to ``--concurrency`` concurrent Classify calls of
one HTTP/2 channel (an ``http(s)://`` address: HTTP requests over a pool of connections),
shows a progress bar (images/s, ETA), and appends one line per input to each output (CSV
and/or JSON Lines, chosen by suffix). Rerunning the same command skips
what the outputs already hold, so an interrupted run resumes; every input ends up in the
output exactly once. An unreadable or undecodable image is recorded with its error and
the run goes on. A server that cannot be reached at the start fails at once (``--wait``
waits for one that is starting); one that goes away mid-run is waited for, with backoff,
for ``--retry-for`` seconds, then the run stops (exit 3) without recording anything for the
items not done and prints the command that resumes it. When the true labels are known (class
folders, archive or .npz labels) it prints accuracy and per-class accuracy over the whole
output and writes a confusion-matrix PNG.

Exit codes: 0 every item classified; 1 the output holds failed items; 2 usage; 3 server
unavailable; 4 other server error; 5 an optional dependency is missing; 6 message too
large (a batch over the size limit: lower --batch-size); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path

from cifar10_core.errors import ModelLoadError
from cifar10_core.extras import require

# cli first, grpc after it: cli turns gRPC's C-core log off before grpc is first imported.
from .cli import (
    EXIT_ITEM_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    UsageError,
    add_connection_args,
    add_model_arg,
    connection_kwargs,
    error_line,
    exit_code_for,
    run_main,
)
import grpc  # noqa: E402,I001 (after cli, see above)

from .connection import unreachable
from .errors import ClientError, UnreachableError
from .local_model import LocalModel
from .outputs import KEY, OutputError, ResultFile, result_file
from .report import summarize, write_confusion_png
from .rows import classify_locally, error_row, result_row
from .sources import Item, Source, SourceError, open_source

PROG = "cifar10-batch"
TQDM_HINT = "no progress bar: tqdm is missing (pip install 'cifar10-serving[client]')"

Classify = Callable[[list[Item]], Awaitable[list[dict]]]

# What a call gets from a server that goes away: UNAVAILABLE (refused, reset, or refused by
# a server shutting down) or CANCELLED (a call the server aborted as it stopped). Both are
# safe to send again: classifying changes nothing on the server.
SERVER_GONE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Batch inference over many images with a cifar10-serving server "
                    "(or in-process with --local), resumable.",
        epilog="exit codes: 0 ok, 1 the output holds failed items, 2 usage, 3 server "
               "unavailable, 4 other server error, 5 missing optional dependency, 6 message "
               "too large, 130 interrupted",
    )
    parser.add_argument("input", help="folder of images (recursive), text file of paths, .npy/.npz, "
                                      "cifar-10-python.tar.gz or cifar-10-batches-py/")
    parser.add_argument("-o", "--output", action="append", required=True, metavar="FILE",
                        help="result file, .csv or .jsonl (repeat for both)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per request [%(default)s]")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="requests in flight at once (--local: batches on threads) [%(default)s]")
    parser.add_argument("--preprocess", choices=("server", "client"), default="server",
                        help="files: decode on the server (send as-is) or here (send 32x32 "
                             "pixels) [%(default)s]")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all",
                        help="CIFAR-10 archive/folder: which batches [%(default)s]")
    add_model_arg(parser)
    parser.add_argument("--local", metavar="MODEL.onnx",
                        help="run the model in-process with onnxruntime instead of calling a server")
    parser.add_argument("--threads", type=int, default=0,
                        help="--local: onnxruntime threads (0: the CPUs available; with --engine: "
                             "per actor, 0: one) [%(default)s]")
    parser.add_argument("--engine", choices=("ray",),
                        help="run the --local model on a distributed engine: ray = Ray Data "
                             "map_batches over an actor pool of up to --concurrency actors, on "
                             "this machine or the cluster RAY_ADDRESS names (the 'ray' extra)")
    parser.add_argument("--confusion-matrix", metavar="PNG",
                        help="where to write the confusion matrix when labels are known "
                             "[default: next to the first output, .confusion.png]")
    parser.add_argument("--no-confusion-matrix", action="store_true", help="do not write the PNG")
    parser.add_argument("--retry-for", type=float, default=30.0, metavar="SECONDS",
                        help="a server that goes away mid-run: try to reach it again, with "
                             "backoff, for SECONDS, then stop and print the command that "
                             "resumes the run (0: stop at once) [default %(default)s]")
    parser.add_argument("--retry-errors", action="store_true",
                        help="drop the failed items from the outputs and try them again")
    parser.add_argument("--overwrite", action="store_true", help="start the outputs afresh")
    parser.add_argument("--limit", type=int, default=0, help="classify at most N new items (0: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_args(parser, timeout=60.0)
    return parser


# -- backends -----------------------------------------------------------------------------
class RemoteBackend:
    """Classify batches with the asyncio client of the address (gRPC: one channel, many
    concurrent calls; HTTP: a pool of connections).

    Its calls do not wait for a server that is not ready (the retry policy's
    ``wait_for_ready`` off): a server that goes away fails them soon, and the backend waits
    for it itself, for ``retry_for`` seconds from the first failure (see :meth:`classify`).
    """

    def __init__(self, connection: dict, preprocess: bool, wait: float = 0.0, retry_for: float = 30.0,
                 model: tuple[str, str] = ("", "")) -> None:
        self.connection = connection
        self.model = model  # (name, version) asked for; '' for the default / the newest
        self.preprocess = preprocess
        self.wait = wait
        self.retry_for = retry_for
        self.client = None
        self.model_name = self.model_version = ""
        self.started = False
        self.lost_since: float | None = None  # when the calls began to fail with SERVER_GONE
        self.reconnecting = asyncio.Lock()  # one worker probes the server at a time

    async def start(self) -> str:
        from .transports import open_async_client

        self.client = open_async_client(**self.connection)
        await self.client.connect(self.wait)
        info = await self.client.model_info(model_name=self.model[0], model_version=self.model[1])
        self.model_name, self.model_version = info.name, info.version
        self.started = True
        return f"server {self.client.address}, model {info.name} version {info.version}"

    async def classify(self, batch: list[Item]) -> list[dict]:
        """Rows for ``batch``; a batch that fails because the server went away (SERVER_GONE,
        after the retry policy's tries) is sent again once a server answers, within
        ``retry_for`` seconds of the first such failure; past that, UnreachableError."""
        while True:
            try:
                rows = await self._classify(batch)
            except ClientError as error:
                if error.code not in SERVER_GONE:
                    raise
                await self._reconnect(error)
                continue
            self.lost_since = None
            return rows

    async def _reconnect(self, error: ClientError) -> None:
        async with self.reconnecting:
            if self.lost_since is None:
                self.lost_since = time.monotonic()
            left = self.lost_since + self.retry_for - time.monotonic()
            try:
                if left <= 0:
                    raise unreachable(self.client.address, error, self.client.timeout)
                await self.client.connect(left)
            except UnreachableError as failure:
                raise UnreachableError(f"{failure.message} (the server went away mid-run; "
                                       f"tried again for {self.retry_for:g} s)") from None

    async def _classify(self, batch: list[Item]) -> list[dict]:
        rows: list[dict | None] = [None] * len(batch)
        images, positions = [], []
        for i, item in enumerate(batch):
            try:
                images.append(item.to_image(self.preprocess))
                positions.append(i)
            except ClientError as error:
                rows[i] = error_row(item, error, self.model_name, self.model_version)
        if images:
            results = await self.client.classify_each(images, model_name=self.model[0],
                                                      model_version=self.model[1])
            for i, result in zip(positions, results):
                item = batch[i]
                if isinstance(result, ClientError):
                    rows[i] = error_row(item, result, self.model_name, self.model_version)
                else:
                    rows[i] = result_row(item, result)
        return rows

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def load_model(path: str, threads: int) -> LocalModel:
    """``LocalModel.load`` (contract checks, test runs; threads 0: the CPUs available); a
    model that cannot be used is a usage error."""
    try:
        return LocalModel.load(path, threads=threads)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None


class LocalBackend:
    """Run the model in-process (``LocalModel``): the server's preprocessing
    (cifar10_core.images), session settings and float32 probabilities."""

    def __init__(self, model_path: str, threads: int) -> None:
        self.model_path = model_path
        self.threads = threads
        self.model = None

    async def start(self) -> str:
        self.model = load_model(self.model_path, self.threads)
        return f"local model {self.model.name} version {self.model.version} ({self.model_path})"

    async def classify(self, batch: list[Item]) -> list[dict]:
        # Decoding (Pillow) and onnxruntime both release the GIL: run batches on threads so
        # that --concurrency batches overlap, as they do on a server.
        return await asyncio.get_running_loop().run_in_executor(None, classify_locally, self.model, batch)

    async def close(self) -> None:
        self.model = None


# -- the pump -----------------------------------------------------------------------------
class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                print(f"{PROG}: {TQDM_HINT}", file=sys.stderr)
            else:
                self.bar = tqdm(total=total, unit="img", dynamic_ncols=True,
                                smoothing=0.1, file=sys.stderr)

    def update(self, n: int, failed: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if failed:
                self.bar.set_postfix(failed=failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def pump(
    items: Iterable[Item],
    classify: Classify,
    write: Callable[[list[dict]], None],
    batch_size: int,
    concurrency: int,
    progress: Progress,
) -> tuple[int, int]:
    """Classify ``items`` (read lazily) in batches with at most ``concurrency`` in flight;
    write each batch's rows as it completes. Returns (items done, items failed). A
    ClientError other than a per-item one propagates and stops the pump (rows written
    so far stay; batches in flight are dropped and redone by the next run)."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=concurrency * 2)
    counts = [0, 0]

    async def producer() -> None:
        iterator = iter(items)
        while batch := list(itertools.islice(iterator, batch_size)):
            await queue.put(batch)
        for _ in range(concurrency):
            await queue.put(None)

    async def worker() -> None:
        while (batch := await queue.get()) is not None:
            rows = await classify(batch)
            write(rows)
            failed = sum(1 for r in rows if r.get("error"))
            counts[0] += len(rows)
            counts[1] += failed
            progress.update(len(rows), counts[1])

    tasks = [asyncio.create_task(producer())] + [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return counts[0], counts[1]


def plan(source: Source, skip_sets: list[set[str]], limit: int) -> Iterator[Item]:
    """The items still to do, lazily, in source order, each key once."""
    seen: set[str] = set()
    taken = 0
    for item in source:
        if limit and taken >= limit:
            return
        if item.key in seen or all(item.key in s for s in skip_sets):
            continue
        seen.add(item.key)
        taken += 1
        yield item


def writer(files: list[ResultFile], skip_sets: list[set[str]]) -> Callable[[list[dict]], None]:
    """Append rows to every output, each without the keys it already held."""
    def write(rows: list[dict]) -> None:
        for file, skip in zip(files, skip_sets):
            file.write([r for r in rows if r[KEY] not in skip] if skip else rows)

    return write


def _run_on_engine(args, todo, total, files, skip_sets) -> tuple[int, int, float, str]:
    from .engine import ray_running, run_on_ray

    with ray_running():  # before the bar: a Ray that cannot start is one line
        progress = Progress(total, enabled=not args.no_progress)
        try:
            return run_on_ray(todo, writer(files, skip_sets), progress.update, args.local,
                              args.batch_size, args.concurrency, args.threads)
        finally:
            progress.close()


async def _run_async(args, backend, todo, total, files, skip_sets, heading: str) -> tuple[int, int, float, str]:
    description = await backend.start()
    print(heading, file=sys.stderr)  # once started: a server that cannot be reached is one line

    write = writer(files, skip_sets)
    progress = Progress(total, enabled=not args.no_progress)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        done, failed = await pump(
            todo, backend.classify, write, args.batch_size, args.concurrency, progress,
        )
    finally:
        progress.close()
        await backend.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return done, failed, seconds, f"{description}; client CPU {cpu / max(done, 1) * 1e6:.0f} us per image"


def run(args: argparse.Namespace, resume: str) -> int:
    """The run of ``args``; ``resume``: the command line that runs it again (and resumes it)."""
    if args.batch_size < 1 or args.concurrency < 1:
        raise UsageError("--batch-size and --concurrency must be at least 1")
    if args.limit < 0:
        raise UsageError("--limit must not be negative")
    if args.retry_for < 0:
        raise UsageError("--retry-for must not be negative")
    if len({str(Path(p).resolve()) for p in args.output}) != len(args.output):
        raise UsageError("the same output is given twice")
    try:
        files: list[ResultFile] = [result_file(p) for p in args.output]
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    if args.local and args.model[0]:
        raise UsageError("--model names a model of the server; --local runs the file given")
    if args.engine and not args.local:
        raise UsageError("--engine runs the model of --local MODEL.onnx: give it")
    if args.engine:
        require(f"--engine {args.engine}", args.engine, "onnxruntime", "ray.data")
        load_model(args.local, 1)  # the engine's workers load it: check it here first
    if args.local:
        require("--local", "local", "onnxruntime")  # before any output is opened
        backend = LocalBackend(args.local, args.threads)
    else:
        backend = RemoteBackend(connection_kwargs(args, wait_for_ready=False), args.preprocess == "client",
                                args.wait, args.retry_for, args.model)
    try:
        source = open_source(args.input, args.split)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    if len(source) == 0:
        raise UsageError(f"{args.input}: no images found")

    try:
        skip_sets = [f.open(overwrite=args.overwrite, drop_errors=args.retry_errors) for f in files]
    except OutputError as exc:
        for f in files:
            f.close()
        raise UsageError(str(exc)) from None
    try:
        total = sum(1 for _ in plan(source, skip_sets, args.limit))
        already = sum(1 for item in source if all(item.key in s for s in skip_sets))
        heading = (f"{PROG}: {args.input} ({source.kind}): {len(source)} items, {already} "
                   f"already in the output, {total} to do")
        if not total or args.engine:
            print(heading, file=sys.stderr)
        if total and args.engine:
            done, failed, seconds, description = _run_on_engine(
                args, plan(source, skip_sets, args.limit), total, files, skip_sets)
        elif total:
            try:
                done, failed, seconds, description = asyncio.run(
                    _run_async(args, backend, plan(source, skip_sets, args.limit), total, files, skip_sets,
                               heading)
                )
            except ClientError as error:
                # A server lost mid-run: what is written stays, and the same command resumes.
                if not (isinstance(backend, RemoteBackend) and backend.started
                        and exit_code_for(error) == EXIT_UNAVAILABLE):
                    raise
                print(error_line(error, PROG), file=sys.stderr)
                print(f"{PROG}: to resume, run: {resume}", file=sys.stderr)
                return EXIT_UNAVAILABLE
        if total:
            print(f"{PROG}: {description}", file=sys.stderr)
            print(f"{PROG}: classified {done} items ({failed} failed) in {seconds:.1f} s: "
                  f"{done / seconds if seconds > 0 else 0:.0f} images/s", file=sys.stderr)
    finally:
        for f in files:
            f.close()

    summary = summarize(files[0].outcomes)
    print(summary.text())
    if source.skipped:
        print(f"skipped {source.skipped} " + ("file that is not an image" if source.skipped == 1
                                             else "files that are not images"))
    if source.labels_known and summary.labelled and not args.no_confusion_matrix:
        target = args.confusion_matrix or str(Path(args.output[0]).with_suffix(".confusion.png"))
        try:
            write_confusion_png(summary, target, title=Path(args.input).name)
            print(f"confusion matrix: {target}")
        except ImportError as exc:
            # Asked for by --confusion-matrix: said every time. The default PNG: said once,
            # by the run that starts the output, not again by every rerun that resumes it.
            if args.confusion_matrix or not already:
                print(f"{PROG}: warning: {exc}", file=sys.stderr)
    return EXIT_ITEM_FAILED if summary.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args, shlex.join([PROG, *argv])), PROG)


if __name__ == "__main__":
    sys.exit(main())
