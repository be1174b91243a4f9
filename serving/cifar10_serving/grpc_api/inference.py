"""inference.GRPCInferenceService (Open Inference Protocol / KServe v2): a thin adapter.

Protobuf <-> numpy lives in ``cifar10_serving.grpc_api.inference_codec``; inference goes
through the same data plane (and so the same dynamic batcher) as cifar10.v2; exceptions
become status codes in ``cifar10_serving.grpc_api.status``. What the v2 API shows of the served model:

* name: the model's ``model_name`` metadata; versions: ``[model_version]``;
  platform ``onnxruntime_onnx``; an empty name or version in a request means the served one;
* input ``images`` UINT8 ``[-1, 32, 32, 3]``, output ``probabilities`` FP32 ``[-1, 10]``;
* ``ModelReady`` answers ``ready: false`` (no error) for a name or version it does not
  serve, as Triton does; ModelMetadata, ModelConfig, ModelInfer and ModelStatistics
  answer INVALID_ARGUMENT for one;
* ``ModelConfig`` (Triton): max_batch_size = the most images one request may carry,
  dynamic batching with the batcher's queue delay, ``--instances`` CPU instances;
* ``ModelStatistics`` (Triton): counts of this API's ModelInfer / ModelStreamInfer calls
  since start (execution_count counts requests, not merged batches; the queue/compute
  split of the time is not measured). ServerMetadata announces the ``statistics``
  extension only for an integer model version (see ``extensions``).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import grpc

import cifar10_serving
from cifar10_core import contract
from cifar10_core.errors import UnknownModelError
from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.dataplane.request import Conversion, InferenceRequest, deadline_after
from cifar10_serving.grpc_api.inference_codec import (
    INPUT_DATATYPE,
    INPUT_SHAPE,
    OUTPUT_DATATYPE,
    OUTPUT_SHAPE,
    decode_images,
    encode_response,
    requested_output,
)
from cifar10_serving.grpc_api.methods import Method
from cifar10_serving.grpc_api.status import RequestObserver
from cifar10_serving.grpc_api.streams import pipelined
from cifar10_serving.lifecycle import Lifecycle

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "cifar10-serving"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
EXTENSIONS = ("classification", "model_configuration")
STATISTICS_EXTENSION = "statistics"
_CHEAP_VALUES = 32 * 3072  # typed contents up to this size are converted on the event loop


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


class _Statistics:
    """Cumulative counts for Triton's ModelStatistics (this API's inference calls only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success = _Duration()
        self.fail = _Duration()
        self.inference_count = 0
        self.last_inference_ms = 0

    def record(self, ok: bool, images: int, started_ns: int) -> None:
        now = time.perf_counter_ns()
        with self._lock:
            if ok:
                self.success.add(now - started_ns)
                self.inference_count += images
            else:
                self.fail.add(now - started_ns)
            self.last_inference_ms = int(time.time() * 1000)

    def message(self, name: str, version: str) -> pb.ModelStatistics:
        with self._lock:
            return pb.ModelStatistics(
                name=name,
                version=version,
                last_inference=self.last_inference_ms,
                inference_count=self.inference_count,
                execution_count=self.success.count,
                inference_stats=pb.InferStatistics(
                    success=pb.StatisticDuration(count=self.success.count, ns=self.success.ns),
                    fail=pb.StatisticDuration(count=self.fail.count, ns=self.fail.ns),
                    # Every successful request was queued and computed once; the split of
                    # its time between queue and compute is not measured here (ns = 0).
                    queue=pb.StatisticDuration(count=self.success.count),
                    compute_input=pb.StatisticDuration(count=self.success.count),
                    compute_infer=pb.StatisticDuration(count=self.success.count),
                    compute_output=pb.StatisticDuration(count=self.success.count),
                ),
            )


def extensions(model_version: str) -> list[str]:
    """The extensions ServerMetadata announces, serving a model of ``model_version``.

    ``statistics`` only while the model version is a plain integer: perf_analyzer reads
    the statistics whenever the extension is announced and parses the version as an
    integer (a version like ``2026.11.28-0413`` would make it fail); the ModelStatistics
    RPC itself always works.
    """
    names = list(EXTENSIONS)
    if model_version.isdigit():
        names.append(STATISTICS_EXTENSION)
    return names


def _tensor_metadata(name: str, datatype: str, shape) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=list(shape))


