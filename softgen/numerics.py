"""The one definition of softgen's numeric recipes, shared by every backend.

Recipes are written against a small `Math` interface (const, add, sub, mul, fma,
maximum, lt, gt, eq, select, as_int, as_float, shl, ldexp; div and log for row values
only).  A backend implements those primitives for its own values (LLVM vectors, C
expressions) and calls the recipes here, so constants, polynomial and cut-offs exist
in one place.

The 16-bit storage conversions (float16, bfloat16 <-> float32) also use integer lanes of
the float's width: iconst, iand, ior, iadd, lshr, shl, ilt, ieq (signed), widen/narrow
(between 16-bit and 32-bit integer lanes, zero-extending / truncating).

Float semantics that the recipes rely on:
  maximum(a, b)   NaN if either is NaN (IEEE 754-2019 maximum)
  lt / gt / eq    ordered comparisons: false when either side is NaN
  select(c, a, b) c ? a : b, lane-wise
"""
from __future__ import annotations

import dataclasses
import decimal
import functools
import math
import struct
from dataclasses import dataclass
from typing import Callable

from .ir import DType, Kind, Op, Type

f = float.fromhex

LN2 = f("0x1.62e42fefa39efp-1")


@dataclass(frozen=True)
class FloatFormat:
    """The recipes' constants for one compute dtype (bit layout, polynomial, limits)."""
    dtype: DType
    exponent_bits: int
    mantissa_bits: int
    max: float
    log2e: float
    # Cody-Waite split of ln 2: k*ln2_hi is exact for the k that matter, ln2_lo carries the rest.
    ln2_hi: float
    ln2_lo: float
    # e^t ~ 1 + t*(c1 + t*(c2 + ...)) on |t| <= ln2/2
    exp_poly: tuple[float, ...]
    # 2^k is built from exponent bits with k biased by scale_bias more than IEEE's bias, so
    # that k far below the normal range still gives a normal number; a final *2^-scale_bias
    # makes results in the subnormal range exact subnormals instead of flushing them.
    scale_bias: int
    exp_min_arg: float       # exp_diff clamps its argument here (below it e^x rounds to 0)
    ldexp_min_exp: float     # ldexp_generic clamps its exponent here
    pair_exp_limit: float    # two-pass: exponents beyond lose accuracy (guard)
    pair_log_min: float      # two-pass log ops: outputs nearer 0 take the fallback
    exp_shift_limit: float   # exp_scaled with row constants: |x|, |c| up to here
    exp_shift_floor: float
    block_max_floor: float
    exp_fold_limit: float    # exp_shift_folded: |e| up to here
    pair_input_floor: float
    # log(f) = 2s + s^3*(c1 + s^2*(c2 + ...)), s = (f - 1)/(f + 1), on f in [sqrt(1/2), sqrt(2)]
    log_poly: tuple[float, ...]

    @property
    def exponent_bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def round_magic(self) -> float:
        """Adding 1.5*2^mantissa_bits rounds a value to an integer held in the low mantissa bits."""
        return 1.5 * 2.0 ** self.mantissa_bits

    @property
    def exp_magic(self) -> float:
        return self.round_magic + self.exponent_bias + self.scale_bias

    @property
    def two_pow_minus_bias(self) -> float:
        return 2.0 ** -self.scale_bias

    @property
    def stored_term_range(self) -> tuple[float, float]:
        """Terms a kernel stores in y between its passes (softplus_normalize's v): normal
        values, so that each keeps its relative accuracy."""
        return 2.0 ** (1 - self.exponent_bias), self.max

    @property
    def unified_max_limit(self) -> float:
        """How far a row's max may lie from the unified-max bound phi, either way: above,
        exp_diff(x, phi) must still build 2^k (k + exponent_bias + scale_bias below the
        all-ones exponent) and 2^32 terms must not overflow; below, the largest term stays
        far above the subnormals (whose terms would lose digits)."""
        return min((self.exponent_bias - self.scale_bias - 1) * LN2, math.log(self.max) - 32 * LN2)


F32 = FloatFormat(
    DType.F32, exponent_bits=8, mantissa_bits=23, max=f("0x1.fffffep+127"), log2e=f("0x1.715476p+0"),
    ln2_hi=f("0x1.62E400p-1"), ln2_lo=f("0x1.7F7D1Cp-20"),
    # XNNPACK's degree-5 fit
    exp_poly=tuple(map(f, ("0x1.FFFFF6p-1", "0x1.FFFDC6p-2", "0x1.555A80p-3", "0x1.573A1Ap-5",
                           "0x1.0F9F9Cp-7"))),
    # k down to -190 still gives a normal float; 2^-126 and below become exact subnormals
    scale_bias=64,
    # Below about -103.97, e^x rounds to +0 in float32; the clamp sits lower so that the
    # TwoSum correction (|err| <= 1 there) cannot lift a clamped result above zero.
    exp_min_arg=-110.0,
    # 2^-190 * v rounds to 0 for any |v| < 2^40.
    ldexp_min_exp=-190.0,
    # k*|ln2 - LN2_HI - LN2_LO| ~ 2^-25 here, in the Cody-Waite reduction.
    pair_exp_limit=float(2 ** 20),
    # lse = hi + lo carries log(S)'s error, about 2e-7 (S's own rounding), so outputs nearer
    # 0 than this would lose their relative accuracy.  Such rows (logsumexp itself,
    # log_softmax at the row max: -log(sum e^(x - max))) take the fallback, whose log1p keeps it.
    pair_log_min=0.25,
    exp_shift_limit=float(2 ** 19),
    # Elements below (e - exp_shift_floor) * ln2 give 0 whatever the scale (<= 2): they are
    # clamped there, which also turns -inf and huge negative inputs into a harmless 0.
    exp_shift_floor=153.0,
    # A block whose maximum is below this (-inf, all -inf) takes an exponent that still lies
    # beyond pair_exp_limit, so an all -inf row fails the two-pass guard as it must.
    block_max_floor=-1.0e6,
    # The folded form's k reaches down to -exp_fold_limit - exp_shift_floor - 1, which must not
    # pass ldexp_generic's clamp (a clamped term would come out as p * 2^-190, not 0).
    exp_fold_limit=36.0,
    # exp_pair_floored clamps inputs here: k = -2.16e6 is still inside the magic rounding's
    # range and beyond pair_exp_limit, so a row of -inf fails the two-pass guard as it must.
    pair_input_floor=-1.5e6,
    # atanh's series 2/(2j + 1), j = 1..4: |s| <= 0.1716, so the first term left out is
    # below 2^-28 of the sum
    log_poly=tuple(struct.unpack("f", struct.pack("f", 2 / (2 * j + 1)))[0] for j in range(1, 5)))

