"""The numpy-facing API against float64: every op x algorithm x row length, special
inputs, long rows, axes, views, out=, bad input, and the dtypes (dtype=, out=, what
comes back, what each computes in)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import softgen
from softgen import api, runtime
from reference import (PAIRS, RATIOS, _stats, check, check_relative, check_ulps, enabled, near_zero_rows, offset_rows,
                       reference, special_rows)

OP_FN = {op: getattr(softgen, op) for op in softgen.OPS}
NEG_INF, POS_INF, NAN = float("-inf"), float("inf"), float("nan")


def run(op, algo, x, **kw):
    return OP_FN[op](x, algorithm=algo, **kw)


@pytest.mark.parametrize("op,algo", PAIRS)
@pytest.mark.parametrize("n", range(0, 131))
def test_every_row_length(op, algo, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((3, n)) * 4).astype(np.float32)
    check(op, x, run(op, algo, x))


@pytest.mark.parametrize("op,algo", PAIRS)
@pytest.mark.parametrize("n", [1, 2, 37, 300, 5000])
def test_special_inputs(op, algo, n):
    rows = special_rows(n)
    x = np.stack(list(rows.values()))
    y = run(op, algo, x)
    for i, name in enumerate(rows):
        try:
            check(op, x[i:i + 1], y[i:i + 1])
        except AssertionError as e:
            raise AssertionError(f"row '{name}': {e}") from None


@pytest.mark.parametrize("op,algo", PAIRS)
@pytest.mark.parametrize("n", [1, 2, 37, 300, 5000])
def test_large_offsets_keep_absolute_accuracy(op, algo, n):
    """Rows around +-1e6 and below: outputs within 4 ulps of max(|y|, 1) (two_pass once
    rounded lse to float32 before x - lse: 5e-3 off at 1e5)."""
    x = offset_rows(n, seed=n)
    check_ulps(op, x, run(op, algo, x))


@pytest.mark.parametrize("op,algo", PAIRS)
@pytest.mark.parametrize("n", [2, 3, 37, 300, 5000])
def test_results_near_zero_keep_relative_accuracy(op, algo, n):
    """Rows dominated by their max: logsumexp = max + log1p(tiny) and the max's log_softmax
    -log1p(tiny) within 1e-6 of themselves (a float32 sum 1 + tiny gave 0 for 4e-18)."""
    x = near_zero_rows(n, seed=n)
    check_relative(op, x, run(op, algo, x))


@pytest.mark.parametrize("op,algo", PAIRS)
def test_results_near_zero_spelled_out(op, algo):
    x = np.float32([[0, -40, NEG_INF], [0, -20, -30], [5, 5 - 50, NEG_INF], [0, -10, -103]])
    y = run(op, algo, x)
    check_relative(op, x, y)
    if op == "logsumexp":
        assert abs(y[0] / 4.248354e-18 - 1) < 1e-6 and y[2] == 5
    if op == "log_softmax":
        assert abs(y[0, 0] / -4.248354e-18 - 1) < 1e-6 and y[0, 1] == -40


def test_special_values_match_numpy_peers_table():
    """The special-value table (README, "Use"), spelled out."""
    for algo in softgen.ALGORITHMS:
        y = softgen.softmax(np.float32([[3e38, -3e38, 3e38, -3e38]]), algorithm=algo)
        assert np.array_equal(y, [[0.5, 0, 0.5, 0]])
        y = softgen.softmax(np.float32([[NEG_INF, 0.0, NEG_INF, 0.0]]), algorithm=algo)
        assert np.array_equal(y, [[0, 0.5, 0, 0.5]])
        assert np.isnan(softgen.softmax(np.float32([[NEG_INF] * 5]), algorithm=algo)).all()
        assert np.isnan(softgen.softmax(np.float32([[1, POS_INF, 2]]), algorithm=algo)).all()
        assert softgen.softmax(np.float32([[0.0, -87.0]]), algorithm=algo)[0, 1] > 0


@pytest.mark.parametrize("algo", softgen.ALGORITHMS[1:])
def test_log_special_values_as_documented(algo):
    """README's semantics for the log ops, spelled out: -inf entries, all -inf and empty
    rows, +inf, NaN (rows of 2 and of 300, which take the per-block lowerings)."""
    for pad in (0, 298):
        def row(*v):
            return np.float32([list(v) + [NEG_INF] * pad])
        lse = lambda *v: softgen.logsumexp(row(*v), algorithm=algo)[0]
        lsm = lambda *v: softgen.log_softmax(row(*v), algorithm=algo)[0, :len(v)]
        assert lse(NEG_INF, NEG_INF) == NEG_INF and lse(NEG_INF, 0.0) == 0.0
        assert lse(1.0, POS_INF) == POS_INF and lse(POS_INF, POS_INF) == POS_INF
        assert np.isnan(lse(1.0, NAN)) and np.isnan(lse(POS_INF, NAN)) and np.isnan(lse(NEG_INF, NAN))
        assert lse(0.0, 0.0) == np.float32(np.log(2))
        assert lsm(NEG_INF, 0.0).tolist() == [NEG_INF, 0.0]
        assert np.isnan(softgen.log_softmax(row(NEG_INF, NEG_INF), algorithm=algo)).all()
        for bad in (POS_INF, NAN):
            assert np.isnan(softgen.log_softmax(row(1.0, bad), algorithm=algo)).all()
    assert np.all(softgen.logsumexp(np.zeros((2, 0), np.float32), algorithm=algo) == NEG_INF)


@pytest.mark.parametrize("op,algo", [p for p in PAIRS if p[0] != "log_softmax"] +
                         [("log_softmax", "three_pass_recompute")])
def test_long_row_accuracy(op, algo):
    """2^24 elements: blocked, compensated accumulation keeps the error at a few ulp
    (softplus_normalize's 2^22: its longdouble reference takes 8 s more at 2^24)."""
    rng = np.random.default_rng(24)
    x = (rng.standard_normal((1, 1 << (22 if op == "softplus_normalize" else 24))) * 4).astype(np.float32)
    check(op, x, run(op, algo, x))


@pytest.mark.parametrize("op,algo", PAIRS)
def test_in_place_and_out(op, algo):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 1000)) * 4).astype(np.float32)
    expected = run(op, algo, x)
    out = np.empty_like(expected)
    assert run(op, algo, x, out=out) is out
    assert np.array_equal(out, expected)
    if op != "logsumexp":
        x2 = x.copy()
        assert run(op, algo, x2, out=x2) is x2
        assert np.array_equal(x2, expected)


