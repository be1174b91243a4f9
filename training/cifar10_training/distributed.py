"""Multi-worker training with TensorFlow's own engine, configured by ``TF_CONFIG``.

``TF_CONFIG`` (as Kubernetes operators, Vertex AI or ``deploy/kubernetes/training`` set it)
names the cluster and this process's task, e.g.::

    {"cluster": {"worker": ["w0:2222", "w1:2222"]}, "task": {"type": "worker", "index": 0}}

With more than one task, every worker runs the same ``cifar10-train train`` under
``tf.distribute.MultiWorkerMirroredStrategy``; the chief (task type ``chief``, else worker 0)
alone writes to the run folder, the others write their (required) saves to a private
temporary folder that is deleted at the end. Without ``TF_CONFIG`` nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster ``TF_CONFIG`` describes."""

    workers: int  # tasks that train (chief included)
    task_type: str
    task_index: int

    has_chief: bool = False  # a "chief" task exists (else worker 0 is the chief)

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0 and not self.has_chief)


def cluster_from_env(environ: dict[str, str] | None = None) -> Cluster | None:
    """The cluster of ``TF_CONFIG`` when it names more than one training task, else None."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        return None
    spec = json.loads(raw)
    jobs = spec.get("cluster", {})
    workers = len(jobs.get("chief", [])) + len(jobs.get("worker", []))
    if workers < 2:
        return None
    task = spec.get("task", {})
    return Cluster(workers, task.get("type", "worker"), int(task.get("index", 0)), has_chief="chief" in jobs)


def weights_digest(model) -> str:
    """A short SHA-256 of a model's weights (this worker's copy), to compare workers."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def build_from_local_batch(model, strategy) -> None:
    """Work around Keras 3's first-batch build under a multi-worker strategy.

    Before its first step ``fit``/``evaluate`` reduce the first distributed ``(x, y)`` batch
    with ``strategy.reduce``, which takes no nests and fails under MultiWorkerMirroredStrategy
    ("Attempt to convert a value (PerReplica...)"). Only the batch's shapes and dtypes matter
    to that build, so this model builds from this worker's own part of the batch instead.
    """
    import tensorflow as tf

    build = model._symbolic_build

    def build_from_local(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0],
                                                   next(batches))
                break
        with strategy.scope():
            build(data_batch=data_batch)

    model._maybe_symbolic_build = build_from_local


def mean_scalars_across_workers() -> None:
    """Work around Keras 3 reducing each step's logs across workers with ``axis=0``.

    Under MultiWorkerMirroredStrategy Keras averages every value a train or test step returns
    with ``strategy.reduce("MEAN", v, axis=0)``, which fails on the scalar loss and metrics
    ("Invalid reduction dimension 0 for input with 0 dimensions"); scalars are averaged
    across replicas (``axis=None``) instead. Everything else goes to Keras' own function.
    """
    from keras import tree
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "scalar_safe", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def mean(value):
            rank = strategy.experimental_local_results(value)[0].shape.rank
            return strategy.reduce("MEAN", value, axis=0 if rank else None)

        return tree.map_structure(mean, values)

    reduce_per_replica.scalar_safe = True
    trainer.reduce_per_replica = reduce_per_replica
