"""The softmax-family algorithms as IR programs: three-pass (reload, recompute), two-pass
(Dukhan & Ablavatski, "The Two-Pass Softmax Algorithm", arXiv 2001.04438) and online
(Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867).

Each algorithm first reduces the row to a normalizer, then the op decides the
output: softmax y = e^(x-m) / s, log_softmax y = (x - m) - log s, logsumexp
one value m + log s per row (log s as log1p(s - 1), s - 1 summed as such).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from . import numerics, ops
from .ir import Builder, DType, Kind, Operand, Program, verify
from .ops import Normalizer, OpSpec, Rule, Term

OPS = ops.NAMES
ALGORITHMS = ops.ALL_ALGORITHMS


def _log_sum_exp(b: Builder, m, u):
    """m + log1p(u), u the sum's excess over 1 (the max term): near 0 the result keeps its
    relative accuracy, as SciPy's; m passes through where it is +-inf (all -inf: -inf)."""
    return b.where_finite(m, b.add(m, b.log1p(u)), m)


def _normalize(b: Builder, spec: OpSpec, m, u, r=None, empty=None):
    """The output of the max-based algorithms from the row max m and the sum's excess u
    (Normalizer.SUM: from r = 1 / sum); rows whose `empty` flag is -inf give the op's
    empty-row output."""
    if spec.rule is Rule.SCALE:
        with b.pass_():
            b.store(_output(b, spec, b.mul(b.exp(b.load_x(), m), r), empty))
    elif spec.rule is Rule.SHIFT:
        # NaN rows where m is not finite: a +inf max's terms are counted, not summed, so
        # u is finite there (numpy: NaN)
        log_s = b.where_finite(m, b.log1p(u), b.const(float("nan")))
        with b.pass_():
            b.store(_output(b, spec, b.sub(b.sub(b.load_x(), m), log_s), empty))
    else:
        b.store_row(_log_sum_exp(b, m, u))


def _output(b: Builder, spec: OpSpec, y, empty):
    """y as stored by an unguarded program: what softmax of no elements gives (0; -inf for
    log_softmax) in rows whose flag `empty` is -inf (_empty_flag), and in masked elements
    whatever their row holds (JAX's where=).  The load_x of y's pass gave the mask."""
    fill = 0.0 if spec.rule is Rule.SCALE else float("-inf")
    if empty is not None:
        y = b.fill_empty(y, empty, value=fill)
    return y if b.mask is None else b.keep(y, b.kept, value=fill)


def _empty_acc(b: Builder, spec: OpSpec, variant: "Variant", x):
    """In a program's first pass, where it flags its empty rows (_tracks_empty): the max
    whose merge is -inf exactly in the rows with nothing above -inf (None otherwise)."""
    return b.acc_max(x) if _tracks_empty(spec, variant) else None


def _tracks_empty(spec: OpSpec, variant: "Variant") -> bool:
    """Whether the program flags its empty rows: empty_rows='zero', but not for logsumexp
    (its empty rows give -inf either way)."""
    return variant.zero_empty and spec.rule is not Rule.VALUE


def _empty_flag(b: Builder, acc):
    """_empty_acc's max merged, the sink as one more element (a finite sink is not empty)."""
    return None if acc is None else b.merge_max(_with_sink(b, acc, lambda s: (s,)))


