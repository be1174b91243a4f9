"""Read deploy/kubernetes/ offline: render its kustomizations, validate against schemas, and
turn the Deployment's pod into a local process.

No cluster and maybe no kustomize here. :func:`render` implements the part of kustomize
that our kustomizations use (``resources``, ``images``, RFC 6902 JSON ``patches`` with a
target) and refuses any other field, so it cannot silently skip one; where ``kubectl`` is
installed, tests/packaging/test_kubernetes.py checks that ``kubectl kustomize`` renders the
same objects. Kubernetes objects are validated against the JSON schemas that
kubernetes-validate bundles (per Kubernetes version, no download); the KServe
InferenceService against deploy/kubernetes/schemas/, a hand-written subset, for its pod
fields against Kubernetes' own PodSpec.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonpatch
import jsonschema
import kubernetes_validate
import yaml

from tests.ports import free_port
from tests.packaging import compose

ROOT = compose.ROOT
DEPLOY = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("base", "model-volume", "kserve")
KSERVE_SCHEMA = DEPLOY / "schemas" / "kserve-inferenceservice-v1beta1.subset.json"
SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}
# The fields of KServe's PredictorSpec that are Kubernetes' PodSpec (inlined in KServe's Go type).
POD_FIELDS = {"containers", "volumes", "serviceAccountName", "imagePullSecrets", "nodeSelector",
              "tolerations", "affinity", "initContainers", "securityContext"}


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
        operations = jsonpatch.JsonPatch(yaml.safe_load((folder / patch["path"]).read_text()))
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


def kserve_errors(obj: dict, version: str) -> list[str]:
    """Errors of an InferenceService: our hand-written subset of KServe's schema, then its
    predictor's pod fields as a Kubernetes PodSpec."""
    schema = json.loads(KSERVE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    predictor = (obj.get("spec") or {}).get("predictor") or {}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": obj["metadata"]["name"]},
           "spec": {k: v for k, v in predictor.items() if k in POD_FIELDS}}
    return errors + [f"spec/predictor (as PodSpec) {e}" for e in kubernetes_errors(pod, version)]


def schema_errors(obj: dict, version: str) -> list[str]:
    if obj["kind"] == "InferenceService":
        return kserve_errors(obj, version)
    return kubernetes_errors(obj, version)


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
