"""The algorithms as IR programs: every op x algorithm builds and verifies, the ones that
make no sense say why, and each program computes the right thing when its IR is
interpreted in float64 (independent of any backend).  Then the programs' variants and the
other programs (temperature, sink, unified_max, backward) run through the API and at
every vector width against float64."""
import numpy as np
import pytest

import softgen
from softgen import algorithms
from softgen.ir import Kind, Pass, listing, nan_caught, verify
from interpreter import interpret
from reference import PAIRS, check, finfo, misaligned_rows, reference, special_rows
from widths import width_targets


@pytest.mark.parametrize("op,algo", PAIRS)
def test_programs_verify_and_print(op, algo):
    program = algorithms.build(op, algo)
    assert verify(program) is program
    text = str(program)
    assert text.startswith(f"kernel {op}.{algo}")
    assert program.row_output == (op == "logsumexp")
    assert ("softplus" in text) == (op == "softplus_normalize")
    assert ("softplus_pow" in listing(program)) == (op == "softplus_normalize")   # (in the fallback)


@pytest.mark.parametrize("op", ["log_softmax", "logsumexp"])
def test_nonsense_pairs_say_why(op):
    with pytest.raises(NotImplementedError, match="three_pass_recompute"):
        algorithms.build(op, "three_pass_reload")


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown op 'softplus'; expected one of softmax"):
        algorithms.build("softplus", "online")
    with pytest.raises(ValueError, match="unknown algorithm 'magic'; expected one of three_pass_reload"):
        algorithms.build("softmax", "magic")


def test_pass_counts_match_the_algorithms():
    passes = {algo: len(algorithms.build("softmax", algo).passes) for algo in algorithms.ALGORITHMS}
    assert passes == {"three_pass_reload": 3, "three_pass_recompute": 3, "two_pass": 2, "online": 2}
    assert len(algorithms.build("logsumexp", "online").passes) == 1


def test_max_skips_nan_only_where_a_sum_carries_it():
    """acc.max nan_caught in softmax's and log_softmax's three-pass programs; not in
    logsumexp's (its output is the max where that is infinite), nor where the max also
    flags empty rows."""
    def caught(op, algo, **variant):
        program = algorithms.build(op, algo, variant=algorithms.Variant(**variant))
        return [nan_caught(o) for p in program.passes for o in p.ops if o.kind is Kind.ACC_MAX]
    for algo in ("three_pass_reload", "three_pass_recompute"):
        assert caught("softmax", algo) == [True] and caught("softmax", algo, zero_empty=True) == [False]
    assert caught("log_softmax", "three_pass_recompute") == [True]
    assert caught("logsumexp", "three_pass_recompute") == [False]


@pytest.mark.parametrize("op,algo,fallback", [(op, "two_pass", "online") for op in ("softmax", "log_softmax", "logsumexp")]
                         + [("log_softmax", "unified_max", "three_pass_recompute")])
def test_guards_fall_back_to_an_exact_algorithm(op, algo, fallback):
    program = algorithms.build(op, algo)
    guards = [s for s in program.steps if not isinstance(s, Pass) and s.kind is Kind.GUARD]
    assert len(guards) == 1 and guards[0].attrs["fallback"].algorithm == fallback
    assert not any(not isinstance(s, Pass) and s.kind is Kind.GUARD for s in guards[0].attrs["fallback"].steps)


@pytest.mark.parametrize("op,algo", PAIRS)
def test_interpreted_programs_are_right(op, algo):
    program = algorithms.build(op, algo)
    rng = np.random.default_rng(5)
    rows = list(special_rows(40).values()) + [rng.standard_normal(n) * 4 for n in (0, 1, 7, 100)]
    for row in rows:
        row = np.asarray(row, np.float32)
        with np.errstate(over="ignore"):
            y = interpret(program, row.astype(np.float64)).astype(np.float32)
        check(op, row[None], y[None] if op != "logsumexp" else y, rtol=1e-6)


OP_FN = {"softmax": softgen.softmax, "log_softmax": softgen.log_softmax, "logsumexp": softgen.logsumexp}
# the ops whose variants these are: the exponential's (softplus_normalize has none)
EXP_OPS = [op for op in softgen.OPS if softgen.ops.get(op).term is softgen.ops.Term.EXP]
EXP_PAIRS = [(op, algo) for op, algo in PAIRS if op in EXP_OPS]


