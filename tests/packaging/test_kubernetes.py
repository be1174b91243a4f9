"""deploy/kubernetes/ is valid, renders as kustomize renders it, and says what the server reads.

No cluster is reachable, so all of this is offline (tests/packaging/kubernetes.py): every
rendered object against the Kubernetes JSON schemas kubernetes-validate bundles (strict: an
unknown field fails) for the oldest Kubernetes we claim and the newest bundled; the KServe
InferenceService against our hand-written subset of its schema plus Kubernetes' PodSpec;
the kustomizations against ``kubectl kustomize`` where kubectl is installed; and the
Deployment's ports, probes, environment, grace period, user and image against the server's
settings, serving/Dockerfile and docker-compose.yml. Last, the Deployment's pod runs here as
a local process, and its gRPC probes are asked what the kubelet would ask.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
import urllib.request

import grpc
import kubernetes_validate.utils
import pytest
import yaml

from cifar10_serving.grpc_api.classifier import SERVICE_NAME as CLASSIFIER
from cifar10_serving.healthcheck import check
from cifar10_serving.settings import Settings
from tests.packaging import compose
from tests.packaging import kubernetes as k8s
from tests.tiny_model import write_tiny_model

# Native gRPC probes are GA from 1.27 and the preStop sleep action on by default from 1.30.
OLDEST = "1.30"
VERSIONS = [OLDEST, kubernetes_validate.utils.latest_version()]
GRPC_PORT_NAME = "grpc"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: k8s.render(k8s.DEPLOY / name) for name in k8s.KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def deployment(rendered) -> dict:
    return k8s.by_kind(rendered["base"], "Deployment")


@pytest.fixture(scope="module")
def container(deployment) -> dict:
    (serve,) = deployment["spec"]["template"]["spec"]["containers"]
    return serve


@pytest.fixture(scope="module")
def env(container) -> dict[str, str]:
    """What the server sees: the image's ENV under the container's."""
    return k8s.serving_image().env | k8s.env_of(container)


def settings_from(env: dict[str, str]) -> Settings:
    return Settings.from_args([], {k: v for k, v in env.items() if k.startswith("CIFAR10_")})


# --- schemas ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", k8s.KUSTOMIZATIONS)
def test_every_object_matches_its_schema(rendered, name, version):
    assert rendered[name]
    for obj in rendered[name]:
        assert k8s.schema_errors(obj, version) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_the_schema_checks_catch_mistakes(rendered):
    deployment = copy.deepcopy(k8s.by_kind(rendered["base"], "Deployment"))
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["readinessProbe"]["grpc"]["port"] = GRPC_PORT_NAME  # must be a number
    assert k8s.schema_errors(deployment, OLDEST)
    deployment = copy.deepcopy(k8s.by_kind(rendered["base"], "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30  # unknown field
    assert k8s.schema_errors(deployment, OLDEST)
    hpa = copy.deepcopy(k8s.by_kind(rendered["base"], "HorizontalPodAutoscaler"))
    hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = "70%"
    assert k8s.schema_errors(hpa, OLDEST)
    isvc = copy.deepcopy(rendered["kserve"][0])
    isvc["spec"]["predictor"]["minReplica"] = 1  # not in KServe's PredictorSpec
    assert k8s.schema_errors(isvc, OLDEST)
    isvc = copy.deepcopy(rendered["kserve"][0])
    isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8500"  # PodSpec
    assert any("as PodSpec" in e for e in k8s.schema_errors(isvc, OLDEST))


# --- kustomize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", k8s.KUSTOMIZATIONS)
def test_each_kustomization_lists_exactly_its_folder(name):
    folder = k8s.DEPLOY / name
    spec = k8s.kustomization(folder)
    listed = {r for r in spec["resources"] if (folder / r).is_file()}
    patches = {p["path"] for p in spec.get("patches", [])}
    on_disk = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed | patches == on_disk
    assert not listed & patches


def test_the_render_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(ValueError, match="commonLabels"):
        k8s.render(tmp_path)


@pytest.mark.parametrize("name", k8s.KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_the_same(rendered, name):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: checked with this file's own render only")
    result = subprocess.run([kubectl, "kustomize", str(k8s.DEPLOY / name)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    def key(obj: dict) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    theirs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(theirs, key=key) == sorted(rendered[name], key=key)


def test_the_model_volume_overlay_serves_the_model_from_the_claim(rendered):
    deployment = k8s.by_kind(rendered["model-volume"], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (serve,) = pod["containers"]
    claim = k8s.by_kind(rendered["model-volume"], "PersistentVolumeClaim")["metadata"]["name"]
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    (mount,) = [m for m in serve["volumeMounts"] if m["name"] == volume["name"]]
    model = k8s.env_of(serve)["CIFAR10_MODEL_PATH"]
    assert model.startswith(mount["mountPath"] + "/") and mount["readOnly"]
    # The base serves the model the image carries.
    base = k8s.by_kind(rendered["base"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "CIFAR10_MODEL_PATH" not in k8s.env_of(base)
    image = k8s.serving_image()
    copied = {target: src for src, target in image.copies}
    path = image.env["CIFAR10_MODEL_PATH"]
    assert compose.translate(path, copied) == str(k8s.ROOT / "models" / "cifar10-cnn.onnx")


# --- the manifests say what the server reads ---------------------------------------------------

def test_every_cifar10_variable_is_a_server_setting(rendered):
    known = {Settings.env_name(f) for f in Settings.__dataclass_fields__}
    named = {item["name"] for c in k8s.containers([o for objs in rendered.values() for o in objs])
             for item in c.get("env", [])}
    assert {n for n in named if n.startswith("CIFAR10_")} <= known
    assert named


def test_ports_are_the_servers(container, env, rendered):
    settings = settings_from(env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {GRPC_PORT_NAME: settings.port, "metrics": settings.metrics_port}
    service = k8s.by_kind(rendered["base"], "Service")
    assert service["spec"]["clusterIP"] == "None", "headless: clients see every pod (docs/scaling.md)"
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    annotations = k8s.by_kind(rendered["base"], "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.metrics_port
    (isvc,) = rendered["kserve"]
    (predictor,) = isvc["spec"]["predictor"]["containers"]
    (h2c,) = predictor["ports"]
    isvc_settings = settings_from(k8s.serving_image().env | k8s.env_of(predictor))
    assert h2c["name"] == "h2c" and h2c["containerPort"] == isvc_settings.port
    assert int(isvc["metadata"]["annotations"]["prometheus.kserve.io/port"]) == isvc_settings.metrics_port


def test_probes_are_grpc_health_and_liveness_is_http_on_the_metrics_port(container, env):
    settings = settings_from(env)
    for probe in ("startupProbe", "readinessProbe"):
        grpc_probe = container[probe]["grpc"]
        assert grpc_probe["port"] == settings.port, probe
        assert grpc_probe.get("service", "") in ("", CLASSIFIER), probe
    live = container["livenessProbe"]["httpGet"]
    assert live == {"path": "/v2/health/live", "port": settings.metrics_port}


def test_termination_grace_outlasts_the_drain(deployment, env):
    pod = deployment["spec"]["template"]["spec"]
    pause = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pod["terminationGracePeriodSeconds"] > pause + settings_from(env).grace_seconds


def test_runs_as_the_images_user_with_a_cpu_limit_that_sizes_its_threads(deployment, container, env):
    useradd = [rest for keyword, rest in compose.dockerfile_stages(k8s.ROOT / "serving" / "Dockerfile")[-1]
               if keyword == "RUN" and "useradd" in rest]
    assert useradd and "--uid 10001" in useradd[0]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    resources = container["resources"]
    assert resources["limits"]["cpu"] and resources["requests"]["cpu"]
    # Threads and instances left to the server, which reads the cgroup quota the limit sets.
    assert "CIFAR10_THREADS" not in env and "CIFAR10_INSTANCES" not in env


def test_the_image_is_the_one_compose_and_the_dockerfile_build(rendered):
    serve = compose.load({})["services"]["serve"]
    assert serve["build"]["dockerfile"] == "serving/Dockerfile"
    name, _ = k8s.split_image(serve["image"])
    assert f"-t {name}" in (k8s.ROOT / "serving" / "Dockerfile").read_text()
    for objects in rendered.values():
        for container in k8s.containers(objects):
            assert k8s.split_image(container["image"])[0] == name


def test_autoscaler_budget_and_service_select_the_deployment(rendered, deployment):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s.by_kind(rendered["base"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2, "with one replica the budget blocks every drain"
    pdb = k8s.by_kind(rendered["base"], "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert k8s.by_kind(rendered["base"], "Service")["spec"]["selector"].items() <= labels.items()


# --- the pod, run here ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["base", "model-volume"])
def test_the_pod_answers_its_probes_and_serves_metrics(rendered, name, tmp_path):
    """The base on the model its image carries; the overlay on the tiny model, put on the
    claim's mount."""
    pod_spec = k8s.by_kind(rendered[name], "Deployment")["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    claims = {v["name"] for v in pod_spec["volumes"] if "persistentVolumeClaim" in v}
    volumes = {m["mountPath"]: tmp_path / m["name"] for m in container["volumeMounts"] if m["name"] in claims}
    for folder in volumes.values():
        folder.mkdir()
        write_tiny_model(folder / "cifar10-cnn.onnx")
    pod = k8s.local_pod(container, volumes=volumes, scratch=tmp_path)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(pod.argv, env=pod.env, cwd=pod.cwd, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        for probe in ("startupProbe", "readinessProbe"):
            spec = container[probe]["grpc"]
            address = f"127.0.0.1:{pod.ports[spec['port']]}"
            while True:
                assert process.poll() is None, compose.tail(log)
                try:
                    status = check(address, spec.get("service", ""), timeout=2)
                except grpc.RpcError:
                    status = "no answer"
                if status == "SERVING":
                    break
                assert time.monotonic() < deadline, f"{probe}: {status}\n{compose.tail(log)}"
                time.sleep(0.5)
        metrics = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
        live = container["livenessProbe"]["httpGet"]
        with urllib.request.urlopen(f"http://127.0.0.1:{pod.ports[live['port']]}{live['path']}",
                                    timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{pod.ports[metrics]}/metrics", timeout=5) as r:
            served = "tiny-cnn" if volumes else "cifar10-cnn"
            assert f'cifar10_model_info{{name="{served}"' in r.read().decode()
    finally:
        compose.stop(process)
    assert process.returncode == 0, compose.tail(log)