@pytest.mark.parametrize("algo", softgen.ALGORITHMS)
@pytest.mark.parametrize("shift", [1, 17, -1])
def test_out_partially_overlapping_x(algo, shift):
    """out sharing memory with x at an offset must still give the result for the old x."""
    rng = np.random.default_rng(6)
    buf = (rng.standard_normal(2 * 100 + 17) * 4).astype(np.float32)
    start = max(shift, 0)
    x = buf[start:start + 200].reshape(2, 100)
    expected = softgen.softmax(x.copy(), algorithm=algo)
    out = buf[start - shift:start - shift + 200].reshape(2, 100)
    softgen.softmax(x, out=out, algorithm=algo)
    assert np.array_equal(out, expected)
    xt = buf[:200].reshape(100, 2).T  # a transposed view: the general path
    expected = softgen.softmax(xt.copy(), algorithm=algo)
    out = buf[1:201].reshape(100, 2).T
    softgen.softmax(xt, out=out, algorithm=algo)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("op", softgen.OPS)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_axes_and_views(op, axis):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 7, 9)) * 3).astype(np.float32)
    for view in (x, x[:, ::2, 1:], x.transpose(2, 0, 1), np.asfortranarray(x)):
        y = OP_FN[op](view, axis=axis)
        moved = np.moveaxis(view, axis, -1)
        expected = reference(op, moved)
        expected = expected if op == "logsumexp" else np.moveaxis(expected, -1, axis)
        check(op, moved, y if op == "logsumexp" else np.moveaxis(y, axis, -1))
        assert y.shape == expected.shape


def test_out_as_strided_view_leaves_gaps_alone():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 33)) * 4).astype(np.float32)
    big = np.full((4, 40), 123.0, np.float32)
    out = big[:, :33]
    softgen.softmax(x, out=out)
    check("softmax", x, out)
    assert np.all(big[:, 33:] == 123.0), "wrote past the row"


def test_1d_and_empty_shapes():
    assert softgen.softmax(np.float32([1.0]))[0] == 1.0
    assert softgen.softmax(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert softgen.softmax(np.zeros((3, 0), np.float32)).shape == (3, 0)
    assert softgen.logsumexp(np.zeros((0, 5), np.float32)).shape == (0,)
    lse = softgen.logsumexp(np.zeros((3, 0), np.float32))
    assert lse.shape == (3,) and np.all(lse == NEG_INF)
    assert softgen.log_softmax(np.zeros((2, 0, 3), np.float32), axis=1).shape == (2, 0, 3)


def _over_axes(op, x, axes):
    """The float64 reference of op over `axes` of x taken together (numpy's axis order)."""
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
    rest = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, rest + sorted(axes))
    rows = moved.reshape(moved.shape[:len(rest)] + (-1,))
    y = reference(op, rows)
    return y if op == "logsumexp" else np.transpose(y.reshape(moved.shape), np.argsort(rest + sorted(axes)))


@pytest.mark.parametrize("op", softgen.OPS)
def test_axis_tuples_and_none(op):
    """axis=None reduces over all axes (SciPy's default), a tuple over those axes together;
    new results are C-contiguous whatever the axes and layout of x."""
    x = (np.random.default_rng(5).standard_normal((6, 7, 9)) * 3).astype(np.float32)
    for view in (x, x.transpose(2, 0, 1), x[:, ::2, 1:]):
        for axes in (None, (0, 1), (0, 2), (2, 1), (-1,), (), (0, 1, 2)):
            y = OP_FN[op](view, axis=axes)
            expected = _over_axes(op, view, axes)
            assert y.shape == expected.shape and y.flags.c_contiguous, (axes, y.shape, y.strides)
            assert np.allclose(y, expected, rtol=1e-5, atol=1e-6), axes
    if op != "logsumexp":
        out = np.full((6, 9, 7), 5.0, np.float32).transpose(0, 2, 1)  # a strided out
        assert OP_FN[op](x, axis=(0, 2), out=out) is out
        assert np.allclose(out, _over_axes(op, x, (0, 2)), rtol=1e-5, atol=1e-6)
        inplace = x.copy()
        assert OP_FN[op](inplace, axis=(0, 2), out=inplace) is inplace and np.array_equal(inplace, out)


