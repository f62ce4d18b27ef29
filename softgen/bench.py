"""Measuring softgen against peer libraries (single thread), for `softgen bench` and benchmarks/.

Every number is elements per nanosecond (rows * n / median seconds), taken side by side in
one process so ratios are meaningful.  Peers are the libraries that happen to be installed:
numpy, scipy, torch, onnxruntime, jax, numba.

The cases `softgen bench --op` times are one table here (case(), FAMILY): the registry's ops,
with the family's variant options (Options: --temperature, --sink, --where, unified_max's
--phi), and the family's entry points (softmax_backward, log_softmax_backward, cross_entropy,
topk_softmax), each with softgen's call and every peer's computing the same result on the
same inputs (benchmarks/family.py and topk.py time them too; tests/test_bench.py checks the
results agree).
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from . import algorithms, api, ops, topk
from .api import same_page_offset
from .cross_entropy import cross_entropy   # (softgen.cross_entropy is the function, not the module)
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


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def numpy_log_softmax(x):
    d = x - x.max(axis=-1, keepdims=True)
    return d - np.log(np.exp(d).sum(axis=-1, keepdims=True))


def numpy_logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def _numpy(op: str):
    spec = ops.get(op)
    if spec.term is Term.SOFTPLUS_POW:   # logaddexp(0, z): numpy's one-ufunc stable softplus
        return _softplus_normalize(np, spec.param, lambda z: np.logaddexp(0, z))
    return {Rule.SCALE: numpy_softmax, Rule.SHIFT: numpy_log_softmax, Rule.VALUE: numpy_logsumexp}[spec.rule]


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
    spec = ops.get(op)
    if "onnx" not in spec.peers:
        raise NotImplementedError(f"ONNX has no {spec.name} operator")
    call = _onnx_call([_onnx_op_node(spec, "x", "y")], ("x",), ("y",), {}, threads=threads)
    return lambda x: call({"x": x})


def _onnx_op_node(spec: ops.OpSpec, z: str, y: str):
    """The ONNX node computing the op over the last axis of `z` into `y`."""
    from onnx import helper
    if spec.output is Output.VALUE:  # a reduction operator
        return helper.make_node(spec.peers["onnx"], [z], [y], axes=[-1], keepdims=0)
    return helper.make_node(spec.peers["onnx"], [z], [y], axis=-1)


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
    return _installed(_PEERS, names, op)


def _installed(makers: dict, names, argument) -> dict:
    """{name: make(argument)} for the makers in `names` (None: all) whose library is
    installed and has the op (ImportError, NotImplementedError: left out), on one thread."""
    one_thread_environment()
    found = {}
    for name, make in makers.items():
        if names is not None and name not in names:
            continue
        try:
            found[name] = make(argument)
        except (ImportError, NotImplementedError):
            continue
    return found


# --- the cases of `softgen bench --op`: the registry's ops (with the family's variant options)
#     and the family's own entry points, each with softgen's call and its peers' -------------

Inputs = dict   # {name: array}: x (maybe viewed as [batches, q, n]) and what the calls take besides it
Call = Callable[[Inputs], object]


@dataclass(frozen=True)
class Options:
    """`softgen bench`'s variant options; None / False: not asked for."""
    temperature: float | None = None   # op(x / T)
    sink: bool = False                 # a zero sink per row (softmax1)
    where: str | None = None           # a key of MASKS
    phi: float | None = None           # unified_max's phi; None: learned (softgen.LearnedPhi)
    k: int | None = None               # topk_softmax's k (default TOPK_K)
    order: str | None = None           # topk_softmax's order (default topk_then_softmax)

    def given(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name) not in (None, False))

    def describe(self) -> str:
        """'temperature=0.7 sink' for the given options ('' for none)."""
        return " ".join(name if getattr(self, name) is True else f"{name}={getattr(self, name)}"
                        for name in self.given())


NO_OPTIONS = Options()
LOGIT_OPTIONS = frozenset({"temperature", "sink", "where", "phi"})   # the API's variant keywords
TOPK_K = 2


