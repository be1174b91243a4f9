"""Optional features and the extra that installs each: a one-line hint when one is missing.

    cifar10-serving[client]  the client library, cifar10-client, cifar10-batch (a server's)
    cifar10-serving[local]   cifar10-batch --local (onnxruntime in-process)
    cifar10-serving[plots]   cifar10-batch's confusion-matrix PNG (matplotlib)
    cifar10-serving[ray]     cifar10-batch --engine ray (Ray Data; with the local extra)
    cifar10-serving[serve]   cifar10-serve (onnxruntime, health, reflection, Prometheus)
    cifar10-serving[train]   cifar10-train (TensorFlow)
"""

from __future__ import annotations

import importlib
import importlib.util

PROJECT = "cifar10-serving"


class MissingExtraError(ImportError):
    """A feature's library is not installed; the message names the extra to install."""


def require(feature: str, extra: str, *modules: str, load: bool = True) -> None:
    """Import ``modules``; raise MissingExtraError naming ``extra`` when one is missing.
    ``load=False``: only look them up (top-level names), for a caller that imports them
    later in an order of its own."""
    for module in modules:
        try:
            if load:
                importlib.import_module(module)
            elif importlib.util.find_spec(module) is None:
                raise ImportError(name=module)
        except ImportError as exc:
            missing = exc.name or module
            raise MissingExtraError(
                f"{feature} needs the '{extra}' extra ({missing} is not installed): "
                f"pip install '{PROJECT}[{extra}]'"
            ) from exc
