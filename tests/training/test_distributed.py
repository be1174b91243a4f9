"""Who is who in a TF_CONFIG cluster (no TensorFlow needed)."""

from __future__ import annotations

import json

from cifar10_training.distributed import cluster_from_env


def tf_config(cluster: dict, task_type: str, index: int) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_no_or_a_one_task_tf_config_is_single_process_training():
    assert cluster_from_env({}) is None and cluster_from_env({"TF_CONFIG": " "}) is None
    assert cluster_from_env(tf_config({"worker": ["a:1"]}, "worker", 0)) is None


def test_worker_zero_is_the_chief_unless_a_chief_task_exists():
    workers = {"worker": ["a:1", "b:1"]}
    first, second = (cluster_from_env(tf_config(workers, "worker", i)) for i in (0, 1))
    assert (first.workers, first.is_chief, second.is_chief, second.task_index) == (2, True, False, 1)
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    chief = cluster_from_env(tf_config(with_chief, "chief", 0))
    worker0 = cluster_from_env(tf_config(with_chief, "worker", 0))
    assert (chief.workers, chief.is_chief, worker0.is_chief) == (3, True, False)
