"""Admission control: limits on requests and bytes in flight, refusal at shutdown."""

from __future__ import annotations

import asyncio

import pytest

from cifar10_core.errors import OverloadedError, UnavailableError
from cifar10_serving.admission import RETRY_AFTER_MS, Admission
from cifar10_serving.grpc_status import trailers_of


def test_requests_past_either_limit_are_refused_with_pushback():
    admission = Admission(max_requests=2, max_bytes=100)
    first = admission.admit(60)
    with pytest.raises(OverloadedError) as info:
        admission.admit(41)  # 101 bytes in flight
    assert trailers_of(info.value) == (("grpc-retry-pushback-ms", str(RETRY_AFTER_MS)),)
    second = admission.admit(40)
    with pytest.raises(OverloadedError):
        admission.admit(0)  # a third request
    first.release()
    first.release()  # twice is once
    assert (admission.requests, admission.bytes) == (1, 40)
    with admission.admit(10):
        assert admission.requests == 2
    second.release()
    assert (admission.requests, admission.bytes) == (0, 0)


def test_one_request_alone_is_admitted_however_large():
    admission = Admission(max_requests=1, max_bytes=10)
    with admission.admit(1_000_000):
        assert admission.bytes == 1_000_000


def test_after_close_requests_are_unavailable_and_can_be_held_until_release():
    async def scenario() -> None:
        admission = Admission(max_requests=4, max_bytes=100)
        ticket = admission.admit(1)
        admission.close()
        with pytest.raises(UnavailableError) as info:
            admission.admit(1)
        assert info.value.hold is None  # answered at once
        assert trailers_of(info.value)[0][0] == "grpc-retry-pushback-ms"
        admission.hold()
        with pytest.raises(UnavailableError) as info:
            admission.admit(1)
        waiting = asyncio.ensure_future(info.value.hold.wait())
        await asyncio.sleep(0)
        assert not waiting.done()
        admission.release()
        await asyncio.wait_for(waiting, 5)
        ticket.release()  # admitted before the close: still answered
        assert admission.requests == 0 and admission.seen == 3

    asyncio.run(scenario())
