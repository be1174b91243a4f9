"""What the HTTP door's routes share."""

from __future__ import annotations

from dataclasses import dataclass

from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.http_api.calls import Calls
from cifar10_serving.lifecycle import Lifecycle
from cifar10_serving.settings import Settings


@dataclass(frozen=True)
class Context:
    """The data plane, the lifecycle, the call frame (``Calls``), the settings."""

    plane: DataPlane
    lifecycle: Lifecycle
    calls: Calls
    settings: Settings