def run(op, algo, x, **kw):
    return OP_FN[op](x, algorithm=algo, **kw)


# --- temperature= -------------------------------------------------------------------------------

def scaled(x: np.ndarray, temperature, compute=np.float32) -> np.ndarray:
    """x times 1 / T rounded to the compute dtype, as the kernels read it (T per row of the
    last axis' rows, or one)."""
    inverse = (1.0 / np.asarray(temperature, np.float64)).astype(compute)
    with np.errstate(over="ignore", invalid="ignore"):   # inf, NaN and huge values as the kernel has them
        return (x.astype(compute) * (inverse[..., None] if inverse.ndim else inverse)).astype(compute)


@pytest.mark.parametrize("op,algo", EXP_PAIRS)
@pytest.mark.parametrize("n", [1, 5000])
def test_temperature_on_special_inputs(op, algo, n):
    rows = special_rows(n)
    x = np.stack(list(rows.values()))
    for temperature in (0.37, np.linspace(0.1, 8.0, len(rows)), 1e-30):
        y = run(op, algo, x, temperature=temperature)
        for i, name in enumerate(rows):
            t = temperature if np.ndim(temperature) == 0 else temperature[i]
            try:
                check(op, scaled(x[i:i + 1], t), y[i:i + 1])
            except AssertionError as e:
                raise AssertionError(f"T={t}, row '{name}': {e}") from None


@pytest.mark.parametrize("op", EXP_OPS)
def test_temperature_on_any_axis_layout_and_dtype(op):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 50, 4)) * 6).astype(np.float32)
    t = rng.uniform(0.2, 3.0, (3, 4))
    y = OP_FN[op](x, axis=1, temperature=t)
    want = OP_FN[op](np.moveaxis(scaled(np.moveaxis(x, 1, -1), t), -1, 1), axis=1)
    np.testing.assert_array_equal(y, want)
    xt = x.transpose(2, 0, 1)  # strided rows
    y = OP_FN[op](xt, temperature=t.T)
    np.testing.assert_array_equal(y, OP_FN[op](scaled(np.ascontiguousarray(xt), t.T)))
    x64 = x.astype(np.float64)
    check(op, scaled(x64[0].T, 0.3, np.float64), OP_FN[op](x64[0].T, temperature=0.3))
    # as x / T[:, None, :] writes it: x's axes, the reduced one of length 1 (sinks too)
    np.testing.assert_array_equal(OP_FN[op](x, axis=1, temperature=t[:, None, :]),
                                  OP_FN[op](x, axis=1, temperature=t))
    np.testing.assert_array_equal(OP_FN[op](x, axis=1, temperature=t[:1, None, :]),
                                  OP_FN[op](x, axis=1, temperature=np.broadcast_to(t[:1], t.shape)))
    if op != "logsumexp":
        np.testing.assert_array_equal(OP_FN[op](x, axis=1, sink=t[:, None, :]), OP_FN[op](x, axis=1, sink=t))


@pytest.mark.parametrize("op", EXP_OPS)
def test_temperature_with_threads_row_parallel_and_split(op, monkeypatch):
    from softgen import threads
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 64)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(threads, "parallel_from", 2)
    rng = np.random.default_rng(6)
    for shape in ((40, 333), (2, 5000)):   # rows over threads, then rows split into chunks
        x = (rng.standard_normal(shape) * 6).astype(np.float32)
        t = rng.uniform(0.2, 3.0, shape[0])
        y = OP_FN[op](x, temperature=t, algorithm="online", threads=4)
        check(op, scaled(x, t), y)


@pytest.mark.parametrize("lanes", sorted(width_targets()))
@pytest.mark.parametrize("op,algo", EXP_PAIRS)
def test_temperature_kernels_at_every_width(op, algo, lanes):
    kernel = softgen.compile(op, algorithm=algo, target=width_targets()[lanes], temperature=True)
    assert "inv_temperature" in kernel.ir and kernel.operands
    rng = np.random.default_rng(lanes)
    x = misaligned_rows((rng.standard_normal((19, 1001)) * 8).astype(np.float32))
    t = rng.uniform(0.05, 4.0, 19).astype(np.float32)
    y = kernel(x, operands=((1.0 / t.astype(np.float64)).astype(np.float32),))
    check(op, scaled(x, t), y)


