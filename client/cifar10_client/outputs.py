"""Crash-safe, resumable result files for the batch script: CSV and JSON Lines.

Each batch of rows is appended with one ``write`` of complete lines and flushed, so a
killed process leaves only whole lines behind (the OS holds what was written); the file is
fsynced at most every ``fsync_interval`` seconds and at the end, so even a machine crash
loses at most that much, which a rerun redoes. On open, a partial last line (a crash in
the middle of a write) is cut off, and the keys already present are returned so the run
skips them: every input ends up exactly once in the output.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from cifar10_core.contract import CLASS_NAMES

KEY = "item"


class OutputError(Exception):
    """An existing output cannot be resumed (other columns, garbage lines)."""


def csv_columns(labels=CLASS_NAMES) -> list[str]:
    return [KEY, "true_label", "label", "probability", *(f"p_{name}" for name in labels),
            "model_name", "model_version", "error_code", "error"]


def _fmt(p: float) -> str:
    # float32 carries 7-8 significant digits; 8 keep every float32 value distinct.
    return "%.8g" % p



@functools.lru_cache(maxsize=8)
def _probabilities_template(labels: tuple[str, ...]) -> str:
    """``"airplane": %.8g, ...``: one %-format per row instead of ten."""
    return ", ".join(f"{json.dumps(name, ensure_ascii=False)}: %.8g" for name in labels)


_PROBABILITIES = _probabilities_template(CLASS_NAMES)


@functools.lru_cache(maxsize=256)
def _small_json(value) -> str:
    """JSON of a value from a small set (labels, None), computed once."""
    return json.dumps(value, ensure_ascii=False)


@functools.lru_cache(maxsize=64)
def _tail(model_name: str, model_version: str) -> str:
    return (f', "model_name": {json.dumps(model_name, ensure_ascii=False)}'
            f', "model_version": {json.dumps(model_version, ensure_ascii=False)}}}\n')


class ResultFile:
    """Append-only writer for one output file; ``open()`` returns what it already holds."""

    suffixes: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike, fsync_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.fsync_interval = fsync_interval
        self._file = None
        self._last_sync = 0.0
        self.outcomes: list[tuple[Any, Any, bool]] = []
        """(true_label, label, failed) of every line the file holds once opened: the
        end-of-run summary needs no second read of a large file."""

    # -- reading an existing file ---------------------------------------------------
    def _repair(self) -> None:
        """Cut off a partial last line left by a crash mid-write."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # Find the last newline; everything after it is a partial line.
            block, end = 65536, size
            keep = 0
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                chunk = f.read(end - start)
                index = chunk.rfind(b"\n")
                if index >= 0:
                    keep = start + index + 1
                    break
                end = start
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())

    def read_rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def open(self, overwrite: bool = False, drop_errors: bool = False) -> set[str]:
        """Prepare for appending; return the keys already present."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and self.path.exists():
            self.path.unlink()
        self._repair()
        rows = self.read_rows() if self.path.exists() else []
        if drop_errors and any(r.get("error") for r in rows):
            rows = [r for r in rows if not r.get("error")]
            self._rewrite(rows)
        self.outcomes = [(r.get("true_label"), r.get("label"), bool(r.get("error"))) for r in rows]
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        if new:
            self._write_text(self.header())
        return {str(r[KEY]) for r in rows}

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(self.header() + self.format(rows))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # -- writing --------------------------------------------------------------------
    def header(self) -> str:
        return ""

    def format(self, rows: list[dict[str, Any]]) -> str:
        raise NotImplementedError

    def _write_text(self, text: str) -> None:
        if not text:
            return
        self._file.write(text)
        self._file.flush()
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval:
            os.fsync(self._file.fileno())
            self._last_sync = now

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._write_text(self.format(rows))
        self.outcomes.extend((r.get("true_label"), r.get("label"), bool(r.get("error"))) for r in rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


class JsonlFile(ResultFile):
    """One JSON object a line: ``item``, ``true_label``, ``label``, ``index``,
    ``probability``, ``probabilities`` ({label: p}, label order), ``model_name``,
    ``model_version``; a failed item has ``error`` ({code, message}) instead."""

    suffixes = (".jsonl", ".ndjson", ".json")

    def format(self, rows: list[dict[str, Any]]) -> str:
        # Hand-built lines (the same JSON json.dumps would give, numbers as %.8g): this is
        # the batch script's hottest client-side code, several times faster than json.dumps.
        dumps = json.dumps
        lines = []
        for row in rows:
            head = f'{{"{KEY}": {dumps(row[KEY], ensure_ascii=False)}, "true_label": {_small_json(row.get("true_label"))}'
            tail = _tail(row.get("model_name", ""), row.get("model_version", ""))
            if row.get("error"):
                error = dumps({"code": row["error_code"], "message": row["error"]}, ensure_ascii=False)
                lines.append(f'{head}, "error": {error}{tail}')
                continue
            labels = row["labels"]
            template = _PROBABILITIES if labels == CLASS_NAMES else _probabilities_template(tuple(labels))
            probabilities = template % tuple(row["probabilities"])
            lines.append(
                f'{head}, "label": {_small_json(row["label"])}, "index": {int(row["index"])}, '
                f'"probability": {_fmt(row["probability"])}, "probabilities": {{{probabilities}}}{tail}'
            )
        return "".join(lines)

    def read_rows(self) -> list[dict[str, Any]]:
        rows = []
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    key = record[KEY]
                except (ValueError, KeyError, TypeError) as exc:
                    raise OutputError(f"{self.path}:{number}: not a result line ({exc})") from None
                error = record.get("error") or {}
                rows.append({
                    KEY: str(key),
                    "true_label": record.get("true_label"),
                    "label": record.get("label"),
                    "error": error.get("message", ""),
                    "error_code": error.get("code", ""),
                    "probabilities": record.get("probabilities"),
                    "model_version": record.get("model_version", ""),
                    "_record": record,
                })
        return rows

    def _rewrite(self, rows):
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row["_record"], ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class CsvFile(ResultFile):
    """A header line, then ``item, true_label, label, probability, p_airplane .. p_truck,
    model_name, model_version, error_code, error``."""

    suffixes = (".csv",)

    def __init__(self, path, fsync_interval: float = 1.0) -> None:
        super().__init__(path, fsync_interval)
        self.columns = csv_columns()

    def header(self) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(self.columns)
        return out.getvalue()

    def format(self, rows: list[dict[str, Any]]) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            true_label = row.get("true_label")
            if row.get("error"):
                probs = [""] * len(CLASS_NAMES)
                label = probability = ""
            else:
                probs = [_fmt(p) for p in row["probabilities"]]
                label, probability = row["label"], _fmt(row["probability"])
            writer.writerow([
                row[KEY], "" if true_label is None else true_label, label, probability, *probs,
                row.get("model_name", ""), row.get("model_version", ""),
                row.get("error_code", ""), row.get("error", ""),
            ])
        return out.getvalue()

    def read_rows(self) -> list[dict[str, Any]]:
        with open(self.path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return []
            if header != self.columns:
                raise OutputError(
                    f"{self.path} has other columns than this script writes; "
                    "use another output file or --overwrite"
                )
            rows = []
            for number, values in enumerate(reader, 2):
                if len(values) != len(self.columns):
                    raise OutputError(f"{self.path}:{number}: expected {len(self.columns)} fields")
                record = dict(zip(self.columns, values))
                record["true_label"] = record["true_label"] or None
                record["_values"] = values
                rows.append(record)
            return rows

    def _rewrite(self, rows):
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(self.columns)
            for row in rows:
                writer.writerow(row["_values"])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def result_file(path: str | os.PathLike, fsync_interval: float = 1.0) -> ResultFile:
    suffix = Path(path).suffix.lower()
    for cls in (CsvFile, JsonlFile):
        if suffix in cls.suffixes:
            return cls(path, fsync_interval)
    raise OutputError(f"unknown output format for {path}: use .csv or .jsonl")