# the row operand of the temperature: x is multiplied by it (1 / T) wherever it is loaded
INV_TEMPERATURE = "inv_temperature"
# the row operand of the sink: one more logit of the row, in the max and the sum, with no
# output element (softmax1 where it is 0)
SINK = "sink"
# the row operand of unified_max: the bound phi the exponentials are taken from
PHI = "phi"
# the boolean elementwise operand of a mask: true keeps the element, false counts it as -inf
WHERE = "where"
# the integer row operand of ragged rows (Program.length): a prefix mask as row lengths
LENGTH = "length"
# the elementwise operand of the backward kernels: the gradient of the op's output
DY = "dy"
# the output row operand of unified_max's row maxima (of x / T), to learn the next call's phi
ROW_MAX = "row_max"
# the output operands of top-k gating: k values per row each
WEIGHTS = "weights"
INDICES = "indices"
# the row operands an algorithm itself takes, after the variant's
OWN_OPERANDS = {"unified_max": (PHI,)}
# what each input row operand of a program is, for generated headers
OPERAND_DOCS = {INV_TEMPERATURE: "1 / T for row r (x is multiplied by it as it is read: y = op(x / T))",
                SINK: "row r's sink, one more logit in its max and sum with no output (times 1 / T too)",
                PHI: "row r's bound phi (unified_max: e^(x - phi) summed; rows whose max is far from it "
                     "take the exact fallback)",
                WHERE: "the mask, one byte per element as x: where[r * where_stride + j] nonzero keeps x[r, j], "
                       "zero counts it as -inf (its output 0 / -inf); a row with nothing kept gives 0 / -inf",
                LENGTH: "row r's length: its first length[r * length_stride] elements (clamped to [0, n]) are "
                        "the row (a prefix mask, such as a causal one); y past them is 0 (softmax) / -inf",
                ROW_MAX: "out: row r's max (of x / T), from which softgen.LearnedPhi takes the next call's phi",
                DY: "the gradient of the op's output y (x holds y itself), as x: dy[r * dy_stride + j]",
                WEIGHTS: "out: row r's top-k weights, best first (y is not written)",
                INDICES: "out: the column of each weight in row r's x, an integer in the compute type "
                         "(exact: float32 kernels take rows up to 2^24 long) (ties: the lower column first)"}


def operand_lines(program: Program) -> list[str]:
    """Header lines on the program's own row operands (after y in the ABI): its inputs, and
    its outputs documented here (a chunk's state outputs are softgen.chunks')."""
    return [f"{o.name}: {OPERAND_DOCS[o.name]}" if o.elementwise else
            f"{o.name}[r * {o.name}_stride + j], j < {o.count}: {OPERAND_DOCS[o.name]}." if o.count > 1 else
            f"{o.name}[r * {o.name}_stride]: {OPERAND_DOCS[o.name]}; stride 0: one value for every row."
            for o in program.operands if not o.output or o.name in OPERAND_DOCS]


@dataclass(frozen=True)
class Variant:
    """What a program takes besides x, as operands: a temperature (x times 1 / T), a sink
    (one more logit per row), a mask (where=) or row lengths (a prefix mask: ragged
    rows); and how it treats empty rows (zero_empty: rows with nothing above -inf give
    0 / -inf, not numpy's NaN)."""
    temperature: bool = False
    sink: bool = False
    where: bool = False
    zero_empty: bool = False
    length: bool = False
    row_max: bool = False   # unified_max: its row maxima out (ROW_MAX), for a learned phi


EMPTY_ROWS = ("nan", "zero")


def zero_empty(empty_rows: str, who: str) -> bool:
    """Variant.zero_empty from an empty_rows= argument (ValueError naming `who` otherwise)."""
    if empty_rows not in EMPTY_ROWS:
        raise ValueError(f"{who}(): empty_rows must be 'nan' (numpy: a row of only -inf gives NaN) or 'zero' "
                         f"(it gives 0, -inf for the log ops), not {empty_rows!r}")
    return empty_rows == "zero"


def variant(who: str, *, temperature: bool = False, sink: bool = False, where: bool = False,
            empty_rows: str = "nan", length: bool = False) -> Variant:
    """The Variant the keyword options of softgen.compile / generate / emit_c name:
    temperature (1 / T per row), sink (a logit per row), where (a mask, a byte per element),
    length (a length per row: a prefix mask), empty_rows ("nan" or "zero")."""
    return Variant(temperature=bool(temperature), sink=bool(sink), where=bool(where),
                   zero_empty=zero_empty(empty_rows, who), length=bool(length))


def _builder(spec: OpSpec, algorithm: str, storage: DType, compute: DType, output: DType | None,
             variant: Variant) -> Builder:
    spec.check_algorithm(algorithm)
    b = Builder(spec.name, algorithm, spec.row_output, storage, compute, output)
    _take_variant(b, variant, algorithm)
    if variant.length:
        b.program.length, b.program.fill = LENGTH, 0.0 if spec.rule is Rule.SCALE else float("-inf")
    return b


