"""The Dockerfiles build what the README says, from files the build context really holds.

No Docker engine here: these read the Dockerfiles (the compose smoke test runs what they
declare). Checked: base images, the multi-stage serving image with only the `serve` extra
from the constraints, non-root users, ports, the gRPC HEALTHCHECK, and that every COPY
source exists and is not excluded by .dockerignore.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

import pytest

from tests.packaging import compose

ROOT = compose.ROOT
SERVING = ROOT / "serving" / "Dockerfile"
TRAINING = ROOT / "training" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def stages(path) -> list[list[tuple[str, str]]]:
    return compose.dockerfile_stages(path)


def values(stage, keyword) -> list[str]:
    return [rest for k, rest in stage if k == keyword]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("!"):
            continue
        candidates = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        for prefix in prefixes:
            for candidate in candidates:
                if fnmatch.fnmatchcase(prefix, candidate):
                    return True
                if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], candidate):
                    return True
    return False


def test_the_dockerignore_matcher():
    patterns = ["**/__pycache__", ".venv*", "tests"]
    assert ignored("serving/__pycache__/x.pyc", patterns)
    assert ignored(".venv-triton/bin/python", patterns)
    assert ignored("tests/packaging/compose.py", patterns)
    assert not ignored("serving/server.py", patterns)


@pytest.mark.parametrize("dockerfile", [SERVING, TRAINING], ids=["serving", "training"])
def test_copy_sources_exist_and_are_in_the_build_context(dockerfile):
    patterns = dockerignore_patterns()
    copied = []
    for stage in stages(dockerfile):
        for rest in values(stage, "COPY"):
            parts = rest.split()
            if any(p.startswith("--from") for p in parts):
                continue
            for src in [p for p in parts if not p.startswith("--")][:-1]:
                assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, which does not exist"
                assert not ignored(src, patterns), f"{src} is excluded by .dockerignore"
                copied.append(src.rstrip("/"))
    # `pip install .` in the image needs the project metadata and its readme.
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], "requirements/constraints.txt"} <= set(copied)


def _pip_installs(stage) -> list[str]:
    """Each `pip install ...` command of the stage's RUN lines."""
    commands = [c.strip() for r in values(stage, "RUN") for c in re.split(r"&&|;", r)]
    return [c for c in commands if re.search(r"\bpip install\b", c)]


def test_serving_image_is_slim_multi_stage_serve_only_non_root_and_health_checked():
    builder, final = stages(SERVING)[0], stages(SERVING)[-1]
    assert len(stages(SERVING)) >= 2
    assert all(values(s, "FROM")[0].split()[0] == "python:3.11-slim" for s in stages(SERVING))
    installs = " ".join(_pip_installs(builder))
    assert "-c requirements/constraints.txt" in installs and '".[serve]"' in installs
    assert not re.search(r"tensorflow|keras|tf2onnx|\[[^]]*(train|dev)", installs, re.I)
    assert not _pip_installs(final), "the final stage copies the builder's venv, it installs nothing"
    assert any("--from=builder" in c and "/opt/venv" in c for c in values(final, "COPY"))
    assert values(final, "USER") and values(final, "USER")[-1] not in ("root", "0")
    assert set(" ".join(values(final, "EXPOSE")).split()) == {"8500", "8501"}
    (healthcheck,) = values(final, "HEALTHCHECK")
    assert json.loads(healthcheck.split("CMD", 1)[1]) == ["python", "-m", "cifar10_serving.healthcheck"]
    image = compose.parse_dockerfile(SERVING, ROOT)
    assert image.cmd[0] in PYPROJECT["project"]["scripts"]
    assert ROOT / "models" in [src for src, _ in image.copies], "the bundled model goes into the image"


def test_training_image_runs_cifar10_train_from_the_train_extra():
    (stage,) = stages(TRAINING)
    assert values(stage, "FROM")[0] == "python:3.11-slim"
    installs = " ".join(_pip_installs(stage))
    assert "-c requirements/constraints.txt" in installs and '".[train]"' in installs
    assert values(stage, "USER") and values(stage, "USER")[-1] not in ("root", "0")
    image = compose.parse_dockerfile(TRAINING, ROOT)
    assert image.entrypoint == ["cifar10-train"]
    assert "cifar10-train" in PYPROJECT["project"]["scripts"]
