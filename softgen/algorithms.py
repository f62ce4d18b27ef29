"""The softmax-family algorithms as IR programs: three-pass (reload, recompute), two-pass
(Dukhan & Ablavatski, "The Two-Pass Softmax Algorithm", arXiv 2001.04438) and online
(Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867).

Each algorithm first reduces the row to a normalizer, then the op decides the
output: softmax y = e^(x-m) / s, log_softmax y = (x - m) - log s, logsumexp
one value m + log s per row (log s as log1p(s - 1), s - 1 summed as such).
"""
from __future__ import annotations

from . import numerics, ops
from .ir import Builder, DType, Kind, Program, verify
from .ops import Normalizer, OpSpec, Rule, Term

OPS = ops.NAMES
ALGORITHMS = ops.ALL_ALGORITHMS


def _log_sum_exp(b: Builder, m, u):
    """m + log1p(u), u the sum's excess over 1 (the max term): near 0 the result keeps its
    relative accuracy, as SciPy's; m passes through where it is +-inf (all -inf: -inf)."""
    return b.where_finite(m, b.add(m, b.log1p(u)), m)


def _normalize(b: Builder, spec: OpSpec, m, u, r=None):
    """The output of the max-based algorithms from the row max m and the sum's excess u
    (Normalizer.SUM: from r = 1 / sum)."""
    if spec.rule is Rule.SCALE:
        with b.pass_():
            b.store(b.mul(b.exp(b.load_x(), m), r))
    elif spec.rule is Rule.SHIFT:
        # NaN rows where m is not finite: a +inf max's terms are counted, not summed, so
        # u is finite there (numpy: NaN)
        log_s = b.where_finite(m, b.log1p(u), b.const(float("nan")))
        with b.pass_():
            b.store(b.sub(b.sub(b.load_x(), m), log_s))
    else:
        b.store_row(_log_sum_exp(b, m, u))


def _builder(spec: OpSpec, algorithm: str, storage: DType, compute: DType, output: DType | None) -> Builder:
    spec.check_algorithm(algorithm)
    return Builder(spec.name, algorithm, spec.row_output, storage, compute, output)


def _max_pass(b: Builder):
    with b.pass_():
        acc = b.acc_max(b.load_x())
    return b.merge_max(acc)


def three_pass_reload(op, storage: DType = DType.F32, compute: DType = DType.F32,
                      output: DType | None = None) -> Program:
    """max; y = e^(x-m) stored while summing; y *= 1/s re-reading y."""
    b = _builder(ops.get(op), "three_pass_reload", storage, compute, output)
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


def three_pass_recompute(op, storage: DType = DType.F32, compute: DType = DType.F32,
                         output: DType | None = None) -> Program:
    """max; s = sum e^(x-m) (log ops: its excess s - 1); output recomputes e^(x-m)."""
    spec = ops.get(op)
    b = _builder(spec, "three_pass_recompute", storage, compute, output)
    m = _max_pass(b)
    plain_sum = spec.normalizer is Normalizer.SUM
    with b.pass_():
        x = b.load_x()
        e = b.exp(x, m)
        acc = b.acc_sum(e) if plain_sum else b.acc_excess(e, x, m)
    if plain_sum:
        _normalize(b, spec, m, None, b.recip(b.merge_sum(acc)))
    else:
        _normalize(b, spec, m, b.merge_excess(acc))
    return verify(b.program)


def _term_pair(b: Builder, spec: OpSpec, x):
    """The op's term of x as an exponent pair: e^x, or softplus(scale * x)^power with the
    op's parameters baked in."""
    if spec.term is Term.SOFTPLUS_POW:
        return b.softplus_pow(x, **spec.param)
    return b.exp_pair(x)


def _pair_ratio(b: Builder, spec: OpSpec, s, e, pair_range):
    """y = v / sum v from the pairs' sum S * 2^E, for a term without a max-based program: rows
    whose E leaves the pair range are NaN rows, per row (no guard: a guard's fallback runs
    for a whole row group).  For softplus_normalize those are rows with NaN or +inf, all
    -inf rows and rows whose largest v lies beyond 2^+-2^20, where float64's own formula
    gives 0/0 or inf/inf (numpy's and torch's +inf row would be 0 but NaN at the inf)."""
    nan = b.const(float("nan"))
    r = b.where_in(e, b.recip(s), nan, range=pair_range)
    # and E NaN there: vscalefps gives (NaN * p) * 2^+-inf as inf or 0, (NaN * p) * 2^NaN as NaN
    e = b.where_in(e, e, nan, range=pair_range)
    with b.pass_():
        b.store(b.pair_scale(_term_pair(b, spec, b.load_x()), r, e))