def _take_variant(b: Builder, variant: Variant, algorithm: str):
    """The variant's operands (and the algorithm's own) into b's program, loaded."""
    b.program.operands = (Operand(WHERE, elementwise=True, boolean=True),) if variant.where else ()
    b.program.operands += (Operand(LENGTH, integer=True),) if variant.length else ()
    b.program.operands += tuple(Operand(name) for name, on in ((INV_TEMPERATURE, variant.temperature),
                                                                (SINK, variant.sink)) if on)
    b.mask = WHERE if variant.where else None
    b.program.operands += tuple(Operand(name) for name in OWN_OPERANDS.get(algorithm, ()))
    if variant.row_max:
        if PHI not in OWN_OPERANDS.get(algorithm, ()):
            raise NotImplementedError(f"{algorithm}: row maxima out are unified_max's (to learn its phi)")
        b.program.operands += (Operand(ROW_MAX, output=True),)
    if variant.temperature:
        b.x_scale = b.load_operand(name=INV_TEMPERATURE)
    if variant.sink:
        b.sink = b.load_operand(name=SINK)
        b.sink = b.sink if b.x_scale is None else b.mul_row(b.sink, b.x_scale)


def _with_sink(b: Builder, acc, *element_args) -> object:
    """acc with the sink merged in as one more element (its acc op's operands made from
    the sink: element_args(sink)), or acc without a sink."""
    if b.sink is None:
        return acc
    return b.merge_states(acc, b.element_state(element_args[0](b.sink), acc.type))


def _max_pass(b: Builder, spec: OpSpec, variant: Variant):
    """The row max, and the empty-row flag (the max itself, see _empty_acc)."""
    with b.pass_():
        caught = {"nan_caught": True} if _nan_caught_by_sum(spec, variant) else {}
        acc = b.acc_max(b.load_x(), **caught)
    m = b.merge_max(_with_sink(b, acc, lambda s: (s,)))
    return m, (m if _tracks_empty(spec, variant) else None)


def _nan_caught_by_sum(spec: OpSpec, variant: Variant) -> bool:
    """Whether a three-pass program's max may skip NaN (acc.max nan_caught): its sum pass
    makes every output of a row with a NaN NaN, whatever max it took, for softmax (y times
    1 / NaN) and log_softmax (log1p of a NaN excess, or NaN where the max is not finite).
    Not logsumexp, whose output is the max itself where that is infinite, nor where the max
    also flags empty rows."""
    return spec.rule is not Rule.VALUE and not _tracks_empty(spec, variant)


def three_pass_reload(op, storage: DType = DType.F32, compute: DType = DType.F32,
                      output: DType | None = None, variant: Variant = Variant()) -> Program:
    """max; y = e^(x-m) stored while summing; y *= 1/s re-reading y."""
    spec = ops.get(op)
    b = _builder(spec, "three_pass_reload", storage, compute, output, variant)
    m, empty = _max_pass(b, spec, variant)
    with b.pass_():
        e = b.exp(b.load_x(), m)
        b.store(e)
        s_acc = b.acc_sum(e)
    s = b.merge_sum(_with_sink(b, s_acc, lambda s: (b.exp_row(s, m),)))
    r = b.recip(s)
    with b.pass_():
        y = b.mul(b.load_y(), r)
        b.kept = b.load_keep(name=WHERE) if variant.where else None
        b.store(_output(b, spec, y, empty))
    return verify(b.program)