def test_logsumexp_keepdims():
    x = (np.random.default_rng(6).standard_normal((6, 7, 9)) * 3).astype(np.float32)
    for axes, kept in ((1, (6, 1, 9)), ((0, 2), (1, 7, 1)), (None, (1, 1, 1)), ((), (6, 7, 9))):
        y = softgen.logsumexp(x, axis=axes, keepdims=True)
        assert y.shape == kept and y.flags.c_contiguous
        assert np.array_equal(y.reshape(-1), softgen.logsumexp(x, axis=axes).reshape(-1))
        out = np.zeros((2 * kept[0],) + kept[1:], np.float32)[::2]  # a strided out of the kept shape
        assert softgen.logsumexp(x, axis=axes, keepdims=True, out=out) is out and np.array_equal(out, y)
    with pytest.raises(ValueError, match="logsumexp\\(\\): out has shape \\(7,\\); expected \\(1, 7, 1\\)"):
        softgen.logsumexp(x, axis=(0, 2), keepdims=True, out=np.zeros(7, np.float32))


def test_0d_inputs_are_one_element_rows():
    """As in torch (and SciPy with axis=None): a 0-d x is a row of one element."""
    for axis in (-1, 0, None, ()):
        y = softgen.softmax(np.float32(3.0), axis=axis)
        assert y.shape == () and y.dtype == F32 and y == 1.0
        assert softgen.log_softmax(3.0, axis=axis) == 0.0
        lse = softgen.logsumexp(np.float64(2.5), axis=axis)
        assert lse.shape == () and lse.dtype == F64 and lse == 2.5
    assert softgen.logsumexp(np.float32(-np.inf), keepdims=True) == -np.inf
    assert np.isnan(softgen.softmax(np.float32(np.inf)))
    out = np.zeros((), F64)
    assert softgen.log_softmax(7.0, out=out) is out and out == 0.0
    with pytest.raises(runtime._AxisError, match="softmax\\(\\): axis 1 is out of bounds for array of dimension 1"):
        softgen.softmax(np.float32(3.0), axis=1)


class _DLPackOnly:
    """An array known to softgen only through DLPack (as torch, JAX or CuPy tensors are)."""
    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_inputs_are_read_without_a_copy():
    x = random_rows(F32, 3, 40)
    assert np.shares_memory(runtime._as_input(_DLPackOnly(x), "softmax"), x)
    for op in softgen.OPS:
        assert np.array_equal(OP_FN[op](_DLPackOnly(x)), OP_FN[op](x))
    assert np.array_equal(softgen.softmax(np.from_dlpack(x), axis=0), softgen.softmax(x, axis=0))
    assert softgen.logsumexp(_DLPackOnly(np.arange(4))).dtype == F64  # integers as float64


def test_kernel_call_takes_axis_second():
    """Kernel.__call__(x, axis=-1, *, out=None), as softgen.softmax(x, axis, *, out)."""
    k = softgen.compile("softmax", algorithm="two_pass")
    x = random_rows(F32, 4, 16)
    assert np.array_equal(k(x, 0), softgen.softmax(x, 0, algorithm="two_pass"))
    assert k(x, 0).flags.c_contiguous and k(x, (0, 1)).flags.c_contiguous
    out = np.empty_like(x)
    assert k(x, -1, out=out) is out
    with pytest.raises(TypeError, match="positional"):
        k(x, -1, out)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 4), n=st.integers(0, 300), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
       op_algo=st.sampled_from(PAIRS), seed=st.integers(0, 2**32 - 1))
def test_random_shapes_and_scales(rows, n, scale, op_algo, seed):
    op, algo = op_algo
    x = (np.random.default_rng(seed).standard_normal((rows, n)) * scale).astype(np.float32)
    check(op, x, run(op, algo, x))


def test_compile_is_cached_and_inspectable():
    k = softgen.compile("softmax", algorithm="two_pass")
    assert softgen.compile("softmax", algorithm="two_pass") is k
    assert "exp_pair" in k.ir and "define" in k.llvm_ir and k.asm
    x = np.float32([[1, 2, 3]])
    check("softmax", x, k(x))


def test_auto_rule_picks_by_row_length():
    from softgen.api import choose_algorithm
    assert choose_algorithm("softmax", 1000) == "three_pass_reload"
    assert choose_algorithm("softmax", 1 << 24) in ("two_pass", "online")


# --- bad input ---------------------------------------------------------------

@pytest.mark.parametrize("bad,err,match", [
    (np.zeros((2, 3), np.complex64), TypeError, "complex input \\(complex64\\) is not supported"),
    ([[1.0, 2j]], TypeError, "complex input \\(complex128\\)"),
    (np.array([[1.0, None]], dtype=object), TypeError, "object arrays are not supported"),
    (np.array([[1.0, 2.0]], dtype=object), TypeError, "object arrays are not supported"),
    (np.zeros((2, 3), np.longdouble), TypeError, f"unsupported dtype {np.dtype(np.longdouble)}; softgen supports float32"),
    (np.array([["a", "b"]]), TypeError, "unsupported dtype <U1"),
    (np.zeros(3, "datetime64[s]"), TypeError, "unsupported dtype datetime64"),
    ([[1.0], [2.0, 3.0]], TypeError, "expected an array of floats, got list"),
    (np.ma.array([[1.0, 2.0]], mask=[[0, 1]]), TypeError,
     "masked arrays \\(np.ma\\) are not supported; pass x.filled\\(-np.inf\\)"),
])
def test_bad_inputs(bad, err, match):
    with pytest.raises(err, match="^softmax\\(\\): .*" + match):  # errors name the public function
        softgen.softmax(bad)


