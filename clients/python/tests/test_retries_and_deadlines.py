"""Retries of UNAVAILABLE, deadlines and status mapping, against an unreachable address and a
scripted in-process gRPC server (answers chosen per call, so every case is deterministic)."""

import socket
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from helpers import random_tokens
from moe_client import (DeadlineExceededError, InternalError, InvalidArgumentError, MoEClient,
                        MoEError, UnavailableError, error_class)
from moe_client._stubs import router_pb2


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedRouter:
    """A moe.v1.Router whose Forward answers per call from `script`: a grpc.StatusCode to abort
    with, "echo" to answer output = 2 × input (built with the generated classes), "stall" to
    block until release() (bounded), or "bad_shape" to answer a wrong shape."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("moe.v1.Router", {
            "Forward": grpc.unary_unary_rpc_method_handler(
                self._forward, request_deserializer=router_pb2.ForwardRequest.FromString,
                response_serializer=router_pb2.ForwardResponse.SerializeToString)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.released.set()
        self.server.stop(grace=None).wait(timeout=5)

    def _forward(self, request, context):
        with self.lock:
            step = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
        if isinstance(step, grpc.StatusCode):
            context.abort(step, f"scripted {step.name}")
        if step == "stall":
            self.released.wait(timeout=30)  # bounded; released at teardown
            context.abort(grpc.StatusCode.INTERNAL, "stalled call released")
        values = np.array(request.tokens.values, dtype=np.float32)
        shape = list(request.tokens.shape)
        if step == "bad_shape":
            shape = [shape[0], shape[1] + 1]
            values = np.zeros(shape[0] * shape[1], dtype=np.float32)
        return router_pb2.ForwardResponse(output=router_pb2.Tensor(shape=shape,
                                                                   values=2 * values))


def test_unreachable_router_is_unavailable_after_bounded_retries():
    client = MoEClient(f"127.0.0.1:{unused_port()}", timeout=10.0, retries_unavailable=2,
                       backoff_initial=0.02, backoff_max=0.05)
    start = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        client.forward(random_tokens((2, 8), seed=1))
    elapsed = time.monotonic() - start
    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.code_name == "UNAVAILABLE"
    assert error.attempts == 3  # the first call and 2 retries
    assert elapsed < 5.0, f"{elapsed:.2f} s: retries are not bounded"
    assert "after 3 attempts" in str(error)


def test_retries_zero_fails_after_one_attempt():
    with MoEClient(f"127.0.0.1:{unused_port()}", retries_unavailable=0) as client:
        with pytest.raises(UnavailableError) as caught:
            client.info()
    assert caught.value.attempts == 1


def test_unavailable_is_retried_until_an_answer():
    script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, "echo"]
    with ScriptedRouter(script) as router:
        client = MoEClient(router.target, retries_unavailable=3, backoff_initial=0.01)
        rows = random_tokens((3, 8), seed=2)
        out = client.forward(rows).output
    np.testing.assert_array_equal(out, 2 * rows)
    assert router.calls == 3


def test_other_statuses_are_not_retried():
    with ScriptedRouter([grpc.StatusCode.INVALID_ARGUMENT, "echo"]) as router:
        client = MoEClient(router.target, retries_unavailable=3, backoff_initial=0.01)
        with pytest.raises(InvalidArgumentError) as caught:
            client.forward(random_tokens((1, 8), seed=3))
    assert router.calls == 1
    assert caught.value.details == "scripted INVALID_ARGUMENT"


def test_retries_stop_at_the_deadline():
    with ScriptedRouter([grpc.StatusCode.UNAVAILABLE]) as router:
        client = MoEClient(router.target, retries_unavailable=1000, backoff_initial=0.05,
                           backoff_max=0.05)
        start = time.monotonic()
        with pytest.raises(MoEError) as caught:
            client.forward(random_tokens((1, 8), seed=4), timeout=0.5)
        elapsed = time.monotonic() - start
    assert caught.value.code_name in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert 1 < router.calls < 1000
    assert elapsed < 2.0


def test_a_stalled_router_is_deadline_exceeded_at_the_deadline():
    with ScriptedRouter(["stall"]) as router:
        client = MoEClient(router.target, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError) as caught:
            client.forward(random_tokens((1, 8), seed=5))
        elapsed = time.monotonic() - start
    assert caught.value.code_name == "DEADLINE_EXCEEDED"
    assert 0.25 <= elapsed < 3.0


def test_a_reply_of_the_wrong_shape_is_internal():
    with ScriptedRouter(["bad_shape"]) as router:
        with pytest.raises(InternalError, match="shape"):
            MoEClient(router.target).forward(random_tokens((2, 8), seed=6))


@pytest.mark.parametrize("code", list(grpc.StatusCode)[1:])
def test_every_status_maps_to_an_moe_error_with_its_name(code):
    with ScriptedRouter([code]) as router:
        with pytest.raises(MoEError) as caught:
            MoEClient(router.target, retries_unavailable=0).forward(np.ones((1, 8), np.float32))
    assert type(caught.value) is error_class(code)
    assert caught.value.code is code and caught.value.code_name == code.name