@dataclass(frozen=True)
class Case:
    """One `softgen bench --op` case.  inputs(x, options) makes the arrays the calls take,
    once per x, of a shape check(shape, options) accepts; softgen(options, variant, inputs,
    preallocate, out_dtype, threads) and each peers[library](options) give a Call on them
    (a maker raises ImportError or NotImplementedError where the library has none).
    algorithms: the variants --algorithm may pick; `all` times those that take no operand
    of their own (unified_max's phi)."""
    name: str
    takes: frozenset          # the Options fields it accepts
    inputs: Callable[[np.ndarray, Options], Inputs]
    softgen: Callable[..., Call]
    peers: dict
    algorithms: tuple[str, ...] = ("auto",)
    check: Callable[[tuple[int, int], Options], None] = lambda shape, options: None   # ValueError: no such case

    def variants(self, algorithm: str, options: Options = None) -> tuple[str, ...]:
        """The softgen variants `--algorithm algorithm` times (ValueError where it does not apply)."""
        if algorithm == "all":
            chosen = tuple(v for v in self.algorithms if v not in algorithms.OWN_OPERANDS)
        elif algorithm in self.algorithms:
            chosen = (algorithm,)
        else:
            raise ValueError(f"{self.name} runs softgen's {', '.join(self.algorithms)}, not --algorithm {algorithm}")
        if options and options.phi is not None and not any(_takes_phi(v) for v in chosen):
            raise ValueError("--phi is unified_max's: give --algorithm unified_max too")
        return chosen


def _takes_phi(variant: str) -> bool:
    return algorithms.PHI in algorithms.OWN_OPERANDS.get(variant, ())


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def case(op, options: Options = None) -> Case:
    """The case of `op` (a name in FAMILY, or a registry op: its name or OpSpec), checked
    against `options` (ValueError naming those it does not take)."""
    found = FAMILY[op] if isinstance(op, str) and op in FAMILY else _registry_case(ops.get(op))
    extra = [name for name in (options or NO_OPTIONS).given() if name not in found.takes]
    if extra:
        takes = ", ".join(map(_flag, sorted(found.takes))) or "none"
        raise ValueError(f"{found.name} takes no {', '.join(map(_flag, extra))} (its options: {takes})")
    return found


def case_peers(op, options: Options = None, names=None) -> dict[str, Call]:
    """{name: call(inputs)} for every installed peer of the case (or those in `names`), one
    thread each, computing what softgen's call does."""
    options = options or NO_OPTIONS
    return _installed(case(op, options).peers, names, options)


# --- the registry's ops with the variant options ---------------------------------------------

def _causal(rows: int, n: int) -> np.ndarray:
    """np.tri(q, n, n - q), q = min(rows, n): the last q queries of causal attention over n
    keys (rows == n: the square mask), x taken as [rows / q, q, n] scores under it."""
    q = min(rows, n)
    return np.tri(q, n, n - q, dtype=bool)


def _check_causal(rows: int, n: int) -> None:
    if rows % min(rows, n):
        raise ValueError(f"--where causal takes x as [rows/q, q, n] scores under one causal [q, n] mask "
                         f"(q = min(rows, n)): rows {rows} is not a multiple of n {n}")


def _random_mask(rows: int, n: int) -> np.ndarray:
    """Each element kept with probability 1/2, each row's first always (no empty rows, where
    numpy's way gives NaN and softgen 0)."""
    keep = np.random.default_rng(1).random((rows, n)) < 0.5
    keep[:, 0] = True
    return keep


MASKS = {"causal": _causal, "random": _random_mask}
_MASK_CHECKS = {"causal": _check_causal}   # the shapes a mask takes, checked before it is made


def _check_logits(shape: tuple[int, int], options: Options) -> None:
    _MASK_CHECKS.get(options.where, lambda rows, n: None)(*shape)


def _logit_inputs(x: np.ndarray, options: Options) -> Inputs:
    """x (viewed as [-1, *mask.shape] under a mask, which then broadcasts over the first
    axis) with the where= mask and the sink the options ask for."""
    inputs = {"x": x}
    if options.where:
        mask = MASKS[options.where](*x.shape)
        inputs = {"x": x.reshape((-1,) + mask.shape), "where": mask}
    if options.sink:
        inputs["sink"] = np.zeros(inputs["x"].shape[:-1], x.dtype)
    return inputs


