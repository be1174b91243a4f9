"""A process and its descendants, read from /proc: who they are, their memory and CPU time.

The server may run several processes (``CIFAR10_WORKERS``: the first one the parent of the
others), so its memory and CPU are those of the whole tree. Children are found by scanning
/proc for parent pids (``/proc/PID/task/*/children`` needs a kernel option not every kernel
has). A process that exits while the tree is read is left out.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def stat(pid: int, tid: int | None = None) -> tuple[str, list[str]]:
    """The command name and the fields after it of /proc/PID/stat (of thread ``tid``:
    /proc/PID/task/TID/stat): fields[0] is the state, [1] the parent pid, [11] and [12]
    user and system CPU ticks, [19] the start time."""
    path = PROC / str(pid) / "stat" if tid is None else PROC / str(pid) / "task" / str(tid) / "stat"
    text = path.read_text()
    head, tail = text.rsplit(")", 1)
    return head[head.index("(") + 1:], tail.split()


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (parents before their children)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(stat(int(entry.name))[1][1]), []).append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    out = [pid]
    for parent in out:  # grows while it is walked: breadth first
        out.extend(sorted(children.get(parent, [])))
    return out


def _status_kb(pid: int) -> dict[str, int]:
    lines = (PROC / str(pid) / "status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in lines
            if line.startswith(("VmRSS:", "VmHWM:"))}


def _pss_kb(pid: int) -> int | None:
    try:
        rollup = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:  # absent on old kernels, unreadable for other users' processes
        return None
    return next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), None)


def memory_mb(pid: int) -> dict:
    """Memory of ``pid``'s tree, MB: ``rss_mb`` (sum of VmRSS), ``peak_rss_mb`` (sum of each
    process's VmHWM), ``pss_mb`` (sum of Pss, shared pages split among their users; None
    where a process's is unreadable), ``processes`` and ``per_process_rss_mb`` (parent first).
    Raises FileNotFoundError when ``pid`` itself is gone."""
    rows = []
    for member in tree(pid):
        try:
            rows.append((_status_kb(member), _pss_kb(member)))
        except (FileNotFoundError, ProcessLookupError):
            if member == pid:
                raise
    pss = [p for _, p in rows]
    return {
        "rss_mb": round(sum(s["VmRSS"] for s, _ in rows) / 1024, 1),
        "peak_rss_mb": round(sum(s["VmHWM"] for s, _ in rows) / 1024, 1),
        "pss_mb": None if None in pss else round(sum(pss) / 1024, 1),
        "processes": len(rows),
        "per_process_rss_mb": [round(s["VmRSS"] / 1024, 1) for s, _ in rows],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``'s tree (all threads of every process) so far."""
    ticks = 0
    for member in tree(pid):
        try:
            _, fields = stat(member)
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def identities(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, start time) of each process still there: a pid the kernel reuses later differs."""
    out = []
    for pid in pids:
        try:
            out.append((pid, stat(pid)[1][19]))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _running(pid: int, started: str) -> bool:
    try:
        _, fields = stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[19] == started and fields[0] != "Z"


def kill_survivors(processes: list[tuple[int, str]], grace: float = 2.0) -> list[int]:
    """Wait up to ``grace`` s for ``processes`` (from ``identities``) to end, SIGKILL those
    still running; their pids."""
    deadline = time.monotonic() + grace
    while any(_running(*p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid, started in processes if _running(pid, started)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return left