def test_bad_arguments():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(runtime._AxisError, match="softmax\\(\\): axis 2 is out of bounds for array of dimension 2"):
        softgen.softmax(x, axis=2)
    with pytest.raises(runtime._AxisError, match="logsumexp\\(\\): axis -3 is out of bounds"):
        softgen.logsumexp(x, axis=(0, -3))
    with pytest.raises(ValueError, match="log_softmax\\(\\): axis \\(1, -1\\) repeats an axis"):
        softgen.log_softmax(x, axis=(1, -1))
    for bad_axis in (1.5, [0, 1], (0, 1.0), True, "0"):
        with pytest.raises(TypeError, match="softmax\\(\\): axis must be an integer, a tuple of integers or None"):
            softgen.softmax(x, axis=bad_axis)
    for op in softgen.OPS:  # Python's own messages name the public function
        with pytest.raises(TypeError, match=f"^{op}\\(\\) got an unexpected keyword argument 'b'"):
            OP_FN[op](x, b=np.ones(3))
    with pytest.raises(TypeError, match="^softmax\\(\\) got an unexpected keyword argument 'keepdims'"):
        softgen.softmax(x, keepdims=True)
    with pytest.raises(ValueError, match="unknown algorithm 'fast'"):
        softgen.softmax(x, algorithm="fast")
    with pytest.raises(ValueError, match="unknown op 'softmin'"):
        softgen.compile("softmin", algorithm="online")
    with pytest.raises(TypeError, match="unsupported dtype int32"):
        softgen.compile("softmax", algorithm="online", dtype="int32")
    with pytest.raises(TypeError, match="unsupported dtype 'float8'"):
        softgen.compile("softmax", algorithm="online", dtype="float8")
    with pytest.raises(NotImplementedError, match="reload"):
        softgen.logsumexp(x, algorithm="three_pass_reload")
    with pytest.raises(ValueError, match="shape"):
        softgen.softmax(x, out=np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="out has dtype int32; the result's dtype is float32"):
        softgen.softmax(x, out=np.zeros((2, 3), np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        softgen.softmax(x, out=[[0.0] * 3] * 2)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        softgen.softmax(x, out=ro)
    with pytest.raises(ValueError, match="shape"):
        softgen.logsumexp(x, out=np.zeros((2, 3), np.float32))


# --- dtypes --------------------------------------------------------------------
# float64 runs in float64, float16 and bfloat16 store 16 bits and compute in float32;
# dtype= and out= choose the result's dtype.  Where the kernels for a dtype are not enabled
# yet (compile raises NotImplementedError "... not enabled ..."), the tests that need them
# skip and say so.

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # the bfloat16 extra
    BF16 = None
F32, F64, F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
needs_bf16 = pytest.mark.skipif(BF16 is None, reason="bfloat16 needs ml_dtypes (pip install softgen[bfloat16])")
ALL_DTYPES = [F32, F64, F16, pytest.param(BF16, marks=needs_bf16)]
OTHER_DTYPES = ALL_DTYPES[1:]
SIXTEEN = [F16, pytest.param(BF16, marks=needs_bf16)]


def _ordered(v: np.ndarray) -> np.ndarray:
    """The bits of v as integers in the order of the values (-0 and +0 alike)."""
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[v.dtype.itemsize]
    i = np.ascontiguousarray(v).view(bits).astype(np.int64)
    return np.where(i < 0, np.iinfo(bits).min - i, i)


def check_as(op: str, x: np.ndarray, y: np.ndarray, dtype) -> None:
    """y (of `dtype`) against the float64 reference of x's values: float32 as check();
    float64 within 1e-14 (softmax relative, the log ops relative to |y| + |lse| + 1, as
    check's measure); 16-bit: the reference rounded to the dtype, or a neighbour of it."""
    dtype = np.dtype(dtype)
    assert y.dtype == dtype, f"got {y.dtype}, expected {dtype}"
    if dtype == F32:
        check(op, x, y)
        return
    with np.errstate(over="ignore"):  # (longdouble for float64 x) beyond float64: +-inf
        ref = reference(op, x).astype(np.float64)
    assert y.shape == ref.shape
    got = y.astype(np.float64)
    nan_ref = np.isnan(ref)
    assert np.array_equal(nan_ref, np.isnan(got)), \
        f"NaN positions differ: ref {np.argwhere(nan_ref)[:5]}, got {np.argwhere(np.isnan(got))[:5]}"
    ok = ~nan_ref
    if dtype != F64:
        with np.errstate(over="ignore"):
            rounded = ref[ok].astype(dtype)
        apart = np.abs(_ordered(y[ok]) - _ordered(rounded))
        worst = int(apart.max()) if apart.size else 0
        assert worst <= 1, (f"{worst} ulps of {dtype} from the rounded reference: got "
                            f"{got[ok][apart.argmax()]}, expected {rounded.astype(np.float64)[apart.argmax()]}")
        return
    ref, got = ref[ok], got[ok]
    inf = np.isinf(ref)
    assert np.array_equal(ref[inf], got[inf]), "infinities differ"
    ref, got = ref[~inf], got[~inf]
    err = np.abs(got - ref)
    if op in RATIOS:
        big = ref > 1e-290
        worst = float(np.max(err[big] / ref[big])) if big.any() else 0.0
        assert worst <= 1e-14, f"max relative error {worst:.3g} > 1e-14"
        assert np.all(err[~big] <= 1e-14 * ref[~big] + 4 * 2.0 ** -1074), "tiny outputs wrong"
        return
    _, m, u = _stats(x)
    with np.errstate(all="ignore"):
        scale = np.abs(np.where(np.isfinite(m), m + np.log1p(u), 0.0)).astype(np.float64)
    scale = np.broadcast_to(scale if op == "log_softmax" else scale[..., 0], y.shape)[ok][~inf]
    with np.errstate(over="ignore"):  # near DBL_MAX: any error is relative to infinity
        worst = float((err / (np.abs(ref) + scale + 1.0)).max()) if err.size else 0.0
    assert worst <= 1e-14, f"max relative error {worst:.3g} > 1e-14"


def random_rows(dtype, rows: int, n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, n)) * 4).astype(dtype)


