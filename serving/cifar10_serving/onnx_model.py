"""One ONNX model in one onnxruntime session: load, check the model contract, warm up, predict.

Knows nothing of gRPC or batching. ``OnnxModel.load(path, threads=...)`` raises
``ModelLoadError`` with one clear message for a missing file, a file onnxruntime cannot
read, or a model that breaks the contract (``cifar10_core.contract.check`` and ``check_answers``).

Runs get elastic threads: a run that starts while no other is in flight, for a caller that
says it is alone (``predict(images, alone=True)``), uses all ``threads`` (lowest latency for
a lone request); a run that starts beside another, or for a busy caller, uses the
``overlap_threads`` (fewer: no run then waits at an operator barrier for a thread another
run, or another worker process, has taken, and each thread's work is cheaper). The two thread counts are two
onnxruntime sessions of the same model; every session of the process draws its tensors from
one shared CPU arena (``session.use_env_allocators``), so a second session costs its weights
(about 1 MB for the seed CNN), not a second arena.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import onnxruntime as ort

from cifar10_core import contract
from cifar10_core.errors import ModelLoadError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FileSignature:
    """Identity of a model file on disk; a change means the file was replaced."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileSignature:
        return cls(stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # -1 for the batch dimension
    description: str = ""


INPUT_SPEC = TensorSpec(
    contract.INPUT_NAME, "uint8", (-1, *contract.INPUT_SHAPE),
    "RGB images, NHWC, uint8 0..255 (scaling happens inside the model)",
)
OUTPUT_SPEC = TensorSpec(
    contract.OUTPUT_NAME, "float32", (-1, contract.NUM_CLASSES),
    "class probabilities in label order, rows sum to 1",
)


@dataclass(frozen=True)
class ModelInfo:
    """What a client may learn about the served model."""

    name: str
    version: str
    labels: tuple[str, ...]
    metadata: dict[str, str] = field(hash=False)
    path: str = ""
    input: TensorSpec = INPUT_SPEC
    output: TensorSpec = OUTPUT_SPEC


_arena_lock = threading.Lock()
_arena_registered = False


def _register_shared_arena() -> None:
    """Once per process: one CPU arena that every session (old and new model) draws from."""
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # max_mem 0 (no limit), extend strategy -1 / chunk sizes -1: onnxruntime's defaults.
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
        _arena_registered = True


def _session_options(threads: int, spinning: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _session(data: bytes, path: str, threads: int, spinning: bool) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            data, sess_options=_session_options(threads, spinning),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"onnxruntime cannot load {path}: {first}") from None


S = TypeVar("S")


class ElasticSessions(Generic[S]):
    """Picks the session for each run: ``wide`` when no other run is in flight, else ``narrow``.

    ``with sessions.acquire() as session: ...`` holds the run's place until it ends. Without a
    ``narrow`` session every run gets ``wide``.
    """

    def __init__(self, wide: S, narrow: S | None = None):
        self.wide = wide
        self.narrow = narrow
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def acquire(self, alone: bool = True) -> Iterator[S]:
        """``alone``: the caller's view of its run (False: other work is waiting, so take the
        narrow session even if no other run is in flight right now)."""
        with self._lock:
            alone = (alone and self._in_flight == 0) or self.narrow is None
            self._in_flight += 1
        try:
            yield self.wide if alone else self.narrow
        finally:
            with self._lock:
                self._in_flight -= 1

    def all(self) -> list[S]:
        return [self.wide] if self.narrow is None else [self.wide, self.narrow]


class OnnxModel:
    """A loaded, validated and warmed-up model. Thread-safe ``predict``."""

    def __init__(self, sessions: ElasticSessions[ort.InferenceSession], info: ModelInfo,
                 signature: FileSignature | None):
        self.sessions = sessions
        self.info = info
        self.signature = signature
        self._outputs = [contract.OUTPUT_NAME]

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> str:
        return self.info.version

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int = 1, spinning: bool = False,
             warmup_batch_sizes: tuple[int, ...] = contract.CHECK_BATCH_SIZES,
             overlap_threads: int | None = None, name: str | None = None,
             version: str | None = None) -> OnnxModel:
        """Load ``path``, check the contract, warm up. Raises ModelLoadError.

        ``name``, ``version``: what it is served as (a repository's folders); None: what its
        metadata says.

        ``threads``: intra-op threads of a run alone; ``overlap_threads`` (fewer, e.g.
        ``Settings.overlap_threads``): those of a run that starts beside another, from a second
        session. None, or not fewer than ``threads``: one session for every run.
        """
        path = os.fspath(path)
        started = time.perf_counter()
        data, stat = contract.read_model(path)
        signature = FileSignature.of(stat)
        threads = max(1, int(threads))
        _register_shared_arena()
        wide = _session(data, path, threads, spinning)
        info = _model_info(wide, path, name, version)
        overlap = threads if overlap_threads is None else max(1, int(overlap_threads))
        narrow = _session(data, path, overlap, spinning) if overlap < threads else None
        model = cls(ElasticSessions(wide, narrow), info, signature)
        model.warm_up(warmup_batch_sizes)
        log.info(
            "loaded model %s version %s from %s in %.0f ms (%s, spinning %s)",
            info.name, info.version, path, (time.perf_counter() - started) * 1000,
            f"{threads} threads" if narrow is None
            else f"{threads} threads alone, {overlap} beside another run",
            "on" if spinning else "off",
        )
        return model

    def warm_up(self, batch_sizes: tuple[int, ...] = contract.CHECK_BATCH_SIZES) -> None:
        """Run a few batches so the first client does not pay for lazy initialisation.

        Also the functional check of ``cifar10_core.contract.check_answers``: a model that
        fails or answers anything but probabilities is refused here (ModelLoadError).
        """
        for session in self.sessions.all():  # every session: each has its own lazy set-up
            contract.check_answers(functools.partial(self._predict_on, session), self.info.path,
                                   batch_sizes)

    def predict(self, images: np.ndarray, alone: bool = True) -> np.ndarray:
        """uint8 [N, 32, 32, 3] -> float32 [N, 10]. Raises NonFiniteOutputError on NaN/inf.
        ``alone=False``: more work is waiting; run on the narrow session (fewer threads)."""
        with self.sessions.acquire(alone) as session:
            return self._predict_on(session, images)

    def _predict_on(self, session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
        (out,) = session.run(self._outputs, {contract.INPUT_NAME: images})
        return contract.finite_probabilities(out, self.info.name)


def _model_info(session: ort.InferenceSession, path: str, name: str | None,
                version: str | None) -> ModelInfo:
    """The session's model as ModelInfo, once ``cifar10_core.contract.check`` agrees with it."""
    meta = dict(session.get_modelmeta().custom_metadata_map)
    contract.check(path, session.get_inputs(), session.get_outputs(), meta)
    own_name, own_version = contract.model_identity(meta)
    return ModelInfo(
        name=own_name if name is None else name,
        version=own_version if version is None else version,
        labels=contract.CLASS_NAMES,
        metadata=meta,
        path=path,
    )