def two_pass(op, storage: DType = DType.F32, compute: DType = DType.F32,
             output: DType | None = None) -> Program:
    """Dukhan & Ablavatski: accumulate e^x as (mantissa, exponent) pairs, no max pass.

    Rows whose exponent leaves the accurate range (huge values, inf, NaN, all -inf), and
    log outputs within PAIR_LOG_MIN of 0, are computed by the three_pass_recompute
    program instead (the guard)."""
    spec = ops.get(op)
    b = _builder(spec, "two_pass", storage, compute, output)
    with b.pass_():
        x = b.load_x()
        acc = b.acc_pair(_term_pair(b, spec, x))
        max_acc = b.acc_max(x) if spec.rule is Rule.SHIFT else None
    s, e = b.merge_pair(acc)
    fmt = numerics.float_format(compute)
    pair_range = (-fmt.pair_exp_limit, fmt.pair_exp_limit)
    if spec.term is not Term.EXP:
        _pair_ratio(b, spec, s, e, pair_range)
        return verify(b.program)
    fallback = three_pass_recompute(spec, storage, compute, output)
    if spec.normalizer is Normalizer.SUM:
        b.guard(e, ranges=(pair_range,), fallback=fallback)
        r = b.recip(s)
        with b.pass_():
            b.store(b.pair_scale(_term_pair(b, spec, b.load_x()), r, e))
        return verify(b.program)
    # lse = hi + lo: x - lse rounded once more than x - hi, which is exact near lse
    hi, lo = b.log_pair(s, e)
    near_zero = (fmt.pair_log_min, fmt.max)
    if spec.rule is Rule.VALUE:
        lse = b.add(hi, lo)
        near_zero = (fmt.pair_log_min ** 2, fmt.max)
        b.guard(e, b.mul_row(lse, lse), ranges=(pair_range, near_zero), fallback=fallback)
        b.store_row(lse)
        return verify(b.program)
    # log s = lse - max: the largest output is -log s
    log_s = b.add(b.sub_row(hi, b.merge_max(max_acc)), lo)
    b.guard(e, log_s, ranges=(pair_range, near_zero), fallback=fallback)
    with b.pass_():
        b.store(b.sub(b.sub(b.load_x(), hi), lo))
    return verify(b.program)


def online(op, storage: DType = DType.F32, compute: DType = DType.F32,
           output: DType | None = None) -> Program:
    """Milakov & Gimelshein: running (max, sum) in one pass, then the output pass."""
    spec = ops.get(op)
    b = _builder(spec, "online", storage, compute, output)
    with b.pass_():
        acc = b.acc_online(b.load_x())
    m, u = b.merge_online(acc)  # u: the sum's excess over 1
    r = None
    if spec.normalizer is Normalizer.SUM:
        # The running max starts at -FLT_MAX, so +inf and NaN must be caught here:
        # a row whose max is not finite is a NaN row (all -inf rows give 0 * 1/0 = NaN).
        r = b.where_finite(m, b.recip(b.add(u, b.const(1.0))), b.const(float("nan")))
    _normalize(b, spec, m, u, r)
    return verify(b.program)


_BUILDERS = {f.__name__: f for f in (three_pass_reload, three_pass_recompute, two_pass, online)}


def build(op, algorithm: str, storage: DType = DType.F32, compute: DType = DType.F32,
          output: DType | None = None) -> Program:
    """The IR program for op (a name or an OpSpec) x algorithm over rows of `storage`
    computed in `compute`, writing `output` (None: storage) (ValueError for unknown names,
    NotImplementedError for an algorithm the op does not have)."""
    ops.get(op)
    if algorithm not in _BUILDERS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    program = _BUILDERS[algorithm](op, storage, compute, output)
    _check_rereads(program)
    return program


def _check_rereads(program: Program):
    """A program that re-reads y keeps intermediate values there: in an output dtype narrower
    than compute they would be rounded twice (and e^(x - m) lose its small values)."""
    rereads = any(op.kind is Kind.LOAD_Y for p in program.passes for op in p.ops)
    if rereads and program.out_dtype.bits < program.compute.bits:
        raise NotImplementedError(
            f"{program.algorithm} keeps e^(x - max) in y, which a {program.out_dtype.numpy_name} output "
            f"would round twice; use {', '.join(a for a in ops.get(program.op).algorithms if a != program.algorithm)}")
