"""Read deploy/kubernetes/ offline: render its kustomizations, validate against schemas, and
turn the Deployment's pod into a local process.

No cluster and maybe no kustomize here. :func:`render` implements the part of kustomize
that our kustomizations use (``resources``, ``images``, RFC 6902 JSON ``patches`` with a
target) and refuses any other field, so it cannot silently skip one; where ``kubectl`` is
installed, tests/packaging/test_kubernetes.py checks that ``kubectl kustomize`` renders the
same objects. Kubernetes objects are validated against the JSON schemas that
kubernetes-validate bundles (per Kubernetes version, no download); KServe's and KEDA's
objects against their real CustomResourceDefinitions in ../shared/kserve and ../shared/keda
(the CRD's openAPIV3Schema, made strict as the API server's field validation is: an unknown
field fails); without ../shared (a fresh clone) those checks skip. :func:`kserve_admission_errors`
encodes the autoscaling part of KServe's admission webhook, :func:`scraped_port` what its
pod webhook does to Prometheus' annotations, and :func:`kserve_predictor_service` the Service
its Standard mode makes for a predictor's container.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonpatch
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.ports import free_port
from tests.packaging import compose

ROOT = compose.ROOT
DEPLOY = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("base", "model-volume", "keda", "kserve", "kserve-keda")
SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}
SHARED = ROOT.parent / "shared"
# Real CustomResourceDefinitions (their READMEs say where from), by (apiVersion, kind).
CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): SHARED / "kserve" / "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"):
        SHARED / "kserve" / "serving.kserve.io_clusterservingruntimes.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): SHARED / "keda" / "keda.sh_scaledobjects.yaml",
}


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def render(folder: Path) -> list[dict]:
    """The objects ``kubectl kustomize folder`` would print (for the fields we use)."""
    spec = kustomization(folder)
    unsupported = set(spec) - SUPPORTED
    if unsupported:
        raise ValueError(f"{folder}: kustomization fields this render does not do: {sorted(unsupported)}")
    objects: list[dict] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        objects += render(path) if path.is_dir() else load_all(path)
    for patch in spec.get("patches", []):
        content = yaml.safe_load((folder / patch["path"]).read_text())
        if isinstance(content, dict):  # a strategic merge patch: only `$patch: delete` here
            if content.get("$patch") != "delete" or "target" in patch:
                raise ValueError(f"{folder}: patch {patch['path']}: only JSON patches and $patch: delete")
            target = {"apiVersion": content["apiVersion"], "kind": content["kind"],
                      "name": content["metadata"]["name"]}
            kept = [obj for obj in objects if {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                                                "name": obj["metadata"]["name"]} != target]
            if len(kept) == len(objects):
                raise ValueError(f"{folder}: patch {patch['path']} matches no object")
            objects = kept
            continue
        operations = jsonpatch.JsonPatch(content)
        matched = [i for i, obj in enumerate(objects) if _targets(patch["target"], obj)]
        if not matched:
            raise ValueError(f"{folder}: patch {patch['path']} matches no object")
        for i in matched:
            objects[i] = operations.apply(objects[i])
    for image in spec.get("images", []):
        for container in containers(objects):
            name, tag = split_image(container["image"])
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return objects


def _targets(target: dict, obj: dict) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
    return all(actual[key] == value for key, value in target.items())


def containers(objects: list[dict]) -> Iterator[dict]:
    """Every container of every object, wherever its kind keeps them."""
    stack: list[object] = list(objects)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    yield from value
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def split_image(image: str) -> tuple[str, str | None]:
    name, sep, tag = image.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (image, None)


def by_kind(objects: list[dict], kind: str) -> dict:
    (found,) = [obj for obj in objects if obj["kind"] == kind]
    return found


# --- schemas ----------------------------------------------------------------------------------

def kubernetes_errors(obj: dict, version: str) -> list[str]:
    """Errors of ``obj`` against Kubernetes ``version``'s strict schema (unknown fields fail)."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"]
    return []


