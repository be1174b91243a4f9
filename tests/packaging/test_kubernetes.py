"""deploy/kubernetes/ is valid, renders as kustomize renders it, and says what the server reads.

No cluster is reachable, so all of this is offline (tests/packaging/kubernetes.py): every
rendered object against the Kubernetes JSON schemas kubernetes-validate bundles (strict: an
unknown field fails) for the oldest Kubernetes we claim and the newest bundled; KServe's
InferenceService and ClusterServingRuntime and KEDA's ScaledObject against their real CRDs
(../shared/kserve, ../shared/keda; skipped without them) and KServe's admission rules for
autoscaling and its Prometheus annotations; the kustomizations against ``kubectl kustomize`` where kubectl is installed; and the
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
# The Deployment's container ports, named for what they carry: the server setting of each.
PORT_SETTINGS = {GRPC_PORT_NAME: "port", "http": "http_port", "metrics": "metrics_port"}
# The runtime's, in KServe's order: the first is the one its ingress reaches (Service port 80).
RUNTIME_PORT_SETTINGS = [("http1", "http_port"), ("h2c", "port"), ("metrics", "metrics_port")]


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


def test_the_crd_checks_catch_mistakes(rendered):
    isvc = copy.deepcopy(k8s.by_kind(rendered["kserve"], "InferenceService"))
    isvc["spec"]["predictor"]["minReplica"] = 1  # not in KServe's PredictorSpec
    assert any("minReplica" in e for e in k8s.schema_errors(isvc, OLDEST))
    isvc = copy.deepcopy(k8s.by_kind(rendered["kserve"], "InferenceService"))
    isvc["spec"]["predictor"]["model"]["modelFormat"] = "onnx"  # an object {name, version}
    assert k8s.schema_errors(isvc, OLDEST)
    isvc = copy.deepcopy(k8s.by_kind(rendered["kserve-keda"], "InferenceService"))
    isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]["backend"] = "prom"
    assert k8s.schema_errors(isvc, OLDEST)
    runtime = copy.deepcopy(k8s.by_kind(rendered["kserve"], "ClusterServingRuntime"))
    runtime["spec"]["containers"][0]["ports"][0]["containerPort"] = "8501"  # a number in PodSpec
    assert k8s.schema_errors(runtime, OLDEST)
    scaled = copy.deepcopy(k8s.by_kind(rendered["keda"], "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 64  # trigger metadata is strings
    assert k8s.schema_errors(scaled, OLDEST)
    scaled = copy.deepcopy(k8s.by_kind(rendered["keda"], "ScaledObject"))
    scaled["spec"]["minReplicas"] = 2  # KEDA's field is minReplicaCount
    assert k8s.schema_errors(scaled, OLDEST)


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
    repository = k8s.env_of(serve)["CIFAR10_MODEL_REPOSITORY"]
    assert repository == mount["mountPath"] and mount["readOnly"]
    # The base serves the model repository the image carries.
    base = k8s.by_kind(rendered["base"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "CIFAR10_MODEL_REPOSITORY" not in k8s.env_of(base)
    image = k8s.serving_image()
    copied = {target: src for src, target in image.copies}
    path = image.env["CIFAR10_MODEL_REPOSITORY"]
    assert compose.translate(path, copied).rstrip("/") == str(k8s.ROOT / "models")


# --- the manifests say what the server reads ---------------------------------------------------

def test_every_cifar10_variable_is_a_server_setting(rendered):
    known = {Settings.env_name(f) for f in Settings.__dataclass_fields__}
    named = {item["name"] for c in k8s.containers([o for objs in rendered.values() for o in objs])
             for item in c.get("env", [])}
    assert {n for n in named if n.startswith("CIFAR10_")} <= known
    assert named


def test_ports_are_the_servers(container, env, rendered):
    settings = settings_from(env)
    assert (settings.port, settings.http_port, settings.metrics_port) == (8500, 8501, 8502), \
        "TensorFlow Serving's gRPC and REST ports, then metrics (docs/scaling.md)"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {name: getattr(settings, field) for name, field in PORT_SETTINGS.items()}
    service = k8s.by_kind(rendered["base"], "Service")
    assert service["spec"]["clusterIP"] == "None", "headless: clients see every pod (docs/scaling.md)"
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == ports, "each by name, same number"
    protocols = {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]}
    assert protocols == {GRPC_PORT_NAME: "kubernetes.io/h2c", "http": "http", "metrics": "http"}
    annotations = k8s.by_kind(rendered["base"], "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.metrics_port


@pytest.mark.parametrize("name", ["kserve", "kserve-keda"])
def test_kserve_routes_to_the_http_door_and_keeps_grpc_and_metrics(rendered, name):
    (runtime,) = k8s.by_kind(rendered[name], "ClusterServingRuntime")["spec"]["containers"]
    settings = settings_from(k8s.serving_image().env | k8s.env_of(runtime))
    assert [(p["name"], p["containerPort"]) for p in runtime["ports"]] == \
        [(port, getattr(settings, field)) for port, field in RUNTIME_PORT_SETTINGS]
    # KServe's Standard mode: its ingress sends the InferenceService's URL to the predictor
    # Service's port 80, which is the runtime's first port: the HTTP door, for the v2 REST
    # protocol the InferenceService names; gRPC under its own number on the same Service.
    isvc = k8s.by_kind(rendered[name], "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    service = k8s.kserve_predictor_service("cifar10-predictor", runtime)
    assert k8s.schema_errors(service, OLDEST) == []
    routed = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert routed == {k8s.KSERVE_SERVICE_PORT: settings.http_port, settings.port: settings.port,
                      settings.metrics_port: settings.metrics_port}
    assert len({p["name"] for p in service["spec"]["ports"]}) == len(routed), "a Service's port names differ"
    # Prometheus gets the server's own /metrics, after KServe's pod webhook has run.
    assert k8s.scraped_port(isvc) == settings.metrics_port, name
    for probe in ("readinessProbe", "livenessProbe"):
        assert runtime[probe]["httpGet"]["port"] == settings.metrics_port
    assert runtime["startupProbe"]["grpc"]["port"] == settings.port


def test_the_kserve_service_model_follows_kserve(rendered):
    (runtime,) = k8s.by_kind(rendered["kserve"], "ClusterServingRuntime")["spec"]["containers"]
    # The former runtime, gRPC alone: the ingress's port 80 led to gRPC, no HTTP door.
    grpc_only = copy.deepcopy(runtime)
    grpc_only["ports"] = [p for p in runtime["ports"] if p["name"] == "h2c"]
    (port,) = k8s.kserve_predictor_service("p", grpc_only)["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("h2c", 80, 8500)
    # No ports declared: KServe's default container port, 8080, which our server never opens.
    (port,) = k8s.kserve_predictor_service("p", {"name": "kserve-container"})["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("p", 80, 8080)


def test_kserve_scraping_annotations_are_modelled_as_its_webhook_rewrites_them(rendered):
    isvc = copy.deepcopy(k8s.by_kind(rendered["kserve"], "InferenceService"))
    # The former manifest: KServe's scraping annotation without aggregation: Prometheus is
    # sent to the queue-proxy (Serverless) or to nothing (Standard), never to the metrics port.
    isvc["metadata"]["annotations"].update({"serving.kserve.io/enable-prometheus-scraping": "true",
                                            "prometheus.kserve.io/port": "8502"})
    assert k8s.scraped_port(isvc) is None
    del isvc["metadata"]["annotations"][k8s.DEPLOYMENT_MODE]
    assert k8s.scraped_port(isvc) is None
    isvc["metadata"]["annotations"]["serving.kserve.io/enable-metric-aggregation"] = "true"
    assert k8s.scraped_port(isvc) == 8502  # Serverless: the queue-proxy aggregates it


# --- KServe's admission webhook ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["kserve", "kserve-keda"])
def test_kserve_would_admit_the_inferenceservice(rendered, name):
    isvc = k8s.by_kind(rendered[name], "InferenceService")
    annotations = isvc["metadata"]["annotations"]
    assert annotations[k8s.DEPLOYMENT_MODE] == k8s.STANDARD, "an explicit mode (docs/scaling.md)"
    assert k8s.kserve_admission_errors(isvc) == []


def test_the_admission_rule_refuses_what_kserve_refuses(rendered):
    isvc = copy.deepcopy(k8s.by_kind(rendered["kserve"], "InferenceService"))
    # The former manifest: no mode (Serverless, KServe's default) and scaleMetric cpu.
    del isvc["metadata"]["annotations"][k8s.DEPLOYMENT_MODE]
    del isvc["metadata"]["annotations"][k8s.AUTOSCALER_CLASS]
    assert k8s.kserve_admission_errors(isvc) == ["[cpu] is not a supported metric"]
    isvc["metadata"]["annotations"][k8s.DEPLOYMENT_MODE] = "Serverless"
    assert k8s.kserve_admission_errors(isvc) == ["[cpu] is not a supported metric"]
    isvc["metadata"]["annotations"][k8s.KNATIVE_CLASS] = k8s.KNATIVE_HPA  # the way out in Serverless
    assert k8s.kserve_admission_errors(isvc) == []
    del isvc["metadata"]["annotations"][k8s.KNATIVE_CLASS]
    isvc["spec"]["predictor"]["scaleMetric"] = "concurrency"  # Knative's own autoscaler
    assert k8s.kserve_admission_errors(isvc) == []
    isvc = copy.deepcopy(k8s.by_kind(rendered["kserve"], "InferenceService"))
    isvc["spec"]["predictor"]["scaleMetric"] = "rps"  # Standard + hpa: cpu or memory only
    assert k8s.kserve_admission_errors(isvc) == ["[rps] is not a supported metric"]
    isvc["spec"]["predictor"]["scaleMetric"], isvc["spec"]["predictor"]["scaleTarget"] = "cpu", 170
    assert k8s.kserve_admission_errors(isvc)
    keda = copy.deepcopy(k8s.by_kind(rendered["kserve-keda"], "InferenceService"))
    keda["spec"]["predictor"]["scaleMetric"] = "cpu"
    assert k8s.kserve_admission_errors(keda) == ["ScaleMetric is not supported for KEDA"]
    keda = copy.deepcopy(k8s.by_kind(rendered["kserve-keda"], "InferenceService"))
    del keda["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]["value"]
    assert k8s.kserve_admission_errors(keda) == ["the target threshold value should not be empty"]
    keda["metadata"]["annotations"][k8s.AUTOSCALER_CLASS] = "KEDA"
    assert k8s.kserve_admission_errors(keda) == ["[KEDA] is not a supported autoscaler class type"]


def test_the_kserve_model_comes_from_storage_through_the_runtime(rendered):
    runtime = k8s.by_kind(rendered["kserve"], "ClusterServingRuntime")
    isvc = k8s.by_kind(rendered["kserve"], "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert "containers" not in isvc["spec"]["predictor"], "the runtime's container, not a custom one"
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["storageUri"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # where KServe mounts /mnt/models
    assert k8s.env_of(container)["CIFAR10_MODEL_REPOSITORY"] == "/mnt/models"


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


@pytest.mark.parametrize("name", ["base", "model-volume", "keda"])
def test_one_autoscaler_owns_the_replica_count(rendered, name):
    deployment = k8s.by_kind(rendered[name], "Deployment")
    assert "replicas" not in deployment["spec"], "each kubectl apply would reset the autoscaler's count"
    hpas = [o for o in rendered[name] if o["kind"] == "HorizontalPodAutoscaler"]
    scaled = [o for o in rendered[name] if o["kind"] == "ScaledObject"]
    assert len(hpas) + len(scaled) == 1, "KEDA creates its own HPA: never beside another"
    target = (hpas or scaled)[0]["spec"]["scaleTargetRef"]
    assert target["name"] == deployment["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"


def test_keda_scales_on_the_servers_queue_depth(rendered):
    metric = "cifar10_queue_depth_images"
    source = (k8s.ROOT / "serving" / "cifar10_serving" / "observability" / "metrics.py").read_text()
    assert f'"{metric}"' in source
    defaults = Settings()
    scaled = k8s.by_kind(rendered["keda"], "ScaledObject")
    (queue,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    assert queue.get("metricType", "AverageValue") == "AverageValue", "the sum is divided by the pods"
    assert queue["metadata"]["query"].startswith(f"sum({metric}{{")
    threshold = float(queue["metadata"]["threshold"])
    # Worth adding a pod: more than a full batch waits; long before the queue refuses work.
    assert defaults.max_batch_size <= threshold <= defaults.max_queue_size / 8
    assert float(queue["metadata"]["activationThreshold"]) < threshold
    hpa = k8s.by_kind(rendered["base"], "HorizontalPodAutoscaler")
    assert scaled["spec"]["minReplicaCount"] == hpa["spec"]["minReplicas"]
    assert scaled["spec"]["maxReplicaCount"] == hpa["spec"]["maxReplicas"]
    (cpu,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "cpu"]
    assert int(cpu["metadata"]["value"]) == hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    # KServe's equivalent: the same query and threshold in an External prometheus metric.
    isvc = k8s.by_kind(rendered["kserve-keda"], "InferenceService")
    assert isvc["metadata"]["annotations"][k8s.AUTOSCALER_CLASS] == "keda"
    (external,) = [m["external"] for m in isvc["spec"]["predictor"]["autoScaling"]["metrics"]
                   if m["type"] == "External"]
    assert external["metric"]["backend"] == "prometheus"
    assert external["metric"]["query"].startswith(f"sum({metric}{{")
    assert float(external["target"]["value"]) == threshold


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
    """The base on the model repository its image carries; the overlay on a repository of
    the tiny model, put on the claim's mount."""
    pod_spec = k8s.by_kind(rendered[name], "Deployment")["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    claims = {v["name"] for v in pod_spec["volumes"] if "persistentVolumeClaim" in v}
    volumes = {m["mountPath"]: tmp_path / m["name"] for m in container["volumeMounts"] if m["name"] in claims}
    for folder in volumes.values():
        (folder / "tiny" / "1").mkdir(parents=True)
        write_tiny_model(folder / "tiny" / "1" / "model.onnx")
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
        declared = {p["name"]: p["containerPort"] for p in container["ports"]}
        live = container["livenessProbe"]["httpGet"]
        with urllib.request.urlopen(f"http://127.0.0.1:{pod.ports[live['port']]}{live['path']}",
                                    timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{pod.ports[declared['metrics']]}/metrics",
                                    timeout=5) as r:
            served = "tiny" if volumes else "cifar10-cnn"
            assert f'cifar10_model_info{{name="{served}"' in r.read().decode()
        if compose.http_door_present():  # the Service's http port reaches the HTTP door
            url = f"http://127.0.0.1:{pod.ports[declared['http']]}/v2/health/ready"
            assert compose.http_status(url) == 200, compose.tail(log)
    finally:
        compose.stop(process)
    assert process.returncode == 0, compose.tail(log)
