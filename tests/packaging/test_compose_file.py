"""docker-compose.yml is valid and says what the README promises.

Validated three ways: against the compose-spec JSON schema that check-jsonschema ships
(``vendor.compose-spec``, the dev extra), with Debian's ``docker-compose config`` where it is
installed (it needs no engine; .ci/run installs it), and by structural assertions below.
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
    broken["services"]["serve"]["depends_on"]["train"]["condition"] = "service_finished"
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


@pytest.mark.parametrize("profile", [None, "bundled"])
def test_docker_compose_config_accepts_it(profile, tmp_path):
    exe = _docker_compose()
    args = [exe, "--project-directory", str(ROOT), "-f", str(compose.COMPOSE_FILE)]
    if profile:
        args += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    env["HOME"] = str(tmp_path)  # no user config; `config` needs no engine
    result = subprocess.run(args + ["config"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(
        args + ["config", "--services"], capture_output=True, text=True, env=env, timeout=120
    )
    assert services.returncode == 0, services.stderr
    # docker-compose 1.29 lists every service, whatever the profile.
    assert set(services.stdout.split()) == {"train", "serve", "serve-bundled"}


# --- what the file must say ------------------------------------------------------------------

@pytest.fixture(scope="module")
def doc():
    return compose.load({})


def test_services_and_default_startup_order(doc):
    assert set(doc["services"]) == {"train", "serve", "serve-bundled"}
    assert compose.active_services(doc) == ["train", "serve"]
    assert compose.active_services(doc, ("bundled",)) == ["train", "serve", "serve-bundled"]


def test_serve_starts_only_after_train_completed_successfully(doc):
    assert compose.depends_on(doc["services"]["serve"]) == {"train": "service_completed_successfully"}
    assert doc["services"]["train"]["restart"] == "no", "a one-shot job must not restart"


def test_serve_bundled_stands_alone_on_the_bundled_model(doc, tmp_path):
    svc = doc["services"]["serve-bundled"]
    assert svc["profiles"] == ["bundled"]
    assert not compose.depends_on(svc)
    assert not svc.get("volumes")
    assert (ROOT / "models").is_dir(), "models/ (the bundled model the serving image copies) is missing"
    local = compose.local_service(doc, "serve-bundled", tmp_path)
    assert local.local_path(local.env["CIFAR10_MODEL_PATH"]) == ROOT / "models" / "cifar10-cnn.onnx"


def test_train_writes_where_serve_reads(doc, tmp_path):
    train = compose.local_service(doc, "train", tmp_path)
    serve = compose.local_service(doc, "serve", tmp_path)
    assert train.local_path(train.env["MODEL_OUTPUT"]) == serve.local_path(serve.env["CIFAR10_MODEL_PATH"])
    assert serve.local_path(serve.env["CIFAR10_MODEL_PATH"]).is_relative_to(tmp_path)
    assert "models" in doc["volumes"]


@pytest.mark.parametrize("name", ["serve", "serve-bundled"])
def test_serving_services_publish_ports_check_health_and_restart(doc, name):
    svc = doc["services"][name]
    targets = {int(str(p).rsplit(":", 1)[-1]) for p in svc["ports"]}
    assert targets == {8500, 8501}
    env = compose.environment(svc)
    assert env["CIFAR10_PORT"] == "8500" and env["CIFAR10_METRICS_PORT"] == "8501"
    assert compose.healthcheck_argv(svc) == ["python", "-m", "cifar10_serving.healthcheck"]
    assert svc["restart"] in ("unless-stopped", "always", "on-failure")
    assert svc["build"]["dockerfile"] == "serving/Dockerfile"


def test_defaults_are_small_and_overridable():
    assert compose.environment(compose.load({})["services"]["train"])["EPOCHS"] == "2"
    overridden = compose.load({"EPOCHS": "20", "CIFAR10_HOST_PORT": "9000"})
    assert compose.environment(overridden["services"]["train"])["EPOCHS"] == "20"
    assert "9000:8500" in overridden["services"]["serve"]["ports"]


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert compose.interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$SET $SET", env) == "x d  d $SET x"
    with pytest.raises(ValueError):
        compose.interpolate("${UNSET:?needed}", env)
