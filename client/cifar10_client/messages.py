"""cifar10.v2 requests and responses for both clients: building requests, parsing answers.

A ``ClassifyResponse`` holds flat packed rows (see protos/cifar10/v2/classifier.proto):
the probabilities and top-k label indices of each classified image, and an ``ImageError``
for each image the server could not decode. :func:`outcomes` turns it into one
``Classification`` or ``ClientError`` per image of the request.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

from .errors import ClientError
from .results import Classification

Outcome = Classification | ClientError


def build_request(
    images: Sequence[pb.Image], top_k: int, model_name: str = "", model_version: str = "",
    request_id: str = "",
) -> pb.ClassifyRequest:
    """A ClassifyRequest; ClientError (INVALID_ARGUMENT) for a top_k outside 0..10."""
    if not 0 <= int(top_k) <= 10:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be in 0..10, got {top_k}")
    return pb.ClassifyRequest(
        images=list(images), top_k=int(top_k), model_name=model_name,
        model_version=model_version, request_id=request_id,
    )


def error_from_proto(error: pb.Error, item: str | None = None) -> ClientError:
    """The ClientError for an ``Error`` message (an unknown code name reads as UNKNOWN)."""
    code = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
    return ClientError(code, error.message or error.code, attempts=1, item=item)


def _malformed(message: str) -> ClientError:
    return ClientError(grpc.StatusCode.INTERNAL, f"malformed response: {message}", attempts=1)


def outcomes(response: pb.ClassifyResponse, count: int) -> list[Outcome]:
    """One Classification or ClientError (``item``: the image's index) per image of a request
    of ``count`` images; ClientError INTERNAL when the response does not fit that request."""
    failed = {e.index: e.error for e in response.image_errors} if response.image_errors else {}
    if max(failed, default=-1) >= count:
        raise _malformed(f"an image error for an index beyond the request's {count} images")
    labels = tuple(response.labels)
    width, k = len(labels), response.top_k or 1
    rows = count - len(failed)
    probabilities = list(response.probabilities)
    tops = list(response.top_indices)
    if rows and not width:
        raise _malformed("no labels")
    if len(probabilities) != rows * width or len(tops) != rows * k:
        raise _malformed(
            f"{len(probabilities)} probabilities and {len(tops)} top indices for {rows} images "
            f"of {width} labels, top {k}"
        )
    if tops and max(tops) >= width:
        raise _malformed("a top index beyond the labels")
    name, version = response.model_name, response.model_version
    out: list[Outcome] = []
    row = 0
    for i in range(count):
        if i in failed:
            out.append(error_from_proto(failed[i], item=str(i)))
            continue
        out.append(Classification.from_row(
            tuple(probabilities[row * width:(row + 1) * width]), tops[row * k:(row + 1) * k],
            labels, name, version,
        ))
        row += 1
    return out


def all_classified(results: list[Outcome]) -> list[Classification]:
    """``results`` when every image was classified; else raise the first image's error."""
    for result in results:
        if isinstance(result, ClientError):
            raise result
    return results  # type: ignore[return-value]


def each_or_refused(count: int, call_error: ClientError) -> list[Outcome]:
    """A request refused as a whole with INVALID_ARGUMENT (every image bad, or a request-level
    problem) fails each of its images with that error; other errors propagate."""
    if call_error.code != grpc.StatusCode.INVALID_ARGUMENT:
        raise call_error
    return [ClientError(call_error.code, call_error.message, attempts=call_error.attempts, item=str(i),
                        http_status=call_error.http_status)
            for i in range(count)]