F64 = FloatFormat(
    DType.F64, exponent_bits=11, mantissa_bits=52, max=f("0x1.fffffffffffffp+1023"),
    log2e=f("0x1.71547652b82fep+0"),  # 1/ln 2 rounded to double
    # fdlibm's split: ln2_hi has 32 significant bits (its low 21 are zero), so k*ln2_hi is
    # exact for |k| <= 2^21; ln2_lo is ln2 - ln2_hi rounded, |ln2 - ln2_hi - ln2_lo| ~ 2^-86.
    ln2_hi=f("0x1.62e42fee00000p-1"), ln2_lo=f("0x1.a39ef35793c76p-33"),
    # Degree 11, c1 = 1 and c2 = 1/2 fixed: a Remez fit (mpmath, 60 digits) of the relative
    # error of 1 + t*p(t) against e^t on |t| <= ln2/2, the others then rounded to nearest.
    # Max relative error measured (mpmath, with these doubles): 6.2e-18 (at t = ln2/2), 0.06
    # ulp; degree 10 reaches only 3.2e-16.
    exp_poly=tuple(map(f, ("0x1.0000000000000p+0", "0x1.0000000000000p-1", "0x1.5555555555502p-3",
                           "0x1.5555555553257p-5", "0x1.1111111128519p-7", "0x1.6c16c17ca6a70p-10",
                           "0x1.a01a011d07827p-13", "0x1.a019ab8fd8ad6p-16", "0x1.71df53f8f03a4p-19",
                           "0x1.289f206862f87p-22", "0x1.ad20d96cd1667p-26"))),
    # k down to -1150 still gives a normal double (k + 1023 + 128 >= 1); 2^-1022 and below
    # become exact subnormals.  k up to 895 stays finite (k + 1151 <= 2046).
    scale_bias=128,
    # Below about -745.13 (= -1075 ln2), e^x rounds to +0 in double; the clamp sits lower so
    # that the TwoSum correction cannot lift a clamped result above zero.  There
    # round(-760 log2e) = -1096: k + 1151 = 55 >= 1, 2^k is still a normal double.
    exp_min_arg=-760.0,
    # The lowest exponent whose 2^(d + 128) is normal; 2^-1150 * v rounds to 0 for any
    # |v| < 2^75.
    ldexp_min_exp=-1150.0,
    # k*ln2_hi is exact up to 2^21; k*|ln2 - ln2_hi - ln2_lo| < 2^-65 here.
    pair_exp_limit=float(2 ** 20),
    # log(S)'s error, about 4e-16 (a few ulp of S), has the same ratio to 0.25 as float32's
    # 2e-7: outputs nearer 0 take the fallback, whose log1p keeps their relative accuracy.
    pair_log_min=0.25,
    # The first Cody-Waite step is exact for every double x (x - k*ln2_hi: below 1/2 and a
    # multiple of 2^-54 where k != 0, at most 53 bits); k*|ln2 - ln2_hi - ln2_lo| < 2^-65
    # here, and round(c log2e) stays within pair_exp_limit (exp_diff_shift's exp_pair(-c)).
    exp_shift_limit=float(2 ** 19),
    # 2^-1075 rounds to 0 in double: elements below (e - 1085) * ln2 give at most
    # 2 * 2^-1085, 0 whatever the scale (<= 2); k - e >= -1086 stays above ldexp_min_exp.
    exp_shift_floor=1085.0,
    # round(-1e6 log2e) = -1442695 lies beyond pair_exp_limit (as for float32).
    block_max_floor=-1.0e6,
    # The folded form scales by 2^k (k from x itself), k in [e - 1086, e + 1]: for |e| <= 64
    # k stays above ldexp_min_exp (a clamped k would leave p * 2^-1150, p up to 2^(|e| + 1.5),
    # above 0 where the result is 0) and k + 1151 below 2047 (that alone would allow 894).
    exp_fold_limit=64.0,
    # k = round(-1.5e6 log2e) = -2.16e6 is inside the magic rounding's range (2^51) and
    # beyond pair_exp_limit, so a row of -inf fails the two-pass guard as it must.
    pair_input_floor=-1.5e6,
    # atanh's series to j = 10: the first term left out is below 2^-57 of the sum
    log_poly=tuple(2 / (2 * j + 1) for j in range(1, 11)))

# Compute dtypes with constants; float16 and bfloat16 are storage dtypes only.
FORMATS = {F32.dtype: F32, F64.dtype: F64}


def float_format(dtype: DType) -> FloatFormat:
    if dtype not in FORMATS:
        raise NotImplementedError(f"computing in {dtype.numpy_name} is not enabled; "
                                  f"softgen computes in {', '.join(d.numpy_name for d in FORMATS)}")
    return FORMATS[dtype]


def _fmt(m) -> FloatFormat:
    """The constants of m's compute dtype: its `float_format` attribute, float32 for a Math
    that has none."""
    return getattr(m, "float_format", F32)


# float32 names, for code that reads the constants directly
LOG2E, LN2_HI, LN2_LO, EXP_POLY = F32.log2e, F32.ln2_hi, F32.ln2_lo, F32.exp_poly
ROUND_MAGIC, SCALE_BIAS, EXP_MAGIC = F32.round_magic, F32.scale_bias, F32.exp_magic
TWO_POW_MINUS_BIAS, EXP_MIN_ARG, LDEXP_MIN_EXP = F32.two_pow_minus_bias, F32.exp_min_arg, F32.ldexp_min_exp
PAIR_EXP_LIMIT, PAIR_LOG_MIN, FLT_MAX = F32.pair_exp_limit, F32.pair_log_min, F32.max
EXP_SHIFT_LIMIT, EXP_SHIFT_FLOOR, BLOCK_MAX_FLOOR = F32.exp_shift_limit, F32.exp_shift_floor, F32.block_max_floor
EXP_FOLD_LIMIT, PAIR_INPUT_FLOOR = F32.exp_fold_limit, F32.pair_input_floor

# Elements per block of a reducing pass: lanes accumulate plainly inside a block,
# blocks are folded into a compensated (Kahan) outer accumulator.  This keeps the
# error of a 2^24-element sum at a few ulp.
REDUCTION_BLOCK = 2048
# Plain float additions per accumulator lane between two folds.  Sums of equal terms
# (rows of one value, or all equal but the max) round the same way at every addition:
# 64 additions already drift ~1e-6, 32 keep softmax within 6.5e-7.
SUM_CHAIN = 32


def reduction_block(block: int, lanes: int, accumulators: int) -> int:
    """Elements per block of a reducing pass with `accumulators` sets of `lanes` lanes:
    `block`, shortened to at most SUM_CHAIN additions per lane."""
    return min(block, SUM_CHAIN * lanes * accumulators)


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
    """(biased, k): k = round(x*log2 e) as float, biased holds k + (magic - round_magic) in its
    low bits."""
    return _round_by(m, x, m.const(magic))


def _round_by(m, x, magic):
    """_round_int with the magic a value (a row constant, or a constant)."""
    biased = m.fma(x, m.const(_fmt(m).log2e), magic)
    return biased, m.sub(biased, magic)


def _reduce(m, x, k):
    """t = x - k*ln2 in two exact-ish steps (Cody-Waite)."""
    fmt = _fmt(m)
    t = m.fma(k, m.const(-fmt.ln2_hi), x)
    return m.fma(k, m.const(-fmt.ln2_lo), t)


def _poly(m, t):
    """c1 + t*(c2 + ...): e^t = 1 + t*poly(t)."""
    poly = _fmt(m).exp_poly
    p = m.const(poly[-1])
    for c in reversed(poly[:-1]):
        p = m.fma(p, t, m.const(c))
    return p


def _pow2_from_biased(m, biased):
    """2^(k + scale_bias) from a value whose low mantissa bits hold k + exponent bias + scale_bias."""
    return m.as_float(m.shl(m.as_int(biased), _fmt(m).mantissa_bits))


