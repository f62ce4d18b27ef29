"""The Python API: softmax / log_softmax / logsumexp on numpy arrays, each running the
kernel chosen for the array's shape and dtypes (softgen.tune); compile() for one kernel."""
from __future__ import annotations

import inspect
import math
from dataclasses import replace

import numpy as np

from . import algorithms, masks, ops, tune
from .dtypes import DTYPES, check_dtype
from .runtime import NATIVE_DTYPES, _F32, _F64, Kernel, _as_input, _check_out, _fast_call, _normalize_axes, _run
from .runtime import _compile_variant, _run_general, _same_layout, compile, elementwise_rows, rows_last
from .threads import MIN_ELEMENTS_PER_THREAD, check_threads
from .runtime import OUTPUT_DELTA, PAGE, same_page_offset  # noqa: F401  (api's names before runtime.py)


def choose_algorithm(op: str, n: int, rows: int = 1, dtype="float32", out_dtype=None) -> str:
    """The algorithm `algorithm="auto"` runs for [rows, n] (see softgen.tune.choose)."""
    return tune.choose(op, rows, n, dtype=dtype, out_dtype=out_dtype).algorithm


# (op, algorithm, rows, n, tuning generation) -> Kernel for float32 -> float32, the same with
# (x's dtype, y's) appended for every other pair: the per-call lookup
_kernels: dict = {}


def _f32_kernel(op: str, algorithm: str, arr: np.ndarray, axes) -> Kernel:
    """The float32 -> float32 kernel for op over `axes` of arr (the fast path's lookup)."""
    rows, n = _rows_and_length(arr.shape, axes)
    key = (op, algorithm, rows, n, tune.generation)
    kernel = _kernels.get(key)
    return kernel if kernel is not None else _new_kernel(key, op, algorithm, rows, n, _F32, _F32)


def _kernel_for(op: str, algorithm: str, arr: np.ndarray, axes, out_dtype: np.dtype | None = None,
                variant: algorithms.Variant = algorithms.Variant()) -> Kernel:
    """The kernel for op over `axes` (an axis or a tuple of them) of arr, writing out_dtype
    (None: arr's dtype), taking the row operands of `variant`."""
    x_dtype = arr.dtype
    out_dtype = x_dtype if out_dtype is None else out_dtype
    if x_dtype is _F32 and out_dtype is _F32 and variant == _PLAIN:
        return _f32_kernel(op, algorithm, arr, axes)
    rows, n = _rows_and_length(arr.shape, axes)
    key = (op, algorithm, rows, n, tune.generation, x_dtype, out_dtype, variant)
    kernel = _kernels.get(key)
    return kernel if kernel is not None else _new_kernel(key, op, algorithm, rows, n, x_dtype, out_dtype, variant)


_PLAIN = algorithms.Variant()
_BOOL = np.dtype(np.bool_)