def _shapes_logits(options: Options) -> bool:
    """True where the peers must mask, extend or scale x before the op (phi changes no result)."""
    return bool(options.temperature or options.sink or options.where)


def _registry_softgen(spec: ops.OpSpec):
    def make(options, variant, inputs, preallocate=False, out_dtype=None, threads=1) -> Call:
        x, keywords = inputs["x"], {}
        if options.temperature is not None:
            keywords["temperature"] = options.temperature
        if _takes_phi(variant):
            keywords["phi"] = api.LearnedPhi() if options.phi is None else options.phi
        out = None
        if preallocate:   # placed as softgen places its own outputs (api.same_page_offset)
            shape = x.shape[:-1] if spec.row_output else x.shape
            out = same_page_offset(x, shape, dtype=check_dtype(out_dtype or x.dtype))
        fn = softgen_fn(spec, variant, out, x.dtype, out_dtype, threads, **keywords)
        operands = [name for name in ("where", "sink") if name in inputs]
        if not operands:
            return lambda a: fn(a["x"])
        return lambda a: fn(a["x"], **{name: a[name] for name in operands})
    return make


@dataclass(frozen=True)
class _Library:
    """How a peer library does the steps before the op: its array from numpy's, z with -inf
    where the mask is False, z with one more column."""
    array: Callable
    masked: Callable
    append: Callable


_NUMPY = _Library(lambda a: a, lambda z, keep: np.where(keep, z, z.dtype.type(-np.inf)),
                  lambda z, column: np.concatenate([z, column[..., None]], -1))


def _torch_library(torch) -> _Library:
    return _Library(torch.from_numpy, lambda z, keep: z.masked_fill(~keep, float("-inf")),
                    lambda z, column: torch.cat([z, column[..., None]], -1))


def _logits_then(library: _Library, op_fn, spec: ops.OpSpec, options: Options) -> Call:
    """op_fn on x masked, extended by the sink and divided by T as the options ask (the
    sink's output dropped): what softgen's variant computes (its sink is scaled by 1 / T too)."""
    t = options.temperature
    drop_sink = not spec.row_output

    def call(a):
        z = library.array(a["x"])
        if "where" in a:
            z = library.masked(z, library.array(a["where"]))
        if "sink" in a:
            z = library.append(z, library.array(a["sink"]))
        if t is not None:
            z = z / t
        y = op_fn(z)
        return y[..., :-1] if "sink" in a and drop_sink else y
    return call


def _numpy_variant(spec: ops.OpSpec, options: Options) -> Call:
    return _logits_then(_NUMPY, _numpy(spec), spec, options)


def _torch_variant(spec: ops.OpSpec, options: Options) -> Call:
    import torch
    torch.set_num_threads(1)
    fn = _peer_function(spec, "torch")
    return _logits_then(_torch_library(torch), lambda z: fn(z, dim=-1), spec, options)


def _onnx_variant(spec: ops.OpSpec, options: Options) -> Call:
    """The op after Where (the mask a graph input), Concat (the sink) and Div (by T), then
    Slice (the sink's output dropped)."""
    from onnx import helper
    if "onnx" not in spec.peers:
        raise NotImplementedError(f"ONNX has no {spec.name} operator")
    nodes, feeds, constants, z = [], ["x"], {"last": [-1], "zero": [0]}, "x"
    if options.where:
        nodes.append(helper.make_node("Where", ["where", z, "neg_inf"], ["masked"]))
        feeds, constants["neg_inf"], z = feeds + ["where"], -np.inf, "masked"
    if options.sink:
        nodes += [helper.make_node("Unsqueeze", ["sink", "last"], ["sink_column"]),
                  helper.make_node("Concat", [z, "sink_column"], ["extended"], axis=-1)]
        feeds, z = feeds + ["sink"], "extended"
    if options.temperature is not None:
        nodes.append(helper.make_node("Div", [z, "t"], ["scaled"]))
        constants["t"], z = float(options.temperature), "scaled"
    drop_sink = options.sink and not spec.row_output
    nodes.append(_onnx_op_node(spec, z, "full" if drop_sink else "y"))
    if drop_sink:
        nodes.append(helper.make_node("Slice", ["full", "zero", "last", "last"], ["y"]))
    used = {name for node in nodes for name in node.input}   # (ORT warns of unused initializers)
    return _onnx_call(nodes, tuple(feeds), ("y",), {k: v for k, v in constants.items() if k in used})