def two_sum(m, a, b, subtract: bool = False):
    """(s, err) with a + b = s + err exactly (Knuth's TwoSum); a - b with `subtract`,
    which spares a negation where b is an input."""
    plus, minus = (m.sub, m.add) if subtract else (m.add, m.sub)
    s = plus(a, b)
    z = m.sub(s, a)
    return s, plus(m.sub(a, m.sub(s, z)), minus(b, z))


def exp_diff(m, x, c):
    """e^(x - c) for x <= c (or -inf, NaN): the difference is carried exactly (TwoSum),
    so the result is accurate even where x - c rounds; subnormal results
    are kept, e^-inf = 0, NaN -> NaN."""
    fmt = _fmt(m)
    d, err = two_sum(m, x, c, subtract=True)
    lo = m.const(fmt.exp_min_arg)
    underflow = m.lt(d, lo)  # false for NaN, which must propagate
    d = m.select(underflow, lo, d)
    err = m.select(underflow, m.const(0.0), err)
    biased, k = _round_int(m, d, fmt.exp_magic)
    s = _pow2_from_biased(m, biased)
    t = m.add(_reduce(m, d, k), err)
    y = m.fma(m.mul(t, s), _poly(m, t), s)
    return m.mul(y, m.const(fmt.two_pow_minus_bias))


def exp_pair(m, x, lo=None):
    """(p, k) with e^(x + lo) = p * 2^k, p about in [sqrt(1/2), sqrt(2)], k integer-valued
    float; lo (default 0) is a low part below half an ulp of x (TwoSum's error).

    Valid for |k| <= PAIR_EXP_LIMIT; outside (and for inf/NaN) p stays finite and k
    is whatever it is, which the two-pass guard detects through the merged exponent."""
    _, k = _round_int(m, x, _fmt(m).round_magic)
    t = _reduce(m, x, k)
    t = clamp_finite(m, t if lo is None else m.add(t, lo), -1.0, 1.0)
    return m.fma(t, _poly(m, t), m.const(1.0)), k


def ldexp_generic(m, v, d, scale=None):
    """v * 2^d for integer-valued d <= 0 (or -inf), keeping subnormal results; with
    `scale` (a normal value times 2^-scale_bias), v * 2^d * scale, rounded once."""
    fmt = _fmt(m)
    return _times_pow2(m, v, m.add(clamp_below(m, d, fmt.ldexp_min_exp), m.const(fmt.exp_magic)), scale)


def _times_pow2(m, v, biased, scale=None):
    """v * 2^d * scale (scale: a normal value times 2^-scale_bias, by default 2^-scale_bias
    alone) for a biased whose low mantissa bits hold d + exponent bias + scale_bias, d in
    [ldexp_min_exp, 0] (so 2^(d + scale_bias) is a normal value): ldexp_generic's scaling,
    and exp_scaled's from its rounded value."""
    return m.mul(m.mul(v, _pow2_from_biased(m, biased)),
                 m.const(_fmt(m).two_pow_minus_bias) if scale is None else scale)


def _exact_product(m, a, c: float):
    """(p, err) with a * c = p + err exactly (one fma; -p is a * -c, rounded alike)."""
    p = m.mul(a, m.const(c))
    return p, m.fma(a, m.const(c), m.mul(a, m.const(-c)))


def log_pair(m, s, e):
    """(hi, lo) with hi + lo = log(s) + e*ln2 (e integer-valued, |e| <= PAIR_EXP_LIMIT) to
    the accuracy of log(s), hi = hi + lo rounded.  A float32 lse rounded to ulp(e*ln2)
    would cost x - lse that much wherever x is near lse (the largest elements' outputs);
    e*ln2 goes in exact parts e*LN2_HI + e*LN2_LO summed by TwoSum instead."""
    fmt = _fmt(m)
    a, a_err = _exact_product(m, e, fmt.ln2_hi)
    b, b_err = _exact_product(m, e, fmt.ln2_lo)
    t, t_err = two_sum(m, b, m.log(s))
    hi, h_err = two_sum(m, a, t)
    lo = m.add(h_err, m.add(t_err, m.add(a_err, b_err)))
    top = m.add(hi, lo)
    return top, m.sub(lo, m.sub(top, hi))


def log1p(m, u):
    """log(1 + u) for u >= -1 (finite, or NaN) to a few ulp of itself, also where 1 + u
    rounds to 1: log(w) * u / (w - 1) with w = 1 + u, the quotient undoing w's rounding
    (Goldberg); u itself where w is 1.  A row-value recipe (log, div)."""
    one = m.const(1.0)
    w = m.add(one, u)
    d = m.sub(w, one)
    r = m.mul(m.log(w), m.div(u, d))
    return m.select(m.gt(d, m.const(0.0)), r, m.select(m.lt(d, m.const(0.0)), r, u))


# --- log and softplus per element (no libm): for softplus_pow ---------------------------

SQRT2 = f("0x1.6a09e667f3bcdp+0")


def frexp(m, a):
    """(mant, k) with a = mant * 2^k, mant in [sqrt(1/2), sqrt(2)], k integer-valued, for a normal
    positive a: the exponent bits (an integer k + bias) become the float 2^mantissa_bits + k
    + bias by OR-ing them into 2^mantissa_bits's zero mantissa (integer lanes of the float's
    width: iand, ior, lshr)."""
    fmt = _fmt(m)
    bits = m.as_int(a)
    one_bits = fmt.exponent_bias << fmt.mantissa_bits       # 1.0's bits
    mant = m.as_float(m.ior(m.iand(bits, m.iconst((1 << fmt.mantissa_bits) - 1)), m.iconst(one_bits)))
    top = float(2 ** fmt.mantissa_bits)
    top_bits = (fmt.exponent_bias + fmt.mantissa_bits) << fmt.mantissa_bits
    k = m.sub(m.as_float(m.ior(m.lshr(bits, fmt.mantissa_bits), m.iconst(top_bits))),
              m.const(top + fmt.exponent_bias))
    big = m.gt(mant, m.const(SQRT2))
    return m.select(big, m.mul(mant, m.const(0.5)), mant), m.select(big, m.add(k, m.const(1.0)), k)


def _log_reduced(m, mant, c=None):
    """log(mant + c) for mant in [sqrt(1/2), sqrt(2)] and |c| below an ulp of it (default 0):
    2 atanh(s), s = (mant - 1 + c) / (mant + 1), mant - 1 exact; a few ulp of itself."""
    one = m.const(1.0)
    num = m.sub(mant, one)
    s = m.div(num if c is None else m.add(num, c), m.add(mant, one))
    s2 = m.mul(s, s)
    poly = _fmt(m).log_poly
    q = m.const(poly[-1])
    for coeff in reversed(poly[:-1]):
        q = m.fma(q, s2, m.const(coeff))
    return m.fma(m.mul(s, s2), q, m.add(s, s))


def log_parts(m, a):
    """(hi, lo) with hi + lo = log(a) for a normal positive a: hi = k*ln2_hi exact, lo =
    k*ln2_lo + log(f) (|lo| < 0.36); the error is a few ulp of lo, not of log(a), which
    exp_pair's lo argument carries."""
    fmt = _fmt(m)
    mant, k = frexp(m, a)
    return m.mul(k, m.const(fmt.ln2_hi)), m.fma(k, m.const(fmt.ln2_lo), _log_reduced(m, mant))