def three_pass_recompute(op, storage: DType = DType.F32, compute: DType = DType.F32,
                         output: DType | None = None, variant: Variant = Variant()) -> Program:
    """max; s = sum e^(x-m) (log ops: its excess s - 1); output recomputes e^(x-m)."""
    spec = ops.get(op)
    b = _builder(spec, "three_pass_recompute", storage, compute, output, variant)
    m, empty = _max_pass(b, spec, variant)
    plain_sum = spec.normalizer is Normalizer.SUM
    with b.pass_():
        x = b.load_x()
        e = b.exp(x, m)
        acc = b.acc_sum(e) if plain_sum else b.acc_excess(e, x, m)
    acc = _with_sink(b, acc, (lambda s: (b.exp_row(s, m),)) if plain_sum else (lambda s: (b.exp_row(s, m), s, m)))
    if plain_sum:
        _normalize(b, spec, m, None, b.recip(b.merge_sum(acc)), empty)
    else:
        _normalize(b, spec, m, b.merge_excess(acc), empty=empty)
    return verify(b.program)


def _stored_terms(spec: OpSpec, storage: DType, compute: DType, output: DType | None) -> Program:
    """two_pass for softplus_normalize with power 1: each v = softplus(scale * x) stored in y
    and summed, then y scaled by 1 / sum: the term evaluated once per element, as a value.
    Rows with a stored v outside the normal range (NaN, inf, -inf's 0, or values a float
    cannot hold to its precision) or an infinite sum run the program that sums the terms as
    pairs and evaluates them again in its second pass (_pair_terms).  Other powers (whose
    v may leave the range far more often), and a y narrower than the computation (v would
    be rounded to it), take that program for every row."""
    if (output or storage).bits < compute.bits or spec.param["power"] != 1.0:
        return _pair_terms(spec, storage, compute, output, "two_pass")
    recompute = _pair_terms(spec, storage, compute, output, "two_pass_recompute")
    b = _builder(spec, "two_pass", storage, compute, output, Variant())
    minus_one = b.const(-1.0)
    with b.pass_():
        v = b.softplus(b.load_x(), scale=spec.param["scale"])
        b.store(v)
        acc, top, bottom = b.acc_sum(v), b.acc_max(v), b.acc_max(b.mul(v, minus_one))
    s = b.merge_sum(acc)
    lo, hi = numerics.float_format(compute).stored_term_range
    # (normal terms: their float sum is as accurate as the pairs'; a finite sum scales them)
    b.guard(b.merge_max(top), b.merge_max(bottom), s, ranges=((lo, hi), (-hi, -lo), (lo, hi)), fallback=recompute)
    r = b.recip(s)
    with b.pass_():
        b.store(b.mul(b.load_y(), r))
    return verify(b.program)


def _pair_terms(spec: OpSpec, storage: DType, compute: DType, output: DType | None, algorithm: str) -> Program:
    """y = v / sum v, v = softplus(scale * x)^power as exponent pairs (softplus_pow): summed,
    then evaluated again in the second pass; any row.  Rows whose E leaves the pair range
    are NaN rows, per row (no guard: a guard's fallback runs for a whole row group): rows
    with NaN or +inf, all -inf rows and rows whose largest v lies beyond 2^+-2^20, where
    float64's own formula gives 0/0 or inf/inf (numpy's and torch's +inf row would be 0 but
    NaN at the inf)."""
    b = _builder(spec, algorithm, storage, compute, output, Variant())
    with b.pass_():
        acc = b.acc_pair(b.softplus_pow(b.load_x(), **spec.param))
    s, e = b.merge_pair(acc)
    limit = numerics.float_format(compute).pair_exp_limit
    nan = b.const(float("nan"))
    r = b.where_in(e, b.recip(s), nan, range=(-limit, limit))
    # and E NaN there: vscalefps gives (NaN * p) * 2^+-inf as inf or 0, (NaN * p) * 2^NaN as NaN
    e = b.where_in(e, e, nan, range=(-limit, limit))
    with b.pass_():
        b.store(b.pair_scale(b.softplus_pow(b.load_x(), **spec.param), r, e))
    return verify(b.program)


