"""The one reader of CIFAR-10 files on disk, shared by training and the batch client.

* the official archive ``cifar-10-python.tar.gz``: nothing is extracted; only regular
  members named ``data_batch_1..5`` / ``test_batch`` are read, each size-capped;
* its extracted ``cifar-10-batches-py/`` folder (same names, same cap);
* an image folder ``<root>/<class>/...`` with one sub-folder per CIFAR-10 class.

The batch pickles are loaded by :class:`RestrictedUnpickler`, which admits the plain
containers and the few numpy types a batch holds and nothing else (no code can run).
Every problem raises :class:`DatasetError` with one line meant for the user.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np

from cifar10_core import contract

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
ARCHIVE_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
SPLITS = {"train": TRAIN_BATCHES, "test": TEST_BATCHES, "all": TRAIN_BATCHES + TEST_BATCHES}
MAX_BATCH_BYTES = 64 * 1024 * 1024  # a real batch is about 31 MB

Batch = tuple[np.ndarray, np.ndarray]  # images uint8 [N, 32, 32, 3], labels int64 [N]


class DatasetError(Exception):
    """The data cannot be used; the message is one line meant for the user."""


class RestrictedUnpickler(pickle.Unpickler):
    """Loads a CIFAR-10 batch pickle and nothing else: no arbitrary code."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 carry bytes
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        if module == "_codecs":
            return _latin1_encode
        from numpy._core import multiarray

        return getattr(multiarray, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle uses it for bytes: latin1 text only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing to load _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def batch_names(split: str) -> tuple[str, ...]:
    """The batch files of a split: ``train``, ``test`` or ``all``."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected {', '.join(SPLITS)})")
    return SPLITS[split]


def parse_batch(data: bytes, where: str) -> Batch:
    """Images (NHWC uint8) and labels (int64) of one pickled batch; ``where`` names it."""
    try:
        batch = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DatasetError(f"{where} is not a CIFAR-10 batch file: {exc}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{where} is not a CIFAR-10 batch file (not a dict)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    pixels = np.asarray(batch.get("data"))
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or "labels" not in batch:
        raise DatasetError(f"{where} is not a CIFAR-10 batch file: expected uint8 data of shape Nx3072 and labels")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetError(f"{where} has labels that are not integers") from None
    if len(labels) != len(pixels) or (labels.size and (labels.min() < 0 or labels.max() >= contract.NUM_CLASSES)):
        raise DatasetError(f"{where} has inconsistent images and labels")
    images = np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


_MEMBER = re.compile(r"^(?:\./)?(?:[^/]+/)?(data_batch_[1-5]|test_batch)$")


def read_archive(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, Batch]:
    """The batches among ``names`` that the archive holds, by name, in the order of ``names``."""
    path = Path(path)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                match = _MEMBER.match(member.name)
                if not match or match.group(1) not in names:
                    continue  # only the data files; never readme.html, links, devices, ...
                if not member.isreg():
                    raise DatasetError(f"{path}: {member.name} is not a regular file")
                if member.size > MAX_BATCH_BYTES:
                    raise DatasetError(f"{path}: {member.name} is larger than a CIFAR-10 batch can be")
                handle = tar.extractfile(member)
                if handle is None:
                    raise DatasetError(f"{path}: cannot read {member.name}")
                found[match.group(1)] = handle.read(MAX_BATCH_BYTES + 1)
    except (tarfile.TarError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        raise DatasetError(f"cannot read archive {path}: not a readable tar archive ({reason})") from None
    return {name: parse_batch(found[name], f"{path}:{name}") for name in names if name in found}


def read_batches_folder(folder: str | os.PathLike, names: tuple[str, ...]) -> dict[str, Batch]:
    """The batches among ``names`` present in a ``cifar-10-batches-py`` folder, by name."""
    folder = Path(folder)
    out: dict[str, Batch] = {}
    for name in names:
        file = folder / name
        if not file.is_file():
            continue
        if file.stat().st_size > MAX_BATCH_BYTES:
            raise DatasetError(f"{file} is larger than a CIFAR-10 batch can be")
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read {file}: {exc.strerror or exc}") from None
        out[name] = parse_batch(data, str(file))
    return out


def is_batches_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds any CIFAR-10 batch file."""
    return any((Path(folder) / name).is_file() for name in SPLITS["all"])


def list_class_folder(root: str | os.PathLike) -> tuple[list[Path], list[int]]:
    """The image files under ``root/<class>/`` (recursively), sorted, with their label indices."""
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    expected = ", ".join(contract.CLASS_NAMES)
    if not class_dirs:
        raise DatasetError(f"{root} has no class sub-folders (expected {expected})")
    unknown = [d.name for d in class_dirs if d.name not in contract.CLASS_NAMES]
    if unknown:
        raise DatasetError(f"{root} has folders that are not CIFAR-10 classes: {', '.join(unknown)} (expected {expected})")
    paths: list[Path] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([contract.CLASS_NAMES.index(class_dir.name)] * len(files))
    if not paths:
        raise DatasetError(f"{root} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, labels