def log1p_unit(m, w):
    """log(1 + w) for w in [0, 1] to a few ulp: 1 + w and its rounding error c (exact, as
    1 >= w), halved together above sqrt(2), and c put back inside the reduced log."""
    one = m.const(1.0)
    w1 = m.add(one, w)
    c = m.sub(w, m.sub(w1, one))
    big = m.gt(w1, m.const(SQRT2))
    half = m.const(0.5)
    core = _log_reduced(m, m.select(big, m.mul(w1, half), w1), m.select(big, m.mul(c, half), c))
    return m.select(big, m.add(core, m.const(LN2)), core)


# Below this z, log(softplus(z)) = z + log(log1p(e^z) / e^z) is z to within e^z / 2 (4e-18):
# the log of softplus needs no log there (log1p(e^z) would be subnormal or 0 further down).
SOFTPLUS_LINEAR_BELOW = -40.0


@dataclass(frozen=True)
class SoftplusScale:
    """The constants of softplus(scale * x) for one scale (a kernel parameter)."""
    inv: float        # 1 / |scale|
    log_hi: float     # log |scale| = log_hi + log_lo
    log_lo: float

    @classmethod
    def of(cls, scale: float, fmt: "FloatFormat") -> "SoftplusScale":
        with decimal.localcontext() as ctx:
            ctx.prec = 60
            exact = decimal.Decimal(abs(scale)).ln()
            hi = _round_to(float(exact), fmt)
            return cls(1.0 / abs(scale), hi, _round_to(float(exact - decimal.Decimal(hi)), fmt))


def _round_to(v: float, fmt: "FloatFormat") -> float:
    return v if fmt.dtype is DType.F64 else struct.unpack("f", struct.pack("f", v))[0]


def _times_constant(m, a, c: float):
    """(p, err) with p + err = a * c to the format's precision squared: c is a Python float,
    whose rounding to the format (float32) would shift every v^power by a relative error
    of |log v| * 2^-25; its remainder c - hi goes into err."""
    fmt = _fmt(m)
    hi = _round_to(c, fmt)
    p, err = _exact_product(m, a, hi)
    return (p, err) if hi == c else (p, m.fma(a, m.const(_round_to(c - hi, fmt)), err))


def _scaled_input(m, x, scale: float):
    """(z, z_lo): z + z_lo = scale * x (z_lo 0 where z is infinite, or scale is 1)."""
    zero = m.const(0.0)
    if scale == 1.0:
        return x, zero
    z, err = _times_constant(m, x, scale)
    return z, m.select(m.lt(m.fabs(z), m.const(float("inf"))), err, zero)   # inf - inf would be NaN


def softplus_pair(m, x, scale: float = 1.0):
    """softplus(scale * x) itself as an exponent pair (mant, k), for power 1: no log.
    e^-|z| as a pair first: below SOFTPLUS_LINEAR_BELOW that pair is softplus (no
    underflow), else log1p of it is softplus below 0, z + log1p above, split by frexp
    (for |scale| > 1: |x| + log1p / |scale|, then the mantissa times |scale|'s, so that z
    may overflow).  -inf gives a pair far below any row's, +inf an infinite exponent."""
    fmt = _fmt(m)
    zero = m.const(0.0)
    z, z_lo = _scaled_input(m, x, scale)
    positive = m.gt(z, zero)
    # e^-|z + z_lo| as a pair
    pw, kw = exp_pair(m, clamp_below(m, m.sub(zero, m.fabs(z)), fmt.pair_input_floor),
                      m.select(positive, m.sub(zero, z_lo), z_lo))
    log1p_w = log1p_unit(m, m.ldexp(pw, kw))
    if abs(scale) > 1.0:
        mant, k = frexp(m, m.select(positive, m.fma(log1p_w, m.const(1.0 / abs(scale)), m.fabs(x)), log1p_w))
        s_mant, s_exp = math.frexp(abs(scale))
        s_hi = _round_to(s_mant, fmt)
        scaled = m.fma(mant, m.const(_round_to(s_mant - s_hi, fmt)), m.mul(mant, m.const(s_hi)))
        mant, k = m.select(positive, scaled, mant), m.select(positive, m.add(k, m.const(float(s_exp))), k)
    else:
        mant, k = frexp(m, m.select(positive, m.add(z, m.add(log1p_w, z_lo)), log1p_w))
    linear = m.lt(z, m.const(SOFTPLUS_LINEAR_BELOW))
    finite = m.lt(m.fabs(x), m.const(float("inf")))
    k = m.select(finite, m.select(linear, kw, k), clamp_below(m, z, fmt.pair_input_floor))
    return m.select(linear, pw, mant), k


def softplus(m, x, scale: float = 1.0):
    """softplus(scale * x) itself, to a few ulp where it is a normal number: log1p(e^-|z|),
    plus z (and z's rounding) for z > 0, without softplus_pair's frexp and the caller's
    ldexp.  Below the normal range the result is 0 or a subnormal that lost digits, above
    it inf, for NaN NaN or 0 (as the backend's ldexp takes a NaN exponent): callers check
    the range (algorithms._stored_terms' guard)."""
    zero = m.const(0.0)
    z, z_lo = _scaled_input(m, x, scale)
    positive = m.gt(z, zero)
    pw, kw = exp_pair(m, clamp_below(m, m.sub(zero, m.fabs(z)), _fmt(m).pair_input_floor),
                      m.select(positive, m.sub(zero, z_lo), z_lo))
    log1p_w = log1p_unit(m, m.ldexp(pw, kw))   # (kw <= 0: e^-|z| <= 1)
    return m.select(positive, m.add(z, m.add(log1p_w, z_lo)), log1p_w)


def log_softplus(m, x, scale: float = 1.0):
    """(hi, lo) with hi + lo = log(softplus(scale * x)), softplus(z) = log(1 + e^z), to a few
    ulp of lo (exp of it is then a few ulp off): overflow- and underflow-free for any finite
    x (-inf gives -inf, +inf gives +inf, NaN NaN).  z > 0: log(z + log1p(e^-z)); z <= 0:
    log(log1p(e^z)), or z itself below SOFTPLUS_LINEAR_BELOW.  scale's rounding of z is
    carried (an exact product); for |scale| > 1 the positive side is taken as
    log|scale| + log(|x| + log1p(e^-z) / |scale|), so that z may overflow."""
    zero, inf = m.const(0.0), m.const(float("inf"))
    sp = SoftplusScale.of(scale, _fmt(m))
    z, z_lo = _scaled_input(m, x, scale)
    positive = m.gt(z, zero)
    # w = e^-|z + z_lo|
    w = exp_diff(m, m.sub(zero, m.fabs(z)), m.select(positive, z_lo, m.sub(zero, z_lo)))
    log1p_w = log1p_unit(m, w)
    if abs(scale) > 1.0:
        above = m.fma(log1p_w, m.const(sp.inv), m.fabs(x))
    else:
        above = m.add(z, m.add(log1p_w, z_lo))
    hi, lo = log_parts(m, m.select(positive, above, log1p_w))
    if abs(scale) > 1.0:
        hi_s, err = two_sum(m, hi, m.const(sp.log_hi))
        lo_s = m.add(lo, m.add(err, m.const(sp.log_lo)))
        hi, lo = m.select(positive, hi_s, hi), m.select(positive, lo_s, lo)
    linear = m.lt(z, m.const(SOFTPLUS_LINEAR_BELOW))
    finite = m.lt(m.fabs(x), inf)
    hi = m.select(finite, m.select(linear, z, hi), z)
    return hi, m.select(finite, m.select(linear, z_lo, lo), zero)


