"""Shared checks for the tests."""

import tracemalloc

import numpy as np

REL_TOL = 1e-4


def as_float64(x):
    """A numpy float64 copy of a numpy array or torch tensor (any dtype, any device)."""
    if not isinstance(x, np.ndarray) and hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def row_rel_err(actual, expected):
    """Per-row ||actual - expected|| / ||expected|| of [..., d] arrays (torch or numpy)."""
    actual, expected = as_float64(actual), as_float64(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    d = actual.shape[-1]
    diff = np.linalg.norm((actual - expected).reshape(-1, d), axis=1)
    norm = np.linalg.norm(expected.reshape(-1, d), axis=1)
    return diff / np.maximum(norm, 1e-30)


def assert_rows_close(actual, expected, tol=REL_TOL):
    err = row_rel_err(actual, expected)
    assert err.max() <= tol, (f"max per-row relative error {err.max():.3g} > {tol} "
                              f"(row {err.argmax()})")
    return err.max()


def random_tokens(shape, seed):
    """Token rows of unit-ish scale (like normalised hidden states)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def peak_bytes_of(function):
    """The most memory Python and numpy held at once while `function` ran, above the start."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