@pytest.mark.parametrize("bad,err,match", [
    (0.0, ValueError, "positive and finite"), (-1.0, ValueError, "positive"), (np.nan, ValueError, "finite"),
    (np.inf, ValueError, "finite"), ([1.0, 2.0], ValueError, "does not broadcast"), ("hot", TypeError, "number"),
    (np.ones((3, 4)), ValueError, r"shape \(3, 4\) does not broadcast to the rows' shape \(3,\).* or \(3, 1\)"),
])
def test_bad_temperatures(bad, err, match):
    with pytest.raises(err, match=match):
        softgen.softmax(np.zeros((3, 4), np.float32), temperature=bad)


# --- sink= --------------------------------------------------------------------------------------

def check_with_sink(op: str, x: np.ndarray, sink, y: np.ndarray) -> None:
    """y is op over each row with its sink appended (the sink's own output dropped)."""
    sinks = np.broadcast_to(np.asarray(sink, x.dtype), x.shape[:1])[:, None]
    extended = np.concatenate([x, sinks], axis=1)
    if op == "logsumexp":
        check(op, extended, y)
        return
    with np.errstate(over="ignore"):
        last = reference(op, extended)[:, -1:].astype(y.dtype)
    check(op, extended, np.concatenate([y, last], axis=1))


SINKS = [0.0, -np.inf, np.inf, np.nan, -1e30, 7.5]


def check_each_row(op: str, kernel, x: np.ndarray, names: list, values: list, what: str, checker) -> None:
    """kernel on x with each of `values` as its one row operand (a number, or one per row),
    checker(op, row, its value, its output) on each row."""
    for value in values:
        y = kernel(x, operands=(np.asarray(value, np.float32).reshape(-1),))
        for i, name in enumerate(names):
            v = value if np.ndim(value) == 0 else value[i]
            try:
                checker(op, x[i:i + 1], v, y[i:i + 1])
            except AssertionError as e:
                raise AssertionError(f"{what}={v}, row '{name}': {e}") from None


@pytest.mark.parametrize("lanes", sorted(width_targets()))
@pytest.mark.parametrize("op,algo", EXP_PAIRS)
def test_sink_on_special_inputs_at_every_width(op, algo, lanes):
    kernel = softgen.compile(op, algorithm=algo, target=width_targets()[lanes], sink=True)
    for n in (1, 1001):
        rows = special_rows(n)
        x = misaligned_rows(np.stack(list(rows.values())))
        sinks = SINKS + [np.random.default_rng(n).standard_normal(len(rows)).astype(np.float32) * 5]
        check_each_row(op, kernel, x, list(rows), sinks, f"n={n}, sink", check_with_sink)


@pytest.mark.parametrize("op", EXP_OPS)
def test_sink_with_temperature_dtypes_and_threads(op, monkeypatch):
    from softgen import threads
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((6, 700)) * 5).astype(np.float32)
    sink, t = rng.standard_normal(6) * 3, rng.uniform(0.3, 2.0, 6)
    y = OP_FN[op](x, sink=sink, temperature=t)
    check_with_sink(op, scaled(x, t), (sink.astype(np.float32) * (1 / t).astype(np.float32)).astype(np.float32), y)
    x64 = x.astype(np.float64)
    check_with_sink(op, x64, 0.0, OP_FN[op](x64, sink=0.0))   # softmax1
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 64)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(threads, "parallel_from", 2)
    for shape in ((2, 3000), (20, 300)):   # split rows, then rows over threads
        xs = (rng.standard_normal(shape) * 5).astype(np.float32)
        sinks = (rng.standard_normal(shape[0]) * 5).astype(np.float32)
        check_with_sink(op, xs, sinks, OP_FN[op](xs, sink=sinks, algorithm="two_pass", threads=4))
    with pytest.raises(ValueError, match="sink of shape"):
        OP_FN[op](x, sink=[1.0, 2.0])


# --- algorithm="unified_max", phi= --------------------------------------------------------------

PHIS = [0.0, 5.0, -30.0, 1e5, -np.inf, np.nan]


@pytest.mark.parametrize("lanes", sorted(width_targets()))
@pytest.mark.parametrize("op", EXP_OPS)
def test_unified_max_on_special_inputs_at_every_width(op, lanes):
    """Right whatever phi: rows far from it (and phi itself inf or NaN) take the fallback."""
    kernel = softgen.compile(op, algorithm="unified_max", target=width_targets()[lanes])
    assert "phi" in kernel.ir and "guard" in kernel.ir and kernel.ir.count("pass ") == (1 if op != "softmax" else 2) \
        + (op == "log_softmax")
    for n in (1, 1001):
        rows = special_rows(n)
        x = misaligned_rows(np.stack(list(rows.values())))
        phis = PHIS + [np.random.default_rng(n).standard_normal(len(rows)).astype(np.float32) * 20]
        check_each_row(op, kernel, x, list(rows), phis, f"n={n}, phi", lambda op, x, phi, y: check(op, x, y))


