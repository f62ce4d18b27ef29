"""The correctness matrix: every vector width this host runs x every schedule knob the
tuner or the built-in rule can pick x every op and algorithm x row lengths past the block
and streaming code paths x x and y at every 4-byte offset in a 64-byte line, row strides
larger than n, in place, and values at scales 1 to 300 with -inf, huge and tiny ones mixed
in.  Every op x algorithm x width is a test; hypothesis samples the rest of the cross
product for each: a fixed-seed sample by default, many more examples with
SOFTGEN_LONG_TESTS=1 (or a number: that many examples per test).  Every dtype pair (x's,
y's) runs the same matrix with fewer examples.  Results are compared against float64
(longdouble for float64 data; tests/reference.py) and the memory around the output rows
is checked untouched."""
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings, strategies as st

import softgen
from softgen import numerics, ops, tune
from softgen.lower import Schedule
from softgen.lower.plan import PAIR_SUMS
from reference import BFLOAT16, PAIRS, check, compute_dtype
from widths import width_targets

WIDTHS = width_targets()
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
# (x's dtype, y's dtype): one dtype each, and the mixed forms users need
DTYPE_PAIRS = [(F32, F32), (F64, F64), (F16, F16), (BFLOAT16, BFLOAT16), (BFLOAT16, F32), (F32, F16)]
LINE_BYTES = 64
ELEMENT_BUDGET = 1 << 21  # elements per example, so each stays well under a second
SENTINEL = -1234.5
_long = os.environ.get("SOFTGEN_LONG_TESTS", "")
WORST: dict = {}          # (op, algorithm, width, dtypes) -> worst error seen (conftest prints it)
EXAMPLES = (int(_long) if _long.isdigit() and int(_long) > 1 else 300) if _long else 2
OTHER_DTYPE_EXAMPLES = EXAMPLES if _long else 1


@st.composite
def schedules(draw):
    """Any schedule: the knobs the tuner and the built-in rule set, and the others."""
    unroll = draw(st.sampled_from([1, 2, 3, 4, 8]))
    rows = draw(st.sampled_from([1, 2, 4, 8, 16]))
    return Schedule(
        unroll=unroll,
        accumulators=draw(st.sampled_from([0] + [a for a in (1, 2, 3) if a <= unroll])),   # u % sets
        rows_per_group=rows,
        # unrolled vectors x interleaved rows (x pipeline stages) is the sweep's body: LLVM took
        # 124 s on 8 x 4 x 3 at 4 lanes, so the sample stays at sizes the tuner picks
        interleave=draw(st.sampled_from([i for i in (1, 2, 4) if rows % i == 0 and unroll * i <= 8])),
        block=draw(st.sampled_from([16, 48, numerics.REDUCTION_BLOCK])),
        nontemporal=draw(st.booleans()),
        prefetch=draw(st.sampled_from([0, 512])),
        fast_exp=draw(st.booleans()),
        online_block_max=draw(st.booleans()),
        pair_sum=draw(st.sampled_from(PAIR_SUMS)),
        pipeline=draw(st.booleans()))


def row_lengths():
    """Short rows and tails, lengths around block boundaries, and long rows."""
    blocks = st.builds(lambda k, d, b: max(k * b + d, 0), st.integers(1, 3), st.integers(-3, 3),
                       st.sampled_from([16, 48, numerics.REDUCTION_BLOCK]))
    long_rows = st.sampled_from([(1 << 17) + 3, (1 << 20) - 1, (1 << 21) + 5])
    return st.one_of(st.integers(0, 80), blocks, long_rows)


ROW_KINDS = ("normal", "ramp", "large early, larger late", "specials", "all -inf", "subnormal outputs",
             "equal but the max")