_VARIANT_PEERS = {"numpy": _numpy_variant, "torch": _torch_variant, "onnxruntime": _onnx_variant}


def _registry_peer(spec: ops.OpSpec, library: str):
    def make(options: Options) -> Call:
        if _shapes_logits(options):
            if library not in _VARIANT_PEERS:
                raise NotImplementedError(f"{library}: no masked, extended or scaled {spec.name} here")
            return _VARIANT_PEERS[library](spec, options)
        fn = _PEERS[library](spec)
        return lambda a: fn(a["x"])
    return make


def _registry_case(spec: ops.OpSpec) -> Case:
    # an op with kernel parameters (softplus_normalize) has an entry taking only those
    return Case(spec.name, frozenset() if spec.params else LOGIT_OPTIONS, _logit_inputs, _registry_softgen(spec),
                {library: _registry_peer(spec, library) for library in _PEERS},
                SOFTGEN_VARIANTS + tuple(algorithms.OWN_OPERANDS), _check_logits)


# --- ONNX graphs -------------------------------------------------------------------------------

def _onnx_call(nodes: list, feeds: tuple[str, ...], outputs: tuple[str, ...], constants: dict,
               integer_outputs: tuple[str, ...] = (), threads: int = 1) -> Call:
    """call(a): the ONNX graph of `nodes` (opset 13) on a[name] for name in feeds, run by ONNX
    Runtime on `threads` threads, a session per shapes; its output, or a tuple of them.
    constants: {name: value}, a float in x's (the first feed's) dtype, else int64."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    sessions: dict = {}

    def session(a):
        dtype = a[feeds[0]].dtype
        elem = helper.np_dtype_to_tensor_dtype(dtype)
        inputs = [helper.make_tensor_value_info(f, helper.np_dtype_to_tensor_dtype(a[f].dtype), list(a[f].shape))
                  for f in feeds]
        outs = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(np.int64))
                                              if o in integer_outputs else elem, None) for o in outputs]
        init = [numpy_helper.from_array(np.asarray(v, dtype if isinstance(v, float) else np.int64), name)
                for name, v in constants.items()]
        graph = helper.make_graph(nodes, "g", inputs, outs, initializer=init)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def call(a):
        key = tuple((a[f].shape, a[f].dtype) for f in feeds)
        if key not in sessions:
            sessions[key] = session(a)
        y = sessions[key].run(None, {f: a[f] for f in feeds})
        return y[0] if len(y) == 1 else tuple(y)
    return call


# --- the family's own entry points -------------------------------------------------------------

def _own_choice(name: str, make):
    """A family case's softgen maker, make(options, threads) -> Call: the entry point's own
    algorithm, its output allocated as a user's call does and in x's dtype."""
    def softgen(options, variant, inputs, preallocate=False, out_dtype=None, threads=1) -> Call:
        if out_dtype is not None:
            raise ValueError(f"{name} writes x's dtype: it takes no --out-dtype")
        return make(options, threads)
    return softgen


def _torch_peer(make_call):
    """A peer maker from make_call(torch, options) -> Call, torch on one thread."""
    def make(options: Options) -> Call:
        import torch
        torch.set_num_threads(1)
        return make_call(torch, options)
    return make


def _onnx_peer(graph):
    """A peer maker from graph(helper, options) -> _onnx_call's arguments."""
    def make(options: Options) -> Call:
        from onnx import helper
        return _onnx_call(*graph(helper, options))
    return make


def _backward_inputs(forward):
    """y = forward(x) and a standard normal dy of x's shape."""
    def inputs(x: np.ndarray, options: Options) -> Inputs:
        dy = np.random.default_rng(2).standard_normal(x.shape).astype(x.dtype)
        return {"y": forward(x).astype(x.dtype, copy=False), "dy": dy}
    return inputs


