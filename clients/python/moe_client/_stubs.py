"""Finds and imports the Python stubs of proto/moe/v1/router.proto.

The stubs are generated at build time (``scripts/build``, CMake target ``moe_python_stubs``) into
``build/clients/python/stubs`` and never committed. ``MOE_CLIENT_STUBS`` overrides the directory;
otherwise ``$BUILD_DIR`` (default ``build``) of the repository holding this package is used.
The generated code imports itself as ``moe.v1``, so the directory goes onto ``sys.path``.
"""

import importlib
import os
import sys

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _candidates():
    env = os.environ.get("MOE_CLIENT_STUBS")
    if env:
        return [env]
    build = os.environ.get("BUILD_DIR", "build")
    return [os.path.join(_REPO, build, "clients", "python", "stubs")]


def _load():
    tried = []
    for directory in _candidates():
        directory = os.path.abspath(directory)
        tried.append(directory)
        if os.path.isfile(os.path.join(directory, "moe", "v1", "router_pb2_grpc.py")):
            if directory not in sys.path:
                sys.path.insert(0, directory)
            return (importlib.import_module("moe.v1.router_pb2"),
                    importlib.import_module("moe.v1.router_pb2_grpc"))
    raise ImportError(
        "moe_client: generated stubs moe/v1/router_pb2*.py not found in " + ", ".join(tried) +
        ". Run scripts/build (or `cmake --build build --target moe_python_stubs`), or set "
        "MOE_CLIENT_STUBS to the directory holding moe/v1/router_pb2.py")


router_pb2, router_pb2_grpc = _load()
