"""deploy/kubernetes/training/: the indexed Job of multi-worker training, offline.

Every object against Kubernetes' strict schemas (tests/packaging/kubernetes.py); the pods'
DNS names, ports and count against the TF_CONFIG their start script builds, run here with
``sh`` for each completion index and read by the trainer's own parser.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from cifar10_training.distributed import cluster_from_env
from tests.packaging import kubernetes as k8s
from tests.packaging.test_kubernetes import VERSIONS

FOLDER = k8s.DEPLOY / "training"


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return k8s.render(FOLDER)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid(objects, version):
    assert {obj["kind"] for obj in objects} == {"Job", "Service", "PersistentVolumeClaim"}
    for obj in objects:
        assert k8s.schema_errors(obj, version) == [], obj["metadata"]["name"]


def tf_config_of(container: dict, index: int) -> str:
    """The TF_CONFIG the container's script exports as completion ``index`` (run by sh)."""
    (script,) = container["args"]
    setup, _, _ = script.partition("exec cifar10-train")
    setup = setup.replace("data=$(python -m cifar10_training.fetch) &&", "")  # no download here
    result = subprocess.run([*container["command"], setup + 'printf %s "$TF_CONFIG"'], capture_output=True,
                            text=True, env={"JOB_COMPLETION_INDEX": str(index)}, check=True, timeout=10)
    return result.stdout


def test_tf_config_names_every_pod_of_the_indexed_job(objects):
    job, service = k8s.by_kind(objects, "Job"), k8s.by_kind(objects, "Service")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    (container,) = pod["containers"]
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["containerPort"]
    for index in range(spec["completions"]):
        raw = tf_config_of(container, index)
        hosts = json.loads(raw)["cluster"]["worker"]
        # Pod hostnames of an indexed Job: <job>-<index>, under the subdomain's DNS.
        assert hosts == [f"{job['metadata']['name']}-{i}.{pod['subdomain']}:{port['containerPort']}"
                         for i in range(spec["completions"])]
        cluster = cluster_from_env({"TF_CONFIG": raw})
        assert (cluster.workers, cluster.task_index, cluster.is_chief) == (2, index, index == 0)


def test_every_worker_mounts_the_shared_run_folder(objects):
    job, claim = k8s.by_kind(objects, "Job"), k8s.by_kind(objects, "PersistentVolumeClaim")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    run_dir = k8s.env_of(container)["RUN_DIR"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if run_dir.startswith(m["mountPath"] + "/")]
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and not mount.get("readOnly")