@pytest.mark.parametrize("op", EXP_OPS)
def test_unified_max_dtypes_variants_and_threads(op, monkeypatch):
    from softgen import threads
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((6, 700)) * 5).astype(np.float32)
    check(op, x, OP_FN[op](x, algorithm="unified_max", phi=10.0))
    x64 = x.astype(np.float64)
    check(op, x64, OP_FN[op](x64, algorithm="unified_max", phi=rng.standard_normal(6) * 3))
    sink, t = rng.standard_normal(6), rng.uniform(0.3, 2.0, 6)
    want = OP_FN[op](x, sink=sink, temperature=t, algorithm="three_pass_recompute")
    got = OP_FN[op](x, sink=sink, temperature=t, algorithm="unified_max", phi=4.0)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-37 if op == "softmax" else 1e-5)   # (log: of |lse|)
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 64)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(threads, "parallel_from", 2)
    for shape in ((2, 3000), (20, 300)):   # split rows, then rows over threads
        xs = (rng.standard_normal(shape) * 5).astype(np.float32)
        xs[0, 7] = 60.0   # this row's max is far from phi: the fallback, split too
        check(op, xs, OP_FN[op](xs, algorithm="unified_max", phi=3.0, threads=4))
    with pytest.raises(ValueError, match="phi= goes with algorithm='unified_max'"):
        OP_FN[op](x, algorithm="unified_max")
    with pytest.raises(ValueError, match="phi= goes with"):
        OP_FN[op](x, phi=1.0)


@pytest.mark.parametrize("call", [lambda x, **kw: softgen.softmax(x, algorithm="unified_max", phi=0.0, **kw),
                                  lambda x, **kw: softgen.softplus_normalize(x, **kw)], ids=["unified_max", "softplus"])
def test_in_place_where_a_guard_follows_a_store(call):
    """A kernel that stores y before its guard (unified_max's softmax, softplus_normalize's
    stored terms) is not in_place_safe: a flagged row's fallback reads x again.  In place
    (and through a same-layout view) it goes through a temporary: the out-of-place result."""
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((4, 300)) * 3).astype(np.float32)
    x[0, 3], x[1, 4] = 200.0, -200.0   # far from phi; a term below the normal range: the fallback
    want = call(x)
    for inner in (slice(None), slice(0, 300, 1)):
        y = x.copy()
        assert call(y[:, inner], out=y[:, inner]) is not None
        np.testing.assert_array_equal(y, want)
    assert not softgen.compile("softmax", algorithm="unified_max").in_place_safe
    assert softgen.compile("softmax", algorithm="three_pass_reload").in_place_safe


@pytest.mark.parametrize("op", EXP_OPS)
def test_unified_max_learns_phi(op, monkeypatch):
    """A LearnedPhi takes the smallest finite row max of each call (the kernel's row maxima
    out, whichever path a row took), on one thread and on rows over threads."""
    from softgen import threads
    rng = np.random.default_rng(10)
    phi = softgen.LearnedPhi()
    assert "out row_max[row]" in softgen.algorithms.build(
        op, "unified_max", variant=softgen.algorithms.Variant(row_max=True)).__str__()
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 64)
    monkeypatch.setattr(threads, "parallel_from", 2)
    for offset, threads_ in ((50.0, 1), (55.0, 4), (-20.0, 4)):   # the first call's phi 0 is far: fallbacks
        x = (rng.standard_normal((16, 500)) * 3 + offset).astype(np.float32)
        x[3] = -np.inf
        x[5, 9] = np.nan
        check(op, x, OP_FN[op](x, algorithm="unified_max", phi=phi, threads=threads_))
        maxima = x.max(1)
        assert phi.value == maxima[np.isfinite(maxima)].min()
    before = phi.value
    OP_FN[op](np.full((2, 9), np.nan, np.float32), algorithm="unified_max", phi=phi)
    assert phi.value == before


# --- softmax_backward, log_softmax_backward ---------------------------------------------------------

