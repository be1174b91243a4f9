"""What the HTTP door's routes share."""

from __future__ import annotations

from dataclasses import dataclass, field

from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.http_api.calls import Calls
from cifar10_serving.inference_protocol.statistics import InferenceStatistics
from cifar10_serving.lifecycle import Lifecycle
from cifar10_serving.settings import Settings


@dataclass(frozen=True)
class Context:
    """The data plane, the lifecycle, the call frame (``Calls``), the settings, and the
    Open Inference Protocol's statistics (shared with the gRPC door)."""

    plane: DataPlane
    lifecycle: Lifecycle
    calls: Calls
    settings: Settings
    statistics: InferenceStatistics = field(default_factory=InferenceStatistics)
