"""The numpy-facing API against float64: every op x algorithm x row length, special
inputs, long rows, axes, views, out=, and bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import softgen
from reference import check, check_relative, check_ulps, near_zero_rows, offset_rows, reference

PAIRS = [(op, algo) for op in softgen.OPS for algo in softgen.ALGORITHMS
         if not (algo == "three_pass_reload" and op != "softmax")]
OP_FN = {"softmax": softgen.softmax, "log_softmax": softgen.log_softmax,
         "logsumexp": softgen.logsumexp}
NEG_INF, POS_INF, NAN = float("-inf"), float("inf"), float("nan")


def run(op, algo, x, **kw):
    return OP_FN[op](x, algorithm=algo, **kw)


@pytest.mark.parametrize("op,algo", PAIRS)
@pytest.mark.parametrize("n", range(0, 131))
def test_every_row_length(op, algo, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((3, n)) * 4).astype(np.float32)
    check(op, x, run(op, algo, x))


def special_rows(n: int) -> dict:
    rng = np.random.default_rng(1)
    base = (rng.standard_normal(n) * 4).astype(np.float32)
    rows = {}
    masked = base.copy()
    masked[::3] = NEG_INF
    rows["some -inf"] = masked
    rows["all -inf"] = np.full(n, NEG_INF, np.float32)
    for name, value in (("+inf", POS_INF), ("nan", NAN)):
        r = base.copy()
        r[n // 2] = value
        rows[name] = r
    rows["+inf and -inf"] = np.where(np.arange(n) % 2, POS_INF, NEG_INF).astype(np.float32)
    r = base.copy()
    r[n // 3], r[n - 1] = POS_INF, NAN
    rows["+inf and nan"] = r
    rows["huge"] = np.tile(np.float32([3e38, -3e38]), n // 2 + 1)[:n]
    rows["+-FLT_MAX"] = np.tile(np.float32([3.4028235e38, -3.4028235e38, 0]), n)[:n]
    sub = np.linspace(-103, -87, n).astype(np.float32)  # e^(x - max) is subnormal
    sub[0] = 0
    rows["subnormal outputs"] = sub
    rows["large offset"] = (base + np.float32(1e5)).astype(np.float32)
    rows["beyond pair range"] = (base * 1e6).astype(np.float32)
    rows["constant"] = np.full(n, 7.0, np.float32)
    rows["tiny"] = (base * 1e-30).astype(np.float32)
    return rows


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
    """2^24 elements: blocked, compensated accumulation keeps the error at a few ulp."""
    rng = np.random.default_rng(24)
    x = (rng.standard_normal((1, 1 << 24)) * 4).astype(np.float32)
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
    (np.zeros((2, 3), np.float64), TypeError, "float64"),
    (np.zeros((2, 3), np.int32), TypeError, "int32"),
    (np.array([[1.0, None]], dtype=object), TypeError, "object"),
    ([[1.0, 2.0]], TypeError, "float64"),
    (np.float32(3.0), ValueError, "0-d"),
])
def test_bad_inputs(bad, err, match):
    with pytest.raises(err, match=match):
        softgen.softmax(bad)


def test_bad_arguments():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        softgen.softmax(x, axis=2)
    with pytest.raises(TypeError, match="axis must be an integer"):
        softgen.softmax(x, axis=1.5)
    with pytest.raises(ValueError, match="unknown algorithm 'fast'"):
        softgen.softmax(x, algorithm="fast")
    with pytest.raises(ValueError, match="unknown op 'softmin'"):
        softgen.compile("softmin", algorithm="online")
    with pytest.raises(TypeError, match="float64"):
        softgen.compile("softmax", algorithm="online", dtype="float64")
    with pytest.raises(NotImplementedError, match="reload"):
        softgen.logsumexp(x, algorithm="three_pass_reload")
    with pytest.raises(ValueError, match="shape"):
        softgen.softmax(x, out=np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        softgen.softmax(x, out=np.zeros((2, 3), np.float64))
    with pytest.raises(TypeError, match="numpy array"):
        softgen.softmax(x, out=[[0.0] * 3] * 2)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        softgen.softmax(x, out=ro)
    with pytest.raises(ValueError, match="shape"):
        softgen.logsumexp(x, out=np.zeros((2, 3), np.float32))