def test_check_as_can_fail():
    """The per-dtype comparison rejects a result off by 2 ulps or a float32-accurate
    float64 result (so the tests below mean something)."""
    x = random_rows(F16, 2, 50)
    y = reference("softmax", x).astype(F16)
    check_as("softmax", x, y, F16)
    y[0, 3] = np.nextafter(np.nextafter(y[0, 3], F16.type(1)), F16.type(1))
    with pytest.raises(AssertionError, match="2 ulps"):
        check_as("softmax", x, y, F16)
    x64 = random_rows(F64, 2, 50)
    check_as("log_softmax", x64, reference("log_softmax", x64).astype(F64), F64)
    with pytest.raises(AssertionError, match="relative error"):
        check_as("log_softmax", x64, reference("log_softmax", x64.astype(F32)).astype(F64), F64)


@pytest.mark.parametrize("dtype,op,algo", [
    pytest.param(dtype, op, algo, marks=[needs_bf16] if dtype is BF16 else [])
    for dtype in (F64, F16, BF16) for op, algo in PAIRS + [(op, "auto") for op in softgen.OPS]
    if not (algo == "three_pass_reload" and dtype in (F16, BF16))], ids=str)
def test_each_dtype_in_and_out(op, algo, dtype):
    """x of a dtype gives a result of that dtype, right to its precision, on every
    algorithm that computes it (reload has no 16-bit output: test_reload_refuses_16_bit_outputs)."""
    for n in (1, 7, 64, 129, 1000):
        x = random_rows(dtype, 5, n, seed=n)
        check_as(op, x, enabled(run, op, algo, x), dtype)


@pytest.mark.parametrize("dtype", SIXTEEN, ids=str)
def test_reload_refuses_16_bit_outputs(dtype):
    x = random_rows(dtype, 2, 10)
    with pytest.raises(NotImplementedError, match=f"a {dtype} output would round twice"):
        softgen.softmax(x, algorithm="three_pass_reload")
    with pytest.raises(NotImplementedError, match="round twice"):
        softgen.softmax(random_rows(F32, 2, 10), algorithm="three_pass_reload", dtype=dtype)


def special_rows_as(dtype, n: int) -> dict:
    """special_rows in `dtype` (values beyond its range become +-inf), and the dtype's own
    extremes: its largest values, outputs that are its subnormals."""
    with np.errstate(over="ignore"):
        rows = {name: r.astype(dtype) for name, r in special_rows(n).items()}
    if dtype == F64:
        rows["+-DBL_MAX"] = np.tile([1.7976931348623157e308, -1.7976931348623157e308, 0.0], n)[:n]
        sub = np.linspace(-744.0, -709.0, n)
        rows["float64 subnormal outputs"] = np.where(np.arange(n) == 0, 0.0, sub)
        rows["1e-300"] = special_rows(n)["constant"].astype(F64) * 1e-300
    elif dtype == F16:
        rows["+-65504"] = np.tile(np.float16([65504, -65504, 0]), n)[:n]
        sub = np.linspace(-17.0, -9.0, n).astype(F16)  # e^(x - max): float16 subnormals
        rows["float16 subnormal outputs"] = np.where(np.arange(n) == 0, F16.type(0), sub)
    return rows


@pytest.mark.parametrize("dtype", OTHER_DTYPES, ids=str)
@pytest.mark.parametrize("op", softgen.OPS)
@pytest.mark.parametrize("n", [2, 37, 300])
def test_special_inputs_per_dtype(op, dtype, n):
    rows = special_rows_as(dtype, n)
    x = np.stack(list(rows.values()))
    y = enabled(OP_FN[op], x)
    for i, name in enumerate(rows):
        try:
            check_as(op, x[i:i + 1], y[i:i + 1], dtype)
        except AssertionError as e:
            raise AssertionError(f"row '{name}': {e}") from None


def test_integer_and_bool_inputs_compute_in_float64():
    """As scipy.special.softmax: integers (and bools) are converted to float64."""
    scipy_special = pytest.importorskip("scipy.special")
    inputs = [np.arange(12, dtype=np.int32).reshape(3, 4), np.arange(6, dtype=np.uint8).reshape(2, 3),
              np.array([[2 ** 40, 2 ** 40 + 1, -5]], np.int64), np.array([[True, False, True]])]
    for x in inputs:
        for op in softgen.OPS:
            y = enabled(OP_FN[op], x)
            assert y.dtype == F64
            check_as(op, x.astype(F64), y, F64)
            if x.dtype.kind == "i" and x.dtype.itemsize >= 4 and hasattr(scipy_special, op):  # (scipy refuses bools, and
                # computes small unsigned ints in their own dtype: uint8 wraps, in float16)
                expected = getattr(scipy_special, op)(x, axis=-1)
                assert expected.dtype == y.dtype and np.allclose(y, expected, rtol=1e-14, atol=0)


def test_lists_and_scalars_in_lists():
    for x, shape in (([[1.0, 2.0, 3.0]], (1, 3)), ([1, 2, 3], (3,)), ([[0.5], [1.5]], (2, 1))):
        y = enabled(softgen.softmax, x)
        assert y.dtype == F64 and y.shape == shape
        check_as("softmax", np.asarray(x, F64), y, F64)
    lse = enabled(softgen.logsumexp, [[0.0, 0.0]])
    assert lse.dtype == F64 and abs(lse[0] - np.log(2)) < 1e-15


def test_non_native_byte_order_is_read():
    x = random_rows(F32, 3, 20)
    y = softgen.softmax(x.astype(">f4"))
    assert y.dtype == F32 and y.dtype.isnative
    assert np.array_equal(y, softgen.softmax(x))


