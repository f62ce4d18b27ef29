"""The algorithms as IR programs: every op x algorithm builds and verifies, the ones that
make no sense say why, and each program computes the right thing when its IR is
interpreted in float64 (independent of any backend)."""
import numpy as np
import pytest

from softgen import algorithms, numerics
from softgen.ir import Kind, Pass, Program, Type, verify
from reference import check

from test_api import PAIRS, special_rows


def interpret(program: Program, x: np.ndarray) -> np.ndarray:
    """Run a program on one float64 row with exact math: the IR's meaning."""
    env, y = {}, np.zeros_like(x)
    with np.errstate(all="ignore"):
        for step in program.steps:
            if isinstance(step, Pass):
                for op in step.ops:
                    a = [env[v] for v in op.args]
                    env.update(zip(op.results, _elementwise(op, a, x, y)))
                    if op.kind is Kind.STORE:
                        y = a[0] * np.ones_like(x)
            elif step.kind is Kind.GUARD:
                values = [env[v] for v in step.args]
                if not all(lo <= v <= hi for v, (lo, hi) in zip(values, step.attrs["ranges"])):
                    return interpret(step.attrs["fallback"], x)
            elif step.kind is Kind.STORE_ROW:
                y = np.array([env[step.args[0]]])
            else:
                env.update(zip(step.results, _row_op(step, [env[v] for v in step.args])))
    return y


def _elementwise(op, a, x, y):
    k = op.kind
    if k is Kind.LOAD_X:
        return (x,)
    if k is Kind.LOAD_Y:
        return (y,)
    if k is Kind.SUB:
        return (a[0] - a[1],)
    if k in (Kind.MUL,):
        return (a[0] * a[1],)
    if k is Kind.EXP:
        return (np.exp(a[0] - a[1]),)
    if k is Kind.EXP_PAIR:
        kk = np.round(a[0] * np.log2(np.e))
        t = np.clip(np.nan_to_num(a[0] - kk * np.log(2), nan=-1.0), -1, 1)  # p stays finite
        return ((np.exp(t), kk),)
    if k is Kind.SOFTPLUS_POW:   # k = log2(v) rounded: inf, -inf (v = 0) and NaN pass to the guard
        v = np.logaddexp(0.0, a[0] * op.attrs["scale"]) ** op.attrs["power"]
        kk = np.round(np.log2(v))
        return ((np.where(np.isfinite(kk), v * np.exp2(-kk), 1.0), kk),)
    if k is Kind.PAIR_SCALE:
        (p, kk), c, e = a
        return (p * c * np.exp2(kk - e),)
    if k is Kind.ACC_MAX:
        return (a[0].max(initial=-np.inf),)
    if k is Kind.ACC_SUM:
        return (a[0].sum(),)
    if k is Kind.ACC_PAIR:
        p, kk = a[0]
        e = kk.max(initial=-numerics.FLT_MAX)
        return ((np.sum(p * np.exp2(kk - e)), e),)
    if k is Kind.ACC_ONLINE:  # (max, sum - 1)
        m = a[0].max(initial=-numerics.FLT_MAX)
        top = a[0] == m
        return ((m, np.exp(a[0][~top] - m).sum() + (top.sum() - 1.0)),)
    if k is Kind.ACC_EXCESS:
        e, xs, m = a
        return ((e[xs != m].sum(), float((xs == m).sum())),)
    return ()


def _row_op(op, a):
    k = op.kind
    if k in (Kind.MERGE_MAX, Kind.MERGE_SUM):
        return (a[0],)
    if k is Kind.MERGE_EXCESS:
        return (a[0][0] + (a[0][1] - 1.0),)
    if k in (Kind.MERGE_PAIR, Kind.MERGE_ONLINE):
        return a[0]
    if k is Kind.LOG_PAIR:
        return (np.log(a[0]) + a[1] * np.log(2), 0.0)
    table = {Kind.CONST: lambda: op.attrs["value"], Kind.ADD: lambda: a[0] + a[1],
             Kind.SUB_ROW: lambda: a[0] - a[1], Kind.MUL_ROW: lambda: a[0] * a[1],
             Kind.RECIP: lambda: 1.0 / a[0], Kind.LOG: lambda: np.log(a[0]), Kind.LOG1P: lambda: np.log1p(a[0]),
             Kind.WHERE_FINITE: lambda: a[1] if np.isfinite(a[0]) else a[2],
             Kind.WHERE_IN: lambda: a[1] if op.attrs["range"][0] <= a[0] <= op.attrs["range"][1] else a[2]}
    return (table[k](),)


@pytest.mark.parametrize("op,algo", PAIRS)
def test_programs_verify_and_print(op, algo):
    program = algorithms.build(op, algo)
    assert verify(program) is program
    text = str(program)
    assert text.startswith(f"kernel {op}.{algo}")
    assert program.row_output == (op == "logsumexp")
    assert ("softplus_pow" in text) == (op == "softplus_normalize")


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


def test_two_pass_guard_falls_back_to_three_pass():
    program = algorithms.build("softmax", "two_pass")
    guards = [s for s in program.steps if not isinstance(s, Pass) and s.kind is Kind.GUARD]
    assert len(guards) == 1 and guards[0].attrs["fallback"].algorithm == "three_pass_recompute"


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