def _softmax_backward_graph(helper, options):
    """dx = y * (dy - sum(dy * y)): ONNX has no SoftmaxGrad (ORT's is internal), so its ops."""
    nodes = [helper.make_node("Mul", ["dy", "y"], ["product"]),
             helper.make_node("ReduceSum", ["product", "last"], ["total"], keepdims=1),
             helper.make_node("Sub", ["dy", "total"], ["centred"]),
             helper.make_node("Mul", ["y", "centred"], ["dx"])]
    return nodes, ("y", "dy"), ("dx",), {"last": [-1]}


def _log_softmax_backward_graph(helper, options):
    """dx = dy - exp(y) * sum(dy), in ONNX's ops (no LogSoftmaxGrad either)."""
    nodes = [helper.make_node("Exp", ["y"], ["p"]),
             helper.make_node("ReduceSum", ["dy", "last"], ["total"], keepdims=1),
             helper.make_node("Mul", ["p", "total"], ["spread"]),
             helper.make_node("Sub", ["dy", "spread"], ["dx"])]
    return nodes, ("y", "dy"), ("dx",), {"last": [-1]}


def _labels_inputs(x: np.ndarray, options: Options) -> Inputs:
    """x and a random label per row."""
    return {"x": x, "labels": np.random.default_rng(1).integers(0, x.shape[1], x.shape[0])}


def _numpy_cross_entropy(a) -> np.floating:
    """The mean over rows of logsumexp(x) - x[label]."""
    x, labels = a["x"], a["labels"]
    return np.mean(numpy_logsumexp(x) - x[np.arange(x.shape[0]), labels])


def _cross_entropy_graph(helper, options):
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "labels"], ["loss"], reduction="mean")
    return [node], ("x", "labels"), ("loss",), {}


def _topk_arguments(options: Options) -> tuple:
    """(k, order, temperature) with their defaults."""
    return options.k or TOPK_K, algorithms.Order(options.order or algorithms.Order.TOPK_THEN_SOFTMAX.value), \
        options.temperature


def _check_topk(shape: tuple[int, int], options: Options) -> None:
    k = _topk_arguments(options)[0]
    if k > shape[1]:
        raise ValueError(f"--k {k} is more than a row's {shape[1]} elements")


def numpy_topk(x: np.ndarray, k: int):
    """(values, indices) of the k largest along the last axis, best first."""
    part = np.argpartition(-x, k - 1, axis=-1)[..., :k]
    v = np.take_along_axis(x, part, -1)
    order = np.argsort(-v, axis=-1, kind="stable")
    return np.take_along_axis(v, order, -1), np.take_along_axis(part, order, -1)


def _numpy_topk_softmax(options: Options) -> Call:
    k, order, t = _topk_arguments(options)

    def topk_then_softmax(z):
        v, i = numpy_topk(z, k)
        return numpy_softmax(v), i
    gate = {algorithms.Order.TOPK_THEN_SOFTMAX: topk_then_softmax,
            algorithms.Order.SOFTMAX_THEN_TOPK: lambda z: numpy_topk(numpy_softmax(z), k)}[order]
    return lambda a: gate(a["x"] if t is None else a["x"] / t)


def _torch_topk_softmax(torch, options: Options) -> Call:
    k, order, t = _topk_arguments(options)

    def topk_then_softmax(z):
        v, i = torch.topk(z, k, -1)
        return torch.softmax(v, -1), i
    gate = {algorithms.Order.TOPK_THEN_SOFTMAX: topk_then_softmax,
            algorithms.Order.SOFTMAX_THEN_TOPK: lambda z: tuple(torch.topk(torch.softmax(z, -1), k, -1))}[order]
    return lambda a: gate(torch.from_numpy(a["x"]) if t is None else torch.from_numpy(a["x"]) / t)


