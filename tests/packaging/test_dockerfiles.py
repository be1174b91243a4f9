"""The Dockerfiles build what the README says, from files the build context really holds.

These read the Dockerfiles (``make compose-test`` builds and runs them). Checked: one pinned
base image or a given one, the dependency layer before the source (layer caching), the
multi-stage serving image with only the `serve` extra from the constraints, non-root users
owning the volumes' mount points, ports, the gRPC HEALTHCHECK, and that every COPY source
exists and is not excluded by .dockerignore.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
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
    assert ignored("serving/cifar10_serving/__pycache__/x.pyc", patterns)
    assert ignored(".venv-triton/bin/python", patterns)
    assert ignored("tests/packaging/compose.py", patterns)
    assert not ignored("serving/cifar10_serving/startup.py", patterns)


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
                assert src == "." or not ignored(src, patterns), f"{src} is excluded by .dockerignore"
                copied.append(src.rstrip("/"))
    assert {"pyproject.toml", "requirements", "."} <= set(copied)
    # What the install needs from `COPY . .` is in the context; the local data is not.
    needed = [PYPROJECT["project"]["readme"], "requirements/constraints.txt", "requirements/image-install.sh",
              "requirements/extra_requirements.py", "core/cifar10_core/contract.py", "serving/cifar10_serving/startup.py",
              "client/cifar10_client/cli.py", "protos/cifar10_protos/__init__.py", "training/cifar10_training/fetch.py"]
    assert not [path for path in needed if ignored(path, patterns)]
    assert ignored("data/cifar-10-python.tar.gz", patterns) and ignored("runs/compose-test/x", patterns)


def _install_steps(stage) -> list[tuple[int, str]]:
    """(index in the stage, argument) of each `image-install.sh` step of the stage's RUNs."""
    steps = []
    for i, (keyword, rest) in enumerate(stage):
        if keyword == "RUN":
            steps += [(i, m.group(1)) for m in re.finditer(r"requirements/image-install\.sh (\w+(?: \w+)?)", rest)]
    return steps


@pytest.mark.parametrize("dockerfile, extra", [(SERVING, "tracing"), (TRAINING, "train")], ids=["serving", "training"])
def test_dependencies_install_in_a_layer_before_the_source(dockerfile, extra):
    """A code change reuses the dependency layer: nothing but pyproject.toml and requirements/
    is copied before it; the source comes after; the project installs without dependencies."""
    (stage,) = [s for s in stages(dockerfile) if _install_steps(s)]
    (deps_at, deps), (project_at, project) = _install_steps(stage)
    assert (deps, project) == (f"deps {extra}", "project")
    before = [rest.split()[:-1] for keyword, rest in stage[:deps_at] if keyword == "COPY"]
    assert sorted(src for srcs in before for src in srcs) == ["pyproject.toml", "requirements/"]
    between = [rest for keyword, rest in stage[deps_at:project_at] if keyword == "COPY"]
    assert between == [". ."]
    script = (ROOT / "requirements" / "image-install.sh").read_text()
    assert "--no-deps" in script and '-c "$constraints"' in script


def test_both_images_build_from_the_same_pinned_python_3_11_slim_or_a_base_given():
    defaults = {compose.global_args(path)["BASE_IMAGE"] for path in (SERVING, TRAINING)}
    (default,) = defaults
    assert re.fullmatch(r"docker\.io/library/python:3\.11(\.\d+)?-slim(-bookworm)?@sha256:[0-9a-f]{64}", default)
    for path in (SERVING, TRAINING):
        assert all(values(s, "FROM")[0].split()[0] == "${BASE_IMAGE}" for s in stages(path))