def two_pass(op, storage: DType = DType.F32, compute: DType = DType.F32,
             output: DType | None = None, variant: Variant = Variant()) -> Program:
    """Dukhan & Ablavatski: accumulate e^x as (mantissa, exponent) pairs, no max pass.

    Rows whose exponent leaves the accurate range (huge values, inf, NaN, all -inf), and
    log outputs within PAIR_LOG_MIN of 0, are computed by the three_pass_recompute
    program instead (the guard)."""
    spec = ops.get(op)
    if spec.term is not Term.EXP:
        if variant != Variant():
            raise NotImplementedError(f"{spec.name}: no temperature or sink (they are softmax's)")
        return _stored_terms(spec, storage, compute, output)
    b = _builder(spec, "two_pass", storage, compute, output, variant)
    with b.pass_():
        x = b.load_x()
        acc = b.acc_pair(b.exp_pair(x))
        max_acc = b.acc_max(x) if spec.rule is Rule.SHIFT else None
        # (rows of only -inf pass the guard: their pairs are clamped to zero sums)
        empty = _empty_acc(b, spec, variant, x) if spec.rule is Rule.SCALE else None
    s, e = b.merge_pair(_with_sink(b, acc, b.exp_pair_row))
    empty = _empty_flag(b, empty)
    fmt = numerics.float_format(compute)
    pair_range = (-fmt.pair_exp_limit, fmt.pair_exp_limit)
    fallback = _exact_fallback(spec, storage, compute, output, variant)
    if spec.normalizer is Normalizer.SUM:
        b.guard(e, ranges=(pair_range,), fallback=fallback)
        r = b.recip(s)
        with b.pass_():
            b.store(_output(b, spec, b.pair_scale(b.exp_pair(b.load_x()), r, e), empty))
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
    log_s = b.add(b.sub_row(hi, b.merge_max(_with_sink(b, max_acc, lambda s: (s,)))), lo)
    b.guard(e, log_s, ranges=(pair_range, near_zero), fallback=fallback)
    with b.pass_():
        b.store(_output(b, spec, b.sub(b.sub(b.load_x(), hi), lo), None))
    return verify(b.program)


def _exact_fallback(spec, storage: DType, compute: DType, output: DType | None, variant: Variant) -> Program:
    """What rows failing two-pass's guard run: online, exact on every row (no guard of its
    own) in two passes, where recompute takes three.  Two-pass runs where rows come from
    memory (or logsumexp's single pass), and log_softmax's guard fails on every row whose
    top logit holds most of the mass (log S < pair_log_min), common in a confident model's
    logits: 8 x 2^22 with one logit +30 ran at 1.18 el/ns with recompute behind it, 1.36-1.46
    with online (2.3-2.5 on rows that pass; online alone 1.95-2.04).  unified_max, which
    runs in cache, keeps recompute: there it is faster than online."""
    return online(spec, storage, compute, output, variant)


def online(op, storage: DType = DType.F32, compute: DType = DType.F32,
           output: DType | None = None, variant: Variant = Variant()) -> Program:
    """Milakov & Gimelshein: running (max, sum) in one pass, then the output pass."""
    spec = ops.get(op)
    b = _builder(spec, "online", storage, compute, output, variant)
    with b.pass_():
        x = b.load_x()
        acc = b.acc_online(x)
        empty = _empty_acc(b, spec, variant, x)
    m, u = b.merge_online(_with_sink(b, acc, lambda s: (s,)))  # u: the sum's excess over 1
    empty = _empty_flag(b, empty)
    r = None
    if spec.normalizer is Normalizer.SUM:
        # The running max starts at -FLT_MAX, so +inf and NaN must be caught here:
        # a row whose max is not finite is a NaN row (all -inf rows give 0 * 1/0 = NaN).
        r = b.where_finite(m, b.recip(b.add(u, b.const(1.0))), b.const(float("nan")))
    _normalize(b, spec, m, u, r, empty)
    return verify(b.program)