def softplus_pow(m, x, scale: float = 1.0, power: float = 1.0):
    """softplus(scale * x)^power as an exponent pair (p, k), p * 2^k (see exp_pair):
    e^(power * log softplus) with the log's low part carried, so neither a huge x nor
    a power overflows and tiny values keep their relative accuracy.  Power 1 needs no log
    (softplus_pair)."""
    if power == 1.0:
        return softplus_pair(m, x, scale)
    hi, lo = log_softplus(m, x, scale)
    if power != 1.0:
        hi, err = _times_constant(m, hi, power)
        lo = m.fma(lo, m.const(power), err)
    s, err = two_sum(m, hi, lo)   # |lo| up to 0.36: into hi, so that exp_pair's t stays reduced
    finite = m.lt(m.fabs(hi), m.const(float("inf")))   # +-inf - +-inf would make them NaN
    hi, lo = m.select(finite, s, hi), m.select(finite, err, m.const(0.0))
    return exp_pair(m, clamp_below(m, hi, _fmt(m).pair_input_floor), lo)


def pair_scale(m, pair, c, e):
    """p * c * 2^(k - e): an element of the two-pass output."""
    p, k = pair
    return m.ldexp(m.mul(p, c), m.sub(k, e))


# --- shifted exp: e^x * scale * 2^-e with the shift folded into row constants ---------
# A backend that knows a row's shift c (or exponent e) before a pass can avoid forming
# x - c: the Cody-Waite reduction of x itself is exact (x - k*ln2_hi, one fma, is a value
# of the format for every x of it), so only 2^-e and the factor scale remain, and those
# fold into the exponent add and the polynomial coefficients.  That drops exp_diff's
# TwoSum and its clamps (about a third of its work) at the same accuracy.  Valid while
# |x|, |c| stay below exp_shift_limit (k * |ln2 - ln2_hi - ln2_lo| < 2^-24 there in
# float32, < 2^-65 in double); beyond, use exp_diff.


@dataclass(frozen=True)
class ExpShift:
    """Row constants of exp_scaled (backend row values).  The row's scale goes into the
    polynomial's coefficients where ldexp is one instruction; elsewhere into ldexp_generic's
    last multiply, in place of 2^-scale_bias (the same operations, and 2 row vectors held
    through the sweep instead of len(exp_poly) + 2: on 16 registers the difference between
    spilling and not)."""
    lo: object          # inputs are clamped below here
    # the rounding's constant: with coeffs, e + round_magic (biased - magic = k - e for the
    # one-instruction ldexp); without, exp_magic - e, so that biased's bits shifted into the
    # exponent field are 2^(k - e + scale_bias) themselves (two operations fewer per element
    # than forming k - e and biasing it again)
    magic: object
    coeffs: tuple       # scale * (c5, c4, c3, c2, c1, 1): Horner gives scale * e^t; or ()
    scale: object = None  # with coeffs (): scale * 2^-scale_bias

    def map(self, fn) -> "ExpShift":
        """The same constants, each passed through fn (to tables, splats)."""
        return ExpShift(fn(self.lo), fn(self.magic), tuple(map(fn, self.coeffs)),
                        None if self.scale is None else fn(self.scale))


def row_vectors(fmt: FloatFormat, scaled_coeffs: bool) -> int:
    """Vectors an ExpShift holds (lo and the scale: in the coefficients or on its own;
    magic is a constant in the folded form, the usual one)."""
    return 1 + (len(fmt.exp_poly) + 1 if scaled_coeffs else 1)


def exp_shift(m, scale, e, scaled_coeffs: bool = True) -> ExpShift:
    """Row constants for scale * e^x * 2^-e (e integer-valued, |e| <= PAIR_EXP_LIMIT);
    scaled_coeffs: the scale in the coefficients (for a one-instruction ldexp), else apart
    (ExpShift)."""
    return _shift(m, _floor(m, e), e, scale, scaled_coeffs)


def _floor(m, e):
    """Where exp_scaled clamps its inputs: (e - exp_shift_floor) * ln2."""
    return m.mul(m.sub(e, m.const(_fmt(m).exp_shift_floor)), m.const(LN2))


def _shift(m, lo, e, scale, scaled_coeffs: bool) -> ExpShift:
    """ExpShift for scale * e^x * 2^-e clamped at lo; e None: 0 (the folded form's, whose
    magic is then a constant)."""
    fmt = _fmt(m)
    if not scaled_coeffs:   # exact: scale is normal, 2^-scale_bias a power of 2 (exp_fold_limit)
        magic = m.const(fmt.exp_magic) if e is None else m.sub(m.const(fmt.exp_magic), e)
        return ExpShift(lo, magic, (), m.mul(scale, m.const(fmt.two_pow_minus_bias)))
    magic = m.const(fmt.round_magic) if e is None else m.add(e, m.const(fmt.round_magic))
    return ExpShift(lo, magic, tuple(m.mul(scale, m.const(c)) for c in (*reversed(fmt.exp_poly), 1.0)))


def exp_diff_shift(m, c, scaled_coeffs: bool = True) -> ExpShift:
    """Row constants for e^(x - c) = e^x * p * 2^k with (p, k) = exp_pair(-c).
    p's rounding is a factor common to the whole row.  Needs |c| <= EXP_SHIFT_LIMIT."""
    p, k = exp_pair(m, m.sub(m.const(0.0), c))
    return exp_shift(m, p, m.sub(m.const(0.0), k), scaled_coeffs)


# While |e| <= exp_fold_limit, 2^-e folds into the scale as well (scale * 2^-e stays a
# normal float, inside ldexp_generic's range), so exp_scaled needs no exponent subtraction.


def exp_shift_folded(m, scale, e, scaled_coeffs: bool = True) -> ExpShift:
    """exp_shift with 2^-e folded into the scale (|e| <= EXP_FOLD_LIMIT): the same values,
    one subtraction per element less."""
    folded = m.ldexp(scale, m.sub(m.const(0.0), e))
    return _shift(m, _floor(m, e), None, folded, scaled_coeffs)


def exp_diff_shift_folded(m, c, scaled_coeffs: bool = True) -> ExpShift:
    """exp_diff_shift by exp_shift_folded: needs |round(c * log2 e)| <= EXP_FOLD_LIMIT."""
    p, k = exp_pair(m, m.sub(m.const(0.0), c))
    return exp_shift_folded(m, p, m.sub(m.const(0.0), k), scaled_coeffs)


def exp_scaled(m, x, shift: ExpShift):
    """scale * e^x * 2^-e (see exp_shift) for x up to about (e + 1) * ln2: results below
    the smallest subnormal (2^-149, 2^-1074 in double) are 0, subnormal results are kept,
    NaN stays NaN."""
    fmt = _fmt(m)
    x = m.select(m.lt(x, shift.lo), shift.lo, x)
    generic = shift.scale is not None
    biased, k = _round_by(m, x, shift.magic if generic else m.const(fmt.round_magic))
    t = _reduce(m, x, k)
    coeffs = shift.coeffs or tuple(m.const(c) for c in (*reversed(fmt.exp_poly), 1.0))
    p = coeffs[0]
    for c in coeffs[1:]:
        p = m.fma(p, t, c)
    if generic:   # x >= lo keeps k - e >= -exp_shift_floor - 1, folded or not (exp_fold_limit):
        # at or above ldexp_min_exp, so biased's bits give 2^(k - e + scale_bias) unclamped
        return _times_pow2(m, p, biased, shift.scale)
    return m.ldexp(p, m.sub(biased, shift.magic))