@pytest.mark.parametrize("extra, present, absent", [
    ("serve", {"onnxruntime", "grpcio-health-checking", "grpcio-reflection", "numpy"},
     {"tensorflow-cpu", "tqdm", "opentelemetry-sdk"}),
    ("tracing", {"onnxruntime", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc"},
     {"tensorflow-cpu"}),
    ("train", {"tensorflow-cpu", "tf2onnx", "onnx", "numpy"}, {"grpcio-reflection"}),
    ("local", {"onnxruntime", "tqdm", "grpcio-health-checking"}, {"tensorflow-cpu"}),  # via [client]
])
def test_extra_requirements_lists_what_the_extra_installs_all_pinned(extra, present, absent):
    result = subprocess.run([sys.executable, "requirements/extra_requirements.py", extra], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = {re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower() for line in result.stdout.splitlines()}
    assert present <= names and not (absent & names)
    assert not any(name.startswith("cifar10") for name in names), "self-references are followed"
    pinned = {re.split(r"==", line)[0].strip().lower().replace("_", "-")
              for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert not {n.replace("_", "-") for n in names} - pinned, "every requirement has an exact version"


def test_extra_requirements_refuses_an_unknown_extra():
    result = subprocess.run([sys.executable, "requirements/extra_requirements.py", "gpu"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no extra 'gpu'" in result.stderr


def test_serving_image_is_slim_multi_stage_serve_only_non_root_and_health_checked():
    builder, final = stages(SERVING)[0], stages(SERVING)[-1]
    assert len(stages(SERVING)) >= 2
    assert [step for _, step in _install_steps(builder)] == ["deps tracing", "project"]
    # The build fails if TensorFlow became importable (the serve extra lacks it: see above).
    assert '! python -c "import tensorflow"' in " ".join(values(builder, "RUN"))
    assert not _install_steps(final), "the final stage copies the builder's venv, it installs nothing"
    assert any("--from=builder" in c and "/opt/venv" in c for c in values(final, "COPY"))
    assert values(final, "USER") and values(final, "USER")[-1] not in ("root", "0")
    image = compose.parse_dockerfile(SERVING, ROOT)
    # gRPC, HTTP (REST), then metrics and health: each port the server opens, as ENV sets them.
    exposed = " ".join(values(final, "EXPOSE")).split()
    assert exposed == ["8500", "8501", "8502"]
    assert exposed == [image.env[f"CIFAR10_{name}PORT"] for name in ("", "HTTP_", "METRICS_")]
    (healthcheck,) = values(final, "HEALTHCHECK")
    assert json.loads(healthcheck.split("CMD", 1)[1]) == ["python", "-m", "cifar10_serving.healthcheck"]
    assert image.cmd[0] in PYPROJECT["project"]["scripts"]
    assert ROOT / "models" in [src for src, _ in image.copies], "the bundled model goes into the image"


def _owned_dirs(stage) -> set[str]:
    """Folders the stage makes with `install -d -o cifar10` (mount points for volumes)."""
    found = set()
    for rest in values(stage, "RUN"):
        for match in re.finditer(r"install -d -o cifar10 -g cifar10((?: /\S+)+)", rest):
            found |= set(match.group(1).split())
    return found


@pytest.mark.parametrize("dockerfile, service", [(SERVING, "serve"), (TRAINING, "train")], ids=["serving", "training"])
def test_compose_volumes_mount_on_folders_the_non_root_user_owns(dockerfile, service):
    """An empty named volume takes the owner of the folder it is mounted on: without this the
    non-root user could not seed or export the model, nor download the data."""
    doc = compose.load({})
    named = set(doc["volumes"])
    targets = {v.split(":")[1] for v in doc["services"][service]["volumes"] if v.split(":")[0] in named}
    assert targets and targets <= _owned_dirs(stages(dockerfile)[-1])


def test_training_image_runs_cifar10_train_from_the_train_extra():
    (stage,) = stages(TRAINING)
    assert [step for _, step in _install_steps(stage)] == ["deps train", "project"]
    assert values(stage, "USER") and values(stage, "USER")[-1] not in ("root", "0")
    image = compose.parse_dockerfile(TRAINING, ROOT)
    assert image.entrypoint == ["cifar10-train"]
    assert "cifar10-train" in PYPROJECT["project"]["scripts"]
