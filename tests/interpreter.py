"""The IR's meaning: a program run on one float64 row with exact math, independent of any
backend, for the tests that hold the algorithms' programs to a float64 reference."""
import numpy as np

from softgen import numerics
from softgen.ir import Kind, Pass, Program


def interpret(program: Program, x: np.ndarray, operands: dict | None = None) -> np.ndarray:
    """Run a program on one float64 row with exact math: the IR's meaning.  operands: the
    row operands' values by name (input ones read; output ones stored there as {at: value})."""
    env, y = {}, np.zeros_like(x)
    operands = {} if operands is None else operands
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
                    return interpret(step.attrs["fallback"], x, operands)
            elif step.kind is Kind.STORE_ROW:
                y = np.array([env[step.args[0]]])
            elif step.kind is Kind.STORE_OPERAND:
                operands.setdefault(step.attrs["name"], {})[step.attrs.get("at", 0)] = env[step.args[0]]
            elif step.kind is Kind.LOAD_OPERAND:
                env[step.results[0]] = operands[step.attrs["name"]]
            else:
                env.update(zip(step.results, _row_op(step, [env[v] for v in step.args])))
    return y


def _elementwise(op, a, x, y):
    k = op.kind
    if k is Kind.LOAD_X:
        return (x,)
    if k is Kind.LOAD_Y:
        return (y,)
    if k is Kind.INDEX:
        return (np.arange(len(x), dtype=np.float64),)
    if k is Kind.ACC_TOPK:   # the k largest, NaN first, ties by index: (values, indices)
        v, i = a
        best = np.lexsort((i, -np.where(np.isnan(v), np.inf, v), ~np.isnan(v)))[:op.attrs["k"]]
        return ((v[best], i[best]),)
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
    if k is Kind.SOFTPLUS:
        return (np.logaddexp(0.0, a[0] * op.attrs["scale"]),)
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
    if k is Kind.MERGE_TOPK:
        return (*a[0][0], *a[0][1])
    if k is Kind.LOG_PAIR:
        return (np.log(a[0]) + a[1] * np.log(2), 0.0)
    table = {Kind.CONST: lambda: op.attrs["value"], Kind.ADD: lambda: a[0] + a[1],
             Kind.SUB_ROW: lambda: a[0] - a[1], Kind.MUL_ROW: lambda: a[0] * a[1],
             Kind.RECIP: lambda: 1.0 / a[0], Kind.EXP_ROW: lambda: np.exp(a[0] - a[1]), Kind.LOG: lambda: np.log(a[0]), Kind.LOG1P: lambda: np.log1p(a[0]),
             Kind.WHERE_FINITE: lambda: a[1] if np.isfinite(a[0]) else a[2],
             Kind.WHERE_IN: lambda: a[1] if op.attrs["range"][0] <= a[0] <= op.attrs["range"][1] else a[2]}
    return (table[k](),)