def check_backward(op: str, y: np.ndarray, dy: np.ndarray, dx: np.ndarray, rtol: float = 1e-6) -> None:
    """dx against the float64 formula on the same y and dy, within rtol of the magnitudes its
    terms have (NaN where the formula gives NaN)."""
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if op == "softmax":
            want = y64 * (dy64 - (dy64 * y64).sum(-1, keepdims=True))
            scale = np.abs(y64) * (np.abs(dy64) + np.abs(dy64 * y64).sum(-1, keepdims=True))
        else:
            want = dy64 - np.exp(y64) * dy64.sum(-1, keepdims=True)
            scale = np.abs(dy64) + np.exp(y64) * np.abs(dy64).sum(-1, keepdims=True)
    assert np.array_equal(np.isnan(want), np.isnan(dx)), "NaN positions differ"
    ok = ~np.isnan(want)
    err = np.abs(dx[ok].astype(np.float64) - want[ok])
    tiny = float(finfo(dx.dtype).smallest_subnormal)   # dx rounded to a subnormal of its dtype
    assert np.all(err <= rtol * scale[ok] + tiny), f"max error {np.max(err / (scale[ok] + tiny)):.3g} of the terms"


@pytest.mark.parametrize("lanes", sorted(width_targets()))
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_backward_kernels_at_every_width(op, lanes):
    kernel = softgen.compile(op, algorithm="backward", target=width_targets()[lanes])
    assert "load.in name='dy'" in kernel.ir and kernel.ir.count("pass ") == 2
    rng = np.random.default_rng(lanes)
    for n in (1, 7, 64, 129, 1001):
        x = (rng.standard_normal((5, n)) * 4).astype(np.float32)
        x[1, ::3] = -np.inf
        x[1, 0] = 0.0
        y = OP_FN[op](x)
        dy = misaligned_rows(rng.standard_normal((5, n)).astype(np.float32))
        y = misaligned_rows(y)
        dx = np.empty((5, n), np.float32)
        kernel.run_rows(y, dx, 1, (dy,))
        check_backward(op, y, dy, dx)


def _backward_into_its_inputs(fn, y: np.ndarray, dy: np.ndarray) -> None:
    """out= may be dy or y themselves, a view of dy shifted by some elements, or along
    another axis: the result is the one into a new array."""
    want = fn(y, dy)
    for target in ("dy", "y"):
        y2, dy2 = y.copy(), dy.copy()
        out = dy2 if target == "dy" else y2
        assert fn(y2, dy2, out=out) is out
        np.testing.assert_array_equal(out, want)
    n = y.shape[1]
    flat = np.concatenate([dy.ravel(), np.zeros(3, dy.dtype)])
    shifted_out = flat[3:].reshape(y.shape)   # overlaps dy (flat[:-3]) three elements on
    fn(y, flat[:-3].reshape(y.shape), out=shifted_out)
    np.testing.assert_array_equal(shifted_out, want)
    out_t = np.empty((n, y.shape[0]), y.dtype).T
    np.testing.assert_array_equal(fn(y, dy, out=out_t), want)
    np.testing.assert_array_equal(fn(y.T.copy(), dy.T.copy(), axis=0), want.T)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, "bfloat16"])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_backward_api_axes_dtypes_threads(op, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 200, 5)) * 3).astype(dtype)
    y, dy = OP_FN[op](x, axis=1), rng.standard_normal(x.shape).astype(dtype)
    fn = getattr(softgen, f"{op}_backward")
    dx = fn(y, dy, axis=1)
    assert dx.dtype == np.dtype(dtype) and dx.shape == x.shape
    moved = [np.moveaxis(a, 1, -1).reshape(-1, 200) for a in (y, dy, dx)]
    check_backward(op, *moved, rtol=1e-14 if dtype is np.float64 else 2e-2)
    big = rng.standard_normal((600, 700)).astype(np.float32)
    yb, dyb = OP_FN[op](big), rng.standard_normal(big.shape).astype(np.float32)
    np.testing.assert_array_equal(fn(yb, dyb, threads=2), fn(yb, dyb, threads=1))
    out = np.empty_like(yb)
    assert fn(yb, dyb, out=out) is out
    _backward_into_its_inputs(fn, yb[:40], dyb[:40])
    with pytest.raises(ValueError, match="one shape and dtype"):
        fn(yb, dyb[:, :5])
    with pytest.raises(NotImplementedError, match="logsumexp's is softmax"):
        softgen.compile("logsumexp", algorithm="backward")