def unified_max(op, storage: DType = DType.F32, compute: DType = DType.F32,
                output: DType | None = None, variant: Variant = Variant()) -> Program:
    """FlashDecoding++'s unified max: e^(x - phi) from a bound phi given per row (row operand
    phi, in the units of x / T), no max pass: one exp per element, summed (softmax: stored,
    then scaled by 1 / sum).  The row max, taken in the same pass, checks the bound: rows
    whose max lies more than unified_max_limit from phi (overflow, or terms too small to
    keep their digits; for softmax, whose max lies below phi - ln 2), or that hold inf or
    NaN, or whose log output is near 0 run three_pass_recompute (the guard)."""
    spec = ops.get(op)
    b = _builder(spec, "unified_max", storage, compute, output, variant)
    phi = b.load_operand(name=PHI)
    with b.pass_():
        x = b.load_x()
        e = b.exp(x, phi)
        if spec.rule is Rule.SCALE:
            b.store(e)
        s_acc, m_acc = b.acc_sum(e), b.acc_max(x)
    s = b.merge_sum(_with_sink(b, s_acc, lambda sink: (b.exp_row(sink, phi),)))
    m = b.merge_max(_with_sink(b, m_acc, lambda sink: (sink,)))
    if variant.row_max:
        b.store_operand(m, name=ROW_MAX)
    limit = numerics.float_format(compute).unified_max_limit
    # softmax stores e^(x - phi): with phi above the max its smallest outputs would be
    # subnormal before the scaling by 1 / sum, and lose digits, unless phi <= max + ln 2
    low = -numerics.LN2 if spec.rule is Rule.SCALE else -limit
    checks = [(b.sub_row(m, phi), (low, limit))]
    if spec.normalizer is Normalizer.LOG_SUM:
        # log of the sum relative to the max (phi - m is exact where they are close):
        # y = (x - m) - log_s as three_pass; accurate away from 0 only (no log1p of an excess)
        log_s = b.add(b.sub_row(phi, m), b.log(s))
        lse = b.add(m, log_s)
        near = log_s if spec.rule is Rule.SHIFT else lse
        checks.append((b.mul_row(near, near), (numerics.float_format(compute).pair_log_min ** 2, float("inf"))))
    b.guard(*(v for v, _ in checks), ranges=tuple(r for _, r in checks),
            fallback=three_pass_recompute(spec, storage, compute, output, replace(variant, row_max=False)))
    if spec.rule is Rule.SCALE:
        r = b.recip(s)
        with b.pass_():
            b.store(b.mul(b.load_y(), r))
    elif spec.rule is Rule.SHIFT:
        with b.pass_():
            b.store(b.sub(b.sub(b.load_x(), m), log_s))
    else:
        b.store_row(lse)
    return verify(b.program)


def backward(op, storage: DType = DType.F32, compute: DType = DType.F32,
             output: DType | None = None, variant: Variant = Variant()) -> Program:
    """The gradient of op's output: x holds y = op(x0) and the elementwise operand dy its
    gradient; stores dx.  softmax: dx = y * (dy - sum(dy * y)); log_softmax:
    dx = dy - e^y * sum(dy).  Two passes (the sum, then dx)."""
    spec = ops.get(op)
    if spec.rule is Rule.VALUE or variant != Variant():
        raise NotImplementedError(f"{spec.name} x backward: the gradients of softmax and log_softmax only "
                                  f"(logsumexp's is softmax(x) * d lse), without row operands")
    b = Builder(spec.name, "backward", False, storage, compute, output)
    b.program.operands = (Operand(DY, elementwise=True),)
    with b.pass_():
        dy = b.load_in(DY)
        acc = b.acc_sum(b.mul_e(dy, b.load_x()) if spec.rule is Rule.SCALE else dy)
    s = b.merge_sum(acc)
    zero = b.const(0.0) if spec.rule is Rule.SHIFT else None   # e^y as e^(y - 0)
    with b.pass_():
        y, dy = b.load_x(), b.load_in(DY)
        if spec.rule is Rule.SCALE:
            b.store(b.mul_e(y, b.sub(dy, s)))
        else:
            b.store(b.sub_e(dy, b.mul(b.exp(y, zero), s)))
    return verify(b.program)


_BUILDERS = {f.__name__: f for f in (three_pass_reload, three_pass_recompute, two_pass, online, unified_max,
                                     backward)}


