"""The softmax-family algorithms as IR programs (formulas: shared/README.md §1).

Each algorithm first reduces the row to a normalizer, then the op decides the
output: softmax y = e^(x-m) / s, log_softmax y = (x - m) - log s, logsumexp
one value m + log s per row.
"""
from __future__ import annotations

from . import numerics
from .ir import Builder, Program, verify

OPS = ("softmax", "log_softmax", "logsumexp")
ALGORITHMS = ("three_pass_reload", "three_pass_recompute", "two_pass", "online")


def _check_op(op: str):
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")


def _log_sum_exp(b: Builder, m, s):
    """m + log s, passing m through where it is +-inf (all -inf row: -inf; +inf: +inf)."""
    return b.where_finite(m, b.add(m, b.log(s)), m)


def _normalize(b: Builder, op: str, m, s, exp_of_x):
    """The output pass of the max-based algorithms, given the row max m and sum s."""
    if op == "softmax":
        r = b.recip(s)
        with b.pass_():
            b.store(b.mul(exp_of_x(), r))
    elif op == "log_softmax":
        log_s = b.log(s)
        with b.pass_():
            b.store(b.sub(b.sub(b.load_x(), m), log_s))
    else:
        b.store_row(_log_sum_exp(b, m, s))


def _max_pass(b: Builder):
    with b.pass_():
        acc = b.acc_max(b.load_x())
    return b.merge_max(acc)


def three_pass_reload(op: str) -> Program:
    """max; y = e^(x-m) stored while summing; y *= 1/s re-reading y."""
    _check_op(op)
    if op != "softmax":
        raise NotImplementedError(
            f"{op} x three_pass_reload: reload keeps e^(x-m) in the output row for a third pass, "
            f"but {op} never outputs e^(x-m) ({'one value per row' if op == 'logsumexp' else 'it outputs x - m - log s'}); "
            "use three_pass_recompute")
    b = Builder(op, "three_pass_reload")
    m = _max_pass(b)
    with b.pass_():
        e = b.exp(b.load_x(), m)
        b.store(e)
        s_acc = b.acc_sum(e)
    s = b.merge_sum(s_acc)
    r = b.recip(s)
    with b.pass_():
        b.store(b.mul(b.load_y(), r))
    return verify(b.program)


def three_pass_recompute(op: str) -> Program:
    """max; s = sum e^(x-m); output recomputes e^(x-m)."""
    _check_op(op)
    b = Builder(op, "three_pass_recompute", row_output=op == "logsumexp")
    m = _max_pass(b)
    with b.pass_():
        s_acc = b.acc_sum(b.exp(b.load_x(), m))
    s = b.merge_sum(s_acc)
    _normalize(b, op, m, s, lambda: b.exp(b.load_x(), m))
    return verify(b.program)


def two_pass(op: str) -> Program:
    """Dukhan & Ablavatski: accumulate e^x as (mantissa, exponent) pairs, no max pass.

    Rows whose exponent leaves the accurate range (huge values, inf, NaN, all -inf)
    are computed by the three_pass_recompute program instead (the guard)."""
    _check_op(op)
    b = Builder(op, "two_pass", row_output=op == "logsumexp")
    with b.pass_():
        acc = b.acc_pair(b.exp_pair(b.load_x()))
    s, e = b.merge_pair(acc)
    b.guard(e, ranges=((-numerics.PAIR_EXP_LIMIT, numerics.PAIR_EXP_LIMIT),),
            fallback=three_pass_recompute(op))
    if op == "softmax":
        r = b.recip(s)
        with b.pass_():
            b.store(b.pair_scale(b.exp_pair(b.load_x()), r, e))
        return verify(b.program)
    # lse = hi + lo: x - lse rounded once more than x - hi, which is exact near lse
    hi, lo = b.log_pair(s, e)
    if op == "log_softmax":
        with b.pass_():
            b.store(b.sub(b.sub(b.load_x(), hi), lo))
    else:
        b.store_row(b.add(hi, lo))
    return verify(b.program)


def online(op: str) -> Program:
    """Milakov & Gimelshein: running (max, sum) in one pass, then the output pass."""
    _check_op(op)
    b = Builder(op, "online", row_output=op == "logsumexp")
    with b.pass_():
        acc = b.acc_online(b.load_x())
    m, d = b.merge_online(acc)
    if op == "logsumexp":
        b.store_row(_log_sum_exp(b, m, d))
        return verify(b.program)
    # The running max starts at -FLT_MAX, so +inf and NaN must be caught here:
    # a row whose max is not finite is a NaN row (all -inf rows give 0 * 1/0 = NaN).
    nan = b.const(float("nan"))
    if op == "softmax":
        r = b.where_finite(m, b.recip(d), nan)
        with b.pass_():
            b.store(b.mul(b.exp(b.load_x(), m), r))
    else:
        log_d = b.where_finite(m, b.log(d), nan)
        with b.pass_():
            b.store(b.sub(b.sub(b.load_x(), m), log_d))
    return verify(b.program)


_BUILDERS = {f.__name__: f for f in (three_pass_reload, three_pass_recompute, two_pass, online)}


def build(op: str, algorithm: str) -> Program:
    """The IR program for op x algorithm (ValueError for unknown names)."""
    _check_op(op)
    if algorithm not in _BUILDERS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    return _BUILDERS[algorithm](op)
