"""Measuring softgen against peer libraries (single thread), for `softgen bench` and benchmarks/.

Every number is elements per nanosecond (rows * n / median seconds), taken side by side in
one process so ratios are meaningful.  Peers are the libraries that happen to be installed:
numpy, scipy, torch, onnxruntime, jax, numba.
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import algorithms, api, ops
from .api import same_page_offset
from .dtypes import check_dtype, compute_dtype, ir_dtype
from .ops import Output, Rule, Term
from .timing import median_time

# What makes the peers run on one thread; read by their libraries when they load.
ONE_THREAD = {"OMP_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


# The six benchmark cases (benchmarks/peers.py runs them): in-cache small, medium and long rows, then 256 MB.
CASES = ((4096, 64), (1024, 1024), (64, 32768), (1, 1 << 20), (16, 1 << 22), (1, 1 << 26))
SOFTGEN_VARIANTS = algorithms.ALGORITHMS + ("auto",)


@dataclass(frozen=True)
class Result:
    name: str          # "numpy", "softgen:two_pass", ...
    el_per_ns: float   # elements per nanosecond, median of repeats
    seconds: float     # median seconds per call


def one_thread_environment() -> None:
    """Set ONE_THREAD in os.environ where unset.  peers() calls it before loading a peer;
    a program that imports peer libraries itself calls it first."""
    for key, value in ONE_THREAD.items():
        os.environ.setdefault(key, value)


# --- peers -------------------------------------------------------------------------

def _softplus_normalize(xp, param: dict, softplus):
    """v = softplus(scale * x)^power (softplus: the library's), v / sum v over the last axis,
    in place where the library allows."""
    scale, power = param["scale"], param["power"]

    def softplus_normalize(x):
        v = softplus(x * scale if scale != 1.0 else x)
        if power != 1.0:
            v **= power
        v /= v.sum(-1, keepdims=True) if xp is np else v.sum(-1, keepdim=True)
        return v
    return softplus_normalize


def _numpy(op: str):
    spec = ops.get(op)
    if spec.term is Term.SOFTPLUS_POW:   # logaddexp(0, z): numpy's one-ufunc stable softplus
        return _softplus_normalize(np, spec.param, lambda z: np.logaddexp(0, z))

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return e

    def log_softmax(x):
        d = x - x.max(axis=-1, keepdims=True)
        return d - np.log(np.exp(d).sum(axis=-1, keepdims=True))

    def logsumexp(x):
        m = x.max(axis=-1, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]

    return {Rule.SCALE: softmax, Rule.SHIFT: log_softmax, Rule.VALUE: logsumexp}[spec.rule]


def _peer_function(op: str, library: str):
    """The op's function in `library` (OpSpec.peers), imported; NotImplementedError where the
    library has none."""
    path = ops.get(op).peers.get(library)
    if path is None:
        raise NotImplementedError(f"{library} has no {op}")
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _scipy(op: str):
    fn = _peer_function(op, "scipy")
    return lambda x: fn(x, axis=-1)


def _torch(op: str):
    import torch
    torch.set_num_threads(1)
    fn = _peer_function(op, "torch")
    spec = ops.get(op)
    if spec.term is Term.SOFTPLUS_POW:   # fn is torch.nn.functional.softplus
        run = _softplus_normalize(torch, spec.param, fn)
        return lambda x: run(torch.from_numpy(x))
    return lambda x: fn(torch.from_numpy(x), dim=-1)


def _onnxruntime(op: str, threads: int = 1):
    """The op as a one-node ONNX model run by ONNX Runtime on `threads` threads."""
    import onnxruntime as ort
    from onnx import helper
    spec = ops.get(op)
    if "onnx" not in spec.peers:
        raise NotImplementedError(f"ONNX has no {spec.name} operator")
    sessions: dict = {}

    def model(shape, dtype):
        elem = helper.np_dtype_to_tensor_dtype(dtype)
        if spec.output is Output.VALUE:  # a reduction operator
            node = helper.make_node(spec.peers["onnx"], ["x"], ["y"], axes=[-1], keepdims=0)
        else:
            node = helper.make_node(spec.peers["onnx"], ["x"], ["y"], axis=-1)
        out_shape = list(spec.output_shape(*shape))
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, list(shape))],
                              [helper.make_tensor_value_info("y", elem, out_shape)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def run(x):
        key = (x.shape, x.dtype)
        if key not in sessions:
            sessions[key] = model(x.shape, x.dtype)
        return sessions[key].run(None, {"x": x})[0]
    return run


def _jax(op: str):
    import jax
    fn = _peer_function(op, "jax")
    f = jax.jit(lambda x: fn(x, axis=-1))
    return lambda x: f(x).block_until_ready()


def _numba(op: str):
    if ops.get(op).rule is not Rule.SCALE or ops.get(op).term is not Term.EXP:
        raise NotImplementedError("the numba peer is a softmax loop only")
    import math

    import numba

    @numba.njit(fastmath=False, cache=False)
    def kernel(x, y):
        for r in range(x.shape[0]):
            m = -np.inf
            for i in range(x.shape[1]):
                m = max(m, x[r, i])
            s = 0.0
            for i in range(x.shape[1]):
                e = math.exp(x[r, i] - m)
                y[r, i] = e
                s += e
            inv = 1.0 / s
            for i in range(x.shape[1]):
                y[r, i] *= inv

    def run(x):
        y = np.empty_like(x)
        kernel(x, y)
        return y
    return run


_PEERS = {"numpy": _numpy, "scipy": _scipy, "torch": _torch, "onnxruntime": _onnxruntime,
          "jax": _jax, "numba": _numba}


def peers(op: str = ops.SOFTMAX.name, names=None) -> dict[str, Callable[[np.ndarray], object]]:
    """{name: fn(x) -> y} for every installed peer (or those in `names`), one thread each.
    Each fn computes `op` over the last axis of a 2-D float32 array and allocates its output,
    like a user's call would."""
    one_thread_environment()
    found = {}
    for name, make in _PEERS.items():
        if names is not None and name not in names:
            continue
        try:
            found[name] = make(op)
        except (ImportError, NotImplementedError):
            continue
    return found


# --- one case ------------------------------------------------------------------------

def softgen_fn(op: str, variant: str, preallocated: np.ndarray | None = None, dtype="float32",
               out_dtype=None, threads: int = 1):
    """fn(x) -> y running softgen's `variant` through the public API (softgen.softmax(x,
    algorithm=variant) etc.): an algorithm (with the built-in schedule for the shape), or
    "auto", on `threads` threads (default one, as the peers).  With `preallocated` the
    output goes there (measures the kernel, not the allocator).  x holds `dtype`; out_dtype (default: dtype) is passed as the API's dtype=.
    NotImplementedError for an algorithm that does not exist for `op` and these dtypes."""
    if variant != "auto":
        storage = ir_dtype(dtype)
        output = storage if out_dtype is None else ir_dtype(out_dtype)
        algorithms.build(op, variant, storage, compute_dtype(storage, output), output)
    spec = ops.get(op)
    fn = functools.partial(getattr(api, spec.name), **spec.param)
    if out_dtype is not None:
        result = check_dtype(out_dtype)
        if preallocated is None:
            return lambda x: fn(x, algorithm=variant, dtype=result, threads=threads)
        return lambda x: fn(x, algorithm=variant, out=preallocated, dtype=result, threads=threads)
    if preallocated is None:
        return lambda x: fn(x, algorithm=variant, threads=threads)
    return lambda x: fn(x, algorithm=variant, out=preallocated, threads=threads)


def measure(op: str, shape: tuple[int, int], variants=SOFTGEN_VARIANTS, peer_fns=None,
            budget: float = 0.5, preallocate: bool = False, seed: int = 0, dtype="float32",
            out_dtype=None, threads: int = 1) -> list[Result]:
    """Time softgen `variants` and peers on one [rows, n] case of `dtype` (standard normal
    * 4), softgen writing `out_dtype` (default: dtype).

    peer_fns: {name: fn} as from peers(op); None means peers(op).  A variant that does not
    exist for `op` and the dtypes (three_pass_reload for log_softmax, or for 16-bit
    outputs) is skipped, and so is a peer that fails on the case's dtype (torch on
    bfloat16 arrays, say).  preallocate: softgen writes into one output array reused across
    calls, placed as softgen places the outputs it allocates (api.same_page_offset;
    benchmarks/aliasing.py shows why that is pinned down); peers always allocate.
    threads: softgen's (the peers run on one)."""
    rows, n = shape
    x_dtype = check_dtype(dtype)
    x = (np.random.default_rng(seed).standard_normal((rows, n)) * 4).astype(x_dtype)
    peer_fns = peers(op) if peer_fns is None else peer_fns
    results = []
    out_shape = ops.get(op).output_shape(rows, n)
    out = same_page_offset(x, out_shape, dtype=check_dtype(out_dtype or x_dtype)) if preallocate else None
    for variant in variants:
        try:
            fn = softgen_fn(op, variant, out, x_dtype, out_dtype, threads)
        except NotImplementedError:
            continue
        results.append(_result(f"softgen:{variant}", lambda: fn(x), x.size, budget))
    for name, fn in peer_fns.items():
        if x_dtype != np.float32:
            try:
                fn(x)
            except Exception:  # noqa: BLE001 - the peer does not take this dtype
                continue
        results.append(_result(name, lambda: fn(x), x.size, budget))
    return results


def _result(name: str, call, elements: int, budget: float) -> Result:
    t = median_time(call, budget)
    return Result(name, elements / t / 1e9, t)