# (x's dtype, dtype=): the kernel reads x as it is and writes the result's dtype directly
MIXED = [(F32, F64), (F64, F32), (F16, F32), (F16, F64), (F32, F16), (F64, F16),
         pytest.param(BF16, F32, marks=needs_bf16), pytest.param(F32, BF16, marks=needs_bf16),
         pytest.param(BF16, F16, marks=needs_bf16), pytest.param(BF16, F64, marks=needs_bf16)]


def _kernel_dtypes(x_dtype, dtype) -> tuple:
    """The kernel's (x, y) dtypes for x_dtype and a result of `dtype`: those two, except that
    a float64 result rounded to 16 bits is a float64 kernel's, rounded once after it."""
    return (x_dtype, F64) if x_dtype == F64 and dtype.itemsize == 2 else (x_dtype, dtype)


@pytest.fixture
def compiled(monkeypatch):
    """The (dtype, out_dtype, algorithm) of every kernel the API compiles in the test (with
    the per-call lookup empty at the start)."""
    calls = []
    real = api._compile_variant

    def spy(op, algorithm, dtype, out_dtype, *rest):
        calls.append((np.dtype(dtype), None if out_dtype is None else np.dtype(out_dtype), algorithm))
        return real(op, algorithm, dtype, out_dtype, *rest)
    monkeypatch.setattr(api, "_compile_variant", spy)
    monkeypatch.setattr(api, "_kernels", {})
    return calls


@pytest.mark.parametrize("x_dtype,dtype", MIXED, ids=str)
@pytest.mark.parametrize("op", softgen.OPS)
def test_dtype_argument_reads_x_as_it_is(compiled, op, x_dtype, dtype):
    """dtype= as torch's: the result's dtype, computed in float64 if it or x is float64
    (float32 x with dtype=float64 is float64-accurate); one kernel reads x's dtype and
    writes dtype's, no converted copy of x (float64 to 16 bits: _kernel_dtypes)."""
    x = random_rows(x_dtype, 6, 300)
    y = enabled(OP_FN[op], x, dtype=dtype)
    check_as(op, x, y, dtype)
    assert [c[:2] for c in compiled] == [_kernel_dtypes(x_dtype, dtype)]
    assert enabled(OP_FN[op], x, dtype=dtype.name).dtype == dtype  # names too
    view = random_rows(x_dtype, 300, 6).T  # the general path
    check_as(op, view, enabled(OP_FN[op], view, dtype=dtype), dtype)


@pytest.mark.parametrize("x_dtype,dtype", MIXED, ids=str)
def test_out_of_another_dtype_is_the_result_dtype(compiled, x_dtype, dtype):
    """dtype=None and out of another supported dtype: out's dtype is the result's (numpy
    ufunc-like); with dtype= given, out must be of it."""
    x = random_rows(x_dtype, 4, 100)
    out = np.full((4, 100), 7, dtype)
    assert enabled(softgen.log_softmax, x, out=out) is out
    check_as("log_softmax", x, out, dtype)
    out2 = np.empty_like(out)
    assert softgen.log_softmax(x, out=out2, dtype=dtype) is out2
    assert np.array_equal(out2, out, equal_nan=True)
    assert {c[:2] for c in compiled} == {_kernel_dtypes(x_dtype, dtype)}
    lse = np.empty(4, dtype)
    assert enabled(softgen.logsumexp, x, out=lse) is lse
    check_as("logsumexp", x, lse, dtype)


@pytest.mark.parametrize("dtype", SIXTEEN, ids=str)
def test_float64_to_16_bits_rounds_once(dtype):
    """Kernels do not store float64 results in 16 bits (they would round through float32):
    the API rounds the float64 result once, as numpy converts float64."""
    x = random_rows(F64, 3, 200)
    for op in softgen.OPS:
        expected = OP_FN[op](x).astype(dtype)
        assert np.array_equal(OP_FN[op](x, dtype=dtype), expected)
        out = np.empty(expected.shape, dtype)
        assert OP_FN[op](x, out=out) is out and np.array_equal(out, expected)
    # a softmax output 2^-40 above a tie of the 16-bit dtype: float32 would hold the tie
    # itself, which rounds to even (down); rounded once it rounds up
    ulp = 2.0 ** -2 * float(np.finfo(F16).eps if dtype == F16 else ml_dtypes.finfo(dtype).eps)
    even = 0.25 + 2 * ulp
    t = even + ulp / 2 + 2.0 ** -40
    row = np.array([[0.0, np.log(t / (1 - t))]])
    y = softgen.softmax(row, dtype=dtype)
    assert float(y[0, 1]) == even + ulp
    assert float(np.float32(softgen.softmax(row)[0, 1]).astype(dtype)) == even  # what twice gives
    with pytest.raises(ValueError, match="shape"):
        softgen.softmax(x, out=np.empty((3, 5), dtype))


@pytest.mark.parametrize("dtype", SIXTEEN + [F64], ids=str)
def test_in_place_and_out_per_dtype(dtype):
    x = random_rows(dtype, 5, 1000, seed=2)
    expected = enabled(softgen.softmax, x)
    x2 = x.copy()
    assert softgen.softmax(x2, out=x2) is x2
    assert np.array_equal(x2, expected)
    t = np.asfortranarray(x)  # in place on a view laid out otherwise
    assert softgen.softmax(t, out=t) is t
    assert np.array_equal(t, expected)