def exp_pair_floored(m, x):
    """exp_pair for summing: one clamp of x (NaN kept) instead of clamping t.  Where k
    leaves +-PAIR_EXP_LIMIT, p may be inf or NaN; the two-pass guard on the merged
    exponent (which is then out of range or NaN too) sends such rows to the fallback."""
    fmt = _fmt(m)
    x = clamp_below(m, x, fmt.pair_input_floor)
    _, k = _round_int(m, x, fmt.round_magic)
    t = _reduce(m, x, k)
    return m.fma(t, _poly(m, t), m.const(1.0)), k


def block_exponent(m, block_max):
    """The exponent e of a block whose largest element is block_max: every term
    e^x * 2^-e of the block is then below 2, and the largest above 1/2."""
    fmt = _fmt(m)
    return _round_int(m, clamp_below(m, block_max, fmt.block_max_floor), fmt.round_magic)[1]


# --- accumulators: element step, merge of two states, blocked compensated fold ---

def _merge_max(m, a, b):
    return (m.maximum(a[0], b[0]),)


def _merge_sum(m, a, b):
    return (m.add(a[0], b[0]),)


def _merge_pair(m, a, b):
    """(S, E) + (S', E'): both rescaled to the larger exponent (exact powers of two)."""
    e = m.maximum(a[1], b[1])
    return m.add(m.ldexp(a[0], m.sub(a[1], e)), m.ldexp(b[0], m.sub(b[1], e))), e


def _exp_diff_or_one(m, x, c):
    """e^(x - c), exactly 1 where x is c (also where both are inf)."""
    return m.select(m.eq(x, c), m.const(1.0), exp_diff(m, x, c))


def _combine_online(m, m1, rc1, m2, rc2):
    """(m1, r1, c1) + (m2, r2, c2), online states: a max, the sum r of its terms below it
    and the count c of its terms at it (exactly 1 each).  Returns (second, hi, t, c): whether
    side 2 has the larger max, that max, what the other side adds to r (its terms scaled
    by e^(lo - hi), its count too unless the maxes tie) and the count.  One exp, taken as
    1 on a tie (e^(inf - inf) would be NaN)."""
    (r1, c1), (r2, c2) = rc1, rc2
    second = m.gt(m2, m1)
    tie = m.eq(m1, m2)
    hi = m.maximum(m1, m2)
    f = _exp_diff_or_one(m, m.select(second, m1, m2), hi)
    c_lo = m.select(second, c1, c2)
    lo = m.add(m.select(second, r1, r2), m.select(tie, m.const(-0.0), c_lo))
    c = m.add(m.select(second, c2, c1), m.select(tie, c_lo, m.const(-0.0)))
    return second, hi, m.mul(lo, f), c


def _merge_online(m, a, b):
    """Counting the max terms apart keeps the small terms' relative accuracy next to them,
    for log1p(excess) (a sum 1 + small would round it away), also across lanes and blocks
    whose max is not the row's."""
    second, hi, t, c = _combine_online(m, a[0], a[1:], b[0], b[1:])
    return hi, m.add(m.select(second, b[1], a[1]), t), c


def _merge_excess(m, a, b):
    return m.add(a[0], b[0]), m.add(a[1], b[1])


def excess_element(m, e, x, c):
    """The excess state of one term e = e^(x - c): (e, 0), or (nothing, 1) where x is c:
    max terms are counted, not summed.  -0.0 is the nothing (v + -0.0 = v), so that a
    backend may add under a mask; a NaN x is not c, so its NaN term is summed."""
    top = m.eq(x, c)
    return m.select(top, m.const(-0.0), e), m.select(top, m.const(1.0), m.const(-0.0))


def excess(m, r, n):
    """Sum e^(x - c) - 1 from its excess state: r, the terms below the max c, plus n - 1
    for the n terms at c (exactly 1 each).  r keeps its relative accuracy where the sum
    is 1 + r, which the sum itself rounds away: logsumexp = c + log1p(excess)."""
    return m.add(r, m.sub(n, m.const(1.0)))


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


def _fold_excess(m, outer, inner):
    r, c = kahan_add(m, outer[0], outer[1], inner[0])
    return r, c, m.add(outer[2], inner[1])


# The outer online state sums the terms below the max against a reference that moves only
# when a block's max passes it by more than ONLINE_SLACK: each move rescales the sum by an
# inexact e^(old - new), and on a rising row (a ramp, sorted logits) a move per block added
# up (8192 blocks: 3.7e-5).  Terms stay below e^ONLINE_SLACK (exp_diff holds for x - c up
# to ~43); the count of max terms stays exact, and unfold rescales once, to the max.
ONLINE_SLACK = 16.0


def _fold_online(m, outer, inner):
    """An online block state into the outer state (max, r, compensation, c, reference):
    r + compensation sums the terms below the max, scaled by e^-reference."""
    mx, r, comp, c, ref = outer
    m_in, r_in, c_in = inner
    new_ref = m.select(m.gt(m_in, m.add(ref, m.const(ONLINE_SLACK))), m_in, ref)
    second, tie = m.gt(m_in, mx), m.eq(m_in, mx)
    # the counted max terms of the side whose max is not the row's join the sum
    f_in = _exp_diff_or_one(m, m_in, new_ref)
    added = m.mul(m.add(r_in, m.select(m.gt(mx, m_in), c_in, m.const(-0.0))), f_in)
    added = m.add(added, m.select(second, m.mul(c, _exp_diff_or_one(m, mx, new_ref)), m.const(-0.0)))
    f_ref = _exp_diff_or_one(m, ref, new_ref)
    r, comp = kahan_add(m, m.mul(r, f_ref), m.mul(comp, f_ref), added)
    c = m.select(second, c_in, m.add(c, m.select(tie, c_in, m.const(-0.0))))
    return m.maximum(mx, m_in), r, comp, c, new_ref


def _unfold_online(m, outer):
    mx, r, comp, c, ref = outer
    return mx, m.mul(m.sub(r, comp), _exp_diff_or_one(m, ref, mx)), c


def _online_result(m, mx, r, c):
    """merge.online's (max, excess); the max is NaN where the sum is: a block's max scan
    skips NaN, so a row with +inf and NaN would otherwise have the max +inf."""
    u = excess(m, r, c)
    return m.select(m.eq(u, u), mx, u), u


def block_online_state(m, block_max, summed):
    """The online state of a block whose terms e^(x - block_max) were summed by ACC_EXCESS
    (the block-max lowering, see lowering.py)."""
    return (block_max, *summed)


# An identity entry that stands for the compute format's lowest finite value, -max: a start
# below every real value that is not -inf (exponents and maxes: -inf - -inf would be NaN).
# Accumulator.identities(fmt) resolves it.
LOWEST = "lowest"