def _topk_softmax_graph(helper, options):
    """TopK then Softmax, or Softmax then TopK, after a Div by T where asked."""
    k, order, t = _topk_arguments(options)
    nodes, constants, z = [], {"k": [k]}, "x"
    if t is not None:
        nodes.append(helper.make_node("Div", ["x", "t"], ["scaled"]))
        constants["t"], z = float(t), "scaled"
    if order is algorithms.Order.TOPK_THEN_SOFTMAX:
        nodes += [helper.make_node("TopK", [z, "k"], ["values", "indices"], axis=-1),
                  helper.make_node("Softmax", ["values"], ["weights"], axis=-1)]
    else:
        nodes += [helper.make_node("Softmax", [z], ["p"], axis=-1),
                  helper.make_node("TopK", ["p", "k"], ["weights", "indices"], axis=-1)]
    return nodes, ("x",), ("weights", "indices"), constants, ("indices",)


def _torch_backward(torch, backward_data) -> Call:
    """torch's backward kernel of (log_)softmax, torch._(log_)softmax_backward_data(dy, y, dim, dtype)."""
    def call(a):
        y = torch.from_numpy(a["y"])
        return backward_data(torch.from_numpy(a["dy"]), y, -1, y.dtype)
    return call


FAMILY = {c.name: c for c in (
    Case("softmax_backward", frozenset(), _backward_inputs(numpy_softmax),
         _own_choice("softmax_backward",
                     lambda o, threads: lambda a: api.softmax_backward(a["y"], a["dy"], threads=threads)),
         {"numpy": lambda o: lambda a: a["y"] * (a["dy"] - (a["dy"] * a["y"]).sum(-1, keepdims=True)),
          "torch": _torch_peer(lambda torch, o: _torch_backward(torch, torch._softmax_backward_data)),
          "onnxruntime": _onnx_peer(_softmax_backward_graph)}),
    Case("log_softmax_backward", frozenset(), _backward_inputs(numpy_log_softmax),
         _own_choice("log_softmax_backward",
                     lambda o, threads: lambda a: api.log_softmax_backward(a["y"], a["dy"], threads=threads)),
         {"numpy": lambda o: lambda a: a["dy"] - np.exp(a["y"]) * a["dy"].sum(-1, keepdims=True),
          "torch": _torch_peer(lambda torch, o: _torch_backward(torch, torch._log_softmax_backward_data)),
          "onnxruntime": _onnx_peer(_log_softmax_backward_graph)}),
    Case("cross_entropy", frozenset(), _labels_inputs,
         _own_choice("cross_entropy", lambda o, threads: lambda a: cross_entropy(
             a["x"], a["labels"], reduction="mean", threads=threads)),
         {"numpy": lambda o: _numpy_cross_entropy,
          "torch": _torch_peer(lambda torch, o: lambda a: torch.nn.functional.cross_entropy(
              torch.from_numpy(a["x"]), torch.from_numpy(a["labels"]))),
          "onnxruntime": _onnx_peer(_cross_entropy_graph)}),
    Case("topk_softmax", frozenset({"k", "order", "temperature"}), lambda x, options: {"x": x},
         _own_choice("topk_softmax", lambda o, threads: _softgen_topk_softmax(o, threads)),
         {"numpy": _numpy_topk_softmax, "torch": _torch_peer(_torch_topk_softmax),
          "onnxruntime": _onnx_peer(_topk_softmax_graph)}, check=_check_topk),
)}


def _softgen_topk_softmax(options: Options, threads: int) -> Call:
    k, order, t = _topk_arguments(options)
    return lambda a: topk.topk_softmax(a["x"], k, order=order.value, temperature=1.0 if t is None else t,
                                       threads=threads)


# --- one case ------------------------------------------------------------------------

