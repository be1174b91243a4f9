"""Triton's statistics extension: cumulative counts of the Open Inference Protocol's
inference calls since start, per model version, one record that both doors (gRPC and REST)
add to. A call is counted for the version that answered it, or that it named when it
failed (none for a model not served).

``execution_count`` counts requests, not the merged batches they ran in; the split of a
request's time between queue and compute is not measured (each successful request is
counted once in each phase, with 0 ns), which is what perf_analyzer needs to read them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from cifar10_core.errors import UnknownModelError
from cifar10_serving.dataplane.plane import DataPlane


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


def _duration(count: int, ns: int = 0) -> dict:
    return {"count": count, "ns": ns}


@dataclass
class _Counts:
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    inference_count: int = 0
    last_inference_ms: int = 0


class InferenceStatistics:
    """``record`` each inference call; ``model_stats`` is Triton's JSON form of them, per
    model version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], _Counts] = {}

    def record(self, ok: bool, images: int, started_ns: int, name: str, version: str) -> None:
        """One call to model ``name`` at ``version`` that began at ``started_ns``
        (``time.perf_counter_ns()``) has ended."""
        now = time.perf_counter_ns()
        with self._lock:
            counts = self._counts.get((name, version))
            if counts is None:
                counts = self._counts[name, version] = _Counts()
            if ok:
                counts.success.add(now - started_ns)
                counts.inference_count += images
            else:
                counts.fail.add(now - started_ns)
            counts.last_inference_ms = int(time.time() * 1000)

    def model_stats(self, name: str, version: str) -> dict:
        """One entry of ``model_stats``, every field perf_analyzer reads present."""
        with self._lock:
            counts = self._counts.get((name, version)) or _Counts()
            done = counts.success.count
            return {
                "name": name,
                "version": version,
                "last_inference": counts.last_inference_ms,
                "inference_count": counts.inference_count,
                "execution_count": done,
                "inference_stats": {
                    "success": _duration(done, counts.success.ns),
                    "fail": _duration(counts.fail.count, counts.fail.ns),
                    "queue": _duration(done),
                    "compute_input": _duration(done),
                    "compute_infer": _duration(done),
                    "compute_output": _duration(done),
                    "cache_hit": _duration(0),
                    "cache_miss": _duration(0),
                },
                "batch_stats": [],
            }


def record_failure(statistics: InferenceStatistics, plane: DataPlane, name: str, version: str,
                   images: int, started_ns: int) -> None:
    """A failed call, counted for the version it named (the default model's newest for
    none); a model not served has no statistics."""
    try:
        info = plane.models.select(name, version).info
    except UnknownModelError:
        return
    statistics.record(False, images, started_ns, info.name, info.version)
