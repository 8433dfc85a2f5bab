"""Clients that keep a real router's threads waiting, with no deadline: one that never reads its
replies (its HTTP/2 receive window stays 0; it answers pings, so keepalive sees a live peer), one
that opens reflection streams and leaves them open. gRPC's sync server keeps a thread per such
call, so the router's threads run out and every other client is refused; --unread_reply_timeout_s
must then cancel those calls (DEADLINE_EXCEEDED naming the flag) and serve the others again, while
the client stays connected."""

import dataclasses
import socket
import threading
import time
import urllib.parse
import urllib.request

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import numpy as np
import pytest

import local_cluster
from moe_client import wire
from moe_client._stubs import router_pb2, router_pb2_grpc
from moe_client.reference import load_config

PRESET = "mixtral-tiny"
MAX_THREADS = 16
LIMIT_S = 4
WAVE = 8              # unread calls sent at once
MOST_CALLS = 64       # the unread calls sent, at most
BOUND_S = 30.0        # every wait below, at most


class UnreadingClient:
    """HTTP/2 by hand (python3-h2): gRPC calls whose replies are never read."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=BOUND_S)
        self._sock.settimeout(None)  # the reader waits as long as the server sends nothing
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self._conn.initiate_connection()
        self._conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self._lock = threading.Condition()
        self.sent = {}      # stream id -> time sent
        self.answered = {}  # stream id -> time the reply's headers came (the handler returned)
        self.ended = {}     # stream id -> (time, grpc-status, grpc-message)
        self._closed = False
        self._flush()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, path, request_bytes=None):
        """Starts a call; with no request, a stream left open. Returns its stream id."""
        with self._lock:
            stream = self._conn.get_next_available_stream_id()
            self._conn.send_headers(stream, [
                (":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", "router"), ("content-type", "application/grpc"),
                ("te", "trailers")], end_stream=False)
            if request_bytes is not None:
                message = b"\x00" + len(request_bytes).to_bytes(4, "big") + request_bytes
                self._conn.send_data(stream, message, end_stream=True)
            self.sent[stream] = time.monotonic()
            self._flush()
            return stream

    def wait(self, predicate):
        """Waits until predicate() (called under the lock) holds; False after BOUND_S."""
        with self._lock:
            return self._lock.wait_for(predicate, timeout=BOUND_S)

    def close(self):
        with self._lock:
            self._closed = True
        self._sock.close()

    def _flush(self):
        data = self._conn.data_to_send()
        if data:
            self._sock.sendall(data)

    def _read(self):
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                for event in self._conn.receive_data(data):  # answers pings and settings
                    if isinstance(event, h2.events.ResponseReceived):
                        self.answered.setdefault(event.stream_id, now)
                        headers = dict(event.headers)
                        if "grpc-status" in headers:  # trailers only: refused
                            self.ended[event.stream_id] = (now, headers["grpc-status"],
                                                           headers.get("grpc-message", ""))
                    elif isinstance(event, h2.events.TrailersReceived):
                        headers = dict(event.headers)
                        self.ended[event.stream_id] = (
                            now, headers.get("grpc-status"),
                            urllib.parse.unquote(headers.get("grpc-message", "")))
                    elif isinstance(event, h2.events.StreamReset):
                        self.ended.setdefault(event.stream_id, (now, "reset", ""))
                try:
                    self._flush()
                except OSError:
                    return
                self._lock.notify_all()


def _soon(read, done):
    """Polls read() until done(value) or BOUND_S pass; the last value read."""
    deadline = time.monotonic() + BOUND_S
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value


def _served_soon(stub, request):
    """Forward succeeds once a freed thread is back in the pool (a moment after its call's
    trailers went out)."""
    code, _ = _soon(lambda: _forward_status(stub, request), lambda s: s[0] == grpc.StatusCode.OK)
    return code == grpc.StatusCode.OK


def _refused_soon(stub, request):
    """Forward is refused for want of threads."""
    code, details = _soon(lambda: _forward_status(stub, request),
                          lambda s: s[0] == grpc.StatusCode.RESOURCE_EXHAUSTED)
    if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    assert "Threadpool" in details, details
    return True


def _counted_soon(metrics_url, calls):
    """moe_router_client_wait_cancelled_total, polled until it is `calls` (it is counted just
    after the cancels go out)."""
    def counted():
        text = urllib.request.urlopen(metrics_url, timeout=BOUND_S).read().decode()
        line = next(l for l in text.splitlines()
                    if l.startswith("moe_router_client_wait_cancelled_total "))
        return float(line.split()[1])
    return _soon(counted, lambda value: value == calls)


def _assert_ended_by_the_limit(client, streams, since, words):
    """Every stream ends DEADLINE_EXCEEDED with `words`, about LIMIT_S after since[stream]."""
    assert client.wait(lambda: all(s in client.ended for s in streams)), (
        f"{sum(s in client.ended for s in streams)} of {len(streams)} calls ended")
    for stream in streams:
        ended_at, status, message = client.ended[stream]
        assert status == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0]), (status, message)
        assert words in message and "--unread_reply_timeout_s" in message, message
        waited = ended_at - since[stream]
        assert LIMIT_S - 0.5 <= waited <= LIMIT_S + 10, waited


@dataclasses.dataclass
class Router:
    request: router_pb2.ForwardRequest  # one token
    by_hand: UnreadingClient            # the client that keeps threads waiting
    stub: router_pb2_grpc.RouterStub    # another client, on a channel of its own
    metrics_url: str


@pytest.fixture
def router(tmp_path):
    _, layer = local_cluster.list_presets()[PRESET]
    model_dir = local_cluster.make_model(PRESET, str(tmp_path / "model"))
    config = load_config(model_dir)
    tokens = np.random.default_rng(7).standard_normal((1, config.d_model)).astype(np.float32)
    request = router_pb2.ForwardRequest.FromString(wire.encode_field(1, wire.encode_tensor(tokens)))
    with local_cluster.LocalCluster(
            model_dir, layer, config.num_experts, str(tmp_path),
            router_flags=[f"--max_threads={MAX_THREADS}", "--max_inflight=8", "--max_queued=4",
                          f"--unread_reply_timeout_s={LIMIT_S}", "--metrics_listen=127.0.0.1:0",
                          f"--metrics_port_file={tmp_path / 'metrics.port'}"]) as running:
        by_hand = UnreadingClient(running.target)
        channel = grpc.insecure_channel(running.target)
        try:
            stub = router_pb2_grpc.RouterStub(channel)
            assert _forward_status(stub, request)[0] == grpc.StatusCode.OK
            metrics_port = (tmp_path / "metrics.port").read_text().strip()
            yield Router(request, by_hand, stub, f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            channel.close()
            by_hand.close()


def _forward_status(stub, request):
    try:
        stub.Forward(request, timeout=5)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details()


def test_unread_replies_are_cancelled_at_the_limit_and_others_are_served_again(router):
    # Unread calls in waves the router admits at once (8 running, 4 queued), each wave answered
    # before the next, until the router's threads are gone and another client is refused.
    held = []
    refused = None
    started = time.monotonic()
    while len(held) < MOST_CALLS and refused is None:
        wave = [router.by_hand.send("/moe.v1.Router/Forward", router.request.SerializeToString())
                for _ in range(WAVE)]
        assert router.by_hand.wait(lambda: all(s in router.by_hand.answered for s in wave)), (
            "no reply headers")
        held += [s for s in wave if s not in router.by_hand.ended]
        code, details = _forward_status(router.stub, router.request)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            refused = details
    assert refused is not None, f"{len(held)} unread calls never exhausted the router"
    assert "Threadpool" in refused, refused
    assert time.monotonic() - started < LIMIT_S, "too slow to hold them all at once"

    # The unread calls end at the limit, although the client still keeps its window shut.
    _assert_ended_by_the_limit(router.by_hand, held, router.by_hand.answered, "did not take")
    assert _served_soon(router.stub, router.request)
    assert _counted_soon(router.metrics_url, len(held)) == len(held)


def test_reflection_streams_left_open_are_cancelled_at_the_limit(router):
    # Twice the router's threads in streams that never send a request: each handler waits in Read
    # on a thread of its own.
    opened = [router.by_hand.send("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
              for _ in range(2 * MAX_THREADS)]
    assert _refused_soon(router.stub, router.request), "open streams never exhausted the router"
    # Streams beyond the threads are refused at once; the others wait until the limit.
    assert router.by_hand.wait(lambda: all(s in router.by_hand.ended for s in opened))
    exhausted = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    held = [s for s in opened if router.by_hand.ended[s][1] != exhausted]
    assert len(held) >= MAX_THREADS // 2, len(held)
    _assert_ended_by_the_limit(router.by_hand, held, router.by_hand.sent, "stream was open")
    assert _served_soon(router.stub, router.request)
    assert _counted_soon(router.metrics_url, len(held)) == len(held)
