"""MoEClient: calls moe.v1.Router (Forward, Info) with numpy arrays or torch tensors.

Thread-safe: one client (one gRPC channel) may be shared by many threads and by every RemoteMoE
block of a model. Every call has a deadline (``timeout``, seconds, covering all its attempts),
and a call that fails UNAVAILABLE is retried at most ``retries_unavailable`` times with
exponential backoff: inference is side-effect free, so a retry is always safe. Every other
status raises at once. Failures raise MoEError subclasses (errors.py) carrying the status.
"""

import dataclasses
import os
import random
import ssl
import time
from typing import Any, Optional, Tuple, Union

import grpc

from . import convert, wire
from ._stubs import router_pb2, router_pb2_grpc
from .errors import DeadlineExceededError, InternalError, PartialResultError, from_rpc_error
from .reply import check_missing_experts, decode_forward_response

_FORWARD = "/moe.v1.Router/Forward"


@dataclasses.dataclass(frozen=True)
class TLSConfig:
    """TLS (and mutual TLS) settings; paths of PEM files.

    root_certificates: CA bundle that signed the router's certificate (None: the system's CA
        bundle, $SSL_CERT_FILE or the file Python's ssl module finds, e.g.
        /etc/ssl/certs/ca-certificates.crt; grpcio's own bundled roots only where there is none).
    certificate_chain, private_key: the client's own certificate and key, for mutual TLS.
    server_name: the name to verify in the router's certificate when it differs from the
        target's host (gRPC's ssl_target_name_override).
    """
    root_certificates: Optional[str] = None
    certificate_chain: Optional[str] = None
    private_key: Optional[str] = None
    server_name: Optional[str] = None

    def credentials(self):
        def read(path):
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("mutual TLS needs both certificate_chain and private_key")
        roots = self.root_certificates or _system_ca_bundle()
        return grpc.ssl_channel_credentials(root_certificates=read(roots),
                                            private_key=read(self.private_key),
                                            certificate_chain=read(self.certificate_chain))


@dataclasses.dataclass(frozen=True)
class Routing:
    """Per token, the experts chosen (best first) and the final weights that multiplied their
    outputs: [T, top_k] arrays (torch tensors when the input was torch), T = tokens sent."""
    experts: Any   # int64
    weights: Any   # float32


@dataclasses.dataclass(frozen=True)
class ForwardResult:
    """The layer's output, in the input's type, shape, dtype and device, and the routing when
    it was asked for (None otherwise). missing_experts is empty unless a router run with
    --allow_partial left experts out (seen only with accept_partial=True)."""
    output: Any
    routing: Optional[Routing] = None
    missing_experts: Tuple[int, ...] = ()


def _system_ca_bundle() -> Optional[str]:
    """The system's CA bundle file, as OpenSSL and Python's ssl module find it, or None. (Given
    no roots, grpcio uses a copy of its own, not the system's: a CA added to the system store,
    e.g. with update-ca-certificates, would not be trusted.)"""
    paths = ssl.get_default_verify_paths()
    for path in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            return path
    return None


def _tls_config(tls) -> Optional[TLSConfig]:
    if tls is None or tls is False:
        return None
    if tls is True:
        return TLSConfig()
    if isinstance(tls, TLSConfig):
        return tls
    if isinstance(tls, str):
        return TLSConfig(root_certificates=tls)
    if isinstance(tls, dict):
        return TLSConfig(**tls)
    raise TypeError("tls must be None, True, a CA bundle path, a dict of TLSConfig fields or a "
                    f"TLSConfig, got {type(tls).__name__}")


class MoEClient:
    """A client of one router.

    Args:
      target: gRPC target of the router, e.g. "127.0.0.1:50051" or "dns:///router:50051".
      tls: None for plaintext (loopback development); True for TLS trusting the system's CA
        bundle (see TLSConfig); a CA bundle path; or a TLSConfig (mutual TLS, server name
        override).
      timeout: default deadline of a call in seconds, all retries included (None: no deadline;
        the router still applies its own --default_timeout_ms to shard calls).
      retries_unavailable: how many times a call failing UNAVAILABLE is retried (0: never).
      backoff_initial, backoff_max: the first retry waits backoff_initial seconds (±20 %
        jitter), each next one twice as long, never more than backoff_max, never past the
        deadline; 0 < backoff_initial <= backoff_max.
      max_message_bytes: largest request or reply (default 256 MiB, the shards' default; the
        router derives its own limit from --max_tokens × d_model).
      channel_options: extra gRPC channel arguments, e.g. [("grpc.keepalive_time_ms", 10000)].
      accept_partial: return a partial result (ForwardResult.missing_experts non-empty) from a
        router run with --allow_partial instead of raising PartialResultError. Off by default:
        a partial sum is not the layer's output.
    """

    def __init__(self, target: str, tls: Union[None, bool, str, dict, TLSConfig] = None, *,
                 timeout: Optional[float] = 30.0, retries_unavailable: int = 3,
                 backoff_initial: float = 0.1, backoff_max: float = 1.0,
                 max_message_bytes: int = 256 << 20, channel_options=(),
                 accept_partial: bool = False):
        if retries_unavailable < 0:
            raise ValueError("retries_unavailable must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 seconds (or None)")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max seconds, got "
                             f"{backoff_initial} and {backoff_max}")
        self.target = target
        self.timeout = timeout
        self.retries_unavailable = retries_unavailable
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.accept_partial = accept_partial
        # Never below 20 ms: a dead router is redialled at this rate while calls wait.
        reconnect_ms = max(20, int(backoff_initial * 1000 / 2))
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # The channel must be ready to reconnect by the time a retry comes: with gRPC's
            # reconnect backoff (1 s, growing to 120 s) a retry fails at once, without trying,
            # and after a long outage so would every retry of the first calls once the router is
            # back. Half the shortest retry delay, jitter included, never grows. (Not
            # grpc.min_reconnect_backoff_ms: that is the connect timeout, 20 s, kept.)
            ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms),
        ] + list(channel_options)
        tls_config = _tls_config(tls)
        if tls_config is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            if tls_config.server_name:
                options.append(("grpc.ssl_target_name_override", tls_config.server_name))
            self._channel = grpc.secure_channel(target, tls_config.credentials(), options=options)
        # Forward moves raw bytes: wire.py encodes and decodes the tensors with numpy.
        self._forward = self._channel.unary_unary(_FORWARD)
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        self._closed = False
        self._num_experts = None  # the model's, from Info: see _checked_missing_experts

    # -- public API ------------------------------------------------------------------------------

    def forward(self, tokens, *, layer: Optional[int] = None, return_routing: bool = False,
                timeout: Union[float, None, str] = "default") -> ForwardResult:
        """Runs the MoE layer on `tokens`.

        tokens: [T, d_model] (or [d_model], or [..., d_model], flattened and restored) numpy
          array, torch tensor or nested list of floats; float16/bfloat16/float64 are sent as
          float32 and the output is converted back.
        layer: the model layer (absent: the one layer the router serves).
        return_routing: also return each token's experts and weights.
        timeout: seconds for this call, retries included ("default": the client's).
        Raises: MoEError subclasses (InvalidArgumentError for bad shapes, NaN/Inf or a layer not
          served; UnavailableError; DeadlineExceededError; ResourceExhaustedError; ...), and
          TypeError/ValueError for inputs that are not floating-point tensors at all. The first
          partial result (and one whose missing experts do not fit the model known) also calls
          Info, within the same timeout, to check them against num_experts.
        """
        converted = convert.to_rows(tokens)
        header = router_pb2.ForwardRequest(return_routing=return_routing)
        if layer is not None:
            header.layer = int(layer)
        request = header.SerializeToString() + wire.encode_field(
            1, wire.encode_tensor(converted.rows))
        timeout = self.timeout if timeout == "default" else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        reply, attempts = self._call(self._forward, request, "moe.v1.Router/Forward", timeout)
        return self._forward_result(reply, converted, return_routing, attempts, deadline)

    def info(self, *, timeout: Union[float, None, str] = "default"):
        """The router's ModelInfo message (d_model, num_experts, top_k, family, layer, routing
        settings, shards and their states); see proto/moe/v1/router.proto."""
        return self._call(self._stub.Info, router_pb2.InfoRequest(), "moe.v1.Router/Info",
                          timeout)[0]

    def wait_ready(self, timeout: float = 10.0):
        """Waits until the router answers Info (at most `timeout` seconds) and returns it."""
        if self._closed:
            raise RuntimeError(f"MoEClient for {self.target} is closed")
        try:
            return self._stub.Info(router_pb2.InfoRequest(), timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise from_rpc_error(error, "moe.v1.Router/Info", self.target) from error

    def close(self):
        """Closes the channel; later calls raise RuntimeError. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _call(self, method, request, name, timeout):
        """The reply and how many attempts it took."""
        if self._closed:
            raise RuntimeError(f"MoEClient for {self.target} is closed")
        timeout = self.timeout if timeout == "default" else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.backoff_initial
        attempt = 0
        while True:  # bounded: at most retries_unavailable + 1 attempts
            attempt += 1
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                            f"deadline of {timeout} s passed before attempt "
                                            f"{attempt}", name, self.target, attempt - 1)
            try:
                return method(request, timeout=remaining), attempt
            except grpc.RpcError as error:
                retry = (error.code() == grpc.StatusCode.UNAVAILABLE
                         and attempt <= self.retries_unavailable)
                # Jitter first, then the cap: backoff_max bounds every pause, as documented.
                pause = min(delay * random.uniform(0.8, 1.2), self.backoff_max)
                if retry and deadline is not None and time.monotonic() + pause >= deadline:
                    retry = False  # no time left for another attempt: report the real cause
                if not retry:
                    raise from_rpc_error(error, name, self.target, attempt) from error
                time.sleep(pause)  # backoff between attempts, not synchronisation
                delay *= 2

    def _malformed(self, message, attempts):
        return InternalError(grpc.StatusCode.INTERNAL, message, "moe.v1.Router/Forward",
                             self.target, attempts)

    def _forward_result(self, reply, converted, return_routing, attempts, deadline):
        try:
            decoded = decode_forward_response(reply, converted.rows.shape, return_routing)
        except wire.WireError as error:
            raise self._malformed(f"malformed ForwardResponse: {error}", attempts) from error
        routing = None
        if return_routing:
            routing = Routing(converted.index_array(decoded.experts),
                              converted.index_array(decoded.weights))
        missing = ()
        if len(decoded.missing_experts):
            missing = self._checked_missing_experts(decoded.missing_experts, attempts, deadline)
        result = ForwardResult(converted.output(decoded.rows), routing, missing)
        if result.missing_experts and not self.accept_partial:
            raise PartialResultError(result, "moe.v1.Router/Forward", self.target, attempts)
        return result

    def _checked_missing_experts(self, listed, attempts, deadline):
        """A partial reply's missing experts, checked against the model's num_experts: learnt
        from Info (within the Forward call's deadline) on the first partial reply, and again
        when a list does not fit what was learnt (the router may since serve another model)."""
        num_experts = self._num_experts
        if num_experts is not None:
            try:
                return check_missing_experts(listed, num_experts)
            except wire.WireError:
                pass  # judged below against what Info says now
        try:
            return check_missing_experts(listed, self._fetch_num_experts(deadline))
        except wire.WireError as error:
            raise self._malformed(f"malformed ForwardResponse: {error}", attempts) from error

    def _fetch_num_experts(self, deadline):
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        self._num_experts = self.info(timeout=remaining).num_experts
        return self._num_experts
