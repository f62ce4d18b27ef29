"""The one definition of softgen's numeric recipes, shared by every backend.

Recipes are written against a small `Math` interface (const, add, sub, mul, fma,
maximum, lt, gt, select, as_int, as_float, shl, ldexp; log for row values only).  A backend implements
those primitives for its own values (LLVM vectors, C expressions) and calls
the recipes here, so constants, polynomial and cut-offs exist in one place.

Float semantics that the recipes rely on:
  maximum(a, b)   NaN if either is NaN (IEEE 754-2019 maximum)
  lt / gt         ordered comparisons: false when either side is NaN
  select(c, a, b) c ? a : b, lane-wise
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .ir import Type

f = float.fromhex

LOG2E = f("0x1.715476p+0")
LN2 = f("0x1.62e42fefa39efp-1")
# Cody-Waite split of ln 2: k*LN2_HI is exact for the k that matter, LN2_LO carries the rest.
LN2_HI = f("0x1.62E400p-1")
LN2_LO = f("0x1.7F7D1Cp-20")
# e^t ~ 1 + t*(c1 + t*(c2 + t*(c3 + t*(c4 + t*c5)))) on |t| <= ln2/2 (XNNPACK's degree-5 fit)
EXP_POLY = tuple(map(f, ("0x1.FFFFF6p-1", "0x1.FFFDC6p-2", "0x1.555A80p-3",
                         "0x1.573A1Ap-5", "0x1.0F9F9Cp-7")))
# Adding 1.5*2^23 rounds a float to an integer held in the low mantissa bits.
ROUND_MAGIC = f("0x1.8p23")
# 2^k is built from exponent bits with k biased by 64 more than IEEE's 127, so that
# k down to -190 still gives a normal float; a final *2^-64 makes results below
# 2^-126 exact subnormals instead of flushing them (numpy keeps them).
SCALE_BIAS = 64
EXP_MAGIC = ROUND_MAGIC + 127 + SCALE_BIAS
TWO_POW_MINUS_BIAS = 2.0 ** -SCALE_BIAS
# Below about -103.97, e^x rounds to +0 in float32; the clamp sits lower so that the
# TwoSum correction (|err| <= 1 there) cannot lift a clamped result above zero.
EXP_MIN_ARG = -110.0
# ldexp clamps its (integer) exponent here: 2^-190 * v rounds to 0 for any |v| < 2^40.
LDEXP_MIN_EXP = -190.0
# Two-pass: exponents beyond this lose accuracy in the Cody-Waite reduction
# (k*|ln2 - LN2_HI - LN2_LO| ~ 2^-25), so such rows take the fallback program.
PAIR_EXP_LIMIT = float(2 ** 20)
FLT_MAX = f("0x1.fffffep+127")
# Elements per block of a reducing pass: lanes accumulate plainly inside a block,
# blocks are folded into a compensated (Kahan) outer accumulator.  This keeps the
# error of a 2^24-element sum at a few ulp.
REDUCTION_BLOCK = 2048


def clamp_below(m, x, lo: float):
    """max(x, lo) that keeps NaN (a NaN x compares false and is returned)."""
    c = m.const(lo)
    return m.select(m.lt(x, c), c, x)


def clamp_finite(m, x, lo: float, hi: float):
    """x clamped to [lo, hi]; NaN becomes lo."""
    lo_c, hi_c = m.const(lo), m.const(hi)
    x = m.select(m.gt(x, lo_c), x, lo_c)
    return m.select(m.lt(x, hi_c), x, hi_c)


def _round_int(m, x, magic: float):
    """(biased, k): k = round(x*log2 e) as float, biased holds k + (magic - 1.5*2^23) in its low bits."""
    biased = m.fma(x, m.const(LOG2E), m.const(magic))
    return biased, m.sub(biased, m.const(magic))


def _reduce(m, x, k):
    """t = x - k*ln2 in two exact-ish steps (Cody-Waite)."""
    t = m.fma(k, m.const(-LN2_HI), x)
    return m.fma(k, m.const(-LN2_LO), t)


def _poly(m, t):
    """c1 + t*(c2 + ...): e^t = 1 + t*poly(t)."""
    p = m.const(EXP_POLY[-1])
    for c in reversed(EXP_POLY[:-1]):
        p = m.fma(p, t, m.const(c))
    return p


def _pow2_from_biased(m, biased):
    """2^(k + SCALE_BIAS) from a value whose low mantissa bits hold k + 127 + SCALE_BIAS."""
    return m.as_float(m.shl(m.as_int(biased), 23))


def two_sum(m, a, b, subtract: bool = False):
    """(s, err) with a + b = s + err exactly (Knuth's TwoSum); a - b with `subtract`,
    which spares a negation where b is an input."""
    plus, minus = (m.sub, m.add) if subtract else (m.add, m.sub)
    s = plus(a, b)
    z = m.sub(s, a)
    return s, plus(m.sub(a, m.sub(s, z)), minus(b, z))


def exp_diff(m, x, c):
    """e^(x - c) for x <= c (or -inf, NaN): the difference is carried exactly (TwoSum),
    so the result is accurate even where x - c rounds in float32; subnormal results
    are kept, e^-inf = 0, NaN -> NaN."""
    d, err = two_sum(m, x, c, subtract=True)
    lo = m.const(EXP_MIN_ARG)
    underflow = m.lt(d, lo)  # false for NaN, which must propagate
    d = m.select(underflow, lo, d)
    err = m.select(underflow, m.const(0.0), err)
    biased, k = _round_int(m, d, EXP_MAGIC)
    s = _pow2_from_biased(m, biased)
    t = m.add(_reduce(m, d, k), err)
    y = m.fma(m.mul(t, s), _poly(m, t), s)
    return m.mul(y, m.const(TWO_POW_MINUS_BIAS))


def exp_pair(m, x):
    """(p, k) with e^x = p * 2^k, p in [sqrt(1/2), sqrt(2)], k integer-valued float.

    Valid for |k| <= PAIR_EXP_LIMIT; outside (and for inf/NaN) p stays finite and k
    is whatever it is, which the two-pass guard detects through the merged exponent."""
    _, k = _round_int(m, x, ROUND_MAGIC)
    t = clamp_finite(m, _reduce(m, x, k), -1.0, 1.0)
    return m.fma(t, _poly(m, t), m.const(1.0)), k


def ldexp_generic(m, v, d):
    """v * 2^d for integer-valued d <= 0 (or -inf), keeping subnormal results."""
    d = clamp_below(m, d, LDEXP_MIN_EXP)
    s = _pow2_from_biased(m, m.add(d, m.const(EXP_MAGIC)))
    return m.mul(m.mul(v, s), m.const(TWO_POW_MINUS_BIAS))


def _exact_product(m, a, c: float):
    """(p, err) with a * c = p + err exactly (one fma; -p is a * -c, rounded alike)."""
    p = m.mul(a, m.const(c))
    return p, m.fma(a, m.const(c), m.mul(a, m.const(-c)))


def log_pair(m, s, e):
    """(hi, lo) with hi + lo = log(s) + e*ln2 (e integer-valued, |e| <= PAIR_EXP_LIMIT) to
    the accuracy of log(s), hi = hi + lo rounded.  A float32 lse rounded to ulp(e*ln2)
    would cost x - lse that much wherever x is near lse (the largest elements' outputs);
    e*ln2 goes in exact parts e*LN2_HI + e*LN2_LO summed by TwoSum instead."""
    a, a_err = _exact_product(m, e, LN2_HI)
    b, b_err = _exact_product(m, e, LN2_LO)
    t, t_err = two_sum(m, b, m.log(s))
    hi, h_err = two_sum(m, a, t)
    lo = m.add(h_err, m.add(t_err, m.add(a_err, b_err)))
    top = m.add(hi, lo)
    return top, m.sub(lo, m.sub(top, hi))


def pair_scale(m, pair, c, e):
    """p * c * 2^(k - e): an element of the two-pass output."""
    p, k = pair
    return m.ldexp(m.mul(p, c), m.sub(k, e))


# --- shifted exp: e^x * scale * 2^-e with the shift folded into row constants ---------
# A backend that knows a row's shift c (or exponent e) before a pass can avoid forming
# x - c: the Cody-Waite reduction of x itself is exact (|x - k*LN2_HI| < 1/2 needs at most
# 24 bits for every float x), so only 2^-e and the factor scale remain, and those fold into
# the exponent add and the polynomial coefficients.  That drops exp_diff's TwoSum and its
# clamps (about a third of its work) at the same accuracy.  Valid while |x|, |c| stay
# below EXP_SHIFT_LIMIT (k * |ln2 - LN2_HI - LN2_LO| < 2^-24 there); beyond, use exp_diff.
EXP_SHIFT_LIMIT = float(2 ** 19)
# Elements below (e - EXP_SHIFT_FLOOR) * ln2 give 0 whatever the scale (<= 2): they are
# clamped there, which also turns -inf and huge negative inputs into a harmless 0.
EXP_SHIFT_FLOOR = 160.0
# A block whose maximum is below this (-inf, all -inf) takes an exponent that still lies
# beyond PAIR_EXP_LIMIT, so an all -inf row fails the two-pass guard as it must.
BLOCK_MAX_FLOOR = -1.0e6


@dataclass(frozen=True)
class ExpShift:
    """Row constants of exp_scaled (backend row values)."""
    lo: object          # inputs are clamped below here
    e_magic: object     # e + ROUND_MAGIC: biased - e_magic = k - e exactly
    coeffs: tuple       # scale * (c5, c4, c3, c2, c1, 1): Horner gives scale * e^t


def exp_shift(m, scale, e) -> ExpShift:
    """Row constants for scale * e^x * 2^-e (e integer-valued, |e| <= PAIR_EXP_LIMIT)."""
    lo = m.mul(m.sub(e, m.const(EXP_SHIFT_FLOOR)), m.const(LN2))
    coeffs = tuple(m.mul(scale, m.const(c)) for c in (*reversed(EXP_POLY), 1.0))
    return ExpShift(lo, m.add(e, m.const(ROUND_MAGIC)), coeffs)


def exp_diff_shift(m, c) -> ExpShift:
    """Row constants for e^(x - c) = e^x * p * 2^k with (p, k) = exp_pair(-c).
    p's rounding is a factor common to the whole row.  Needs |c| <= EXP_SHIFT_LIMIT."""
    p, k = exp_pair(m, m.sub(m.const(0.0), c))
    return exp_shift(m, p, m.sub(m.const(0.0), k))


# While |e| <= EXP_FOLD_LIMIT, 2^-e folds into the scale as well (scale * 2^-e stays a
# normal float, inside ldexp_generic's range), so exp_scaled needs no exponent subtraction.
EXP_FOLD_LIMIT = 58.0


def exp_shift_folded(m, scale, e) -> ExpShift:
    """exp_shift with 2^-e folded into the scale (|e| <= EXP_FOLD_LIMIT): the same values,
    one subtraction per element less."""
    lo = m.mul(m.sub(e, m.const(EXP_SHIFT_FLOOR)), m.const(LN2))
    folded = m.ldexp(scale, m.sub(m.const(0.0), e))
    coeffs = tuple(m.mul(folded, m.const(c)) for c in (*reversed(EXP_POLY), 1.0))
    return ExpShift(lo, m.const(ROUND_MAGIC), coeffs)


def exp_diff_shift_folded(m, c) -> ExpShift:
    """exp_diff_shift by exp_shift_folded: needs |round(c * log2 e)| <= EXP_FOLD_LIMIT."""
    p, k = exp_pair(m, m.sub(m.const(0.0), c))
    return exp_shift_folded(m, p, m.sub(m.const(0.0), k))


def exp_scaled(m, x, shift: ExpShift):
    """scale * e^x * 2^-e (see exp_shift) for x up to about (e + 1) * ln2: results below
    2^-149 are 0, subnormal results are kept, NaN stays NaN."""
    x = m.select(m.lt(x, shift.lo), shift.lo, x)
    biased, k = _round_int(m, x, ROUND_MAGIC)
    t = _reduce(m, x, k)
    p = shift.coeffs[0]
    for c in shift.coeffs[1:]:
        p = m.fma(p, t, c)
    return m.ldexp(p, m.sub(biased, shift.e_magic))


# exp_pair_floored clamps inputs here: k = -2.16e6 is still inside the magic rounding's range
# and beyond PAIR_EXP_LIMIT, so a row of -inf fails the two-pass guard as it must.
PAIR_INPUT_FLOOR = -1.5e6


def exp_pair_floored(m, x):
    """exp_pair for summing: one clamp of x (NaN kept) instead of clamping t.  Where k
    leaves +-PAIR_EXP_LIMIT, p may be inf or NaN; the two-pass guard on the merged
    exponent (which is then out of range or NaN too) sends such rows to the fallback."""
    x = clamp_below(m, x, PAIR_INPUT_FLOOR)
    _, k = _round_int(m, x, ROUND_MAGIC)
    t = _reduce(m, x, k)
    return m.fma(t, _poly(m, t), m.const(1.0)), k


def block_exponent(m, block_max):
    """The exponent e of a block whose largest element is block_max: every term
    e^x * 2^-e of the block is then below 2, and the largest above 1/2."""
    return _round_int(m, clamp_below(m, block_max, BLOCK_MAX_FLOOR), ROUND_MAGIC)[1]


# --- accumulators: element step, merge of two states, blocked compensated fold ---

def _merge_max(m, a, b):
    return (m.maximum(a[0], b[0]),)


def _merge_sum(m, a, b):
    return (m.add(a[0], b[0]),)


def _merge_pair(m, a, b):
    """(S, E) + (S', E'): both rescaled to the larger exponent (exact powers of two)."""
    e = m.maximum(a[1], b[1])
    return m.add(m.ldexp(a[0], m.sub(a[1], e)), m.ldexp(b[0], m.sub(b[1], e))), e


def _merge_online(m, a, b):
    """(m, d) + (m', d'): the smaller-max side is scaled by e^(min - max); one exp."""
    (m1, d1), (m2, d2) = a, b
    b_bigger = m.gt(m2, m1)
    hi = m.maximum(m1, m2)
    lo = m.select(b_bigger, m1, m2)
    e = exp_diff(m, lo, hi)
    return hi, m.select(b_bigger, m.fma(d1, e, d2), m.fma(d2, e, d1))


def kahan_add(m, s, c, v):
    """Compensated s + v; c carries the lost low-order part (negated)."""
    y = m.sub(v, c)
    t = m.add(s, y)
    return t, m.sub(m.sub(t, s), y)


def _fold_max(m, outer, inner):
    return _merge_max(m, outer, inner)


def _fold_sum(m, outer, inner):
    return kahan_add(m, outer[0], outer[1], inner[0])


def _fold_pair(m, outer, inner):
    s, c, e_out = outer
    e = m.maximum(e_out, inner[1])
    shift = m.sub(e_out, e)
    s, c = kahan_add(m, m.ldexp(s, shift), m.ldexp(c, shift), m.ldexp(inner[0], m.sub(inner[1], e)))
    return s, c, e


def _fold_online(m, outer, inner):
    mx, d, c = outer
    hi = m.maximum(mx, inner[0])
    f_out, f_in = exp_diff(m, mx, hi), exp_diff(m, inner[0], hi)
    d, c = kahan_add(m, m.mul(d, f_out), m.mul(c, f_out), m.mul(inner[1], f_in))
    return hi, d, c


@dataclass(frozen=True)
class Accumulator:
    """How one reduction kind accumulates.  States are tuples of values.

    identity:        the empty state (inner)
    element(m, v):   the state of one element (v: the acc op's argument, a value or a pair)
    merge:           combine two states (elements into lanes, unrolled copies, lanes)
    outer_identity:  the empty block-level state (with a compensation term where it helps)
    fold:            add an inner state into the outer one (once per block)
    unfold:          the outer state as an inner one, for the final lane merge
    """
    identity: tuple[float, ...]
    element: Callable
    merge: Callable
    outer_identity: tuple[float, ...]
    fold: Callable
    unfold: Callable


ACCUMULATORS = {
    Type.ACC_MAX: Accumulator((float("-inf"),), lambda m, v: (v,), _merge_max,
                              (float("-inf"),), _fold_max, lambda m, o: o),
    Type.ACC_SUM: Accumulator((0.0,), lambda m, v: (v,), _merge_sum,
                              (0.0, 0.0), _fold_sum, lambda m, o: (m.sub(o[0], o[1]),)),
    # Exponents start at -FLT_MAX, not -inf: -inf - -inf would be NaN.
    Type.ACC_PAIR: Accumulator((0.0, -FLT_MAX), lambda m, v: v, _merge_pair,
                               (0.0, 0.0, -FLT_MAX), _fold_pair,
                               lambda m, o: (m.sub(o[0], o[1]), o[2])),
    Type.ACC_ONLINE: Accumulator((-FLT_MAX, 0.0), lambda m, v: (v, m.const(1.0)), _merge_online,
                                 (-FLT_MAX, 0.0, 0.0), _fold_online,
                                 lambda m, o: (o[0], m.sub(o[1], o[2]))),
}
