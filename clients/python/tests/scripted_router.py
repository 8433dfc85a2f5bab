"""An in-process moe.v1.Router whose answers are scripted per call, for deterministic tests of
the client's retries, deadlines, status mapping and TLS."""

import threading
from concurrent import futures

import grpc
import numpy as np

from moe_client._stubs import router_pb2


def _serialize(reply):
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


class ScriptedRouter:
    """A moe.v1.Router whose Forward answers per call from `script`: a grpc.StatusCode to abort
    with, "echo" to answer output = 2 × input (built with the generated classes), "stall" to
    block until release() (bounded), "bad_shape" to answer a wrong shape, "partial" to echo
    with missing_experts [5, 6] (as a router run with --allow_partial would), "f32_data" or
    "bf16_data" to echo in that encoding, "no_values" to answer a shape without values, or
    bytes to answer exactly those bytes (a reply the generated classes cannot build). Info
    answers a model of `num_experts` experts (settable between calls) and counts info_calls."""

    def __init__(self, script, server_credentials=None, port=0, num_experts=8):
        self.script = list(script)
        self.calls = 0
        self.num_experts = num_experts
        self.info_calls = 0
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("moe.v1.Router", {
            "Forward": grpc.unary_unary_rpc_method_handler(
                self._forward, request_deserializer=router_pb2.ForwardRequest.FromString,
                response_serializer=_serialize),
            "Info": grpc.unary_unary_rpc_method_handler(
                self._info, request_deserializer=router_pb2.InfoRequest.FromString,
                response_serializer=_serialize)})
        self.server.add_generic_rpc_handlers((handler,))
        if server_credentials is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", server_credentials)
        self.target = f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.released.set()
        self.server.stop(grace=None).wait(timeout=5)

    def _info(self, request, context):
        with self.lock:
            self.info_calls += 1
            return router_pb2.ModelInfo(num_experts=self.num_experts)

    def _forward(self, request, context):
        with self.lock:
            step = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
        if isinstance(step, grpc.StatusCode):
            context.abort(step, f"scripted {step.name}")
        if isinstance(step, bytes):
            return step
        if step == "stall":
            self.released.wait(timeout=30)  # bounded; released at teardown
            context.abort(grpc.StatusCode.INTERNAL, "stalled call released")
        values = np.array(request.tokens.values, dtype=np.float32)
        shape = list(request.tokens.shape)
        if step == "bad_shape":
            shape = [shape[0], shape[1] + 1]
            values = np.zeros(shape[0] * shape[1], dtype=np.float32)
        output = router_pb2.Tensor(shape=shape)
        if step == "f32_data":
            output.f32_data = (2 * values).astype("<f4").tobytes()
        elif step == "bf16_data":  # exact for the values the tests send (see test_wire.py)
            output.bf16_data = ((2 * values).astype("<f4").view("<u4") >> 16).astype(
                "<u2").tobytes()
        elif step != "no_values":
            output.values.extend(2 * values)
        return router_pb2.ForwardResponse(output=output,
                                          missing_experts=[5, 6] if step == "partial" else [])