def softgen_fn(op: str, variant: str, preallocated: np.ndarray | None = None, dtype="float32",
               out_dtype=None, threads: int = 1, **keywords):
    """fn(x, ...) -> y running softgen's `variant` through the public API (softgen.softmax(x,
    algorithm=variant) etc.): an algorithm (with the built-in schedule for the shape), or
    "auto", on `threads` threads (default one, as the peers).  With `preallocated` the
    output goes there (measures the kernel, not the allocator).  x holds `dtype`; out_dtype
    (default: dtype) is passed as the API's dtype=; keywords (temperature=, phi=) as they are.
    NotImplementedError for an algorithm that does not exist for `op` and these dtypes."""
    if variant != "auto":
        storage = ir_dtype(dtype)
        output = storage if out_dtype is None else ir_dtype(out_dtype)
        algorithms.build(op, variant, storage, compute_dtype(storage, output), output)
    spec = ops.get(op)
    keywords.update(spec.param, algorithm=variant, threads=threads)
    if preallocated is not None:
        keywords["out"] = preallocated
    if out_dtype is not None:
        keywords["dtype"] = check_dtype(out_dtype)
    return functools.partial(getattr(api, spec.name), **keywords)


def softgen_calls(found: Case, options: Options, inputs: Inputs, variants=None, preallocate: bool = False,
                  out_dtype=None, threads: int = 1) -> dict[str, Callable[[], object]]:
    """{"softgen:<variant>": fn()}: softgen's call of each variant (default: the case's
    `all`) on `inputs`, leaving out those that do not exist for the op and dtypes."""
    calls = {}
    for variant in found.variants("all") if variants is None else variants:
        try:
            call = found.softgen(options, variant, inputs, preallocate, out_dtype, threads)
        except NotImplementedError:
            continue
        calls[f"softgen:{variant}"] = functools.partial(call, inputs)
    return calls


def bound_calls(op, x: np.ndarray, options: Options = None, variants=None, peers=None, preallocate: bool = False,
                threads: int = 1) -> dict[str, Callable[[], object]]:
    """{"softgen:<variant>": fn(), peer: fn()}: the case's calls on x, its inputs made once
    (benchmarks/ time them so); peers: the names to take (default: every installed one)."""
    options = options or NO_OPTIONS
    found = case(op, options)
    found.check(x.shape, options)
    inputs = found.inputs(x, options)
    calls = softgen_calls(found, options, inputs, variants, preallocate, threads=threads)
    calls.update({name: functools.partial(fn, inputs) for name, fn in case_peers(op, options, peers).items()})
    return calls


def measure(op, shape: tuple[int, int], variants=None, peer_fns=None, budget: float = 0.5,
            preallocate: bool = False, seed: int = 0, dtype="float32", out_dtype=None, threads: int = 1,
            options: Options = None) -> list[Result]:
    """Time softgen `variants` (default: the case's `all`) and peers on one [rows, n] case of
    `dtype` (standard normal * 4), softgen writing `out_dtype` (default: dtype).

    op: a registry op or a FAMILY case, with the variant `options` (Options) it takes.
    peer_fns: {name: call(inputs)} as from case_peers(op, options); None means
    case_peers(op, options).  A variant that does not exist for `op` and the dtypes
    (three_pass_reload for log_softmax, or for 16-bit outputs) is skipped, and so is a peer
    that fails on the case's dtype (torch on bfloat16 arrays, say).  preallocate: softgen
    writes into one output array reused across calls, placed as softgen places the outputs
    it allocates (api.same_page_offset; benchmarks/aliasing.py shows why that is pinned
    down), the registry's ops only (the family's entry points allocate as a user's call
    does); peers always allocate.  threads: softgen's (the peers run on one)."""
    rows, n = shape
    x_dtype = check_dtype(dtype)
    x = (np.random.default_rng(seed).standard_normal((rows, n)) * 4).astype(x_dtype)
    options = options or NO_OPTIONS
    found = case(op, options)
    found.check(shape, options)
    inputs = found.inputs(x, options)
    peer_fns = case_peers(op, options) if peer_fns is None else peer_fns
    results = [_result(name, fn, x.size, budget)
               for name, fn in softgen_calls(found, options, inputs, variants, preallocate, out_dtype,
                                             threads).items()]
    for name, fn in peer_fns.items():
        if x_dtype != np.float32:
            try:
                fn(inputs)
            except Exception:  # noqa: BLE001 - the peer does not take this dtype
                continue
        results.append(_result(name, functools.partial(fn, inputs), x.size, budget))
    return results


def _result(name: str, call, elements: int, budget: float) -> Result:
    t = median_time(call, budget)
    return Result(name, elements / t / 1e9, t)
