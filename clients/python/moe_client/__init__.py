"""Python client of the moe-serving router (moe.v1.Router).

    from moe_client import MoEClient
    client = MoEClient("127.0.0.1:50051")
    result = client.forward(hidden_rows, return_routing=True)   # numpy or torch, [T, d_model]

RemoteMoE (a torch.nn.Module) and the plain-PyTorch reference (moe_client.reference) import
torch; the client itself needs only grpcio, protobuf and numpy.
"""

from .client import ForwardResult, MoEClient, Routing, TLSConfig
from .errors import (CancelledError, DeadlineExceededError, InternalError, InvalidArgumentError,
                     MoEError, PartialResultError, ResourceExhaustedError, UnavailableError,
                     UnimplementedError, error_class)

__all__ = [
    "MoEClient", "ForwardResult", "Routing", "TLSConfig", "RemoteMoE", "replace_moe_blocks",
    "close_remote_moe",
    "MoEError", "InvalidArgumentError", "ResourceExhaustedError", "UnavailableError",
    "DeadlineExceededError", "PartialResultError", "InternalError", "CancelledError", "UnimplementedError",
    "error_class",
]


def __getattr__(name):  # torch is imported only when RemoteMoE is used
    if name in ("RemoteMoE", "replace_moe_blocks", "close_remote_moe"):
        from . import remote_moe
        return getattr(remote_moe, name)
    raise AttributeError(f"module 'moe_client' has no attribute {name!r}")
