"""inference.GRPCInferenceService (Open Inference Protocol / KServe v2): a thin adapter.

What the protocol says of the served model, its tensors' checks, descriptions and statistics
live in ``cifar10_serving.inference_protocol``, shared with the REST door; protobuf <-> numpy
in ``cifar10_serving.grpc_api.inference_codec``. Inference goes through the same data plane
(and so the same dynamic batcher) as cifar10.v2; exceptions become status codes in
``cifar10_serving.grpc_api.status``. Here:

* an empty name or version in a request means the served one;
* ``ModelReady`` answers ``ready: false`` (no error) for a name or version it does not
  serve, as Triton does; ModelMetadata, ModelConfig, ModelInfer and ModelStatistics
  answer INVALID_ARGUMENT for one;
* ``ModelStatistics`` (Triton): the ModelInfer / ModelStreamInfer calls, and the REST
  door's inference calls, counted in one ``InferenceStatistics``.
"""

from __future__ import annotations

import functools
import time

import grpc
from google.protobuf import json_format

from cifar10_core.errors import UnknownModelError
from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.dataplane.request import (
    Conversion,
    InferenceRequest,
    deadline_after,
)
from cifar10_serving.grpc_api.inference_codec import (
    decode_images,
    encode_response,
    output_request,
)
from cifar10_serving.grpc_api.methods import Method
from cifar10_serving.grpc_api.status import RequestObserver
from cifar10_serving.grpc_api.streams import pipelined
from cifar10_serving.inference_protocol import descriptions, repository
from cifar10_serving.inference_protocol.statistics import InferenceStatistics, record_failure
from cifar10_serving.inference_protocol.tensors import every_row
from cifar10_serving.lifecycle import Lifecycle

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_CHEAP_VALUES = 32 * 3072  # typed contents up to this size are converted on the event loop


class InferenceServicer:
    """The GRPCInferenceService methods over the data plane (``repository_api``: with
    Triton's repository extension)."""

    def __init__(self, plane: DataPlane, lifecycle: Lifecycle, observe: RequestObserver | None = None,
                 statistics: InferenceStatistics | None = None, repository_api: bool = False):
        self.plane = plane
        self.lifecycle = lifecycle
        self.observe = observe
        self.statistics = statistics if statistics is not None else InferenceStatistics()
        self.repository_api = repository_api

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
        if self.repository_api:
            unary.update({
                "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse,
                                    self.repository_index),
                "RepositoryModelLoad": (pb.RepositoryModelLoadRequest,
                                        pb.RepositoryModelLoadResponse, self.repository_load),
                "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest,
                                          pb.RepositoryModelUnloadResponse,
                                          self.repository_unload),
            })
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
        return json_format.ParseDict(descriptions.server_metadata(
            self.plane.models.default.version, self.repository_api), pb.ServerMetadataResponse())

    async def model_metadata(self, request, wire_bytes, context):
        info = self.plane.models.select(request.name, request.version).info
        versions = [i.version for i in self.plane.models.matching(info.name, request.version)]
        return json_format.ParseDict(descriptions.model_metadata(info, versions),
                                     pb.ModelMetadataResponse())

    async def model_config(self, request, wire_bytes, context):
        model = self.plane.models.select(request.name, request.version)
        config = descriptions.model_config(model.info, self.plane.limits,
                                           self.plane.batching_of(model))
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse())

    async def model_statistics(self, request, wire_bytes, context):
        infos = self.plane.models.matching(request.name, request.version)
        return json_format.ParseDict(
            {"model_stats": [self.statistics.model_stats(i.name, i.version) for i in infos]},
            pb.ModelStatisticsResponse())

    # -- Triton's repository extension (--model-control explicit) ------------------------

    async def repository_index(self, request, wire_bytes, context):
        entries = await repository.index(self.plane.models, request.repository_name, request.ready)
        return json_format.ParseDict({"models": entries}, pb.RepositoryIndexResponse())

    async def repository_load(self, request, wire_bytes, context):
        await repository.load(self.plane.models, request.model_name, request.repository_name,
                              request.parameters.keys())
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(self, request, wire_bytes, context):
        await repository.unload(self.plane.models, request.model_name, request.repository_name,
                                request.parameters.keys())
        return pb.RepositoryModelUnloadResponse()

    # -- inference ----------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest, wire_bytes: int,
                     timeout: float | None) -> pb.ModelInferResponse:
        started = time.perf_counter_ns()
        images = 0
        try:
            output = output_request(request)
            inputs = request.inputs
            cheap = len(inputs) != 1 or len(inputs[0].contents.uint_contents) <= _CHEAP_VALUES
            result = await self.plane.infer(InferenceRequest(
                Conversion(functools.partial(decode_images, request,
                                             self.plane.limits.max_images_per_request), cheap),
                request.model_name, request.model_version, deadline_after(timeout),
                request.id, wire_bytes))
            probabilities = every_row(result)
            images = len(probabilities)
            info = result.model
            response = pb.ModelInferResponse(
                model_name=info.name, model_version=info.version, id=request.id
            )
            encode_response(response, probabilities, output, info.labels)
        except BaseException:
            record_failure(self.statistics, self.plane, request.model_name,
                           request.model_version, images, started)
            raise
        self.statistics.record(True, images, started, info.name, info.version)
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
