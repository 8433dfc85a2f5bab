"""Conversion between user tensors (numpy arrays, torch tensors, nested lists) and the wire's
[num_tokens, d_model] float32 rows, and back to the caller's type, shape, dtype and device."""

import sys

import numpy as np


def _is_torch(obj):
    torch = sys.modules.get("torch")  # never import torch for a numpy caller
    return torch is not None and isinstance(obj, torch.Tensor)


class Converted:
    """The float32 rows sent on the wire and what is needed to give results back in kind."""

    def __init__(self, rows, kind, shape, dtype, device=None):
        self.rows = rows        # np.ndarray float32 [T, d], C-contiguous
        self.kind = kind        # "torch" or "numpy"
        self.shape = shape      # the caller's shape; the output gets the same
        self.dtype = dtype      # the caller's floating dtype; the output gets the same
        self.device = device    # torch only

    def output(self, rows):
        """`rows` [T, d] float32 in the caller's kind, shape, dtype (and device)."""
        rows = rows.reshape(self.shape)
        if self.kind == "torch":
            import torch
            return torch.from_numpy(rows).to(device=self.device, dtype=self.dtype)
        return rows.astype(self.dtype, copy=False)

    def index_array(self, array):
        """Routing arrays ([T, k] experts or weights) in the caller's kind (on the CPU)."""
        if self.kind == "torch":
            import torch
            return torch.from_numpy(array)
        return array


def _row_shape(shape):
    """[T, d] for a caller's [d], [T, d] or [..., d] (explicit sizes: -1 fails on empty input)."""
    if len(shape) == 0:
        raise ValueError("tokens must have at least one dimension ([d_model] or [..., d_model]), "
                         "got a scalar")
    return (int(np.prod(shape[:-1], dtype=np.int64)), int(shape[-1]))


def to_rows(tokens):
    """Converts `tokens` ([d], [T, d] or [..., d]; numpy, torch or lists) into Converted.

    Floating dtypes (float16, bfloat16, float32, float64) are sent as float32 and the output is
    given back in the input's dtype. Integer, boolean and complex inputs are refused: they are
    not hidden states (token ids go through the embedding first).
    """
    if _is_torch(tokens):
        import torch
        if not tokens.is_floating_point():
            raise TypeError(f"tokens must be a floating-point tensor of hidden states, got "
                            f"{tokens.dtype} (token ids go through the embedding first)")
        shape = tuple(tokens.shape)
        row_shape = _row_shape(shape)
        host = tokens.detach().to(device="cpu", dtype=torch.float32)
        rows = np.ascontiguousarray(host.reshape(row_shape).numpy())
        return Converted(rows, "torch", shape, tokens.dtype, tokens.device)
    array = np.asarray(tokens)
    if array.dtype == object:
        raise TypeError("tokens must be a numeric array of hidden states; got ragged or "
                        "non-numeric input")
    if array.dtype.kind in "iub":
        raise TypeError(f"tokens must be floating point hidden states, got {array.dtype} "
                        "(token ids go through the embedding first)")
    if array.dtype.kind != "f":
        raise TypeError(f"tokens must be real floating point, got {array.dtype}")
    out_dtype = array.dtype if isinstance(tokens, np.ndarray) else np.dtype(np.float32)
    rows = np.ascontiguousarray(array.reshape(_row_shape(array.shape)), dtype=np.float32)
    return Converted(rows, "numpy", array.shape, out_dtype)
