"""Retries of UNAVAILABLE, deadlines and status mapping, against an unreachable address and a
scripted in-process gRPC server (answers chosen per call, so every case is deterministic)."""

import socket
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from helpers import random_tokens
from moe_client import (DeadlineExceededError, InternalError, InvalidArgumentError, MoEClient,
                        MoEError, PartialResultError, ResourceExhaustedError, UnavailableError,
                        error_class)
from moe_client import client as client_module
from moe_client._stubs import router_pb2
from scripted_router import ScriptedRouter


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_a_router_that_comes_back_is_reached_by_the_next_retry():
    # A failed connect puts the channel in reconnect backoff; with gRPC's default (1 s, then
    # growing) every attempt inside it fails at once without trying, so the client shortens it.
    # Up to 3 retries 0.1 + 0.2 + 0.4 s apart end before gRPC's default first backoff would (a
    # loaded machine may need more than one), so the test still fails with gRPC's defaults.
    port = unused_port()
    with MoEClient(f"127.0.0.1:{port}", retries_unavailable=3, backoff_initial=0.1,
                   backoff_max=0.4) as client:
        with pytest.raises(UnavailableError):
            client.forward(random_tokens((1, 8), seed=9))
        with ScriptedRouter(["echo"], port=port) as router:
            assert router.port == port
            rows = random_tokens((1, 8), seed=10)
            np.testing.assert_array_equal(client.forward(rows).output, 2 * rows)


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


def test_a_request_over_the_message_limit_is_resource_exhausted_locally():
    with ScriptedRouter(["echo"]) as router:
        with MoEClient(router.target, max_message_bytes=4096) as client:
            client.forward(np.ones((1, 256), np.float32))  # ~1 KB: fits
            with pytest.raises(ResourceExhaustedError):
                client.forward(np.ones((4, 256), np.float32))  # ~4 KB + framing: does not
        assert router.calls == 1


def test_a_partial_result_raises_unless_accepted():
    rows = random_tokens((2, 8), seed=7)
    with ScriptedRouter(["partial"]) as router:
        with MoEClient(router.target) as client:
            with pytest.raises(PartialResultError) as caught:
                client.forward(rows)
        error = caught.value
        assert isinstance(error, UnavailableError) and error.code_name == "UNAVAILABLE"
        assert error.missing_experts == (5, 6) and "[5, 6]" in error.details
        np.testing.assert_array_equal(error.result.output, 2 * rows)
        with MoEClient(router.target, accept_partial=True) as client:
            result = client.forward(rows)
        assert result.missing_experts == (5, 6)
        np.testing.assert_array_equal(result.output, 2 * rows)


def test_a_complete_result_has_no_missing_experts():
    with ScriptedRouter(["echo"]) as router:
        with MoEClient(router.target) as client:
            assert client.forward(random_tokens((1, 8), seed=8)).missing_experts == ()


def test_replies_in_the_bytes_encodings_decode():
    rows = np.array([[1.5, -2.0, 0.375, 1024.0]], dtype=np.float32)  # 2x: exact in bfloat16
    with ScriptedRouter(["f32_data", "bf16_data"]) as router:
        with MoEClient(router.target) as client:
            for _ in range(2):
                np.testing.assert_array_equal(client.forward(rows).output, 2 * rows)


def test_a_reply_without_values_is_internal_not_a_value_error():
    with ScriptedRouter(["no_values"]) as router:
        with pytest.raises(InternalError, match="malformed ForwardResponse") as caught:
            MoEClient(router.target).forward(random_tokens((2, 8), seed=9))
    assert not isinstance(caught.value, ValueError)  # not mistaken for bad input


# Replies that once escaped as the ValueError or OverflowError of numpy or Python ints.
MALFORMED_REPLIES = {
    "empty output tensor": b"\x0a\x00",  # output present, with no shape and no values
    "shape past int64": router_pb2.ForwardResponse(
        output=router_pb2.Tensor(shape=[2**62, 4])).SerializeToString(),
    # output whose shape is one unpacked varint of 10 bytes holding 70 bits, then a 4
    "overlong varint": b"\x0a\x0d" + b"\x08" + b"\xff" * 9 + b"\x7f" + b"\x08\x04",
}


@pytest.mark.parametrize("reply", MALFORMED_REPLIES.values(), ids=MALFORMED_REPLIES.keys())
def test_a_malformed_reply_is_internal_not_a_value_error(reply):
    with ScriptedRouter([reply]) as router:
        with pytest.raises(InternalError, match="malformed ForwardResponse") as caught:
            MoEClient(router.target).forward(random_tokens((2, 4), seed=11))
    assert not isinstance(caught.value, ValueError)  # not mistaken for bad input


def test_errors_after_retries_count_every_attempt():
    with ScriptedRouter([grpc.StatusCode.UNAVAILABLE, "partial"]) as router:
        with MoEClient(router.target, backoff_initial=0.01, backoff_max=0.01) as client:
            with pytest.raises(PartialResultError) as caught:
                client.forward(random_tokens((1, 8), seed=10))
    assert caught.value.attempts == 2 and "after 2 attempts" in str(caught.value)


def test_jittered_pauses_double_and_never_exceed_backoff_max(monkeypatch):
    pauses = []  # the client's view of random and time only: gRPC's and pytest's are untouched
    monkeypatch.setattr(client_module, "random", SimpleNamespace(
        uniform=lambda low, high: high))  # the largest jitter, +20 %
    monkeypatch.setattr(client_module, "time", SimpleNamespace(
        sleep=pauses.append, monotonic=time.monotonic))  # record the pauses, do not wait
    with MoEClient(f"127.0.0.1:{unused_port()}", timeout=None, retries_unavailable=4,
                   backoff_initial=0.25, backoff_max=1.0) as client:
        with pytest.raises(UnavailableError):
            client.info()
    assert pauses == pytest.approx([0.3, 0.6, 1.0, 1.0])


@pytest.mark.parametrize("initial, maximum", [(-0.1, 1.0), (0.0, 1.0), (0.5, 0.1)])
def test_backoff_settings_are_checked(initial, maximum):
    with pytest.raises(ValueError, match="backoff_initial"):
        MoEClient("127.0.0.1:1", backoff_initial=initial, backoff_max=maximum)


def test_a_closed_client_says_so():
    with ScriptedRouter(["echo"]) as router:
        client = MoEClient(router.target)
        client.close()
        for call in (lambda: client.forward(np.ones((1, 8), np.float32)), client.info,
                     client.wait_ready):
            with pytest.raises(RuntimeError, match="is closed"):
                call()
        assert router.calls == 0
