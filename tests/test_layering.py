"""The package layout holds: who may import whom, and what each folder is installed as.

core/ (``cifar10_core``) is shared by training, the server and the clients, so it imports
none of them and none of their heavy libraries; training/ (``cifar10_training``) never
imports the server; serving/ (``cifar10_serving``) never imports TensorFlow or training; the
client library (``cifar10_serving.client``) needs only the ``client`` extra at import time.
Checked on the source with ``ast`` (every import, also inside functions), so a lazy import
cannot sneak a dependency past the rule.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]

HEAVY = {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"}
SERVER_ONLY = {"onnxruntime", "prometheus_client", "grpc_reflection"}

# folder -> top-level modules it must never import (anywhere in the file)
FORBIDDEN = {
    "core": {"grpc", "grpc_health", "grpc_reflection", "prometheus_client", "cifar10_serving",
             "cifar10_training", "matplotlib", "tqdm"} | HEAVY,
    "training": {"cifar10_serving", "grpc"},
    "serving": {"cifar10_training", "tensorflow", "keras", "tf2onnx"},
}


# serving modules that know no transport, no metrics library and no Settings object
TRANSPORT_FREE = ("core.py", "batching.py", "model.py")
TRANSPORT_AND_EDGE = {"grpc", "grpc_health", "grpc_reflection", "prometheus_client",
                      "cifar10_serving.metrics", "cifar10_serving.settings",
                      "cifar10_serving.grpc_status", "cifar10_serving.proto"}


def imports_of(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute module names imported by a file (relative imports resolved to the package)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "proto" not in p.relative_to(ROOT).parts)


def test_installed_names_are_not_generic_words():
    """Every installed top-level name carries the project's prefix."""
    assert set(PACKAGE_DIR) == {"cifar10_core", "cifar10_serving", "cifar10_training"}
    assert all(name.startswith("cifar10_") for name in SETUPTOOLS["packages"])


def test_every_package_folder_is_installed():
    folder_to_name = {folder: name for name, folder in PACKAGE_DIR.items()}
    found = set()
    for folder, name in folder_to_name.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert found == set(SETUPTOOLS["packages"])


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folder_imports_only_what_its_layer_allows(folder):
    bad = {}
    for path in sources(folder):
        hits = {m for m in imports_of(path) if m.split(".")[0] in FORBIDDEN[folder]}
        if hits:
            bad[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bad, f"{folder}/ imports what its layer must not: {bad}"


@pytest.mark.parametrize("name", TRANSPORT_FREE)
def test_the_serving_core_knows_no_transport_metrics_or_settings(name):
    """cifar10_serving.core, .batching and .model import neither grpc nor prometheus_client
    nor the Settings object: the edge (assembly, server, servicers) wires them."""
    hits = {m for m in imports_of(ROOT / "serving" / name)
            if m in TRANSPORT_AND_EDGE or m.split(".")[0] in TRANSPORT_AND_EDGE
            or m.startswith("cifar10_serving.proto.")}
    assert not hits, f"serving/{name} imports {sorted(hits)}"


def test_no_source_imports_the_folder_names():
    """`serving`, `training` and `core` are folders, not import names: importing them would
    load a second copy of the code beside the installed one."""
    bad = []
    for folder in ("core", "serving", "training", "bench", "tests", "protos"):
        for path in (ROOT / folder).rglob("*.py"):
            for module in imports_of(path):
                if module.split(".")[0] in {"serving", "training", "core"}:
                    bad.append(f"{path.relative_to(ROOT)}: {module}")
    assert not bad, bad


def test_client_library_imports_need_only_the_client_extra():
    """At import time the client package touches no server-only or training library
    (optional features import theirs lazily, with a one-line hint when missing)."""
    bad = {}
    for path in sorted((ROOT / "serving" / "client").rglob("*.py")):
        hits = {m for m in imports_of(path, top_level_only=True)
                if m.split(".")[0] in SERVER_ONLY | HEAVY | {"matplotlib"}}
        hits |= {m for m in imports_of(path, top_level_only=True)
                 if m.startswith("cifar10_serving.") and not m.startswith(("cifar10_serving.client", "cifar10_serving.proto"))}
        if hits:
            bad[path.name] = sorted(hits)
    assert not bad, bad
