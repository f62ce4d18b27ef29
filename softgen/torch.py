"""softgen's ops in PyTorch (`pip install 'softgen[torch]'`): importing this module
registers torch.ops.softgen.softmax, .log_softmax and .logsumexp(x, dim=-1) as custom ops
on CPU tensors, with a fake (meta) implementation for torch.compile and an analytic
gradient made of torch ops (so double backward works too).

    import torch, softgen.torch
    y = softgen.torch.softmax(x, dim=-1)          # or torch.ops.softgen.softmax(x, -1)

x: a CPU tensor of float32, float64, float16 or bfloat16 (bfloat16 needs ml_dtypes); the
result, a new contiguous tensor, has x's dtype, as torch.softmax's.  Data goes in and out
through numpy without a copy: softgen reads x where it lies (any strides) and writes into
the result's memory.
"""
# No `from __future__ import annotations`: torch.library reads the ops' schemas from their
# annotations, which must be types, not strings.
from typing import Callable

import numpy as np
import torch  # the PyTorch package (absolute import), not this module

from . import api
from .dtypes import check_dtype

__all__ = ["log_softmax", "logsumexp", "softmax"]

_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16)


def _check(x: torch.Tensor, dim: int) -> None:
    """What softgen would refuse, refused before it runs: the same errors from the fake
    (torch.compile's tracing) as from the op."""
    if x.dtype not in (*_NUMPY_DTYPES, torch.bfloat16):
        raise TypeError(f"softgen's torch ops take float32, float64, float16 or bfloat16 tensors, not {x.dtype}")
    if x.dim() == 0 or not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim {dim} is out of range for a tensor of {x.dim()} dimension(s)")


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    """x's memory as an array (no copy; writing to the array writes to x)."""
    if x.device.type != "cpu":
        raise ValueError(f"softgen runs on the CPU; x is on {x.device}")
    x = x.detach()
    if x.dtype == torch.bfloat16:   # numpy has no bfloat16: the same bits as ml_dtypes'
        return x.view(torch.int16).numpy().view(check_dtype("bfloat16"))
    return x.numpy()


def _reduced_shape(x: torch.Tensor, dim: int) -> list[int]:
    shape = list(x.shape)
    del shape[dim]
    return shape


def _register(name: str, run: Callable, result_shape: Callable, backward: Callable, save_input: bool):
    """softgen::<name>(x, dim=-1) as a custom op: `run` (softgen's numpy op) on CPU tensors,
    a fake of result_shape(x, dim), and as its gradient backward(grad, [x,] result, dim)
    (x saved for it only if save_input)."""

    def new_result(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Contiguous, whatever x's layout: the op's and the fake's alike, as torch.compile needs."""
        _check(x, dim)
        return x.new_empty(result_shape(x, dim))

    @torch.library.custom_op(f"softgen::{name}", mutates_args=(), device_types="cpu")
    def op(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        y = new_result(x, dim)
        run(_as_numpy(x), axis=dim, out=_as_numpy(y))   # softgen writes into y's memory
        return y

    op.register_fake(new_result)

    def setup_context(ctx, inputs, output):
        x, ctx.dim = inputs
        ctx.save_for_backward(*((x, output) if save_input else (output,)))

    def gradient(ctx, grad):
        return backward(grad, *ctx.saved_tensors, ctx.dim), None

    op.register_autograd(gradient, setup_context=setup_context)
    op.__doc__ = f"softgen.{name} of a CPU tensor over `dim` (a torch custom op: torch.ops.softgen.{name})."
    return op


# The analytic gradients (y: the result, g: the gradient arriving at it)
def _softmax_backward(g, y, dim):
    return y * (g - (g * y).sum(dim, keepdim=True))


def _log_softmax_backward(g, y, dim):
    return g - y.exp() * g.sum(dim, keepdim=True)


def _logsumexp_backward(g, x, lse, dim):
    return g.unsqueeze(dim) * (x - lse.unsqueeze(dim)).exp()


softmax = _register("softmax", api.softmax, lambda x, dim: x.shape, _softmax_backward, save_input=False)
log_softmax = _register("log_softmax", api.log_softmax, lambda x, dim: x.shape, _log_softmax_backward,
                        save_input=False)
logsumexp = _register("logsumexp", api.logsumexp, _reduced_shape, _logsumexp_backward, save_input=True)