@pytest.mark.parametrize("dtype", OTHER_DTYPES, ids=str)
def test_empty_shapes_per_dtype(dtype):
    assert enabled(softgen.softmax, np.zeros((0, 5), dtype)).dtype == dtype
    assert softgen.softmax(np.zeros((3, 0), dtype)).shape == (3, 0)
    lse = softgen.logsumexp(np.zeros((3, 0), dtype))
    assert lse.dtype == dtype and lse.shape == (3,) and np.all(lse == -np.inf)
    assert softgen.log_softmax(np.zeros((2, 0, 3), dtype), axis=1, dtype=F32).dtype == F32
    y = softgen.softmax(np.zeros((2, 3), dtype), dtype=">f8")  # the result in native order
    assert y.dtype == F64 and np.allclose(y, 1 / 3, rtol=1e-15)


def test_out_and_dtype_mismatches_name_both():
    x = random_rows(F32, 2, 3)
    with pytest.raises(TypeError, match="out has dtype float32, but dtype=float64 asks for a float64 result"):
        softgen.softmax(x, out=np.zeros((2, 3), F32), dtype=np.float64)
    with pytest.raises(TypeError, match="out has dtype float64, but dtype=float16"):
        softgen.log_softmax(x, out=np.zeros((2, 3), F64), dtype="float16")
    with pytest.raises(TypeError, match="out has dtype float16, but dtype=float32"):
        softgen.logsumexp(x, out=np.zeros(2, F16), dtype=F32)
    with pytest.raises(TypeError, match="out has dtype int32; the result's dtype is float32 \\(x's\\)"):
        softgen.softmax(x, out=np.zeros((2, 3), np.int32))
    with pytest.raises(TypeError, match="out has dtype complex64; the result's dtype is float16"):
        softgen.softmax(x.astype(F16), out=np.zeros((2, 3), np.complex64))
    with pytest.raises(TypeError, match="out has dtype >f8; the result's dtype is float32"):
        softgen.softmax(x, out=np.zeros((2, 3), ">f8"))
    with pytest.raises(TypeError, match="out has dtype int64; the result's dtype is float64"):
        softgen.softmax([[1, 2, 3]], out=np.zeros((1, 3), np.int64))
    with pytest.raises(TypeError, match="unsupported dtype int32"):
        softgen.softmax(x, dtype=np.int32)
    with pytest.raises(TypeError, match="unsupported dtype 'complex64'|unsupported dtype complex64"):
        softgen.softmax(x, dtype="complex64")
    with pytest.raises(TypeError, match="out must be a numpy array"):
        softgen.softmax(x, out=[[0.0] * 3] * 2, dtype=np.float32)


def test_float32_fast_path_is_still_taken(monkeypatch):
    """float32 C-contiguous arrays over the last axis (new output or a float32 out) go
    straight to the kernel: no input checks, no general path, the float32 lookup key."""
    x = random_rows(F32, 4, 16)
    out = np.empty_like(x)
    expected = {op: OP_FN[op](x) for op in softgen.OPS}

    def general(*args, **kw):
        raise AssertionError("took the general path")
    monkeypatch.setattr(api, "_run_general", general)
    monkeypatch.setattr(runtime, "_run_general", general)
    monkeypatch.setattr(api, "_as_input", general)
    monkeypatch.setattr(api, "_result_dtype", general)
    for op in softgen.OPS:
        assert np.array_equal(OP_FN[op](x), expected[op])
        assert np.array_equal(OP_FN[op](x, axis=1), expected[op])
    assert softgen.softmax(x, out=out) is out and np.array_equal(out, expected["softmax"])
    assert ("softmax", "auto", 4, 16, softgen.tune.generation) in api._kernels
    with pytest.raises(AssertionError, match="general path"):  # the spy can fail
        softgen.softmax(x.T)
    with pytest.raises(AssertionError, match="general path"):
        softgen.softmax(x, dtype=np.float32)


@pytest.mark.parametrize("dtype", OTHER_DTYPES, ids=str)
def test_other_dtypes_take_the_fast_call(monkeypatch, dtype):
    """C-contiguous arrays of any dtype run the kernel with no copies or views."""
    x = random_rows(dtype, 4, 1000)
    expected = enabled(softgen.softmax, x)

    def general(*args, **kw):
        raise AssertionError("took the general path")
    monkeypatch.setattr(runtime, "_run_general", general)
    assert np.array_equal(softgen.softmax(x), expected)
    out = np.empty_like(x)
    assert softgen.softmax(x, out=out) is out and np.array_equal(out, expected)


class _FakeKernel:
    def __init__(self, op, algorithm, dtype, out_dtype, schedule):
        self.op, self.algorithm, self.schedule, self.row_output = op, algorithm, schedule, op == "logsumexp"
        self.dtype, self.out_dtype = np.dtype(dtype), np.dtype(dtype if out_dtype is None else out_dtype)


