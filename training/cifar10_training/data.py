"""Labelled CIFAR-10 data from any of these sources, and the fixed validation split.

Sources (``load(source)``):
- ``"fetch"`` (the default of ``cifar10-train train --data``): ``$CIFAR10_DATA`` when it
  holds data, else the official archive ``cifar-10-python.tar.gz`` found in, or downloaded
  once (MD5 checked) into, ``$CIFAR10_DATA_CACHE`` (default ``data/``); see
  ``cifar10_training.fetch.default_source``;
- an image folder with one sub-folder per class, named as in ``cifar10_core.contract.CLASS_NAMES``
  (PNG/JPEG/...; decoded and converted to 32x32 RGB by ``cifar10_core.images``, the same code
  the server uses), e.g. ``train/airplane/0000.jpg``, ``train/automobile/...``;
- the official archive ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``
  folder, read safely by ``cifar10_core.datasets`` (the batch client's reader too);
- ``"keras"``: ``keras.datasets.cifar10`` (downloads; needs a network).

Every problem with the data raises ``DataError`` with one line that names it. Each loaded
set says where it came from twice: ``source`` (this machine's path, for messages and the
run folder) and ``description`` (no path: what a model's metadata and card carry).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar10_core import contract, datasets, images
from cifar10_core.errors import InvalidInputError

log = logging.getLogger(__name__)

ARCHIVE_DIR = datasets.ARCHIVE_DIR
FETCH = "fetch"  # = cifar10_training.fetch.SOURCE


DataError = datasets.DatasetError
"""The data cannot be used; one line meant for the user (the core reader's own error type)."""


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    labels: np.ndarray  # int64 [N], indices into CLASS_NAMES
    source: str
    names: tuple[str, ...] = ()  # one per image where the source has names (file paths)
    description: str = ""  # portable: the data set's name and size, no path of this machine

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def fingerprint(self) -> str:
        """sha256 of the pixels and labels: identical data gives an identical fingerprint."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(self.labels.astype(np.int64).tobytes())
        return digest.hexdigest()


FETCH_HINT = ("with no network, pass --data (or set CIFAR10_DATA) to a local cifar-10-python.tar.gz, "
              "cifar-10-batches-py/ or image folder <class>/*.jpg")


def resolve_fetch() -> Path:
    """The data ``--data fetch`` names on this machine (may download once; see fetch)."""
    from cifar10_training import fetch

    try:
        return fetch.default_source(hint=FETCH_HINT)
    except fetch.FetchError as exc:
        raise DataError(f"no CIFAR-10 data: {exc}") from None


def load(source: str | os.PathLike, split: str = "train", progress: bool = True) -> LabelledImages:
    """Load labelled images from ``fetch`` (the default), an image folder, the official
    archive or folder, or keras."""
    if str(source) == "keras":
        return _load_keras(split)
    if str(source) == FETCH:
        source = resolve_fetch()
    path = Path(source)
    if not path.exists():
        raise DataError(f"data path does not exist: {path}")
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return _load_archive(path, split)
        raise DataError(
            f"{path} is a file but not a CIFAR-10 archive (expected cifar-10-python.tar.gz)"
        )
    if datasets.is_batches_folder(path):
        return _load_batches_folder(path, split)
    if (path / ARCHIVE_DIR).is_dir():
        return _load_batches_folder(path / ARCHIVE_DIR, split)
    return _load_image_folder(path, progress)


# --- image folders ----------------------------------------------------------------------


list_image_folder = datasets.list_class_folder


def _decode_file(path: Path) -> np.ndarray:
    try:
        return images.decode(path.read_bytes())
    except (OSError, InvalidInputError) as exc:
        raise DataError(f"unreadable image {path}: {exc}") from None


def _load_image_folder(root: Path, progress: bool) -> LabelledImages:
    paths, labels = list_image_folder(root)
    decoded = np.empty((len(paths), *contract.INPUT_SHAPE), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = pool.map(_decode_file, paths, chunksize=256)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc=f"loading {root.name}", unit="img",
                           mininterval=0.5 if sys.stderr.isatty() else 15)
        for i, array in enumerate(results):
            decoded[i] = array
    log.info("loaded %d images from %s", len(paths), root)
    return LabelledImages(
        decoded, np.asarray(labels, dtype=np.int64), f"image folder {root}", tuple(map(str, paths)),
        f"image folder {folder_name(root)} ({len(paths):,} images)",
    )


def folder_name(root: Path) -> str:
    """A folder's name without this machine's path: ``train`` or ``test`` with the folder
    above it (``cifar10-jpeg/train``), any other name alone."""
    root = Path(os.path.abspath(root))
    if root.name in ("train", "test", "val", "validation") and root.parent.name:
        return f"{root.parent.name}/{root.name}"
    return root.name


# --- the official archive (read by cifar10_core.datasets) -----------------------------------


def _concat(parts: list[tuple[np.ndarray, np.ndarray]], source: str, description: str) -> LabelledImages:
    labels = np.concatenate([p[1] for p in parts])
    return LabelledImages(np.concatenate([p[0] for p in parts]), labels, source,
                          description=f"{description} ({len(labels):,} images)")


def _check_split(split: str) -> tuple[str, ...]:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} (expected train or test)")
    return datasets.batch_names(split)


def _load_archive(path: Path, split: str) -> LabelledImages:
    return _load_batches(path, split, datasets.read_archive, "archive",
                         f"is not the CIFAR-10 python archive: no {ARCHIVE_DIR}/{{}}")


def _load_batches_folder(folder: Path, split: str) -> LabelledImages:
    return _load_batches(folder, split, datasets.read_batches_folder, "batches folder",
                         "is not a cifar-10-batches-py folder: {} is missing")


def _load_batches(path: Path, split: str, read, kind: str, missing_message: str) -> LabelledImages:
    """Every batch of ``split`` through the core reader ``read``; one missing is an error."""
    wanted = _check_split(split)
    found = read(path, wanted)
    missing = [name for name in wanted if name not in found]
    if missing:
        raise DataError(f"{path} {missing_message.format(missing[0])}")
    return _concat(list(found.values()), f"CIFAR-10 {kind} {path} ({split})",
                   f"CIFAR-10 {kind} {path.name}, {split} batches")


# --- keras.datasets ---------------------------------------------------------------------


def keras_cache_folder() -> Path:
    """Where keras.datasets.cifar10 keeps the extracted archive ($KERAS_HOME or ~/.keras)."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return home / "datasets" / "cifar-10-batches-py-target" / ARCHIVE_DIR


def _load_keras(split: str) -> LabelledImages:
    """keras.datasets.cifar10: read from Keras' cache with the safe loader, else download."""
    _check_split(split)
    cached = keras_cache_folder()
    if (cached / "test_batch").is_file():
        loaded = _load_batches_folder(cached, split)
        return LabelledImages(loaded.images, loaded.labels, f"keras.datasets.cifar10 cache {cached} ({split})",
                              description=f"keras.datasets.cifar10, {split} ({len(loaded):,} images)")
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise DataError(
            f"keras.datasets.cifar10 could not be loaded ({type(exc).__name__}: {exc}); "
            "without a network, pass a local image folder or cifar-10-python.tar.gz"
        ) from None
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return LabelledImages(x.astype(np.uint8), y.reshape(-1).astype(np.int64), f"keras.datasets.cifar10 ({split})",
                          description=f"keras.datasets.cifar10, {split} ({len(y):,} images)")


# --- the split: training, validation, test ------------------------------------------------


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): val has val_size images, as equal per class as possible.

    Deterministic for given labels, size and seed; both index arrays are sorted.
    """
    if not 0 < val_size < len(labels):
        raise DataError(f"val_size must be between 1 and {len(labels) - 1}, got {val_size}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    counts = {c: len(idx) for c, idx in per_class.items()}
    # Share val_size proportionally to class sizes (largest-remainder rounding).
    exact = {c: val_size * counts[c] / len(labels) for c in classes}
    quotas = {c: int(exact[c]) for c in classes}
    for c in sorted(classes, key=lambda c: quotas[c] - exact[c])[: val_size - sum(quotas.values())]:
        quotas[c] += 1
    val = np.sort(np.concatenate([per_class[c][: quotas[c]] for c in classes]))
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


@dataclass(frozen=True)
class Split:
    """Sorted, disjoint indices of the three parts of a data set."""

    train: np.ndarray
    val: np.ndarray  # every choice: epochs, checkpoints, recipes, hyperparameters
    test: np.ndarray  # the final figures only; empty in the old two-way split

    def sizes(self) -> dict[str, int]:
        return {"train_size": len(self.train), "val_size": len(self.val), "test_size": len(self.test)}


def three_way_split(labels: np.ndarray, val_size: int, test_size: int, seed: int) -> Split:
    """Training, validation and test parts, each stratified by class; deterministic.

    The held-out images are ``stratified_split(labels, val_size + test_size, seed)``, so
    with 2,500 + 2,500 they are exactly the lab's 5,000-image validation split (seed 1234)
    and training keeps the lab's 45,000 images; that set is then cut, stratified again,
    into test (``test_size``) and validation. ``test_size=0`` is the old two-way split.
    """
    train, held = stratified_split(labels, val_size + test_size, seed)
    if test_size == 0:
        return Split(train, held, np.zeros(0, dtype=np.int64))
    keep, test = stratified_split(labels[held], test_size, seed)
    return Split(train, held[keep], held[test])
