"""The dropped cifar10.v1 response path, loaded from git history for side-by-side timing.

cifar10.v2 replaced v1 and its hand-written response encoder; to time both in one run,
this reads the v1 code as it was at ``BASELINE`` (``git show``) and loads it under private
module names: the generated ``classifier_pb2`` (protobuf package ``cifar10.v1``, so it
does not clash with v2's), the server's ``ResponseEncoder`` and the client's response
parsing (``Classification.from_proto`` via ``responses_to_results``). Only the named
top-level definitions are taken from each file, so the rest of today's code is not
involved.
"""

from __future__ import annotations

import __future__
import ast
import importlib.util
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "151b1b1"  # the last commit with cifar10.v1 and ResponseEncoder


class BaselineUnavailable(RuntimeError):
    """The baseline commit cannot be read (no git, or a checkout without that history)."""


def git_show(commit: str, path: str) -> str:
    try:
        done = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BaselineUnavailable(f"cannot run git: {exc}") from exc
    if done.returncode != 0:
        raise BaselineUnavailable(f"git show {commit}:{path}: {done.stderr.strip()}")
    return done.stdout


def _module_from_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _definitions(name: str, source: str, wanted: set[str], namespace: dict) -> types.ModuleType:
    """A module holding only the ``wanted`` top-level functions and classes of ``source``."""
    tree = ast.parse(source)
    tree.body = [node for node in tree.body
                 if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in wanted]
    missing = wanted - {node.name for node in tree.body}
    if missing:
        raise BaselineUnavailable(f"{name}: no {sorted(missing)} in the baseline source")
    module = types.ModuleType(name)
    sys.modules[name] = module
    module.__dict__.update(namespace)
    code = compile(tree, f"<{name}>", "exec", flags=__future__.annotations.compiler_flag,
                   dont_inherit=True)
    exec(code, module.__dict__)  # noqa: S102 - our own code from our own git history
    return module


@dataclass(frozen=True)
class V1:
    """The v1 generated messages, server encoder class and client parser."""

    pb: types.ModuleType
    ResponseEncoder: type
    responses_to_results: Any


def load(commit: str | None = None) -> V1:
    """Load the v1 path of ``commit`` (default ``BASELINE``); BaselineUnavailable when git
    cannot provide it."""
    commit = commit or BASELINE
    folder = Path(tempfile.mkdtemp(prefix="cifar10-v1-baseline-"))
    pb_file = folder / "classifier_pb2.py"
    pb_file.write_text(git_show(commit, "serving/proto/cifar10/v1/classifier_pb2.py"))
    pb = _module_from_file("_bench_v1_classifier_pb2", pb_file)
    server = _definitions(
        "_bench_v1_servicer", git_show(commit, "serving/classifier_servicer.py"),
        {"_varint", "_field", "ResponseEncoder"}, {"np": np},
    )
    results = _definitions(
        "_bench_v1_results", git_show(commit, "serving/client/results.py"),
        {"ClassScore", "Classification"},
        {"dataclass": dataclass, "field": field, "Any": Any, "pb": pb},
    )
    client = _definitions(
        "_bench_v1_sync", git_show(commit, "serving/client/sync.py"), {"responses_to_results"},
        {"pb": pb, "Classification": results.Classification},
    )
    return V1(pb, server.ResponseEncoder, client.responses_to_results)
