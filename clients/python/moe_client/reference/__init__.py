"""Plain-PyTorch reference of the served MoE layers, independent of the C++ code: a safetensors
reader, config.json parsing and LocalMoE, the transformers-style block RemoteMoE must match."""

from .config import MoEConfig, load_config, parse_config
from .local_moe import LocalMoE, SwiGLU, route
from .safetensors import Checkpoint, SafetensorsError, SafetensorsFile

__all__ = ["MoEConfig", "load_config", "parse_config", "LocalMoE", "SwiGLU", "route",
           "Checkpoint", "SafetensorsError", "SafetensorsFile"]
