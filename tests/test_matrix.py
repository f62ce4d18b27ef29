"""The correctness matrix: every vector width this host runs x every schedule knob the
tuner or the built-in rule can pick x every op and algorithm x row lengths past the block
and streaming code paths x x and y at every 4-byte offset in a 64-byte line, row strides
larger than n, in place, and values at scales 1 to 300 with -inf, huge and tiny ones mixed
in.  Every op x algorithm x width is a test; hypothesis samples the rest of the cross
product for each: a fixed-seed sample by default, many more examples with
SOFTGEN_LONG_TESTS=1 (or a number: that many examples per test).  Results are compared
against float64 (tests/reference.py) and the memory around the output rows is checked
untouched."""
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings, strategies as st

import softgen
from softgen import numerics, tune
from softgen.lower import Schedule
from softgen.lower.plan import PAIR_SUMS
from reference import check
from widths import width_targets

WIDTHS = width_targets()
PAIRS = [(op, algo) for op in softgen.OPS for algo in softgen.ALGORITHMS
         if not (algo == "three_pass_reload" and op != "softmax")]
LINE = 64 // 4            # float32 elements in a 64-byte line
ELEMENT_BUDGET = 1 << 21  # elements per example, so each stays well under a second
SENTINEL = np.float32(-1234.5)
_long = os.environ.get("SOFTGEN_LONG_TESTS", "")
WORST: dict = {}          # (op, algorithm, width) -> worst error seen (conftest prints it)
EXAMPLES = (int(_long) if _long.isdigit() and int(_long) > 1 else 300) if _long else 5


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


def make_row(rng, n: int, scale: float, kind: str) -> np.ndarray:
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
        x = np.linspace(-103, -87, n)
        x[: min(1, n)] = 0
    return x.astype(np.float32)


def placed(rows: int, cols: int, offset: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(buffer, view): a rows x cols view whose rows are `stride` apart, starting `offset`
    elements past a 64-byte boundary, inside a sentinel-filled buffer with a line of slack
    on each side."""
    size = LINE + offset + max(rows - 1, 0) * stride + cols + LINE
    raw = np.full(size + LINE, SENTINEL, np.float32)
    skip = (-raw.ctypes.data // 4) % LINE
    buf = raw[skip:skip + size]
    view = np.lib.stride_tricks.as_strided(buf[LINE + offset:], (rows, cols), (stride * 4, 4))
    return buf, view


def outside(buf: np.ndarray, view: np.ndarray) -> np.ndarray:
    """A mask of buf's elements that the view does not cover."""
    mask = np.ones(buf.size, bool)
    start = (view.ctypes.data - buf.ctypes.data) // 4
    for r in range(view.shape[0]):
        first = start + r * view.strides[0] // 4
        mask[first:first + view.shape[1]] = False
    return mask


@st.composite
def cases(draw):
    n = draw(row_lengths())
    rows = draw(st.integers(0 if n < 100 else 1, max(1, min(40, ELEMENT_BUDGET // max(n, 1)))))
    in_place = draw(st.booleans())
    x_offset = draw(st.integers(0, LINE - 1))
    return dict(n=n, rows=rows, in_place=in_place,
                schedule=draw(st.one_of(schedules(), st.just(None))),
                x_offset=x_offset, x_stride=n + draw(st.integers(0, 2 * LINE)),
                y_offset=x_offset if in_place else draw(st.integers(0, LINE - 1)),
                y_pad=draw(st.integers(0, 2 * LINE)),
                scale=draw(st.sampled_from([1.0, 4.0, 30.0, 300.0])),
                kinds=draw(st.lists(st.sampled_from(ROW_KINDS), min_size=1, max_size=6)),
                seed=draw(st.integers(0, 2 ** 32 - 1)))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op,algo", PAIRS)
def test_matrix(op, algo, width):
    """Each op x algorithm x width draws its own sample (its own fixed seed)."""
    settle = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    run = settle(given(case=cases())(lambda case: run_case(op, algo, width, case)))
    if not _long:
        run = seed(zlib.crc32(f"{op} {algo} {width}".encode()))(run)
    run()


def run_case(op: str, algo: str, width: int, case: dict):
    n, rows = case["n"], case["rows"]
    # no schedule drawn: the one the built-in rule gives this shape
    schedule = case["schedule"] or tune.builtin_schedule(op, algo, rows, n)
    kernel = softgen.compile(op, algorithm=algo, target=WIDTHS[width], schedule=schedule)
    in_place = case["in_place"] and not kernel.row_output
    rng = np.random.default_rng(case["seed"])
    x_buf, x = placed(rows, n, case["x_offset"], case["x_stride"])
    kinds = case["kinds"]
    for r in range(rows):
        x[r] = make_row(rng, n, case["scale"], kinds[r % len(kinds)])
    x_before, x_buf_before = x.copy(), x_buf.copy()
    out_cols = 1 if kernel.row_output else n
    if in_place:
        y_buf, y = x_buf, x
    else:
        y_buf, y = placed(rows, out_cols, case["y_offset"], out_cols + case["y_pad"])
    kernel.run_rows(x, y)
    got = y[:, 0].copy() if kernel.row_output else y.copy()
    err = check(op, x_before, got)
    key = (op, algo, width)
    WORST[key] = max(WORST.get(key, 0.0), err)
    around = outside(y_buf, y)
    assert np.array_equal(y_buf[around].view(np.int32), (x_buf_before if in_place else
                          np.full(y_buf.size, SENTINEL))[around].view(np.int32)), "wrote outside the rows"
    if not in_place:
        assert np.array_equal(x_buf.view(np.int32), x_buf_before.view(np.int32)), "changed x"