def _rows_and_length(shape: tuple, axes) -> tuple:
    """(rows, n) of the problem over `axes` taken together (a 0-d array: one element)."""
    shape = shape or (1,)
    n = math.prod(shape[a] for a in ((axes,) if isinstance(axes, int) else axes))
    return (math.prod(shape) // n if n else 0), n


def kernel_for_shape(op: str, rows: int, n: int, algorithm: str = "auto", dtype="float32",
                     out_dtype=None, variant: algorithms.Variant = _PLAIN) -> Kernel:
    """The kernel softmax & co. run for a [rows, n] problem of these dtypes: the algorithm
    (or "auto"'s choice) with the schedule the tuner picks for the shape, compiled or taken
    from the caches (its `variant`: with a temperature, a sink)."""
    choice = tune.resolve(op, algorithm, rows, n, dtype=dtype, out_dtype=out_dtype)
    return _compile_variant(op, choice.algorithm, dtype, out_dtype, "host", choice.schedule, variant)


def _new_kernel(key: tuple, op: str, algorithm: str, rows: int, n: int, x_dtype, out_dtype,
                variant: algorithms.Variant = _PLAIN) -> Kernel:
    kernel = kernel_for_shape(op, rows, n, algorithm, x_dtype, out_dtype, variant)
    if len(_kernels) > 4096:  # many distinct shapes: start over rather than grow
        _kernels.clear()
    _kernels[key] = kernel
    return kernel


def _result_dtype(x_dtype: np.dtype, out, dtype, who: str) -> np.dtype:
    """The result's dtype: `dtype` if given, else out's (a supported float dtype), else x's.
    TypeError where out's dtype is not the result's."""
    if dtype is not None:
        result = _dtype_argument(dtype)
        if isinstance(out, np.ndarray) and out.dtype != result:
            raise TypeError(f"{who}(): out has dtype {out.dtype}, but dtype={result.name} asks for a {result} result")
        return result
    if not isinstance(out, np.ndarray):  # None, or not an array (the runtime says so)
        return x_dtype
    if out.dtype in NATIVE_DTYPES:
        return out.dtype
    raise TypeError(f"{who}(): out has dtype {out.dtype}; the result's dtype is {x_dtype} (x's), or with "
                    f"dtype=None that of an out of {', '.join(DTYPES)}")


_dtype_arguments: dict = {}  # dtype= as given -> its numpy dtype (check_dtype takes microseconds)


def _dtype_argument(dtype) -> np.dtype:
    try:
        return _dtype_arguments[dtype]
    except (KeyError, TypeError):  # new, or unhashable
        result = check_dtype(dtype)
        result = result if result.isnative else result.newbyteorder("=")
        try:
            if len(_dtype_arguments) < 64:
                _dtype_arguments[dtype] = result
        except TypeError:
            pass
        return result


def _round_float64(y: np.ndarray, out, dtype: np.dtype, who: str) -> np.ndarray:
    """A float64 result as a 16-bit one, rounded once (numpy's and ml_dtypes' conversions
    round float64 directly; kernels would round through float32, so they do not store
    float64 results in 16 bits)."""
    if out is None:
        return y.astype(dtype)
    _check_out(out, y.shape, dtype, who)
    out[...] = y
    return out


def _run_op(op: str, x, axis, algorithm: str, out, dtype, keepdims: bool = False, threads=None,
            temperature=None, sink=None, phi=None, where=None, empty_rows="nan"):
    """Any input, axis, out, dtype, temperature, sink, mask and empty-row rule (what the fast
    path leaves); threads as checked."""
    arr = _as_input(x, op)
    axes = _normalize_axes(axis, arr.ndim, op)
    out_dtype = _result_dtype(arr.dtype, out, dtype, op)
    if keepdims:  # the reduced axes kept with length 1: the same run, seen through views
        kept = tuple(1 if i in axes else d for i, d in enumerate(arr.shape))
        reduced = tuple(d for i, d in enumerate(arr.shape) if i not in axes)
        inner = None if out is None else _check_out(out, kept, out_dtype, op).reshape(reduced)
        y = _run_op(op, arr, axes, algorithm, inner, dtype, threads=threads, temperature=temperature, sink=sink,
                    phi=phi, where=where, empty_rows=empty_rows)
        return out if out is not None else y.reshape(kept)
    lead = tuple(d for i, d in enumerate(arr.shape) if i not in axes)
    axes = axes[0] if len(axes) == 1 else axes  # one axis: the runtime's fast call may take it
    compute = _F64 if arr.dtype == _F64 or out_dtype == _F64 else _F32
    variant, operands = _variant_operands(op, algorithm, arr, axes, lead, compute, temperature, sink, phi, where,
                                          empty_rows)
    if arr.dtype == _F64 and out_dtype.itemsize == 2:
        y = _run(_kernel_for(op, algorithm, arr, axes, None, variant), arr, axes, None, threads, operands)
        y = _round_float64(y, out, out_dtype, op)
    else:
        y = _run(_kernel_for(op, algorithm, arr, axes, out_dtype, variant), arr, axes, out, threads, operands)
    if variant.row_max:
        phi.learn(operands[-1])
    return y


def _variant_operands(op: str, algorithm: str, arr: np.ndarray, axes, lead: tuple, compute: np.dtype,
                      temperature, sink, phi, where, empty_rows) -> tuple:
    """(the kernel's Variant, its operands in ABI order) for these arguments, checked."""
    operands = [] if where is None else [_mask_operand(where, arr, axes, op)]
    ragged = bool(operands) and operands[0].dtype == np.int64
    learned = isinstance(phi, LearnedPhi)
    variant = algorithms.Variant(temperature=temperature is not None, sink=sink is not None,
                                 where=where is not None and not ragged,
                                 zero_empty=algorithms.zero_empty(empty_rows, op), length=ragged, row_max=learned)
    kept = _kept_shape(arr.shape, axes)
    if temperature is not None:
        t = _per_row(temperature, lead, "temperature", op, kept)
        if not (np.all(np.isfinite(t)) and np.all(t > 0)):
            raise ValueError(f"{op}(): temperature must be positive and finite")
        operands.append((1.0 / t).astype(compute))
    if sink is not None:
        operands.append(_per_row(sink, lead, "sink", op, kept).astype(compute))
    if (phi is not None) != (algorithms.PHI in algorithms.OWN_OPERANDS.get(algorithm, ())):
        raise ValueError(f"{op}(): phi= goes with algorithm='unified_max' (the bound its exponentials are "
                         f"taken from), and that algorithm needs it")
    if phi is not None:
        operands.append(_per_row(phi.value if learned else phi, lead, "phi", op, kept).astype(compute))
    if learned:
        operands.append(np.empty(math.prod(lead), compute))   # the row maxima out
    return variant, tuple(operands)


class LearnedPhi:
    """phi for algorithm="unified_max" learned from the calls it is given to (FlashDecoding++
    takes its unified max from the inputs' statistics): a call uses `value`, then sets it to
    the smallest finite row max it saw (of x / T), so that the next call's rows like these
    lie within the fast path's range (for softmax at most ln 2 below their max); a call
    whose rows are all -inf, inf or NaN leaves it.  Rows far from it take the exact
    fallback: any value is right, a good one is fast.  initial: the first call's phi."""

    def __init__(self, initial: float = 0.0):
        self.value = float(initial)

    def learn(self, row_max: np.ndarray) -> None:
        finite = row_max[np.isfinite(row_max)]
        if finite.size:
            self.value = float(finite.min())

    def __repr__(self) -> str:
        return f"LearnedPhi({self.value!r})"


def _mask_operand(where, arr: np.ndarray, axes, who: str) -> np.ndarray:
    """where= (booleans broadcasting to x's shape) as the kernel's operand: row lengths
    (int64, one per row) where every row keeps a prefix (a causal mask: ragged rows), else
    the mask's bytes as [rows, n] (a view where one exists, else a compact copy)."""
    mask = where if type(where) is np.ndarray else np.asarray(where)
    if mask.dtype != np.bool_:
        raise TypeError(f"{who}(): where must be an array of booleans (True keeps an element), "
                        f"not of {mask.dtype}")
    if mask.ndim > arr.ndim or mask.shape != arr.shape[arr.ndim - mask.ndim:]:   # (else it broadcasts)
        try:
            if np.broadcast_shapes(mask.shape, arr.shape) != arr.shape:
                raise ValueError
        except ValueError:
            raise ValueError(f"{who}(): where of shape {mask.shape} does not broadcast to x's shape "
                             f"{arr.shape}") from None
    return _mask_rows(mask, arr.shape, (axes,) if isinstance(axes, int) else axes)


def _mask_rows(mask: np.ndarray, shape: tuple, axes: tuple) -> np.ndarray:
    """A checked mask as the kernel's operand (see _mask_operand)."""
    lengths = _prefix_lengths(mask, shape, axes)
    return lengths if lengths is not None else elementwise_rows(np.broadcast_to(mask, shape), axes).view(np.uint8)


_RAGGED, _BYTES = algorithms.Variant(length=True), algorithms.Variant(where=True)


def _float32_x(x, axis, dtype) -> bool:
    """The fast paths' input: a float32 ndarray (not a subclass) read as it is, over one
    axis given as an int."""
    return type(x) is np.ndarray and x.dtype is _F32 and dtype is None and x.ndim > 0 and type(axis) is int


def _float32_out(out) -> bool:
    """The fast paths' output: a new array, or a float32 ndarray."""
    return out is None or type(out) is np.ndarray and out.dtype is _F32


def _masked_call(op: str, x, axis, algorithm: str, out, dtype, threads, where):
    """op(x, where=where) in the usual case, without _run_op's general steps (a fifth of
    a causal call at 1 x 128 x 128): float32 x over its last axis into a float32 result,
    a C-contiguous mask of x's trailing axes; None (nothing done) otherwise."""
    if not (_float32_x(x, axis, dtype) and axis in (-1, x.ndim - 1) and _float32_out(out)
            and type(where) is np.ndarray and where.dtype is _BOOL and where.ndim and where.flags.c_contiguous
            and where.shape == x.shape[x.ndim - where.ndim:]):
        return None
    ax = x.ndim - 1
    operand = _mask_rows(where, x.shape, (ax,))
    kernel = _kernel_for(op, algorithm, x, ax, _F32, _RAGGED if operand.dtype == np.int64 else _BYTES)
    return _run(kernel, x, ax, out, threads, (operand,))


def _prefix_lengths(mask: np.ndarray, shape: tuple, axes: tuple) -> np.ndarray | None:
    """Each row's length if every row of the mask keeps a prefix, else None.  The mask's own
    rows are analysed (a mask broadcast over batch axes once), then the lengths broadcast."""
    if not shape:
        return None
    ndim, k = len(shape), len(axes)
    if axes == (ndim - 1,) and mask.shape == shape[ndim - mask.ndim:] and mask.flags.c_contiguous and mask.ndim:
        # the last axis, a mask of x's trailing axes: the usual case, quickly
        rows = mask.reshape(math.prod(mask.shape[:-1]), shape[-1])
        return masks.prefix_lengths(rows, math.prod(shape[:ndim - mask.ndim]))
    perm = rows_last(axes, ndim)
    reduced = tuple(shape[a] for a in axes)
    own = mask.reshape((1,) * (ndim - mask.ndim) + mask.shape)
    lead = tuple(own.shape[a] for a in perm[:ndim - k])
    if perm == tuple(range(ndim)) and own.shape[ndim - k:] == reduced and own.flags.c_contiguous:
        rows = own.reshape(-1, math.prod(reduced))   # the rows as they are (the usual case, quickly)
    else:
        rows = elementwise_rows(np.broadcast_to(own.transpose(perm), lead + reduced), tuple(range(ndim - k, ndim)))
    x_lead = tuple(shape[a] for a in perm[:ndim - k])
    ones = _leading_ones(lead)
    if lead[ones:] == x_lead[ones:]:   # broadcast over leading axes only: the lengths repeat
        return masks.prefix_lengths(rows, math.prod(x_lead[:ones]))
    lengths = masks.prefix_lengths(rows)
    if lengths is None:
        return None
    return np.ascontiguousarray(np.broadcast_to(lengths.reshape(lead), x_lead)).reshape(-1)


def _leading_ones(shape: tuple) -> int:
    """How many of shape's first axes have length 1."""
    count = 0
    while count < len(shape) and shape[count] == 1:
        count += 1
    return count


def _per_row(value, lead: tuple, name: str, who: str, kept: tuple = ()) -> np.ndarray:
    """`value` (a number, or an array broadcasting to the rows' shape `lead`: x's without
    the reduced axes) in float64, one value per row in the rows' order (C order), or one
    value for every row.  An array with as many axes as x broadcasts to `kept` instead (x's
    shape with the reduced axes of length 1, as x / T[:, None] writes a temperature per row)."""
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{who}(): {name} must be a number or an array of them, not {type(value).__name__}") from None
    if v.size == 1:
        return v.reshape(1)
    shape = kept if v.ndim == len(kept) > len(lead) else lead
    try:
        return np.ascontiguousarray(np.broadcast_to(v, shape)).reshape(-1)
    except ValueError:
        raise ValueError(f"{who}(): {name} of shape {v.shape} does not broadcast to the rows' shape {lead} "
                         f"(x's shape without the reduced axes) or {kept} (with them of length 1)") from None


def _kept_shape(shape: tuple, axes) -> tuple:
    """shape with `axes` (one or a tuple) of length 1."""
    axes = (axes,) if isinstance(axes, (int, np.integer)) else axes
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _op_entry(spec: ops.OpSpec):
    if spec.params:
        return _with_params(spec, _op_entry(replace(spec, params=())))
    op = spec.name

    def run(x, axis=-1, *, algorithm: str = "auto", out=None, dtype=None, threads=None, temperature=None,
            sink=None, phi=None, where=None, empty_rows="nan"):
        if threads is not None:
            threads = check_threads(threads, op)
        if (temperature is not None or sink is not None or phi is not None or empty_rows != "nan"
                or algorithm in algorithms.OWN_OPERANDS):
            return _run_op(op, x, axis, algorithm, out, dtype, threads=threads, temperature=temperature, sink=sink,
                           phi=phi, where=where, empty_rows=empty_rows)
        if where is not None:
            y = _masked_call(op, x, axis, algorithm, out, dtype, threads, where)
            return y if y is not None else _run_op(op, x, axis, algorithm, out, dtype, threads=threads, where=where)
        if _float32_x(x, axis, dtype) and -x.ndim <= axis < x.ndim:
            # float32 x with a float32 kernel for its shape: the common case, no other checks
            ax = axis % x.ndim
            n = x.shape[ax]
            kernel = _kernels.get((op, algorithm, x.size // n if n else 0, n, tune.generation))
            if kernel is not None:
                y = _fast_call(kernel, x, ax, out, threads)  # None for an out that is not C-contiguous float32
                if y is not None:
                    return y
                if _float32_out(out):
                    return _run_general(kernel, x, ax, out, threads)
        return _run_op(op, x, axis, algorithm, out, dtype, threads=threads)

    def run_reduction(x, axis=-1, *, keepdims: bool = False, algorithm: str = "auto", out=None, dtype=None,
                      threads=None, temperature=None, sink=None, phi=None, where=None, empty_rows="nan"):
        if keepdims:
            threads = None if threads is None else check_threads(threads, op)
            return _run_op(op, x, axis, algorithm, out, dtype, keepdims, threads, temperature, sink, phi, where,
                           empty_rows)
        return run(x, axis, algorithm=algorithm, out=out, dtype=dtype, threads=threads, temperature=temperature,
                   sink=sink, phi=phi, where=where, empty_rows=empty_rows)

    entry = run_reduction if spec.row_output else run
    entry.__name__ = entry.__qualname__ = op  # Python's own errors name the public function
    entry.__doc__ = (
        f"{op} of an array along `axis` (numpy semantics).\n\n"
        f"x: float32, float64, float16 or bfloat16 (ml_dtypes) runs in that dtype (16-bit: computed in "
        f"float32); integers and bools are converted to float64; lists, 0-d arrays and objects exporting "
        f"DLPack (read without a copy) are accepted; np.ma masked arrays are refused.\n"
        f"axis: an integer (default -1, as torch and JAX), a tuple of axes taken together, or None "
        f"for all of them (scipy.special's default; softgen.scipy has SciPy's defaults).\n"
        + ("keepdims: keep the reduced axes with length 1.\n" if spec.row_output else "")
        + f"algorithm: 'auto' or one of {', '.join(algorithms.ALGORITHMS)}.\n"
        f"out: an array of the result's shape and dtype (may be x itself).\n"
        f"dtype: the result's dtype (default: out's, else x's), as torch.{op}'s dtype=; "
        f"computed in float64 if it or x is float64, else in float32.\n"
        f"temperature: T > 0, a number or one per row (broadcast to x's shape without the reduced "
        f"axes): {op}(x / T), x multiplied by 1 / T rounded to the compute dtype as it is read.\n"
        f"sink: one more logit per row (a number, or one per row), in the max and the sum with no "
        f"output element (softmax1: sink=0); -inf is no sink; scaled by 1 / T too.\n"
        f"phi: with algorithm='unified_max' (FlashDecoding++), the bound e^(x - phi) is taken from, a "
        f"number or one per row, in the units of x / T: no max pass; rows whose max is far from it take "
        f"the exact fallback; or a softgen.LearnedPhi, which learns it from the calls it is given to.\n"
        f"where: booleans broadcasting to x's shape (JAX's where=): False leaves an element out (its "
        f"output " + ("-inf" if spec.rule is not ops.Rule.SCALE else "0") + "); a row with nothing kept gives "
        + ("0" if spec.rule is ops.Rule.SCALE else "-inf") + ". Read in the kernel: no masked copy of x.\n"
        f"empty_rows: 'nan' (default, numpy: a row of only -inf gives NaN) or 'zero' (it gives "
        + ("0" if spec.rule is ops.Rule.SCALE else "-inf") + ", as oneDNN's inf_as_zero).\n"
        f"threads: the most threads the rows are split over (default: softgen.get_num_threads()); "
        f"calls under {2 * MIN_ELEMENTS_PER_THREAD} elements run on one thread.\n"
        f"A new result is a C-contiguous array whatever the axis.")
    return entry


def _with_params(spec: ops.OpSpec, plain):
    """The entry of an op with kernel parameters: keyword arguments (the registry's defaults)
    that pick the kernel, one per set of values (each is baked into its program)."""
    def run(x, axis=-1, *, algorithm: str = "auto", out=None, dtype=None, threads=None, **params):
        unknown = set(params) - set(spec.param)
        if unknown:   # as Python says it
            raise TypeError(f"{spec.name}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        op = spec.with_params(**params)
        if op == spec:   # the registry's values: the op's name and its float32 fast path
            return plain(x, axis, algorithm=algorithm, out=out, dtype=dtype, threads=threads)
        if threads is not None:
            threads = check_threads(threads, spec.name)
        return _run_op(op, x, axis, algorithm, out, dtype, threads=threads)

    run.__name__ = run.__qualname__ = spec.name
    keywords = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in spec.params]
    signature = inspect.signature(plain)
    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *keywords])
    run.__doc__ = (plain.__doc__.replace(f"{spec.name} of", f"{spec.name} (y = {spec.term.value} / its sum) of", 1)
                   + "\n" + ", ".join(f"{k}={v}" for k, v in spec.params)
                   + ": the op's parameters (finite; scale nonzero, power positive), one kernel per value.")
    return run


softmax = _op_entry(ops.SOFTMAX)
log_softmax = _op_entry(ops.LOG_SOFTMAX)
logsumexp = _op_entry(ops.LOGSUMEXP)


def _backward_entry(spec: ops.OpSpec):
    who = f"{spec.name}_backward"

    def backward(y, dy, axis: int = -1, *, out=None, threads=None):
        y_arr, dy_arr = _as_input(y, who), _as_input(dy, who)
        if y_arr.shape != dy_arr.shape or y_arr.dtype != dy_arr.dtype:
            raise ValueError(f"{who}(): y and dy must have one shape and dtype, not {y_arr.shape} {y_arr.dtype} "
                             f"and {dy_arr.shape} {dy_arr.dtype}")
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise TypeError(f"{who}(): axis must be one integer, not {axis!r}")
        (ax,) = _normalize_axes(int(axis), y_arr.ndim, who)
        threads = None if threads is None else check_threads(threads, who)
        if y_arr.ndim == 0 or y_arr.size == 0:
            dx = np.zeros_like(y_arr) if y_arr.ndim == 0 else np.empty_like(y_arr)
            if out is None:
                return dx
            _check_out(out, dx.shape, dx.dtype, who)[...] = dx
            return out
        return _run_backward(spec, y_arr, dy_arr, ax, out, threads)

    backward.__name__ = backward.__qualname__ = who
    backward.__doc__ = (
        f"The gradient of {spec.name} along `axis` (an integer, default -1): given its output y and "
        f"the gradient dy of a loss with respect to y, dx = "
        + ("y * (dy - sum(dy * y))" if spec.rule is ops.Rule.SCALE else "dy - exp(y) * sum(dy)")
        + f", fused in two passes over the rows (kernel algorithm 'backward').\n"
        f"y and dy: arrays of one shape and dtype (float32, float64, float16, bfloat16); a new "
        f"C-contiguous result (along another axis than the last, the rows are copied first); "
        f"out: an array of that shape and dtype; threads: as {spec.name}'s.")
    return backward


def _run_backward(spec: ops.OpSpec, y: np.ndarray, dy: np.ndarray, ax: int, out, threads) -> np.ndarray:
    """The backward kernel on y's rows along `ax`, dy its elementwise operand (rows laid out
    as y's), into out or a new array.  dy overlapping out other than as the same view is
    copied first (the kernel reads dy[i] before it writes out[i], and nowhere else)."""
    if out is not None and np.may_share_memory(out, dy) and not (isinstance(out, np.ndarray) and _same_layout(out, dy)):
        dy = dy.copy()
    kernel = _kernel_for(spec.name, "backward", y, ax)
    return _run(kernel, y, ax, out, threads, (elementwise_rows(dy, (ax,)),))


softmax_backward = _backward_entry(ops.SOFTMAX)
log_softmax_backward = _backward_entry(ops.LOG_SOFTMAX)
softplus_normalize = _op_entry(ops.SOFTPLUS_NORMALIZE)
