"""Tiny synthetic CIFAR-10 data in every on-disk layout the loaders read."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from cifar10_core.contract import CLASS_NAMES


def synthetic_arrays(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose mean colour depends on the class, so a tiny model can learn them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    base = (labels * 25).reshape(-1, 1, 1, 1)
    images = np.clip(base + rng.integers(0, 30, (len(labels), 32, 32, 3)), 0, 255).astype(np.uint8)
    return images, labels


def write_image_folder(root: Path, per_class: int = 6, seed: int = 0, fmt: str = "png") -> Path:
    images, labels = synthetic_arrays(per_class, seed)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.{fmt}")
    return root


def _batch_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"batch_label": b"synthetic", b"labels": labels.tolist(), b"data": data})


def write_batches_folder(folder: Path, per_class: int = 5) -> Path:
    """A cifar-10-batches-py/ folder: five train batches and a test batch."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        images, labels = synthetic_arrays(per_class, seed=i)
        (folder / f"data_batch_{i}").write_bytes(_batch_bytes(images, labels))
    images, labels = synthetic_arrays(per_class, seed=99)
    (folder / "test_batch").write_bytes(_batch_bytes(images, labels))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASS_NAMES]}))
    return folder


def write_archive(path: Path, per_class: int = 5) -> Path:
    """cifar-10-python.tar.gz holding cifar-10-batches-py/."""
    folder = write_batches_folder(path.parent / "staging" / "cifar-10-batches-py", per_class)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path


def write_malicious_batch(folder: Path) -> Path:
    """A batch file whose pickle would run code: the loader must refuse it."""
    folder.mkdir(parents=True, exist_ok=True)

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    payload = pickle.dumps({b"data": Evil(), b"labels": [0]})
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(payload)
    (folder / "test_batch").write_bytes(payload)
    return folder


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
