"""The Python API: softmax / log_softmax / logsumexp on numpy arrays, each running the
kernel chosen for the array's shape (softgen.tune); compile() for one kernel."""
from __future__ import annotations

import numpy as np

from . import algorithms, ops, tune
from .runtime import _F32, Kernel, _as_input, _normalize_axis, _run, compile
from .runtime import OUTPUT_DELTA, PAGE, same_page_offset  # noqa: F401  (api's names before runtime.py)


def choose_algorithm(op: str, n: int, rows: int = 1) -> str:
    """The algorithm `algorithm="auto"` runs for [rows, n] (see softgen.tune.choose)."""
    return tune.choose(op, rows, n).algorithm


_kernels: dict = {}  # (op, algorithm, rows, n, tuning generation) -> Kernel: the per-call lookup


def _kernel_for(op: str, algorithm: str, arr: np.ndarray, ax: int) -> Kernel:
    n = arr.shape[ax]
    rows = arr.size // n if n else 0
    key = (op, algorithm, rows, n, tune.generation)
    kernel = _kernels.get(key)
    if kernel is None:
        choice = tune.resolve(op, algorithm, rows, n)
        kernel = compile(op, algorithm=choice.algorithm, schedule=choice.schedule)
        if len(_kernels) > 4096:  # many distinct shapes: start over rather than grow
            _kernels.clear()
        _kernels[key] = kernel
    return kernel


def _op_entry(spec: ops.OpSpec):
    op = spec.name

    def run(x, axis: int = -1, *, algorithm: str = "auto", out=None):
        if type(x) is np.ndarray and x.dtype is _F32 and x.ndim and type(axis) is int and -x.ndim <= axis < x.ndim:
            arr, ax = x, axis % x.ndim
        else:
            arr = _as_input(x)
            ax = _normalize_axis(axis, arr.ndim)
        return _run(_kernel_for(op, algorithm, arr, ax), arr, ax, out)
    run.__name__ = op
    run.__doc__ = (f"{op} of a float32 array along `axis` (numpy semantics).\n\n"
                   f"algorithm: 'auto' or one of {', '.join(algorithms.ALGORITHMS)}; "
                   f"out: a float32 array of the result's shape (may be x itself).")
    return run


softmax = _op_entry(ops.SOFTMAX)
log_softmax = _op_entry(ops.LOG_SOFTMAX)
logsumexp = _op_entry(ops.LOGSUMEXP)
