"""The machine a measurement ran on: its CPU (model and vector-instruction flags, from
/proc/cpuinfo as ``lscpu`` shows them: ``cifar10_core.cpus.cpu``), and its load around the
measurement (load average and the other busy processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cifar10_core.cpus import VECTOR_FLAGS, cpu

__all__ = ["VECTOR_FLAGS", "background_load", "cpu"]


def _cpu_ticks() -> dict[int, tuple[str, int, int]]:
    """pid -> (name, nice, utime + stime ticks) for every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            out[int(stat.parent.name)] = (name, int(fields[16]), int(fields[11]) + int(fields[12]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def background_load(seconds: float = 1.0) -> dict:
    """The machine's load around a measurement: load average and the processes that used
    more than 10% of a CPU over ``seconds`` (name, nice value, % of one CPU)."""
    hz = os.sysconf("SC_CLK_TCK")
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    busy = []
    for pid, (name, nice, ticks) in after.items():
        if pid in before and pid != os.getpid():
            share = (ticks - before[pid][2]) / hz / seconds * 100
            if share > 10:
                busy.append(f"{name} (nice {nice}, {share:.0f}%)")
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "busy_processes": sorted(busy)}