def strict(schema: object) -> object:
    """A CRD's structural schema as the API server applies it with strict field validation
    (kubectl's default): an object with ``properties`` takes no other field, unless marked
    ``x-kubernetes-preserve-unknown-fields``; ``nullable`` allows null."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) if key not in ("enum", "default", "example") else value
           for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


def crd_schema(api_version: str, kind: str) -> dict:
    """The strict JSON schema of ``kind`` from its real CRD; skips the test without ../shared."""
    path = CRDS[(api_version, kind)]
    if not path.is_file():
        pytest.skip(f"{path} is absent (a fresh clone without ../shared): {kind} not checked "
                    "against its real CRD")
    crd = yaml.safe_load(path.read_text())
    group, _, version = api_version.rpartition("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind, path
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])})
    return schema


def crd_errors(obj: dict) -> list[str]:
    """Errors of a custom resource against its real CRD's schema, then its metadata's name."""
    schema = crd_schema(obj["apiVersion"], obj["kind"])
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    name = (obj.get("metadata") or {}).get("name", "")
    if not (isinstance(name, str) and 0 < len(name) <= 63 and name.replace("-", "a").isalnum()
            and name == name.lower() and name[0].isalpha() and name[-1] != "-"):
        errors.append(f"metadata/name: {name!r} is not a DNS-1035 label")
    return errors


def schema_errors(obj: dict, version: str) -> list[str]:
    if (obj["apiVersion"], obj["kind"]) in CRDS:
        return crd_errors(obj)
    return kubernetes_errors(obj, version)


# --- what KServe's webhooks do (pkg/apis/serving/v1beta1/inference_service_validation.go) -----

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KNATIVE_CLASS = "autoscaling.knative.dev/class"
KNATIVE_HPA = "hpa.autoscaling.knative.dev"
STANDARD = "Standard"  # KServe's raw-deployment mode; anything else, or nothing, is Knative's
AUTOSCALER_CLASSES = {"hpa", "external", "none", "keda"}


def kserve_admission_errors(isvc: dict) -> list[str]:
    """What KServe's validating webhook answers about the predictor's autoscaling: with no
    deploymentMode (Serverless, KServe's default) Knative's autoscaler takes only
    concurrency or rps unless the Knative HPA class is set; in Standard mode the HPA class
    takes cpu or memory (Resource metrics only) and KEDA no scaleMetric."""
    annotations = isvc["metadata"].get("annotations") or {}
    predictor = isvc["spec"]["predictor"]
    mode = annotations.get(DEPLOYMENT_MODE, "Serverless")
    klass = annotations.get(AUTOSCALER_CLASS)
    if klass is not None and klass not in AUTOSCALER_CLASSES:
        return [f"[{klass}] is not a supported autoscaler class type"]
    metric, target = predictor.get("scaleMetric"), predictor.get("scaleTarget")
    metrics = (predictor.get("autoScaling") or {}).get("metrics", [])
    if mode != STANDARD:
        if annotations.get(KNATIVE_CLASS) != KNATIVE_HPA:
            if predictor.get("deploymentStrategy") is not None:
                return ["customizing deploymentStrategy is only supported for raw deployment mode"]
            metric = metric or "concurrency"
            if metric not in ("concurrency", "rps"):
                return [f"[{metric}] is not a supported metric"]
            if metric == "rps" and target is not None and target < 1:
                return ["the target for rps should be greater than 1"]
            return []
        klass = "hpa"
    if klass == "hpa":
        metric = metric or "cpu"
        if metric not in ("cpu", "memory"):
            return [f"[{metric}] is not a supported metric"]
        if target is not None and metric == "cpu" and not 1 <= target <= 100:
            return ["the target utilization percentage should be a [1-100] integer"]
        return [f"invalid HPA metric source type with value [{m['type']}], valid metric source types are Resource"
                for m in metrics if m["type"] != "Resource"]
    if klass == "keda":
        if metric is not None:
            return ["ScaleMetric is not supported for KEDA"]
        errors = []
        for m in metrics:
            if m["type"] == "External":
                if not m["external"]["metric"].get("query"):
                    errors.append("the query should not be empty")
                if m["external"]["target"].get("value") is None:
                    errors.append("the target threshold value should not be empty")
            elif m["type"] == "Resource" and m["resource"]["name"] == "cpu" \
                    and m["resource"]["target"]["type"] != "Utilization":
                errors.append("the cpu target value type should be Utilization")
        return errors
    return []


def scraped_port(isvc: dict) -> int | None:
    """The container port whose /metrics reach Prometheus once KServe's pod webhook has run
    (metrics_aggregate_injector.go), or None where Prometheus gets none of the server's."""
    annotations = (isvc["metadata"].get("annotations") or {}) | (isvc["spec"]["predictor"].get("annotations") or {})
    serverless = annotations.get(DEPLOYMENT_MODE, "Serverless") != STANDARD
    if annotations.get("serving.kserve.io/enable-prometheus-scraping") == "true":
        # The webhook rewrites prometheus.io/port: to the queue-proxy's aggregate (9088) of
        # itself and prometheus.kserve.io/port, or to the queue-proxy's own metrics (9091).
        # Standard mode has no queue-proxy: nothing answers either.
        if serverless and annotations.get("serving.kserve.io/enable-metric-aggregation") == "true" \
                and "prometheus.kserve.io/port" in annotations:
            return int(annotations["prometheus.kserve.io/port"])
        return None
    if annotations.get("prometheus.io/scrape") == "true":
        return int(annotations["prometheus.io/port"])
    return None


KSERVE_SERVICE_PORT = 80  # constants.CommonDefaultHttpPort: where KServe's ingress sends requests
KSERVE_DEFAULT_CONTAINER_PORT = 8080  # constants.InferenceServiceDefaultHttpPort


def kserve_predictor_service(name: str, container: dict) -> dict:
    """The Service KServe's Standard (raw deployment) mode creates for a predictor whose first
    container is ``container`` (``createDefaultSvc``, pkg/controller/v1beta1/inferenceservice/
    reconcilers/service/service_reconciler.go): port 80 to the container's first port, under
    that port's name; every further port under its own number; no ports: port 80 to 8080.
    (No logger or batcher: those put KServe's agent in front of the first port.)"""
    declared = container.get("ports") or []
    if declared:
        first, *rest = declared
        ports = [{"name": first.get("name", ""), "port": KSERVE_SERVICE_PORT,
                  "targetPort": first["containerPort"], "protocol": first.get("protocol", "TCP")}]
        ports += [{"name": p.get("name", ""), "port": p["containerPort"], "targetPort": p["containerPort"],
                   "protocol": p.get("protocol", "TCP")} for p in rest]
    else:
        ports = [{"name": name, "port": KSERVE_SERVICE_PORT, "targetPort": KSERVE_DEFAULT_CONTAINER_PORT,
                  "protocol": "TCP"}]
    for port in ports:
        if not port["name"]:
            del port["name"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": f"isvc.{name}"}, "ports": ports}}


# --- the Deployment's pod as a local process ------------------------------------------------

@dataclass
class LocalPod:
    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]
    """container port -> local port."""
    cwd: Path


def serving_image() -> compose.Image:
    return compose.parse_dockerfile(ROOT / "serving" / "Dockerfile", ROOT)


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in container.get("env", [])}


