"""``cifar10-batch --engine ray``: the --local model run by Ray Data, from a laptop to a cluster.

    cifar10-batch images/ -o out.csv --local models/cifar10-cnn.onnx --engine ray

The items still to do (the same plan and resume as every other mode) become a Ray Dataset
(keys, true labels and file paths or pixel arrays); ``map_batches`` runs them through an
autoscaling pool of actors, each holding one ``local_model.LocalModel`` and preprocessing
with ``cifar10_core.images`` (``rows.classify_locally``, what --local runs). The results
stream back to this process, which writes them through the same resumable writers as you
go: an interrupted run keeps what was written and a rerun skips it.

Ray runs here (``ray.init()`` starts a local instance) or on the cluster ``RAY_ADDRESS``
names (``ray start --head``, KubeRay); there, the model file and image paths must be
readable at the same path on every node and cifar10-serving[ray] installed on each.
Ray is imported only here and only when asked for (the ``ray`` extra).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from cifar10_core.contract import CLASS_NAMES

from .errors import UnreachableError
from .local_model import LocalModel
from .outputs import KEY
from .results import Classification
from .rows import classify_locally, failed_row, result_row
from .sources import Item

log = logging.getLogger(__name__)

ENGINES = ("ray",)
NO_LABEL = -1


def input_row(item: Item) -> dict:
    """One Dataset row: the key, the true label index (-1: unknown) and the payload."""
    row = {KEY: item.key, "label": NO_LABEL if item.label is None else item.label}
    if item.array is not None:
        row["array"] = item.array
    else:
        row["path"] = item.path
    return row


def items_of(batch: dict[str, np.ndarray]) -> Iterator[Item]:
    """The Items of a batch of input rows (``input_row``'s columns)."""
    labels = [None if label == NO_LABEL else int(label) for label in batch["label"]]
    if "array" in batch:
        return (Item(str(k), label, array=a) for k, label, a in zip(batch[KEY], labels, batch["array"]))
    return (Item(str(k), label, path=str(p)) for k, label, p in zip(batch[KEY], labels, batch["path"]))


def columns_of(items: list[Item], rows: list[dict]) -> dict[str, np.ndarray]:
    """Result rows as columns (what a Ray Data batch holds): probabilities as float32 [n, 10]
    (zeros for a failed item, whose ``error_code`` is not empty)."""
    probabilities = np.zeros((len(rows), len(CLASS_NAMES)), np.float32)
    for i, row in enumerate(rows):
        if not row.get("error"):
            probabilities[i] = row["probabilities"]
    return {
        KEY: np.array([item.key for item in items], dtype=object),
        "label": np.array([NO_LABEL if item.label is None else item.label for item in items], np.int64),
        "probabilities": probabilities,
        **{name: np.array([row.get(name, "") for row in rows], dtype=object)
           for name in ("error_code", "error", "model_name", "model_version")},
    }


def rows_of(batch: dict[str, np.ndarray]) -> list[dict]:
    """``columns_of`` back to the rows the writers take (the same rows --local writes)."""
    rows = []
    for key, label, p, code, error, name, version in zip(
        batch[KEY], batch["label"], batch["probabilities"], batch["error_code"], batch["error"],
        batch["model_name"], batch["model_version"],
    ):
        item = Item(str(key), None if label == NO_LABEL else int(label))
        if code:
            rows.append(failed_row(item, str(code), str(error), str(name), str(version)))
        else:
            result = Classification.from_probabilities(p, CLASS_NAMES, 1, str(name), str(version))
            rows.append(result_row(item, result))
    return rows


class Classifier:
    """Ray Data actor: loads the model once, then classifies batches of input rows."""

    def __init__(self, model_path: str, threads: int) -> None:
        self.model = LocalModel.load(model_path, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = list(items_of(batch))
        return columns_of(items, classify_locally(self.model, items))


# Ray gives a local raylet a fixed 30 s to register and raises if it has not
# (ray-project/ray#47087); a start that is only slow passes on the next try.
LOCAL_STARTS = 3


@contextmanager
def ray_running() -> Iterator[None]:
    """Ray for the block: the instance this process already has, else the cluster RAY_ADDRESS
    names, else a local one started here (up to ``LOCAL_STARTS`` tries; shut down after).
    Raises UnreachableError, one line, where Ray can be neither reached nor started."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    for attempt in range(1, 1 + (1 if address else LOCAL_STARTS)):
        try:
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            break
        except Exception as error:  # ConnectionError (no cluster there), or Ray's bare Exception
            # for a local raylet that missed its 30 s
            ray.shutdown()  # what a half-made local start left running
            if address:
                raise UnreachableError(f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {error}") from None
            if attempt == LOCAL_STARTS:
                raise UnreachableError(
                    f"cannot start a local Ray instance ({LOCAL_STARTS} tries): {error}") from None
            log.warning("a local Ray instance did not start (%s); trying again", error)
    try:
        yield
    finally:
        ray.shutdown()


def run_on_ray(
    todo: Iterable[Item],
    write: Callable[[list[dict]], None],
    progress: Callable[[int, int], None],
    model_path: str,
    batch_size: int,
    actors: int,
    threads: int,
) -> tuple[int, int, float, str]:
    """Classify ``todo`` on Ray Data with up to ``actors`` model actors of ``threads``
    onnxruntime threads each (0: one); write each result batch as it arrives and call
    ``progress(rows written, items failed so far)``. Returns (items done, items failed,
    seconds, a description). Runs inside ``ray_running()``."""
    import ray
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not its per-run INFO lines
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # cifar10-batch's own bar (--no-progress) instead
    threads = max(1, threads)
    dataset = ray.data.from_items([input_row(item) for item in todo])
    results = dataset.map_batches(
        Classifier,
        fn_constructor_kwargs={"model_path": model_path, "threads": threads},
        batch_size=batch_size,
        batch_format="numpy",
        # An autoscaling actor pool: from one actor up to `actors`, as many as the CPUs fit.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, actors)),
        num_cpus=threads,
    )
    done = failed = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        rows = rows_of(batch)
        write(rows)
        n_failed = sum(1 for r in rows if r.get("error"))
        done, failed = done + len(rows), failed + n_failed
        progress(len(rows), failed)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    cpus = ray.cluster_resources().get("CPU", 0)
    return done, failed, seconds, (
        f"Ray Data {ray.__version__} ({cpus:.0f} CPUs), up to {actors} actors x {threads} "
        f"threads, model {model_path}; driver CPU {cpu / max(done, 1) * 1e6:.0f} us per image")