def build(op, algorithm: str, storage: DType = DType.F32, compute: DType = DType.F32,
          output: DType | None = None, variant: Variant = Variant()) -> Program:
    """The IR program for op (a name or an OpSpec) x algorithm over rows of `storage`
    computed in `compute`, writing `output` (None: storage), taking the row operands of
    `variant` (ValueError for unknown names, NotImplementedError for an algorithm the op
    does not have)."""
    ops.get(op)
    if algorithm not in _BUILDERS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(_BUILDERS)}")
    program = _BUILDERS[algorithm](op, storage, compute, output, variant)
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


# --- top-k gating (mixture-of-experts routers) --------------------------------------------

class Order(enum.Enum):
    TOPK_THEN_SOFTMAX = "topk_then_softmax"   # softmax over the k largest logits (Mixtral)
    SOFTMAX_THEN_TOPK = "softmax_then_topk"   # the k largest of the row's softmax (Switch, DeepSeek)


@dataclass(frozen=True)
class TopK:
    """Top-k gating of one row: the k best logits (acc.topk, one pass over x) and their
    weights.  softmax_then_topk's probabilities are the row's softmax (a second pass sums
    e^(x - max), the max being the best entry); renormalized to sum to 1 they are the
    softmax over the k, which is topk_then_softmax's program but for the indices of NaN
    rows (selecting on x: softmax keeps its order)."""
    k: int
    order: Order = Order.TOPK_THEN_SOFTMAX
    renormalize: bool = False

    @property
    def over_row(self) -> bool:
        """Whether the weights are normalized over the whole row (else over the k)."""
        return self.order is Order.SOFTMAX_THEN_TOPK and not self.renormalize

    @property
    def algorithm(self) -> str:
        return self.order.value + ("_renormalized" if self.renormalize else "")


def topk_program(topk: TopK, storage: DType = DType.F32, compute: DType = DType.F32,
                 variant: Variant = Variant()) -> Program:
    """Top-k gating as one program: a pass selecting the k best (value, index) entries of
    x (x / T with a temperature), for softmax_then_topk a pass summing e^(x - max), then per
    row their weights into the output operand `weights` and their columns into `indices`
    (k values per row each; y is not written).  The second pass, which re-reads x from the
    cache at router sizes, ran faster than acc.online beside acc.topk in the first pass
    (per-block max scans, an exp per element either way): 4096 x 64, k = 2, 1.49 elements/ns
    against 0.92; 64 x 32768, 2.85 against 2.09 (AVX-512).
    Where softmax_then_topk's row softmax is NaN (a NaN or +inf in the row, or all -inf),
    its indices are 0..k-1, as torch.topk ranks equal (NaN) probabilities."""
    if variant.sink:
        raise NotImplementedError("top-k gating: no sink (a temperature only)")
    k = topk.k
    b = Builder(f"top{k}_softmax", topk.algorithm, False, storage, compute)
    _take_variant(b, variant, topk.algorithm)
    b.program.operands += (Operand(WEIGHTS, output=True, count=k), Operand(INDICES, output=True, count=k))
    with b.pass_():
        best = b.acc_topk(b.load_x(), b.index(), k=k)
    entries = b.merge_topk(best, k)
    values, indices = entries[:k], entries[k:]
    m = values[0]   # the row's max (NaN where the row holds one)
    terms = [b.const(1.0)] + [b.exp_row(v, m) for v in values[1:]]
    if topk.over_row:
        with b.pass_():
            s_acc = b.acc_sum(b.exp(b.load_x(), m))
        s = b.merge_sum(s_acc)
    else:
        s = terms[0]
        for t in terms[1:]:
            s = b.add(s, t)
    r = b.where_finite(m, b.recip(s), b.const(float("nan")))
    for j, (t, i) in enumerate(zip(terms, indices)):
        b.store_operand(b.mul_row(t, r) if j else r, name=WEIGHTS, at=j)   # (terms[0] is 1)
        if topk.order is Order.SOFTMAX_THEN_TOPK:
            i = b.where_finite(m, i, b.const(float(j)))
        b.store_operand(i, name=INDICES, at=j)
    return verify(b.program)