def make_row(rng, n: int, scale: float, kind: str, dtype=F32) -> np.ndarray:
    x = rng.standard_normal(n) * scale
    if kind == "ramp":
        x = np.linspace(-scale, scale, n) * 3
    elif kind == "large early, larger late" and n:
        x[min(1, n - 1)] = 30.0 * scale / 4 + 10
        x[-1] = x[min(1, n - 1)] + 20
    elif kind == "specials" and n:
        for value in (-np.inf, 3e38, -3e38, 1e-30, np.inf, np.nan):
            if rng.random() < (0.7 if np.isfinite(value) or value < 0 else 0.1):
                x[rng.integers(0, n, size=max(1, n // 16))] = value
    elif kind == "all -inf":
        x[:] = -np.inf
    elif kind == "equal but the max":   # every addition of a plain sum rounds the same way
        x[:] = 0
        x[: min(1, n)] = 0.82
    elif kind == "subnormal outputs":
        low = {F64: -745.0, F16: -17.0}.get(np.dtype(dtype), -103.0)   # where e^x leaves the normal range
        x = np.linspace(low, low + 16, n)
        x[: min(1, n)] = 0
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def placed(rows: int, cols: int, offset: int, stride: int, dtype=F32) -> tuple[np.ndarray, np.ndarray]:
    """(buffer, view): a rows x cols view whose rows are `stride` elements apart, starting
    `offset` elements past a 64-byte boundary, inside a sentinel-filled buffer with a line
    of slack on each side."""
    size_of = np.dtype(dtype).itemsize
    line = LINE_BYTES // size_of
    size = line + offset + max(rows - 1, 0) * stride + cols + line
    raw = np.full(size + line, SENTINEL, dtype)
    skip = (-raw.ctypes.data // size_of) % line
    buf = raw[skip:skip + size]
    view = np.lib.stride_tricks.as_strided(buf[line + offset:], (rows, cols), (stride * size_of, size_of))
    return buf, view


def outside(buf: np.ndarray, view: np.ndarray) -> np.ndarray:
    """A mask of buf's elements that the view does not cover."""
    mask = np.ones(buf.size, bool)
    size_of = buf.itemsize
    start = (view.ctypes.data - buf.ctypes.data) // size_of
    for r in range(view.shape[0]):
        first = start + r * view.strides[0] // size_of
        mask[first:first + view.shape[1]] = False
    return mask


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"u{a.itemsize}")


@st.composite
def cases(draw):
    n = draw(row_lengths())
    rows = draw(st.integers(0 if n < 100 else 1, max(1, min(40, ELEMENT_BUDGET // max(n, 1)))))
    in_place = draw(st.booleans())
    line = LINE_BYTES // 2   # in elements of the smallest dtype; wider ones wrap around lines
    x_offset = draw(st.integers(0, line - 1))
    return dict(n=n, rows=rows, in_place=in_place,
                schedule=draw(st.one_of(schedules(), st.just(None))),
                x_offset=x_offset, x_stride=n + draw(st.integers(0, 2 * line)),
                y_offset=x_offset if in_place else draw(st.integers(0, line - 1)),
                y_pad=draw(st.integers(0, 2 * line)),
                scale=draw(st.sampled_from([1.0, 4.0, 30.0, 300.0])),
                kinds=draw(st.lists(st.sampled_from(ROW_KINDS), min_size=1, max_size=6)),
                seed=draw(st.integers(0, 2 ** 32 - 1)))


def allowed(op: str, algo: str, dtypes) -> bool:
    """three_pass_reload keeps e^(x - m) in y: refused where y is narrower than compute."""
    return not (algo == "three_pass_reload" and dtypes[1].itemsize < compute_dtype(*dtypes).itemsize)


@pytest.mark.parametrize("dtypes", DTYPE_PAIRS, ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op,algo", PAIRS)
def test_matrix(op, algo, width, dtypes):
    """Each op x algorithm x width x dtypes draws its own sample (its own fixed seed)."""
    if not allowed(op, algo, dtypes):
        with pytest.raises(NotImplementedError, match="round twice"):
            softgen.compile(op, algorithm=algo, dtype=dtypes[0].name, out_dtype=dtypes[1].name)
        return
    examples = EXAMPLES if dtypes == (F32, F32) else OTHER_DTYPE_EXAMPLES
    settle = settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    run = settle(given(case=cases())(lambda case: run_case(op, algo, width, case, dtypes)))
    if not _long:
        name = f"{op} {algo} {width}" + ("" if dtypes == (F32, F32) else f" {dtypes[0]} {dtypes[1]}")
        run = seed(zlib.crc32(name.encode()))(run)
    run()


def run_case(op: str, algo: str, width: int, case: dict, dtypes=(F32, F32)):
    n, rows = case["n"], case["rows"]
    x_dtype, y_dtype = dtypes
    # no schedule drawn: the one the built-in rule gives this shape
    schedule = case["schedule"] or tune.builtin_schedule(op, algo, rows, n)
    kernel = softgen.compile(op, algorithm=algo, target=WIDTHS[width], schedule=schedule,
                             dtype=x_dtype.name, out_dtype=y_dtype.name)
    in_place = case["in_place"] and kernel.in_place_safe and not kernel.row_output and x_dtype == y_dtype
    rng = np.random.default_rng(case["seed"])
    x_buf, x = placed(rows, n, case["x_offset"], case["x_stride"], x_dtype)
    kinds = case["kinds"]
    for r in range(rows):
        x[r] = make_row(rng, n, case["scale"], kinds[r % len(kinds)], x_dtype)
    x_before, x_buf_before = x.copy(), x_buf.copy()
    out_cols = 1 if kernel.row_output else n
    if in_place:
        y_buf, y = x_buf, x
    else:
        y_buf, y = placed(rows, out_cols, case["y_offset"], out_cols + case["y_pad"], y_dtype)
    size_of = x_dtype.itemsize, y_dtype.itemsize
    kernel._fn(rows, n, x.ctypes.data, x.strides[0] // size_of[0], y.ctypes.data, y.strides[0] // size_of[1])
    got = y[:, 0].copy() if kernel.row_output else y.copy()
    err = check(op, x_before, got)
    key = (op, algo, width) + ((f"{x_dtype}->{y_dtype}",) if dtypes != (F32, F32) else ())
    WORST[key] = max(WORST.get(key, 0.0), err)
    around = outside(y_buf, y)
    assert np.array_equal(bits(y_buf[around]), bits(x_buf_before if in_place else
                          np.full(y_buf.size, SENTINEL, y_dtype))[around]), "wrote outside the rows"
    if not in_place:
        assert np.array_equal(bits(x_buf), bits(x_buf_before)), "changed x"


# softplus_normalize's parameters: scale's sign and size (|scale| > 1 takes the log|scale| form),
# power 1 (no log: numerics.softplus_pair), powers below and above 1; the relative error grows
# with the power (v^p carries p times v's)
SOFTPLUS_PARAMS = [(1.0, 1.0), (2.5, 1.0), (-1.5, 0.7), (1e3, 3.0), (1.0, 8.0)]


def softplus_rows(n: int, scale: float, seed: int) -> np.ndarray:
    """Rows of one length: normal * 4 and * 100, around -60 / scale (tiny v, no underflow in
    the result), huge, with -inf, +inf, NaN, all -inf (each special in its own row)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((4, n))
    rows = [base[0] * 4, base[1] * 100, base[2] * 0.01 - 60 / abs(scale), np.abs(base[3]) * 1e37]
    for value in (-np.inf, np.inf, np.nan):
        row = base[0] * 4
        row[:: 3 if value == -np.inf else max(n, 1)] = value
        rows.append(row)
    rows.append(np.full(n, -np.inf))
    return np.array(rows)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("scale, power", SOFTPLUS_PARAMS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_softplus_normalize_parameters(width, scale, power, dtype):
    """Every tail up to three vectors and a few long rows, at a misaligned start, against
    longdouble, for each parameter pair at each width."""
    spec = ops.SOFTPLUS_NORMALIZE.with_params(scale=scale, power=power)
    kernel = softgen.compile(spec, algorithm="two_pass", dtype=dtype, target=WIDTHS[width])
    rtol = {F32: 1e-6, F64: 4e-15}[dtype] * max(1.0, power)
    for n in [*range(0, 3 * width + 2), 1000, 4099]:
        x = softplus_rows(n, scale, seed=n).astype(dtype)
        buf = np.empty(x.size + 1, dtype)
        misaligned = buf[1:].reshape(x.shape)   # 4 or 8 bytes past the allocation's alignment
        misaligned[...] = x
        y = kernel(misaligned)
        for i in range(len(x)):
            check("softplus_normalize", x[i:i + 1], y[i:i + 1], rtol, scale=scale, power=power)
