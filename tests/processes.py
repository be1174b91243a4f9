"""Processes read from /proc (Linux): a process's tree and its memory, for the tests that
start servers as processes of their own."""

from __future__ import annotations

from pathlib import Path


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now (those that end meanwhile left out)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents before their children."""
    parents = _parents()
    found = [pid]
    for parent in found:  # grows while it is walked
        found.extend(sorted(child for child, p in parents.items() if p == parent))
    return found


def memory_mb(pid: int) -> dict[str, float]:
    """``rss_mb`` (VmRSS) and ``peak_rss_mb`` (VmHWM) of ``pid``'s tree, summed, MB."""
    totals = {"VmRSS": 0, "VmHWM": 0}
    for member in tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            if member == pid:
                raise
            continue
        for line in lines:
            key = line.split(":")[0]
            if key in totals:
                totals[key] += int(line.split()[1])
    return {"rss_mb": round(totals["VmRSS"] / 1024, 1), "peak_rss_mb": round(totals["VmHWM"] / 1024, 1)}