@dataclass(frozen=True)
class Accumulator:
    """How one reduction kind accumulates.  States are tuples of values.

    start:           the empty state (inner): floats, or LOWEST
    element(m, *a):  the state of one element (a: the acc op's arguments, values or pairs)
    merge:           combine two states (elements into lanes, unrolled copies, lanes)
    outer_start:     the empty block-level state (with a compensation term where it helps)
    fold:            add an inner state into the outer one (once per block)
    unfold:          the outer state as an inner one, for the final lane merge
    result:          the row values of the merged state
    """
    start: tuple
    element: Callable
    merge: Callable
    outer_start: tuple
    fold: Callable
    unfold: Callable
    result: Callable = lambda m, state: state  # the merge.* op's row values
    insert: Callable | None = None   # insert(m, state, *a): one element into a state (default: merge)

    def step(self, m, state, *args):
        """The state with one element (the acc op's arguments) added."""
        if self.insert is not None:
            return self.insert(m, state, *args)
        return self.merge(m, state, self.element(m, *args))

    def identities(self, fmt: FloatFormat) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(identity, outer_identity): the empty inner and outer states in format fmt."""
        def value(c):
            return -fmt.max if c is LOWEST else c
        return tuple(map(value, self.start)), tuple(map(value, self.outer_start))

    @property
    def identity(self) -> tuple[float, ...]:
        """The empty inner state in float32 (identities(fmt)[0] for other formats)."""
        return self.identities(F32)[0]

    @property
    def outer_identity(self) -> tuple[float, ...]:
        """The empty outer state in float32 (identities(fmt)[1] for other formats)."""
        return self.identities(F32)[1]


ACCUMULATORS = {
    Type.ACC_MAX: Accumulator((float("-inf"),), lambda m, v: (v,), _merge_max,
                              (float("-inf"),), _fold_max, lambda m, o: o),
    Type.ACC_SUM: Accumulator((0.0,), lambda m, v: (v,), _merge_sum,
                              (0.0, 0.0), _fold_sum, lambda m, o: (m.sub(o[0], o[1]),)),
    # Exponents start at LOWEST, not -inf: -inf - -inf would be NaN.
    Type.ACC_PAIR: Accumulator((0.0, LOWEST), lambda m, v: v, _merge_pair,
                               (0.0, 0.0, LOWEST), _fold_pair,
                               lambda m, o: (m.sub(o[0], o[1]), o[2])),
    # (max, r, c): merge.online gives the max and the sum's excess over 1, r + c - 1
    Type.ACC_ONLINE: Accumulator((LOWEST, 0.0, 0.0), lambda m, v: (v, m.const(0.0), m.const(1.0)),
                                 _merge_online, (LOWEST, 0.0, 0.0, 0.0, LOWEST), _fold_online,
                                 _unfold_online,
                                 lambda m, s: _online_result(m, *s)),
    Type.ACC_EXCESS: Accumulator((0.0, 0.0), excess_element, _merge_excess,
                                 (0.0, 0.0, 0.0), _fold_excess,
                                 lambda m, o: (m.sub(o[0], o[1]), o[2]),
                                 lambda m, s: (excess(m, *s),)),
}


# --- top-k: the k best (value, index) entries of each lane, best first ---------------------
# An entry beats another with a larger value, or the same value and a lower index (as a
# stable descending sort).  Values are kept as order keys: their bits as an integer that
# orders as the value (negative values' magnitudes flipped), NaN as the integer above +inf's,
# so one integer compare ranks them; the empty entry's key, the lowest integer (the bits of
# -0.0), is below every value's, -inf's too, and its index +inf.  An element goes into a
# lane after every entry there (its index is higher), so a tie keeps the entry.

def _sign_bit(m) -> int:
    fmt = _fmt(m)
    return 1 << (fmt.exponent_bits + fmt.mantissa_bits)


def _flip_negative(m, bits):
    """Negative integers' low bits flipped (an involution): between float bits (sign and
    magnitude) and order keys (two's complement, -1 - magnitude for negative values)."""
    flipped = m.isub(m.iconst(-1), m.iand(bits, m.iconst(_sign_bit(m) - 1)))
    return m.select(m.ilt(bits, m.iconst(0)), flipped, bits)


def _order_key(m, x):
    """x as an order key in float lanes (its bits): -0.0 as +0.0 (they tie), NaN above +inf."""
    key = _flip_negative(m, m.as_int(m.add(x, m.const(0.0))))
    fmt = _fmt(m)
    above_inf = m.iconst((((1 << fmt.exponent_bits) - 1) << fmt.mantissa_bits) + 1)   # +inf's bits + 1
    return m.as_float(m.select(m.isnan(x), above_inf, key))


def _beats(m, a, b):
    """Whether entry a = (key, index) ranks before entry b."""
    ka, kb = m.as_int(a[0]), m.as_int(b[0])
    return m.select(m.ieq(ka, kb), m.lt(a[1], b[1]), m.ilt(kb, ka))


def _exchange(m, a, b):
    """(the better, the other) of entries a and b."""
    first = _beats(m, a, b)
    return (tuple(m.select(first, u, v) for u, v in zip(a, b)),
            tuple(m.select(first, v, u) for u, v in zip(a, b)))


def _entries(state) -> list:
    k = len(state) // 2
    return [(state[j], state[k + j]) for j in range(k)]


def _state(entries) -> tuple:
    return tuple(e[0] for e in entries) + tuple(e[1] for e in entries)


def _topk_insert(m, state, x, index):
    """One element into a lane's sorted entries: each entry is compared with the new one
    (independent compares, not a chain: the entries are sorted, so the new one beats a
    suffix of them), then the beaten ones shift down by one."""
    new = (_order_key(m, x), index)
    key = m.as_int(new[0])
    entries = _entries(state)
    beaten = [m.ilt(m.as_int(e[0]), key) for e in entries]
    out = []
    for j, e in enumerate(entries):
        above = new if j == 0 else tuple(m.select(beaten[j - 1], u, v) for u, v in zip(entries[j - 1], new))
        out.append(tuple(m.select(beaten[j], u, v) for u, v in zip(above, e)))
    return _state(out)


def _topk_merge(m, a, b):
    """The k best of two sorted states: a's j-th against b's (P-1-j)-th, P the power of two
    at or above k (missing entries empty), keeps the P best as a bitonic sequence, which
    half-cleaners sort (P/2 log2 P exchanges): k + ~k log2(k)/2 exchanges, not k^2."""
    k = len(a) // 2
    size = 1 << (k - 1).bit_length()
    empty = (m.const(-0.0), m.const(float("inf")))
    ea, eb = (_entries(s) + [empty] * (size - k) for s in (a, b))
    seq = [_exchange(m, ea[j], eb[size - 1 - j])[0] for j in range(size)]
    half = size // 2
    while half:
        for start in range(0, size, 2 * half):
            for j in range(start, start + half):
                seq[j], seq[j + half] = _exchange(m, seq[j], seq[j + half])
        half //= 2
    return _state(seq[:k])


def _topk_result(m, state):
    """merge.topk's row values: the values (from their keys; NaN stays NaN), then the
    indices."""
    k = len(state) // 2
    return tuple(m.as_float(_flip_negative(m, m.as_int(v))) for v in state[:k]) + state[k:]


@functools.lru_cache(maxsize=None)
def topk_accumulator(k: int) -> Accumulator:
    """acc.topk's accumulator for k entries: the state is the k values, then the k indices,
    best first; blocks fold by the same exact merge."""
    start = (-0.0,) * k + (float("inf"),) * k
    return Accumulator(start, lambda m, x, i: _topk_insert(m, tuple(map(m.const, start)), x, i), _topk_merge,
                       start, _topk_merge, lambda m, o: o, _topk_result, insert=_topk_insert)


def accumulator(op: Op) -> Accumulator:
    """The accumulator of an acc.* op's reduction, or of the one a merge.* op merges."""
    acc = op.results[0].type if op.results and op.results[0].type.is_accumulator else op.args[0].type
    return topk_accumulator(op.attrs["k"]) if acc is Type.ACC_TOPK else ACCUMULATORS[acc]


# The block-max lowering (lowering.py) sums a block's terms with these accumulators.
BLOCK_SUMS = {Type.ACC_ONLINE: Type.ACC_EXCESS, Type.ACC_PAIR: Type.ACC_SUM}


# --- 16-bit storage: conversions to and from float32 in integer lanes ------------------
# For targets without conversion instructions (bfloat16 everywhere: AVX512-BF16's rounding
# flushes subnormals; float16 without F16C / Zvfhmin).  16-bit values travel as their bits
# in 16-bit integer lanes; narrowing rounds to nearest even, keeps subnormals, and turns
# NaN into a quiet NaN.

F32_SIGN = 0x80000000
F32_QUIET = 0x00400000


def bf16_to_f32(m, h):
    """bfloat16 bits -> float32: the bits are float32's upper half."""
    return m.as_float(m.shl(m.widen(h), 16))


def f32_to_bf16(m, v):
    """float32 -> bfloat16 bits, rounded to nearest even (a carry into the exponent is the
    right rounding, up to inf)."""
    u = m.as_int(v)
    odd = m.iand(m.lshr(u, 16), m.iconst(1))
    rounded = m.lshr(m.iadd(u, m.iadd(odd, m.iconst(0x7FFF))), 16)
    quiet = m.lshr(m.ior(u, m.iconst(F32_QUIET)), 16)   # a NaN's rounding could carry it to inf
    return m.narrow(m.select(m.isnan(v), quiet, rounded))


def f16_to_f32(m, h):
    """float16 bits -> float32, exactly: exponent and mantissa moved into place and
    rebiased; subnormals through one float subtraction; inf and NaN to float32's."""
    w = m.widen(h)
    em = m.shl(m.iand(w, m.iconst(0x7FFF)), 13)
    exponent = m.iand(em, m.iconst(0x1F << 23))
    normal = m.iadd(em, m.iconst((127 - 15) << 23))
    special = m.iadd(em, m.iconst((255 - 31) << 23))
    tiny = m.as_int(m.sub(m.as_float(m.iadd(em, m.iconst(113 << 23))), m.const(2.0 ** -14)))
    bits = m.select(m.ieq(exponent, m.iconst(0x1F << 23)), special,
                    m.select(m.ieq(exponent, m.iconst(0)), tiny, normal))
    return m.as_float(m.ior(bits, m.shl(m.iand(w, m.iconst(0x8000)), 16)))


def f32_to_f16(m, v):
    """float32 -> float16 bits, rounded to nearest even, subnormals kept, overflow to inf,
    NaN to a quiet NaN."""
    u = m.as_int(v)
    sign = m.iand(u, m.iconst(F32_SIGN))
    a = m.iand(u, m.iconst(~F32_SIGN & 0xFFFFFFFF))       # |v|'s bits (non-negative as int)
    # below 2^-14: adding 0.5 puts the float16 subnormal's bits, rounded, in the low mantissa
    half = m.const(0.5)
    tiny = m.isub(m.as_int(m.add(m.as_float(a), half)), m.as_int(half))
    odd = m.iand(m.lshr(a, 13), m.iconst(1))
    normal = m.lshr(m.iadd(a, m.iadd(odd, m.iconst(((15 - 127) << 23) + 0xFFF))), 13)
    big = m.select(m.ilt(m.iconst(255 << 23), a), m.iconst(0x7E00), m.iconst(0x7C00))
    bits = m.select(m.ilt(a, m.iconst(113 << 23)), tiny,
                    m.select(m.ilt(a, m.iconst((127 + 16) << 23)), normal, big))
    return m.narrow(m.ior(bits, m.lshr(sign, 16)))


# (storage, compute) -> (widen, narrow) recipes for storage dtypes kept as integer bits
SHORT_FLOATS = {DType.BF16: (bf16_to_f32, f32_to_bf16), DType.F16: (f16_to_f32, f32_to_f16)}


# --- masks (where=): a masked element counts as -inf ---------------------------------------

def keep_bias(m, flags):
    """A mask's bytes (integer lanes, nonzero: keep) as 0 where kept, -inf where masked."""
    masked = m.ieq(m.widen(flags), m.iconst(0))
    return m.select(masked, m.const(float("-inf")), m.const(0.0))


def keep(m, x, bias, value: float):
    """x where keep_bias is 0, else `value` whatever x holds there (a masked NaN or +inf
    does not count)."""
    return m.select(m.eq(bias, m.const(0.0)), x, m.const(value))


def fill_empty(m, y, flag, value: float):
    """y, or `value` where the row's flag is -inf (a row with nothing to normalize)."""
    return m.select(m.eq(flag, m.const(float("-inf"))), m.const(value), y)


# --- row ops: the IR's row-level arithmetic on one value per row (lanes: rows) ----------

ROW_RECIPES = {
    Kind.ADD: lambda m, a, b: (m.add(a, b),),
    Kind.SUB_ROW: lambda m, a, b: (m.sub(a, b),),
    Kind.MUL_ROW: lambda m, a, b: (m.mul(a, b),),
    Kind.RECIP: lambda m, a: (m.div(m.const(1.0), a),),
    Kind.LOG: lambda m, a: (m.log(a),),
    Kind.LOG_PAIR: log_pair,
    Kind.LOG1P: lambda m, a: (log1p(m, a),),
    Kind.WHERE_FINITE: lambda m, a, b, c: (m.select(m.isfinite(a), b, c),),
    Kind.EXP_ROW: lambda m, a, c: (exp_diff(m, a, c),),
    Kind.EXP_PAIR_ROW: exp_pair,
}


def row_op(m, op: Op, args: list) -> tuple:
    """The results of a row op that computes (a merge, a const, a ROW_RECIPES entry) from
    its operands' values `args` (a merge's: the accumulator's state), in math m."""
    if op.kind is Kind.MERGE_STATE:
        return tuple(args[0])
    if op.kind is Kind.STATE:
        return (tuple(args),)
    if op.kind is Kind.MERGE_STATES:
        return (ACCUMULATORS[op.args[0].type].merge(m, args[0], args[1]),)
    if op.kind is Kind.ELEMENT_STATE:
        acc = op.attrs["type"]
        element = ACCUMULATORS[acc].element
        return (element(m, tuple(args)) if acc is Type.ACC_PAIR else element(m, *args),)
    if op.args and op.args[0].type.is_accumulator:  # merge.*
        return accumulator(op).result(m, args[0])
    if op.kind is Kind.CONST:
        return (m.const(op.attrs["value"]),)
    if op.kind in ROW_RECIPES:
        return ROW_RECIPES[op.kind](m, *args)
    raise NotImplementedError(f"no row recipe for {op}")
