"""The package layout holds: who may import whom, and what each folder is installed as.

core/ (``cifar10_core``) is shared by training, the server and the clients, so it imports
none of them and none of their heavy libraries; training/ (``cifar10_training``) never
imports the server; serving/ (``cifar10_serving``) never imports TensorFlow or training; the
client library (``cifar10_client``) needs only the ``client`` extra at import time.
Checked on the source with ``ast`` (every import, also inside functions), so a lazy import
cannot sneak a dependency past the rule.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]

HEAVY = {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"}
SERVER_ONLY = {"onnxruntime", "prometheus_client", "grpc_reflection"}
OURS = {"cifar10_core", "cifar10_protos", "cifar10_serving", "cifar10_client", "cifar10_training"}

# folder -> top-level modules it must never import (anywhere in the file)
FORBIDDEN = {
    "training": {"cifar10_serving", "cifar10_client", "grpc"},
    "serving": {"cifar10_training", "cifar10_client", "tensorflow", "keras", "tf2onnx"},
    "client": {"cifar10_serving", "cifar10_training"} | HEAVY - {"onnxruntime"},
}
# folder -> the only top-level modules it may import besides the standard library
ALLOWED = {
    "core": {"cifar10_core", "numpy", "PIL"},
    "protos": {"cifar10_protos", "grpc", "google"},
}

# The data plane and the model runner know no transport, no metrics library, no Settings.
TRANSPORT_FREE = ("serving/cifar10_serving/dataplane", "serving/cifar10_serving/onnx_model.py")
TRANSPORT_AND_EDGE = {"grpc", "grpc_health", "grpc_reflection", "prometheus_client", "opentelemetry",
                      "cifar10_protos",
                      "cifar10_serving.observability", "cifar10_serving.settings",
                      "cifar10_serving.grpc_api", "cifar10_serving.process"}


def imports_of(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute module names imported by a file (relative imports resolved to the package;
    ``from package import name`` also counts ``package.name``, which may be a module)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[:len(package) - node.level + 1]
                module = ".".join([*package, *([module] if module else [])])
            if module:
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def sources(folder: str) -> list[Path]:
    path = ROOT / folder
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def module_name(path: Path) -> str:
    """The import name of a file of ours (``serving/cifar10_serving/x/y.py`` -> ``cifar10_serving.x.y``)."""
    for name, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        if path.is_relative_to(base):
            parts = path.relative_to(base).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            return ".".join((name, *parts))
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_installed_names_are_not_generic_words():
    """Every installed top-level name carries the project's prefix."""
    assert set(PACKAGE_DIR) == OURS
    assert all(name.startswith("cifar10_") for name in SETUPTOOLS["packages"])


def test_every_import_path_is_a_folder_path():
    """``cifar10_x.y.z`` lives in ``<top folder>/cifar10_x/y/z.py``: grep and code maps find it."""
    assert all(folder.split("/")[-1] == name for name, folder in PACKAGE_DIR.items())


def test_every_package_folder_is_installed():
    found = set()
    for name, folder in PACKAGE_DIR.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(module_name(init))
    assert found == set(SETUPTOOLS["packages"])


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folder_imports_only_what_its_layer_allows(folder):
    bad = {}
    for path in sources(folder):
        hits = {m for m in imports_of(path) if m.split(".")[0] in FORBIDDEN[folder]}
        if hits:
            bad[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bad, f"{folder}/ imports what its layer must not: {bad}"


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_shared_folders_import_only_the_standard_library_and_their_own(folder):
    """core/ promises numpy and Pillow only; the generated protos need grpc and protobuf."""
    allowed = ALLOWED[folder] | set(sys.stdlib_module_names) | {"__future__"}
    bad = {}
    for path in sources(folder):
        if path.name == "generate.py":  # the generator, not the package
            continue
        hits = {m for m in imports_of(path) if m.split(".")[0] not in allowed}
        if hits:
            bad[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bad, f"{folder}/ imports beyond what it promises: {bad}"


@pytest.mark.parametrize("where", TRANSPORT_FREE)
def test_the_data_plane_knows_no_transport_metrics_or_settings(where):
    """The data plane and the model runner import neither grpc nor prometheus_client nor
    OpenTelemetry nor the Settings object: the doors and the assembly wire them."""
    bad = {}
    for path in sources(where):
        hits = {m for m in imports_of(path)
                if any(m == edge or m.startswith(edge + ".") for edge in TRANSPORT_AND_EDGE)}
        if hits:
            bad[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bad, bad


def test_no_import_circles():
    """Among our modules, who imports whom (also inside functions) has no cycle."""
    graph: dict[str, set[str]] = {}
    for folder in PACKAGE_DIR.values():
        for path in (ROOT / folder).rglob("*.py"):
            name = module_name(path)
            graph[name] = set()
    for folder in PACKAGE_DIR.values():
        for path in (ROOT / folder).rglob("*.py"):
            name = module_name(path)
            for module in imports_of(path):
                if module in graph and module != name and not name.startswith(module + "."):
                    graph[name].add(module)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_no_source_imports_the_folder_names():
    """`serving`, `training`, `client` and `core` are folders, not import names."""
    bad = []
    for folder in ("core", "serving", "client", "training", "bench", "tests", "protos"):
        for path in (ROOT / folder).rglob("*.py"):
            for module in imports_of(path):
                if module.split(".")[0] in {"serving", "training", "core", "client"}:
                    bad.append(f"{path.relative_to(ROOT)}: {module}")
    assert not bad, bad


def test_client_library_imports_need_only_the_client_extra():
    """At import time the client package touches no server-only or training library
    (optional features import theirs lazily, with a one-line hint when missing)."""
    bad = {}
    for path in sources("client"):
        hits = {m for m in imports_of(path, top_level_only=True)
                if m.split(".")[0] in SERVER_ONLY | HEAVY | {"matplotlib"}}
        if hits:
            bad[path.name] = sorted(hits)
    assert not bad, bad


def test_no_test_outside_tests_bench_imports_bench():
    """bench/ is a measuring tool, not a library of the tests."""
    bad = [str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("*.py")
           if "bench" not in path.relative_to(ROOT / "tests").parts[:1]
           and any(m.split(".")[0] == "bench" for m in imports_of(path))]
    assert not bad, bad
