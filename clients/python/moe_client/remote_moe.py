"""RemoteMoE: a torch.nn.Module that computes an MoE block on the router.

A drop-in for the MoE block of a Mixtral / Qwen-MoE / OLMoE / DeepSeek decoder layer: forward
takes hidden_states [batch, seq, d_model] (or [T, d_model]), sends the flattened rows to the
router for its layer, and returns the output in the same shape, dtype and device. bf16/fp16
inputs travel as fp32 and come back converted. Inference only: no gradient flows through it.
"""

import re
import warnings

import torch

from .client import MoEClient

# transformers' MoE blocks that return (hidden_states, router_logits) rather than a tensor.
_TUPLE_BLOCKS = {"MixtralSparseMoeBlock", "Qwen2MoeSparseMoeBlock", "Qwen3MoeSparseMoeBlock",
                 "OlmoeSparseMoeBlock"}
_BLOCK_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:block_sparse_moe|mlp)$")


class RemoteMoE(torch.nn.Module):
    """The MoE block of model layer `layer`, computed by the router behind `client`.

    Args:
      client: a MoEClient (shared by every block of a model), or a router target string (the
        block then makes a client of its own, closed by close()).
      layer: the model layer (None: the one layer the router serves).
      return_router_logits: return (hidden_states, None) like transformers' Mixtral and
        Qwen-MoE blocks, which return (hidden_states, router_logits). The router does not send
        gate logits back, so the second element is always None: a model asked for
        output_router_logits (the training-time load-balancing loss) cannot be served remotely.
      record_routing: keep the last call's routing (experts, weights; [tokens, top_k]) in
        `self.last_routing`.
      timeout: seconds per call (default: the client's).
    """

    def __init__(self, client, layer=None, *, return_router_logits=False, record_routing=False,
                 timeout="default"):
        super().__init__()
        self._owns_client = not isinstance(client, MoEClient)
        self.client = MoEClient(client) if self._owns_client else client
        # Set by replace_moe_blocks on blocks whose client it made from a target string, shared
        # with the other blocks of that target: close_remote_moe(model) closes it, close() not.
        self._client_made_by_replace = False
        self.layer = layer
        self.return_router_logits = return_router_logits
        self.record_routing = record_routing
        self.timeout = timeout
        self.last_routing = None
        self._warned_grad = False

    def forward(self, hidden_states):
        if not isinstance(hidden_states, torch.Tensor):
            raise TypeError(f"RemoteMoE takes a torch.Tensor, got {type(hidden_states).__name__}")
        if hidden_states.requires_grad and torch.is_grad_enabled() and not self._warned_grad:
            warnings.warn("RemoteMoE is inference-only: no gradient flows through the remote "
                          "MoE block (run under torch.inference_mode() or torch.no_grad())",
                          stacklevel=2)
            self._warned_grad = True
        result = self.client.forward(hidden_states, layer=self.layer,
                                     return_routing=self.record_routing, timeout=self.timeout)
        if self.record_routing:
            self.last_routing = result.routing
        if self.return_router_logits:
            return result.output, None
        return result.output

    def close(self):
        """Closes the client this block made from a target string (a shared one is left)."""
        if self._owns_client:
            self.client.close()

    def extra_repr(self):
        return f"target={self.client.target!r}, layer={self.layer}"


def replace_moe_blocks(model, client, **kwargs):
    """Replaces every MoE block of `model` with a RemoteMoE of the same layer, in place.

    client: one MoEClient or router target string for every layer (a router serving them all),
      or a mapping {layer: MoEClient or target} / a callable layer -> MoEClient or target when
      layers have routers of their own. A target string becomes one MoEClient shared by every
      block of that target. A layer the mapping lacks raises KeyError before anything is
      replaced.
    A block is a submodule named `...layers.<L>.block_sparse_moe` or `...layers.<L>.mlp` that has
    an `experts` attribute (dense MLPs have none, and stay local). return_router_logits is
    taken from the block replaced: its own `return_router_logits` attribute if it has one,
    else True for transformers' blocks that return a tuple (Mixtral, Qwen2/3-MoE, OLMoE);
    pass return_router_logits= to override. Returns the list of layers replaced.
    """
    if isinstance(client, (MoEClient, str)):
        def given(_):
            return client
    elif callable(client):
        given = client
    elif hasattr(client, "__getitem__"):
        given = client.__getitem__
    else:
        raise TypeError("client must be a MoEClient, a target string, a mapping or a callable, "
                        f"got {type(client).__name__}")
    by_target = {}

    def client_for(layer):
        chosen = given(layer)
        if isinstance(chosen, str):
            if chosen not in by_target:
                by_target[chosen] = MoEClient(chosen)
            return by_target[chosen]
        if not isinstance(chosen, MoEClient):
            raise TypeError(f"layer {layer}: expected a MoEClient or a target string, got "
                            f"{type(chosen).__name__}")
        return chosen

    found = []
    try:
        for name, module in model.named_modules():
            match = _BLOCK_NAME.search(name)
            if match and hasattr(module, "experts"):
                layer = int(match.group(1))
                found.append((name, layer, module, client_for(layer)))
    except BaseException:
        for made in by_target.values():  # nothing was replaced: the clients made here go too
            made.close()
        raise
    for name, layer, module, layer_client in found:
        options = dict(kwargs)
        if "return_router_logits" not in options:
            options["return_router_logits"] = bool(getattr(
                module, "return_router_logits", type(module).__name__ in _TUPLE_BLOCKS))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        remote = RemoteMoE(layer_client, layer, **options)
        remote._client_made_by_replace = any(layer_client is made for made in by_target.values())
        setattr(parent, child, remote)
    return [layer for _, layer, _, _ in found]


def close_remote_moe(model):
    """Closes the clients of `model`'s RemoteMoE blocks that were made from target strings (by
    replace_moe_blocks, shared by a target's blocks, or by a block itself), each once; clients the
    caller passed in are the caller's to close. The blocks cannot be called after. Returns how
    many such clients the model had (closing one again does nothing)."""
    closed = []
    for module in model.modules():
        if not isinstance(module, RemoteMoE):
            continue
        if (module._owns_client or module._client_made_by_replace) and not any(
                module.client is c for c in closed):
            module.client.close()
            closed.append(module.client)
    return len(closed)
