"""requirements/constraints.txt pins, exactly, everything the extras install.

The README's commands, the Makefile, CI and the Dockerfiles install with
``-c requirements/constraints.txt``; a dependency added to pyproject.toml without a pin here
(or a pin that drifted from what is installed) fails this test.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.compose import ROOT

PROJECT = "cifar10-serving"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in out, f"{name} pinned twice"
        out[name] = match.group(2)
    return out


def closure(name: str, extras: set[str]) -> set[str]:
    """Canonical names of every distribution `pip install name[extras]` brings in."""
    seen: set[tuple[str, frozenset]] = set()
    found: set[str] = set()
    stack = [(name, frozenset(extras))]
    while stack:
        dist_name, dist_extras = stack.pop()
        key = (canonicalize_name(dist_name), dist_extras)
        if key in seen:
            continue
        seen.add(key)
        found.add(key[0])
        for line in metadata.distribution(dist_name).requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in dist_extras | {""}):
                continue
            stack.append((req.name, frozenset(req.extras)))
    return found


@pytest.fixture(scope="module")
def installed_project():
    try:
        metadata.distribution(PROJECT)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{PROJECT} is not installed (pip install -e '.[dev]')")


def test_every_line_is_an_exact_pin():
    assert {"pip", "setuptools", "wheel", "grpcio", "onnxruntime", "tensorflow-cpu", "tf2onnx"} <= set(pins())


def test_every_installed_dependency_is_pinned_at_its_installed_version(installed_project):
    expected = pins()
    names = closure(PROJECT, {"dev"}) - {canonicalize_name(PROJECT)}
    unpinned = sorted(n for n in names if n not in expected)
    assert not unpinned, f"add exact pins to requirements/constraints.txt for {unpinned}"
    drift = {n: (metadata.version(n), expected[n]) for n in names if metadata.version(n) != expected[n]}
    assert not drift, f"installed != pinned: {drift}"


def test_the_serve_extra_brings_no_tensorflow(installed_project):
    names = closure(PROJECT, {"serve"})
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx"}


def test_pyproject_pins_agree_with_the_constraints():
    expected = pins()
    deps = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        deps += extra
    for line in deps:
        req = Requirement(line)
        if canonicalize_name(req.name) == PROJECT:
            continue
        pinned = expected.get(canonicalize_name(req.name))
        assert pinned, f"{req.name} (pyproject.toml) has no pin in requirements/constraints.txt"
        assert req.specifier.contains(pinned, prereleases=True), f"{req} does not admit the pin {pinned}"
