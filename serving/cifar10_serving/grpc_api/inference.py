"""inference.GRPCInferenceService (Open Inference Protocol / KServe v2): a thin adapter.

Protobuf <-> numpy lives in ``cifar10_serving.grpc_api.inference_codec``; inference goes through the same
``ServingCore`` (and so the same dynamic batcher) as cifar10.v2; exceptions become status
codes in ``cifar10_serving.grpc_api.status``. What the v2 API shows of the served model:

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

import numpy as np

import cifar10_serving
from cifar10_core import contract
from cifar10_serving.dataplane.plane import ServingCore, deadline_after
from cifar10_core.errors import UnknownModelError
from cifar10_serving.grpc_api.status import RequestObserver, rpc
from cifar10_serving.grpc_api.inference_codec import (
    INPUT_DATATYPE,
    INPUT_SHAPE,
    OUTPUT_DATATYPE,
    OUTPUT_SHAPE,
    decode_images,
    encode_response,
    requested_output,
)
from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2_grpc as pb_grpc
from cifar10_serving.grpc_api.parsing import per_message_errors, request_size
from cifar10_serving.grpc_api.receive_gate import carries_images
from cifar10_serving.grpc_api.streams import pipelined

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "cifar10-serving"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
EXTENSIONS = ("classification", "model_configuration")
STATISTICS_EXTENSION = "statistics"
_OFFLOAD_VALUES = 32 * 3072  # typed contents bigger than this are converted off the loop


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


def extensions(core: ServingCore) -> list[str]:
    """The extensions ServerMetadata announces.

    ``statistics`` only while the model version is a plain integer: perf_analyzer reads
    the statistics whenever the extension is announced and parses the version as an
    integer (a version like ``2026.11.28-0413`` would make it fail); the ModelStatistics
    RPC itself always works.
    """
    names = list(EXTENSIONS)
    if core.info.version.isdigit():
        names.append(STATISTICS_EXTENSION)
    return names


def _tensor_metadata(name: str, datatype: str, shape) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=list(shape))


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: ServingCore, observe: RequestObserver | None = None):
        self.core = core
        self.observe = observe
        self.statistics = _Statistics()

    # -- health and metadata ------------------------------------------------------------

    @rpc("ServerLive")
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @rpc("ServerReady")
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.core.ready)

    @rpc("ModelReady")
    async def ModelReady(self, request, context):
        try:
            self.core.check_model(request.name, request.version)
        except UnknownModelError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.core.ready)

    @rpc("ServerMetadata")
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=cifar10_serving.__version__, extensions=extensions(self.core)
        )

    @rpc("ModelMetadata")
    async def ModelMetadata(self, request, context):
        info = self.core.check_model(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=info.name,
            versions=[info.version],
            platform=PLATFORM,
            inputs=[_tensor_metadata(contract.INPUT_NAME, INPUT_DATATYPE, INPUT_SHAPE)],
            outputs=[_tensor_metadata(contract.OUTPUT_NAME, OUTPUT_DATATYPE, OUTPUT_SHAPE)],
        )

    @rpc("ModelConfig")
    async def ModelConfig(self, request, context):
        info = self.core.check_model(request.name, request.version)
        delay_us = int(round(self.core.max_queue_delay_s * 1_000_000))
        config = pb.ModelConfig(
            name=info.name,
            platform=PLATFORM,
            backend=BACKEND,
            max_batch_size=self.core.max_images_per_request,
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
            dynamic_batching=pb.ModelDynamicBatching(max_queue_delay_microseconds=delay_us),
            instance_group=[
                pb.ModelInstanceGroup(
                    name=f"{info.name}_cpu", count=self.core.instances,
                    kind=pb.ModelInstanceGroup.KIND_CPU,
                )
            ],
            model_transaction_policy=pb.ModelTransactionPolicy(decoupled=False),
        )
        return pb.ModelConfigResponse(config=config)

    @rpc("ModelStatistics")
    async def ModelStatistics(self, request, context):
        info = self.core.check_model(request.name, request.version)
        return pb.ModelStatisticsResponse(
            model_stats=[self.statistics.message(info.name, info.version)]
        )

    # -- inference ----------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest, timeout: float | None):
        started = time.perf_counter_ns()
        images = 0
        try:
            core = self.core
            model = core.select(request.model_name, request.model_version)
            output = requested_output(request)
            deadline = deadline_after(timeout)
            with core.admit(request_bytes(request)):
                if (len(request.inputs) == 1
                        and len(request.inputs[0].contents.uint_contents) > _OFFLOAD_VALUES):
                    batch = await core.offload(functools.partial(
                        _decode_checked, request, core.max_images_per_request), deadline)
                else:
                    batch = decode_images(request, core.max_images_per_request)
                images = batch.shape[0]
                pred = await core.classify(batch, model=model, deadline=deadline, admitted=True)
            info = pred.model
            response = pb.ModelInferResponse(
                model_name=info.name, model_version=info.version, id=request.id
            )
            encode_response(response, pred.probabilities, output, info.labels)
        except BaseException:
            self.statistics.record(False, images, started)
            raise
        self.statistics.record(True, images, started)
        return response

    @carries_images
    @rpc("ModelInfer")
    async def ModelInfer(self, request, context):
        return await self._infer(request, context.time_remaining())

    async def _stream_answer(self, request, context) -> pb.ModelStreamInferResponse:
        return pb.ModelStreamInferResponse(
            infer_response=await self._infer(request, context.time_remaining())
        )

    @carries_images
    @per_message_errors
    async def ModelStreamInfer(self, request_iterator, context):
        """Pipelined (``cifar10_serving.grpc_api.streams``), answered in request order.

        A failed message gets ``error_message`` (and its ``id`` echoed in
        ``infer_response``); the stream stays open.
        """
        async for response in pipelined(
            request_iterator, lambda request: self._stream_answer(request, context),
            _stream_error, method="ModelStreamInfer", observe=self.observe,
            stopping=self.core.stopping, context=context,
        ):
            yield response


def _decode_checked(request: pb.ModelInferRequest, max_images: int, check) -> np.ndarray:
    check()  # the deadline may have passed while the request waited for a decode thread
    return decode_images(request, max_images)


def request_bytes(request: pb.ModelInferRequest) -> int:
    """The request's size for admission: its wire size (a unary call's, from the parse), else
    its tensor data (raw bytes, or 4 bytes a value)."""
    size = request_size()
    if size is not None:
        return size
    return sum(map(len, request.raw_input_contents)) + 4 * sum(
        len(tensor.contents.uint_contents) for tensor in request.inputs)


def _stream_error(request, code: str, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=f"{code}: {message}",
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )


def add_to_server(server, core: ServingCore, observe: RequestObserver | None = None) -> list[str]:
    """Register the servicer; return the full service names (for health and reflection)."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core, observe), server)
    return [SERVICE_NAME]


__all__ = ["InferenceServicer", "add_to_server", "SERVICE_NAME"]
