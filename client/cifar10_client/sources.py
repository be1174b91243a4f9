"""Inputs of the batch script: what to classify, in a stable order, with known labels.

* a folder of images, searched recursively (keys: paths relative to the folder; the label
  is the parent folder's name when it is a CIFAR-10 class, as in ``train/cat/0001.jpg``);
* a text file of image paths, one a line (blank lines and ``#`` comments skipped; relative
  paths are relative to the current directory; keys: the paths as written);
* a ``.npy`` array (NxHxW or NxHxWxC uint8; keys: the row index), or a ``.npz`` holding
  one (key ``images``/``x``/``data``, labels from ``labels``/``y`` if present);
* the official CIFAR-10 python archive ``cifar-10-python.tar.gz`` or its extracted
  ``cifar-10-batches-py`` folder (keys: ``data_batch_1/0`` ... ``test_batch/9999``).

The archive and folder are read by ``cifar10_core.datasets`` (training's reader too): nothing
is extracted to disk, only regular members named ``data_batch_1..5`` / ``test_batch`` are
read (size-capped), and their pickles are loaded by an unpickler that accepts only the few
numpy types a CIFAR batch contains.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar10_core import datasets
from cifar10_core.contract import CLASS_NAMES
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

from .inputs import encoded_image, raw_image, read_file

IMAGE_SUFFIXES = datasets.IMAGE_SUFFIXES
_LABEL_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}


SourceError = datasets.DatasetError
"""The input cannot be used at all (missing, unknown kind, malformed array/archive): the
core reader's own error type, so its messages pass through unchanged."""


@dataclass(frozen=True)
class Item:
    """One input: a unique key, its true label index (or None) and its payload."""

    key: str
    label: int | None
    path: str | None = None
    array: np.ndarray | None = None

    def to_image(self, preprocess: bool) -> pb.Image:
        """The protobuf image to send (raises ClientError for an unreadable/undecodable file)."""
        if self.array is not None:
            return raw_image(self.array)
        return encoded_image(read_file(self.path), preprocess, item=self.key)

    def to_array(self) -> np.ndarray:
        """The model input (32x32x3 uint8), preprocessed here with cifar10_core.images."""
        from cifar10_core import images

        if self.array is not None:
            return images.from_array(self.array)
        return images.decode(read_file(self.path))


class Source:
    kind = "source"
    labels_known = False
    skipped = 0  # files passed over because they are not images (a folder's)

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Item]:
        raise NotImplementedError


def _label_of(path: str) -> int | None:
    """The class of ``.../<class>/<file>``, if that folder is a CIFAR-10 class."""
    parts = path.replace(os.sep, "/").rsplit("/", 2)
    return _LABEL_INDEX.get(parts[-2]) if len(parts) >= 2 else None


class FolderSource(Source):
    kind = "image folder"

    def __init__(self, root: Path) -> None:
        self.root = root
        found: list[str] = []  # relative posix paths: a million of them stay small
        self.skipped = 0
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            relative = Path(folder).relative_to(root).as_posix()
            prefix = "" if relative == "." else relative + "/"
            images = [name for name in files if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]
            found.extend(prefix + name for name in images)
            self.skipped += len(files) - len(images)
        found.sort()
        self.keys = found
        self.labels_known = bool(found) and all(_label_of(k) is not None for k in found)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[Item]:
        root = os.fspath(self.root)
        for key in self.keys:
            label = _label_of(key) if self.labels_known else None
            yield Item(key, label, path=os.path.join(root, key))


class ListSource(Source):
    kind = "list of paths"

    def __init__(self, list_file: Path) -> None:
        try:
            text = list_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot read the list of paths {list_file}: {exc}") from exc
        self.paths = [
            line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
        self.labels_known = bool(self.paths) and all(_label_of(p) is not None for p in self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Item]:
        for p in self.paths:
            yield Item(p, _label_of(p) if self.labels_known else None, path=p)


def _check_images(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype != np.uint8:
        raise SourceError(f"{what}: images must be uint8, got {array.dtype}")
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (1, 3, 4)):
        raise SourceError(f"{what}: images must have shape NxHxW or NxHxWxC, got {array.shape}")
    return array


def _check_labels(labels: np.ndarray | None, count: int, what: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != count or not np.issubdtype(labels.dtype, np.integer):
        raise SourceError(f"{what}: labels must be {count} integers, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise SourceError(f"{what}: labels must be in 0..{len(CLASS_NAMES) - 1}")
    return labels


class ArraySource(Source):
    kind = "array"

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, keys: list[str] | None = None) -> None:
        self.images = images
        self.labels = labels
        self.keys = keys
        self.labels_known = labels is not None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __iter__(self) -> Iterator[Item]:
        for i in range(len(self)):
            key = self.keys[i] if self.keys is not None else str(i)
            label = int(self.labels[i]) if self.labels is not None else None
            yield Item(key, label, array=self.images[i])


def npy_source(path: Path) -> ArraySource:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path} as a .npy array: {exc}") from exc
    return ArraySource(_check_images(array, str(path)), None)


def npz_source(path: Path) -> ArraySource:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path} as a .npz archive: {exc}") from exc
    with archive:
        names = list(archive.files)
        image_key = next((k for k in ("images", "x", "X", "data", "x_test", "x_train") if k in names), None)
        if image_key is None and len(names) == 1:
            image_key = names[0]
        if image_key is None:
            raise SourceError(f"{path}: no image array (keys images, x or data) among {names}")
        label_key = next((k for k in ("labels", "y", "Y", "y_test", "y_train") if k in names), None)
        images = _check_images(archive[image_key], f"{path}[{image_key}]")
        labels = _check_labels(archive[label_key], images.shape[0], f"{path}[{label_key}]") if label_key else None
    return ArraySource(images, labels)


def _cifar_source(batches: dict[str, datasets.Batch]) -> ArraySource:
    keys = [f"{name}/{i}" for name, (x, _) in batches.items() for i in range(x.shape[0])]
    source = ArraySource(
        np.concatenate([x for x, _ in batches.values()]),
        np.concatenate([y for _, y in batches.values()]),
        keys,
    )
    source.kind = "CIFAR-10 python batches"
    return source


def _batches_source(path: Path, split: str, read, what: str) -> ArraySource:
    wanted = datasets.batch_names(split)
    batches = read(path, wanted)
    if not batches:
        raise SourceError(f"{path}: holds no {' / '.join(wanted)} {what}")
    return _cifar_source(batches)


def cifar_folder_source(folder: Path, split: str = "all") -> ArraySource:
    """The batches of ``split`` in a ``cifar-10-batches-py`` folder (at least one)."""
    return _batches_source(folder, split, datasets.read_batches_folder, "file")


def cifar_archive_source(archive: Path, split: str = "all") -> ArraySource:
    """The batches of ``split`` in ``cifar-10-python.tar.gz`` (at least one)."""
    return _batches_source(archive, split, datasets.read_archive, "member")


def open_source(path: str | os.PathLike, split: str = "all") -> Source:
    """The right source for ``path`` (see the module docstring). Raises SourceError."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if datasets.is_batches_folder(path):
            return cifar_folder_source(path, split)
        return FolderSource(path)
    if not path.exists():
        raise SourceError(f"input not found: {path}")
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return cifar_archive_source(path, split)
    if name.endswith(".npy"):
        return npy_source(path)
    if name.endswith(".npz"):
        return npz_source(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise SourceError(f"{path} is an image: use `cifar10-client classify` or put it in a folder")
    return ListSource(path)