def local_pod(container: dict, volumes: dict[str, Path], scratch: Path) -> LocalPod:
    """``container`` run here as the image would run it: the image's CMD and ENV under the
    container's, image paths and mounted volumes (``{mountPath: local folder}``) translated,
    each container port replaced by a free local port (in the environment too). The
    working directory is ``scratch`` where the image's is not mapped."""
    image = serving_image()
    paths = {target: src for src, target in image.copies} | volumes
    ports = {p["containerPort"]: free_port() for p in container.get("ports", [])}
    declared = {k: v for k, v in image.env.items() if k != "PATH"} | env_of(container)
    for key, value in declared.items():
        value = compose.translate(value, paths)
        declared[key] = str(ports[int(value)]) if value.isdigit() and int(value) in ports else value
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIFAR10_")} | declared
    env["CIFAR10_HOST"] = "127.0.0.1"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if "command" in container:  # Kubernetes: command replaces ENTRYPOINT and CMD, args CMD
        argv = [*container["command"], *container.get("args", [])]
    else:
        argv = [*(image.entrypoint or []), *container.get("args", image.cmd or [])]
    cwd = Path(compose.translate(image.workdir, paths))
    return LocalPod(argv=argv, env=env, ports=ports,
                    cwd=cwd if str(cwd) != image.workdir and cwd.is_dir() else scratch)
