"""Triton's statistics extension: cumulative counts of the Open Inference Protocol's
inference calls since start, one record that both doors (gRPC and REST) add to.

``execution_count`` counts requests, not the merged batches they ran in; the split of a
request's time between queue and compute is not measured (each successful request is
counted once in each phase, with 0 ns), which is what perf_analyzer needs to read them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


def _duration(count: int, ns: int = 0) -> dict:
    return {"count": count, "ns": ns}


class InferenceStatistics:
    """``record`` each inference call; ``model_stats`` is Triton's JSON form of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._success = _Duration()
        self._fail = _Duration()
        self._inference_count = 0
        self._last_inference_ms = 0

    def record(self, ok: bool, images: int, started_ns: int) -> None:
        """One call that began at ``started_ns`` (``time.perf_counter_ns()``) has ended."""
        now = time.perf_counter_ns()
        with self._lock:
            if ok:
                self._success.add(now - started_ns)
                self._inference_count += images
            else:
                self._fail.add(now - started_ns)
            self._last_inference_ms = int(time.time() * 1000)

    def model_stats(self, name: str, version: str) -> dict:
        """One entry of ``model_stats``, every field perf_analyzer reads present."""
        with self._lock:
            done = self._success.count
            return {
                "name": name,
                "version": version,
                "last_inference": self._last_inference_ms,
                "inference_count": self._inference_count,
                "execution_count": done,
                "inference_stats": {
                    "success": _duration(done, self._success.ns),
                    "fail": _duration(self._fail.count, self._fail.ns),
                    "queue": _duration(done),
                    "compute_input": _duration(done),
                    "compute_infer": _duration(done),
                    "compute_output": _duration(done),
                    "cache_hit": _duration(0),
                    "cache_miss": _duration(0),
                },
                "batch_stats": [],
            }
