"""docker-compose.yml is valid and says what the README promises.

Validated three ways: against the compose-spec JSON schema that check-jsonschema ships
(``vendor.compose-spec``, the dev extra), with Debian's ``docker-compose config`` where it is
installed (it needs no engine; .ci/run installs it), and by structural assertions below.
``make compose-test`` (tests/compose/run.py) runs it for real.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from cifar10_serving.settings import Settings
from tests.packaging import compose

ROOT = compose.ROOT


def compose_schema() -> dict:
    resource = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(resource.read_text())


def schema_errors(doc: dict) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def test_matches_the_compose_spec_schema():
    assert schema_errors(compose.load_raw()) == []


def test_the_schema_check_catches_mistakes():
    doc = compose.load_raw()
    broken = copy.deepcopy(doc)
    broken["services"]["serve"]["ports"] = "8500:8500"
    assert schema_errors(broken)
    broken = copy.deepcopy(doc)
    broken["services"]["train"]["restart_policy"] = "no"
    assert schema_errors(broken)


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed: .ci/run installs Debian's docker-compose")
        pytest.skip("docker-compose (Debian's package) is not installed")
    return found


def test_docker_compose_config_accepts_it(tmp_path):
    exe = _docker_compose()
    args = [exe, "--project-directory", str(ROOT), "-f", str(compose.COMPOSE_FILE)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_", "CIFAR10_"))}
    env["HOME"] = str(tmp_path)  # no user config; `config` needs no engine
    result = subprocess.run(args + ["config"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"train", "serve"}
    # docker-compose resolves the default data folder against the project directory.
    assert f"{ROOT / 'data'}:/input:ro" in resolved["services"]["train"]["volumes"]


# --- what the file must say ------------------------------------------------------------------

@pytest.fixture(scope="module")
def doc():
    return compose.load({})


def test_serve_starts_at_once_and_train_is_a_one_shot_job(doc):
    assert set(doc["services"]) == {"train", "serve"}
    assert not compose.depends_on(doc["services"]["serve"]), "serve must not wait for training"
    assert compose.active_services(doc) == ["serve", "train"]
    assert doc["services"]["train"]["restart"] == "no", "a one-shot job must not restart"


def test_train_exports_a_new_version_into_the_repository_serve_polls(doc, tmp_path):
    train = compose.local_service(doc, "train", tmp_path)
    serve = compose.local_service(doc, "serve", tmp_path)
    served = serve.local_path(serve.env["CIFAR10_MODEL_REPOSITORY"])
    assert train.local_path(train.env["MODEL_OUTPUT"]) == served / "cifar10-cnn"
    assert "--repository-model" in " ".join(train.argv), "the export adds a version"
    assert served.is_relative_to(tmp_path / "models"), "both in the named volume `models`"
    assert float(serve.env["CIFAR10_RELOAD_INTERVAL_S"]) > 0, "the server must poll the repository"
    # export writes a temporary file beside its output and renames it: same volume, atomic.
    assert {"data", "runs", "models"} == set(doc["volumes"])


def test_serve_seeds_the_volume_with_the_bundled_models(doc, tmp_path):
    serve = compose.local_service(doc, "serve", tmp_path)
    for name in ("cifar10-cnn", "cifar10-cnn-int8", "cifar10-airbench94", "cifar10-airbench94-int8"):
        bundled = serve.local_path(f"/app/models/{name}")
        assert bundled == ROOT / "models" / name and (bundled / "1" / "model.onnx").is_file()
        assert str(bundled) in " ".join(serve.argv), "the command copies the bundled models in"


def test_serving_publishes_ports_checks_health_restarts_and_has_a_cpu_limit(doc):
    svc = doc["services"]["serve"]
    published = {int(str(p).rsplit(":", 1)[-1]): int(str(p).split(":")[0]) for p in svc["ports"]}
    # TensorFlow Serving's numbering: gRPC 8500, HTTP 8501; then metrics and health, 8502.
    assert published == {8500: 8500, 8501: 8501, 8502: 8502}, "the same numbers on the host by default"
    env = compose.environment(svc)
    assert (env["CIFAR10_PORT"], env["CIFAR10_HTTP_PORT"], env["CIFAR10_METRICS_PORT"]) == ("8500", "8501", "8502")
    settings = Settings.from_args([], {k: v for k, v in env.items() if k.startswith("CIFAR10_")})
    assert set(published) == {settings.port, settings.http_port, settings.metrics_port}, \
        "every port the server opens is published"
    assert compose.healthcheck_argv(svc) == ["python", "-m", "cifar10_serving.healthcheck"]
    assert svc["restart"] in ("unless-stopped", "always", "on-failure")
    assert svc["build"]["dockerfile"] == "serving/Dockerfile"
    assert float(svc["cpus"]) == 1, "threads follow it (tests/compose/run.py checks threads=1)"
    assert "CIFAR10_THREADS" not in env and "CIFAR10_INSTANCES" not in env


def test_defaults_train_the_recipe_on_data_a_user_can_get():
    train = compose.load({})["services"]["train"]
    env = compose.environment(train)
    assert env["EPOCHS"] == env["VAL_SIZE"] == env["TEST_SIZE"] == "", "empty: the recipe's own"
    assert "./data:/input:ro" in train["volumes"]
    assert (ROOT / "data" / "README.md").is_file(), "the default data folder exists in a clone"
    overridden = compose.load({"EPOCHS": "20", "CIFAR10_HOST_PORT": "9000", "CIFAR10_DATA": "/x.tar.gz",
                               "CIFAR10_SERVE_CPUS": "2", "CIFAR10_HOST_HTTP_PORT": "9001",
                               "CIFAR10_HOST_METRICS_PORT": "9002"})
    assert compose.environment(overridden["services"]["train"])["EPOCHS"] == "20"
    assert "/x.tar.gz:/input:ro" in overridden["services"]["train"]["volumes"]
    assert overridden["services"]["serve"]["ports"] == ["9000:8500", "9001:8501", "9002:8502"]
    assert overridden["services"]["serve"]["cpus"] == "2"


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert compose.interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$SET $SET", env) == "x d  d $SET x"
    with pytest.raises(ValueError):
        compose.interpolate("${UNSET:?needed}", env)