def test_kernel_lookup_is_per_dtype(monkeypatch):
    """The per-call lookup keys each (x dtype, y dtype) apart: one kernel per pair and
    shape, float32's under the key it had before dtypes; auto never picks three_pass_reload
    where y is narrower than the compute dtype."""
    monkeypatch.setattr(api, "_kernels", {})
    monkeypatch.setattr(api, "_compile_variant", lambda op, algorithm, dtype, out_dtype, target, schedule, variant:
                        _FakeKernel(op, algorithm, dtype, out_dtype, schedule))
    monkeypatch.setattr(softgen.tune, "llc_bytes", lambda: 32 << 20)
    pairs = [(F32, None), (F32, F64), (F64, None), (F64, F32), (F16, None), (F16, F32), (F32, F16)]
    if BF16 is not None:
        pairs += [(BF16, None), (BF16, F32), (F32, BF16)]
    kernels = {}
    for x_dtype, out_dtype in pairs:
        x = np.zeros((4, 1000), x_dtype)
        k = api._kernel_for("softmax", "auto", x, 1, out_dtype)
        y_dtype = x_dtype if out_dtype is None else out_dtype
        assert (k.dtype, k.out_dtype) == (x_dtype, y_dtype)
        assert api._kernel_for("softmax", "auto", x, 1, out_dtype) is k
        kernels[x_dtype, y_dtype] = k
        narrow = y_dtype.itemsize < max(4, x_dtype.itemsize, y_dtype.itemsize)
        assert (k.algorithm == "three_pass_reload") == (not narrow), (x_dtype, y_dtype, k.algorithm)
    assert len({id(k) for k in kernels.values()}) == len(kernels)
    assert ("softmax", "auto", 4, 1000, softgen.tune.generation) in api._kernels
    assert ("softmax", "auto", 4, 1000, softgen.tune.generation, F16, F32, api._PLAIN) in api._kernels
    assert len(api._kernels) == len(pairs)
    # the API's calls land on these keys (x's dtype, the result's)
    monkeypatch.setattr(api, "_run", lambda kernel, arr, ax, out, threads, operands=(): kernel)
    assert softgen.softmax(np.zeros((4, 1000), F16), dtype=F32) is kernels[F16, F32]
    assert softgen.softmax(np.zeros((4, 1000), F32), out=np.zeros((4, 1000), F64)) is kernels[F32, F64]
    assert softgen.softmax(np.zeros((4, 1000), np.int16)) is kernels[F64, F64]
    # float64 computed, stored as 16 bits: the float64 kernel, its result rounded once
    monkeypatch.setattr(api, "_round_float64", lambda y, out, dtype, who: (y, dtype))
    assert softgen.softmax(np.zeros((4, 1000), np.int16), dtype=F16) == (kernels[F64, F64], F16)
    assert softgen.softmax(np.zeros((4, 1000), F64), out=np.zeros((4, 1000), F16)) == (kernels[F64, F64], F16)


def test_kernel_objects_know_their_dtypes():
    k = softgen.compile("softmax", algorithm="two_pass")
    assert (k.dtype, k.out_dtype) == (F32, F32)
    with pytest.raises(TypeError, match="x has dtype float64; this kernel reads float32"):
        k(np.zeros((2, 3), F64))
    with pytest.raises(TypeError, match="x has dtype int32; this kernel reads float32"):
        k(np.zeros((2, 3), np.int32))
    with pytest.raises(TypeError, match="out has dtype float64; expected float32"):
        k(np.zeros((2, 3), F32), out=np.zeros((2, 3), F64))


def test_kernels_of_other_dtypes():
    pairs = [("float64", None), ("float16", "float32"), ("float32", "float64")]
    if BF16 is not None:
        pairs.append(("bfloat16", "float32"))
    for dtype, out_dtype in pairs:
        k = enabled(softgen.compile, "log_softmax", algorithm="online", dtype=dtype, out_dtype=out_dtype)
        assert (k.dtype.name, k.out_dtype.name) == (dtype, out_dtype or dtype)
        x = random_rows(k.dtype, 3, 40)
        check_as("log_softmax", x, k(x), k.out_dtype)
        with pytest.raises(TypeError, match=f"this kernel reads {dtype}"):
            k(np.zeros((2, 3), F32 if dtype == "float64" else F64))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_rows_view_and_output_placement_per_itemsize(dtype):
    a = np.zeros((3, 5, 7), dtype)
    assert runtime._rows_view(a).shape == (15, 7)
    assert runtime._rows_view(a[:, :, ::2]) is None       # element stride of two items
    assert runtime._rows_view(a[:, :, 1:]).strides == (7 * dtype.itemsize, dtype.itemsize)
    assert runtime._rows_view(a[:, 1:, :]) is None        # no [rows, n] view
    assert runtime._rows_view(a[:, :, ::-1]) is None
    x = np.zeros((64, 64), F32)[:, 1:]
    for out_dtype in (F32, dtype):
        y = runtime.same_page_offset(x, (10, 9), dtype=out_dtype)
        assert y.dtype == out_dtype and y.shape == (10, 9)
        gap = (x.ctypes.data + runtime.OUTPUT_DELTA - y.ctypes.data) % runtime.PAGE
        assert gap < out_dtype.itemsize
    assert runtime.same_page_offset(x.astype(dtype), (3,)).dtype == dtype  # default: x's


@pytest.mark.parametrize("dtype", OTHER_DTYPES, ids=str)
@pytest.mark.parametrize("op", softgen.OPS)
def test_axes_and_views_per_dtype(op, dtype):
    """Any axis and layout, and arrays spanning pages (outputs placed half a page from x)."""
    x = random_rows(dtype, 6 * 7, 90, seed=3).reshape(6, 7, 90)
    for view in (x, x[:, ::2, 1:], x.transpose(2, 0, 1), np.asfortranarray(x)):
        for axis in (0, 1, -1):
            y = enabled(OP_FN[op], view, axis=axis)
            moved = np.moveaxis(view, axis, -1)
            check_as(op, moved, y if op == "logsumexp" else np.moveaxis(y, axis, -1), dtype)


def test_choose_algorithm_per_dtype(monkeypatch):
    monkeypatch.setattr(softgen.tune, "llc_bytes", lambda: 32 << 20)
    from softgen.api import choose_algorithm
    assert choose_algorithm("softmax", 1000) == "three_pass_reload"
    assert choose_algorithm("softmax", 1000, dtype="float16") == "three_pass_recompute"
    assert choose_algorithm("softmax", 1000, dtype="float16", out_dtype="float32") == "three_pass_reload"