class InferenceServicer:
    """The GRPCInferenceService methods over the data plane."""

    def __init__(self, plane: DataPlane, lifecycle: Lifecycle, observe: RequestObserver | None = None):
        self.plane = plane
        self.lifecycle = lifecycle
        self.observe = observe
        self.statistics = _Statistics()

    def methods(self) -> list[Method]:
        unary = {
            "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse, self.server_live),
            "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse, self.server_ready),
            "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse, self.model_ready),
            "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse, self.server_metadata),
            "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse, self.model_metadata),
            "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse, self.model_config),
            "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse,
                                self.model_statistics),
        }
        return [
            *(Method(name, req, resp, unary=handler) for name, (req, resp, handler) in unary.items()),
            Method("ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse,
                   unary=self.model_infer, images=True),
            Method("ModelStreamInfer", pb.ModelInferRequest, pb.ModelStreamInferResponse,
                   stream=self.model_stream_infer, images=True),
        ]

    # -- health and metadata ------------------------------------------------------------

    async def server_live(self, request, wire_bytes, context):
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request, wire_bytes, context):
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def model_ready(self, request, wire_bytes, context):
        try:
            self.plane.models.select(request.name, request.version)
        except UnknownModelError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.plane.ready)

    async def server_metadata(self, request, wire_bytes, context):
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=cifar10_serving.__version__, extensions=extensions(self.plane.models.default.version)
        )

    async def model_metadata(self, request, wire_bytes, context):
        info = self.plane.models.select(request.name, request.version).info
        return pb.ModelMetadataResponse(
            name=info.name,
            versions=[info.version],
            platform=PLATFORM,
            inputs=[_tensor_metadata(contract.INPUT_NAME, INPUT_DATATYPE, INPUT_SHAPE)],
            outputs=[_tensor_metadata(contract.OUTPUT_NAME, OUTPUT_DATATYPE, OUTPUT_SHAPE)],
        )

    async def model_config(self, request, wire_bytes, context):
        info = self.plane.models.select(request.name, request.version).info
        batching = self.plane.batching
        config = pb.ModelConfig(
            name=info.name,
            platform=PLATFORM,
            backend=BACKEND,
            max_batch_size=self.plane.limits.max_images_per_request,
            input=[
                pb.ModelInput(
                    name=contract.INPUT_NAME,
                    data_type=pb.TYPE_UINT8,
                    format=pb.ModelInput.FORMAT_NHWC,
                    dims=list(contract.INPUT_SHAPE),
                )
            ],
            output=[
                pb.ModelOutput(
                    name=contract.OUTPUT_NAME, data_type=pb.TYPE_FP32, dims=[contract.NUM_CLASSES]
                )
            ],
            dynamic_batching=pb.ModelDynamicBatching(
                max_queue_delay_microseconds=int(round(batching.max_queue_delay_s * 1_000_000))),
            instance_group=[
                pb.ModelInstanceGroup(
                    name=f"{info.name}_cpu", count=batching.instances,
                    kind=pb.ModelInstanceGroup.KIND_CPU,
                )
            ],
            model_transaction_policy=pb.ModelTransactionPolicy(decoupled=False),
        )
        return pb.ModelConfigResponse(config=config)

    async def model_statistics(self, request, wire_bytes, context):
        info = self.plane.models.select(request.name, request.version).info
        return pb.ModelStatisticsResponse(
            model_stats=[self.statistics.message(info.name, info.version)]
        )

    # -- inference ----------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest, wire_bytes: int,
                     timeout: float | None) -> pb.ModelInferResponse:
        started = time.perf_counter_ns()
        images = 0
        try:
            output = requested_output(request)
            inputs = request.inputs
            cheap = len(inputs) != 1 or len(inputs[0].contents.uint_contents) <= _CHEAP_VALUES
            result = await self.plane.infer(InferenceRequest(
                Conversion(functools.partial(decode_images, request,
                                             self.plane.limits.max_images_per_request), cheap),
                request.model_name, request.model_version, deadline_after(timeout),
                request.id, wire_bytes))
            images = len(result.probabilities)
            info = result.model
            response = pb.ModelInferResponse(
                model_name=info.name, model_version=info.version, id=request.id
            )
            encode_response(response, result.probabilities, output, info.labels)
        except BaseException:
            self.statistics.record(False, images, started)
            raise
        self.statistics.record(True, images, started)
        return response

    async def model_infer(self, request: pb.ModelInferRequest, wire_bytes: int,
                          context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        return await self._infer(request, wire_bytes, context.time_remaining())

    async def _stream_answer(self, request, wire_bytes: int, context) -> pb.ModelStreamInferResponse:
        return pb.ModelStreamInferResponse(
            infer_response=await self._infer(request, wire_bytes, context.time_remaining())
        )

    async def model_stream_infer(self, messages, context: grpc.aio.ServicerContext):
        """Pipelined (``cifar10_serving.grpc_api.streams``), answered in request order.

        A failed message gets ``error_message`` (and its ``id`` echoed in
        ``infer_response``); the stream stays open.
        """
        async for response in pipelined(
            messages, lambda request, size: self._stream_answer(request, size, context),
            _stream_error, method="ModelStreamInfer", observe=self.observe,
            stopping=self.lifecycle.stopping, context=context,
        ):
            yield response


def _stream_error(request: pb.ModelInferRequest | None, code: str,
                  message: str) -> pb.ModelStreamInferResponse:
    if request is None:  # did not parse
        request = pb.ModelInferRequest()
    return pb.ModelStreamInferResponse(
        error_message=f"{code}: {message}",
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )
