"""Python exceptions for the gRPC statuses the router returns (DESIGN.md §7).

Every failed call raises a ``MoEError`` (or a subclass chosen by status code) carrying the gRPC
status code, its name and the server's message. ``InvalidArgumentError`` is also a ``ValueError``,
so code that already catches ``ValueError`` for bad inputs keeps working.
"""

import grpc


class MoEError(Exception):
    """A call to the router ended in a non-OK gRPC status.

    Attributes:
      code: the ``grpc.StatusCode``.
      code_name: its name, e.g. ``"UNAVAILABLE"``.
      details: the server's (or gRPC's) message.
      method: the RPC, e.g. ``"moe.v1.Router/Forward"``.
      target: the router's gRPC target.
      attempts: how many calls were made (more than 1 when UNAVAILABLE was retried).
    """

    def __init__(self, code, details, method="", target="", attempts=1):
        self.code = code
        self.code_name = code.name if code is not None else "UNKNOWN"
        self.details = details or ""
        self.method = method
        self.target = target
        self.attempts = attempts
        where = " ".join(part for part in (method, "at " + target if target else "") if part)
        tries = f", after {attempts} attempts" if attempts > 1 else ""
        context = f" ({where}{tries})" if where or tries else ""
        super().__init__(f"{self.code_name}: {self.details}{context}")


class InvalidArgumentError(MoEError, ValueError):
    """INVALID_ARGUMENT: wrong shape or d_model, NaN/Inf, a layer not served, ..."""


class ResourceExhaustedError(MoEError):
    """RESOURCE_EXHAUSTED: more tokens or bytes than the limit, or the server is overloaded."""


class UnavailableError(MoEError):
    """UNAVAILABLE: the router (or a shard holding a chosen expert) could not be reached."""


class PartialResultError(UnavailableError):
    """The call succeeded, but a router run with --allow_partial left some experts out: each
    token's weights were renormalised over the experts that answered. Raised unless the client
    was made with accept_partial=True; `.result` holds the partial ForwardResult and
    `.missing_experts` the experts left out."""

    def __init__(self, result, method="", target="", attempts=1):
        self.result = result
        self.missing_experts = result.missing_experts
        super().__init__(grpc.StatusCode.UNAVAILABLE,
                         f"partial result: experts {list(result.missing_experts)} could not be "
                         "computed (the router runs with --allow_partial)", method, target,
                         attempts)


class DeadlineExceededError(MoEError):
    """DEADLINE_EXCEEDED: the call's deadline passed before the answer arrived."""


class InternalError(MoEError):
    """INTERNAL: a shard's reply was malformed, or another server-side fault."""


class CancelledError(MoEError):
    """CANCELLED: the call was cancelled."""


class UnimplementedError(MoEError):
    """UNIMPLEMENTED: the server does not offer this method (wrong target or old server)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}


def error_class(code):
    """The MoEError subclass raised for a ``grpc.StatusCode``."""
    return _BY_CODE.get(code, MoEError)


def from_rpc_error(error, method="", target="", attempts=1):
    """Converts a ``grpc.RpcError`` (a ``grpc.Call``) into the matching MoEError."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return error_class(code)(code, details, method=method, target=target, attempts=attempts)
