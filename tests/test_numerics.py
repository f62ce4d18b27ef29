"""numerics' per-dtype constants against numpy's description of the formats, and the recipes
themselves run in float64 through a scalar numpy `Math` (exact fma) against mpmath."""
import math
import random
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from softgen import numerics
from softgen.ir import DType, Type
from f64math import M

F32, F64 = numerics.F32, numerics.F64
BOTH = [pytest.param(F32, np.float32, id="f32"), pytest.param(F64, np.float64, id="f64")]
with mpmath.workprec(300):
    LN2 = mpmath.log(2)


@pytest.fixture(autouse=True)
def _precision():
    with mpmath.workprec(300), np.errstate(all="ignore"):
        yield


@pytest.mark.parametrize("fmt, dt", BOTH)
def test_layout_matches_numpy(fmt, dt):
    info = np.finfo(dt)
    assert (fmt.exponent_bits, fmt.mantissa_bits) == (info.nexp, info.nmant)
    assert fmt.exponent_bias == info.maxexp - 1
    assert fmt.max == float(info.max)
    assert fmt.round_magic == 1.5 * 2.0 ** info.nmant
    assert fmt.exp_magic == fmt.round_magic + fmt.exponent_bias + fmt.scale_bias
    assert fmt.log2e == float(dt(float(1 / LN2)))


@pytest.mark.parametrize("fmt, dt", BOTH)
def test_constants_are_values_of_the_format(fmt, dt):
    values = (fmt.max, fmt.log2e, fmt.ln2_hi, fmt.ln2_lo, *fmt.exp_poly, fmt.round_magic, fmt.exp_magic,
              fmt.two_pow_minus_bias, fmt.exp_min_arg, fmt.ldexp_min_exp, fmt.pair_exp_limit,
              fmt.pair_log_min, fmt.exp_shift_limit, fmt.exp_shift_floor, fmt.block_max_floor,
              fmt.exp_fold_limit, fmt.pair_input_floor)
    assert all(float(dt(v)) == v for v in values)
    # the magic-number rounding: biased exponents down to ldexp_min_exp's stay in the binade
    # [2^mantissa_bits, 2^(mantissa_bits + 1)) of exp_magic, where the spacing is 1
    lowest = fmt.exp_magic + fmt.ldexp_min_exp
    assert float(dt(lowest)) == lowest
    assert 2.0 ** fmt.mantissa_bits <= lowest < fmt.exp_magic < 2.0 ** (fmt.mantissa_bits + 1)


@pytest.mark.parametrize("fmt, dt", BOTH)
def test_cody_waite_split(fmt, dt):
    residual = abs(LN2 - fmt.ln2_hi - fmt.ln2_lo)
    # k * residual up to pair_exp_limit stays below half an ulp of 1: 2^-24.04 in float32,
    # 2^-66 in double
    assert fmt.pair_exp_limit * residual < 2.0 ** -(fmt.mantissa_bits + 1)
    assert float(dt(fmt.ln2_hi * fmt.pair_exp_limit)) == fmt.ln2_hi * fmt.pair_exp_limit
    # what the recipes rely on: the first step x - k*ln2_hi (one fma) is exact for every x
    # (|x - k*ln2_hi| grows to k*ln2_lo, 1.5 at float32's pair_exp_limit, 2e-4 at double's)
    rng = random.Random(1)
    top = math.log10(fmt.pair_exp_limit * 0.69)
    xs = [rng.uniform(-1, 1) * 10 ** rng.uniform(-3, top) for _ in range(400)]
    for x in map(float, map(dt, xs)):
        k = round(x * fmt.log2e)
        t = Fraction(x) - k * Fraction(fmt.ln2_hi)
        assert abs(t) < 2 and Fraction(float(dt(float(t)))) == t, x


def test_float64_ln2_hi_products_are_exact():
    """fdlibm's split: k*ln2_hi is exact for every |k| <= 2^21, so up to pair_exp_limit.
    (float32's ln2_hi has 15 significant bits: its products are exact up to 2^9 only, the
    fma carries the rest.)"""
    assert F64.pair_exp_limit * abs(LN2 - F64.ln2_hi - F64.ln2_lo) < 2.0 ** -65
    significand = Fraction(F64.ln2_hi).numerator
    assert significand.bit_length() == 32
    assert significand.bit_length() + int(F64.pair_exp_limit).bit_length() <= F64.mantissa_bits + 1
    for k in (2 ** 21 - 1, 2 ** 20 - 1, 1234567, 2 ** 21):
        assert Fraction(float(k * Fraction(F64.ln2_hi))) == k * Fraction(F64.ln2_hi)


@pytest.mark.parametrize("fmt, bound", [(F32, 2e-7), (F64, 1e-17)], ids=["f32", "f64"])
def test_polynomial_accuracy(fmt, bound):
    """max |(1 + t*p(t)) / e^t - 1| on |t| <= ln2/2, in high precision with the coefficients
    as stored (F64: 6.2e-18 measured on a fine grid, at t = ln2/2; 0.06 ulp)."""
    h = LN2 / 2
    worst = 0
    for i in range(-200, 201):
        t = h * i / 200
        p = mpmath.mpf(0)
        for c in reversed(fmt.exp_poly):
            p = p * t + c
        worst = max(worst, abs((1 + t * p) * mpmath.exp(-t) - 1))
    assert worst < bound


@pytest.mark.parametrize("fmt, dt", BOTH)
def test_limits_are_ordered(fmt, dt):
    bias, mant = fmt.exponent_bias, fmt.mantissa_bits
    top = 2 ** fmt.exponent_bits - 2   # the largest biased exponent of a finite value
    tiny = bias + mant                 # 2^-tiny: the smallest subnormal
    assert fmt.exp_fold_limit < fmt.exp_shift_limit < fmt.pair_exp_limit
    assert fmt.exp_shift_limit * fmt.log2e < fmt.pair_exp_limit  # exp_diff_shift's exp_pair(-c)
    assert fmt.pair_input_floor * fmt.log2e < -fmt.pair_exp_limit  # an all -inf row fails the guard
    assert fmt.block_max_floor * fmt.log2e < -fmt.pair_exp_limit
    assert fmt.pair_exp_limit < 2.0 ** (mant - 1)  # inside the magic rounding's range
    # ldexp_generic: 2^(d + scale_bias) normal down to ldexp_min_exp, which is below the subnormals
    assert fmt.ldexp_min_exp < -(tiny + 1)
    assert -fmt.scale_bias - bias < fmt.ldexp_min_exp
    # exp_diff: e^(exp_min_arg + 1) rounds to 0; 2^k is still normal there
    assert fmt.exp_min_arg + 1 < -(tiny + 1) * math.log(2)
    assert round(fmt.exp_min_arg * fmt.log2e) + bias + fmt.scale_bias >= 1
    # exp_scaled: 2 * 2^-exp_shift_floor rounds to 0, its k - e stays inside ldexp_generic's range
    assert 1 - fmt.exp_shift_floor < -(tiny + 1)
    assert -fmt.exp_shift_floor - 1 >= fmt.ldexp_min_exp
    # exp_shift_folded: 2^-e and the folded form's 2^k (k <= e + 1) through ldexp_generic
    assert fmt.exp_fold_limit + 1 + bias + fmt.scale_bias <= top
    # ExpShift.scale: a folded scale (>= 2^-(exp_fold_limit + 1)) times 2^-scale_bias is normal
    assert -fmt.exp_fold_limit - 1 - fmt.scale_bias >= 1 - bias


@pytest.mark.parametrize("fmt, dt", [pytest.param(F32, np.float32, id="f32"),
                                     pytest.param(F64, np.float64, id="f64")])
def test_folded_form_does_not_clamp(fmt, dt):
    """In exp_scaled with folded row constants, k ranges down to e - exp_shift_floor - 1 for
    |e| <= exp_fold_limit: there ldexp_generic must not clamp (a clamped term would be
    p * 2^ldexp_min_exp with p up to 2^(|e| + 1.5), not 0)."""
    assert -fmt.exp_fold_limit - fmt.exp_shift_floor - 1 >= fmt.ldexp_min_exp


def test_module_names_are_the_float32_table():
    for name, attr in [("FLT_MAX", "max"), ("LOG2E", "log2e"), ("LN2_HI", "ln2_hi"), ("LN2_LO", "ln2_lo"),
                       ("EXP_POLY", "exp_poly"), ("ROUND_MAGIC", "round_magic"), ("EXP_MAGIC", "exp_magic"),
                       ("SCALE_BIAS", "scale_bias"), ("TWO_POW_MINUS_BIAS", "two_pow_minus_bias"),
                       ("EXP_MIN_ARG", "exp_min_arg"), ("LDEXP_MIN_EXP", "ldexp_min_exp"),
                       ("PAIR_EXP_LIMIT", "pair_exp_limit"), ("PAIR_LOG_MIN", "pair_log_min"),
                       ("EXP_SHIFT_LIMIT", "exp_shift_limit"), ("EXP_SHIFT_FLOOR", "exp_shift_floor"),
                       ("BLOCK_MAX_FLOOR", "block_max_floor"), ("EXP_FOLD_LIMIT", "exp_fold_limit"),
                       ("PAIR_INPUT_FLOOR", "pair_input_floor")]:
        assert getattr(numerics, name) == getattr(F32, attr), name


def test_float32_and_float64_are_enabled():
    assert numerics.float_format(DType.F32) is F32
    assert numerics.float_format(DType.F64) is F64
    # float16 and bfloat16 are storage dtypes only
    for dtype in (DType.F16, DType.BF16):
        with pytest.raises(NotImplementedError, match=f"computing in {dtype.numpy_name} is not enabled; "
                                                      "softgen computes in float32, float64"):
            numerics.float_format(dtype)


def test_accumulator_identities_per_format():
    for acc in numerics.ACCUMULATORS.values():
        assert acc.identities(F32) == (acc.identity, acc.outer_identity)
        identity, outer = acc.identities(F64)
        assert len(identity) == len(acc.identity) and len(outer) == len(acc.outer_identity)
        assert all(isinstance(c, float) and (c == -F64.max or c == c32)
                   for c, c32 in zip(identity + outer, acc.identity + acc.outer_identity))
    assert numerics.ACCUMULATORS[Type.ACC_PAIR].identities(F64) == ((0.0, -F64.max), (0.0, 0.0, -F64.max))
    assert numerics.ACCUMULATORS[Type.ACC_ONLINE].identity[0] == -F32.max


# --- the recipes in float64 ---------------------------------------------------------------

SMALLEST = 2.0 ** -1074


def _ulp(v) -> mpmath.mpf:
    """The spacing of doubles at |v| (the subnormal spacing below 2^-1022)."""
    v = abs(mpmath.mpf(v))
    if v < 2.0 ** -1022:
        return mpmath.mpf(SMALLEST)
    return mpmath.ldexp(1, mpmath.frexp(v)[1] - 53)  # v = m * 2^e, 1/2 <= m < 1


def _ulps(got, true) -> float:
    """|got - true| in ulps of true: for results in the subnormal range (or below) the
    subnormal spacing, so within 1 means exact or next to it."""
    assert math.isfinite(got), (got, true)
    return float(abs(mpmath.mpf(float(got)) - true) / _ulp(true))


def _deltas(rng):
    """x - c offsets: small, ordinary, near and inside the subnormal range, past it."""
    return ([0.0, -1e-300, -2.0 ** -60, -1e-9, -0.5, -0.34657359, -0.34657360, -1.0, -10.0, -700.0, -708.4,
             -709.1, -744.4, -745.0, -745.13, -745.14, -746.0, -759.9, -760.0, -761.0, -800.0, -1e5, -1e300]
            + [-rng.uniform(0, 30) for _ in range(40)] + [-rng.uniform(0, 745.2) for _ in range(60)]
            + [-rng.uniform(707, 746) for _ in range(60)])


def test_f64_exp_diff():
    rng = random.Random(2)
    worst = 0.0
    for c in (0.0, 1.5, -3.25, 100.7, -700.3, 1e5 + 0.3, -3e5, 1e15 + 0.5, -2.5e300):
        for delta in _deltas(rng) + [rng.uniform(0, 16) for _ in range(10)]:  # x > c up to ONLINE_SLACK
            x = c + delta
            true = mpmath.exp(mpmath.mpf(x) - mpmath.mpf(c))
            y = numerics.exp_diff(M, M.const(x), M.const(c))
            worst = max(worst, _ulps(y, true))
            if true < 2.0 ** -1075:
                assert y == 0.0, (x, c)
            assert y >= 0.0
        assert numerics.exp_diff(M, M.const(-math.inf), M.const(c)) == 0.0
        assert math.isnan(numerics.exp_diff(M, M.const(math.nan), M.const(c)))
        assert math.isnan(numerics.exp_diff(M, M.const(c), M.const(math.nan)))
        assert numerics.exp_diff(M, M.const(c), M.const(c)) == 1.0
    assert worst <= 2.0, worst


def test_f64_exp_diff_subnormal_results_are_rounded_once():
    """Down to the smallest subnormal: results next to the subnormal grid's true rounding."""
    for n in range(1022, 1077):
        for frac in (0.0, 0.25, 0.5, 0.75, 0.999):
            d = float(-(n - frac) * LN2)
            true = mpmath.exp(d)
            y = numerics.exp_diff(M, M.const(d), M.const(0.0))
            assert _ulps(y, true) <= (4.0 if true >= 2.0 ** -1022 else 1.0), (n, frac, y)
            if true < 2.0 ** -1022:  # the correctly rounded subnormal or a neighbour
                assert abs(y - float(true)) <= SMALLEST


def test_f64_exp_pair():
    rng = random.Random(3)
    limit = F64.pair_exp_limit * 0.69
    xs = [0.0, -0.0, 1e-300, 0.34657359, -0.34657359, 709.0, 710.0, -745.2, -1e4, 1e4, limit, -limit]
    xs += [rng.uniform(-1, 1) * 10 ** rng.uniform(-5, math.log10(limit)) for _ in range(300)]
    worst = 0.0
    for x in xs:
        p, k = numerics.exp_pair(M, M.const(x))
        assert k == round(k) and abs(k) <= F64.pair_exp_limit
        assert math.sqrt(0.5) * (1 - 1e-15) < p < math.sqrt(2) * (1 + 1e-15)
        true = mpmath.exp(mpmath.mpf(x)) / mpmath.mpf(2) ** int(k)
        worst = max(worst, _ulps(p, true))
    assert worst <= 2.0, worst
    for x in (math.inf, -math.inf, math.nan, 1e300, -1e300):  # outside: p stays finite
        assert math.isfinite(numerics.exp_pair(M, M.const(x))[0])


@pytest.mark.parametrize("scaled_coeffs", [True, False], ids=["scale_in_coeffs", "scale_apart"])
@pytest.mark.parametrize("folded", [False, True], ids=["shift", "folded"])
def test_f64_exp_scaled_with_row_constants(folded, scaled_coeffs):
    rng = random.Random(4)
    if folded:  # |round(c log2 e)| <= exp_fold_limit, as the lowering checks it
        c_limit = (F64.exp_fold_limit - 1) / F64.log2e
        cs = (0.0, 0.5, -0.5, 10.25, -10.25, 30.0, -30.0, c_limit, -c_limit)
        recipe = numerics.exp_diff_shift_folded
    else:
        cs = (0.0, 0.7, -1.3, 20.5, -40.0, 700.2, -700.2, 1e4 + 0.1, -1e4, 5e5, -5e5,
              F64.exp_shift_limit, -F64.exp_shift_limit)
        recipe = numerics.exp_diff_shift
    worst = 0.0
    for c in cs:
        shift = recipe(M, M.const(c), scaled_coeffs)
        assert (len(shift.coeffs), shift.scale is None) == ((len(F64.exp_poly) + 1, True) if scaled_coeffs else (0, False))
        for delta in _deltas(rng):
            x = c + delta
            true = mpmath.exp(mpmath.mpf(x) - mpmath.mpf(c))
            y = numerics.exp_scaled(M, M.const(x), shift)
            worst = max(worst, _ulps(y, true))
            if true < 2.0 ** -1075:
                assert y == 0.0, (x, c, y)
        assert numerics.exp_scaled(M, M.const(-math.inf), shift) == 0.0
        assert math.isnan(numerics.exp_scaled(M, M.const(math.nan), shift))
    assert worst <= 4.0, worst


def test_f64_ldexp_generic():
    """v * 2^d correctly rounded (subnormals included) for d <= 0, 0 below the range."""
    rng = random.Random(5)
    vs = [1.0, 1.5, 1 + 2.0 ** -52, 0.7, 3.0, -2.5, 2.0 ** 30 - 1, 1.3 * 2.0 ** 30, 1.9 * 2.0 ** 74, 1e-300]
    vs += [rng.uniform(0.5, 2) * 2.0 ** rng.randint(-20, 40) for _ in range(20)]
    ds = [0.0, -1.0, -52.0, -1000.0, -1022.0, -1023.0, -1040.0, -1073.0, -1074.0, -1075.0, -1076.0,
          -1100.0, -1149.0, -1150.0, -1151.0, -1200.0, -1e6]
    ds += [float(-rng.randint(0, 1160)) for _ in range(20)]
    for v in vs:
        for d in ds:
            # below 2^-1200, |v| < 2^75 gives 0 (also where ldexp_generic clamps d)
            expected = float(Fraction(v) / 2 ** int(-d)) if d > -1200 else 0.0
            assert numerics.ldexp_generic(M, M.const(v), M.const(d)) == expected, (v, d)
        assert numerics.ldexp_generic(M, M.const(v), M.const(-math.inf)) == 0.0


def test_f64_log_pair():
    """hi + lo = log(s) + e*ln2 to the accuracy of log(s) (np.log's, within an ulp), the
    e*ln2 part to about 2^-84 of itself; hi is hi + lo rounded."""
    rng = random.Random(6)
    ss = [1.0, 1 + 2.0 ** -40, 1 - 2.0 ** -40, 0.5, 1.999, 2.0 ** 30, 3e9]
    ss += [rng.uniform(1, 2) * 2.0 ** rng.randint(-5, 31) for _ in range(30)]
    es = [0.0, 1.0, -1.0, 1000.0, -1077.0, 123456.0, -123457.0, F64.pair_exp_limit, -F64.pair_exp_limit]
    for s in ss:
        for e in es:
            hi, lo = numerics.log_pair(M, M.const(s), M.const(e))
            assert hi + lo == hi
            log_s = mpmath.log(mpmath.mpf(s))
            true = log_s + e * LN2
            err = abs(mpmath.mpf(float(hi)) + mpmath.mpf(float(lo)) - true)
            assert err <= _ulp(log_s) + abs(true) * mpmath.mpf(2) ** -84, (s, e, float(err))


def test_f64_online_accumulator_below_float32_range():
    """The online state (max, r, c) of a row below -FLT_MAX starts at float64's LOWEST: its
    max and the sum's excess over 1 come out right; float32's -FLT_MAX start would stay the
    max, with every term 0."""
    acc = numerics.ACCUMULATORS[Type.ACC_ONLINE]
    row = [-5e38 * (1 + 2.0 ** -50), -5e38, -1e300, -5e38]

    def online(fmt):
        identity, outer = acc.identities(fmt)
        state = tuple(map(M.const, identity))
        for x in row:
            state = acc.merge(M, state, acc.element(M, M.const(x)))
        outer = acc.fold(M, tuple(map(M.const, outer)), state)
        return acc.result(M, acc.unfold(M, outer))

    # two terms at the max, the others e^-4.4e23 and e^-1e300: 0
    assert online(F64) == (-5e38, 1.0)
    assert online(F32) == (-F32.max, -1.0)


# --- log and softplus per element ---------------------------------------------------------

def test_f64_frexp_and_log_parts():
    rng = random.Random(7)
    xs = [1.0, 2.0, 0.5, math.sqrt(2), math.sqrt(0.5), 3.0, 1e-300, 2.0 ** -1022, 1e300, F64.max]
    xs += [10 ** rng.uniform(-300, 300) for _ in range(300)]
    worst = 0.0
    for x in xs:
        f, k = numerics.frexp(M, M.const(x))
        assert math.sqrt(0.5) <= f <= math.sqrt(2) and k == round(k) and math.ldexp(f, int(k)) == x, x
        hi, lo = numerics.log_parts(M, M.const(x))
        assert abs(lo) < 0.36 + 1e-12 * abs(k)
        err = abs(mpmath.mpf(hi) + mpmath.mpf(lo) - mpmath.log(x))
        worst = max(worst, float(err / (abs(mpmath.mpf(lo)) + 2.0 ** -60)) / 2.0 ** -53)
    assert worst <= 3.0, worst   # a few ulps of lo: the error exp(hi + lo) sees


def test_f64_log1p_unit():
    rng = random.Random(8)
    ws = [0.0, 1.0, 1e-300, 2.0 ** -53, 2.0 ** -52, math.sqrt(2) - 1, 0.5] + [rng.uniform(0, 1) for _ in range(200)]
    ws += [10 ** rng.uniform(-30, 0) for _ in range(200)]
    worst = max(_ulps(numerics.log1p_unit(M, M.const(w)), mpmath.log1p(w)) if w else 0.0 for w in ws)
    assert worst <= 2.0, worst
    assert numerics.log1p_unit(M, M.const(0.0)) == 0.0


def _log_softplus_true(z):
    z = mpmath.mpf(z)
    return mpmath.log(mpmath.log1p(mpmath.exp(z)))


@pytest.mark.parametrize("scale", [1.0, 0.3, -2.5, 1e30])
def test_f64_log_softplus(scale):
    """hi + lo within a few ulps of 1 of log softplus(scale * x) (what e^(hi + lo) needs) for
    x across the range, also where scale * x overflows; infinities and NaN pass through."""
    rng = random.Random(9)
    xs = [0.0, 1e-300, -1e-300, 40.0, -40.0, -39.99, 700.0, -800.0, 1e300, -1e300, F64.max]
    xs += [rng.uniform(-1, 1) * 10 ** rng.uniform(-5, 300) for _ in range(300)]
    worst = 0.0
    for x in xs:
        hi, lo = numerics.log_softplus(M, M.const(x), scale)
        if scale * x < -F64.max:   # log softplus below -DBL_MAX: -inf (e^it is 0 anyway)
            assert hi == -math.inf
            continue
        true = _log_softplus_true(mpmath.mpf(x) * mpmath.mpf(scale))
        err = abs(mpmath.mpf(hi) + mpmath.mpf(lo) - true)
        worst = max(worst, float(err / 2.0 ** -53))
    assert worst <= 4.0, worst
    for x, want in ((math.inf, math.inf * np.sign(scale)), (-math.inf, -math.inf * np.sign(scale))):
        assert numerics.log_softplus(M, M.const(x), scale)[0] == want
    assert math.isnan(numerics.log_softplus(M, M.const(math.nan), scale)[0])


@pytest.mark.parametrize("scale", [1.0, 0.3, -2.5, 1e30])
def test_f64_softplus_value(scale):
    """softplus (the value, for stored terms) within a few ulps where it is a normal double;
    0 or a subnormal below (the caller's guard sends those rows to the pairs), inf where
    scale * x overflows, NaN or 0 for NaN."""
    rng = random.Random(11)
    xs = [0.0, 1.0, -1.0, -100.0, -700.0, -745.0, -800.0, 1e6, 1e300, 16.0, -16.0, 40.0, -40.0, F64.max]
    xs += [rng.gauss(0, 30) for _ in range(200)]
    worst = 0.0
    for x in xs:
        v = numerics.softplus(M, M.const(x), scale)
        true = mpmath.log1p(mpmath.exp(mpmath.mpf(x) * mpmath.mpf(scale)))
        if true > F64.max:
            assert v == math.inf
        elif true < 2.0 ** -1022:
            assert 0.0 <= v < 2.0 ** -1022
        else:
            worst = max(worst, _ulps(v, true))
    assert worst <= 3.0, worst
    assert numerics.softplus(M, M.const(math.inf * np.sign(scale)), scale) == math.inf
    assert numerics.softplus(M, M.const(-math.inf * np.sign(scale)), scale) == 0.0
    nan = numerics.softplus(M, M.const(math.nan), scale)
    assert math.isnan(nan) or nan == 0.0   # (as ldexp(p, NaN) comes out: outside the normal range either way)


@pytest.mark.parametrize("power", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("scale", [1.0, 0.3, -2.5])
def test_f64_softplus_pow(scale, power):
    """Power 1 (softplus_pair: no log) and the log route, within a few ulps (times the
    power); -inf far below any row's pair, +inf and NaN through the exponent."""
    rng = random.Random(10)
    xs = [0.0, 1.0, -1.0, -100.0, -1000.0, 1e6, 1e300, -1e4, 16.0, -16.0, 40.0, -40.0]
    xs += [rng.gauss(0, 30) for _ in range(200)]
    worst = 0.0
    for x in xs:
        p, k = numerics.softplus_pow(M, M.const(x), scale, power)
        if k < -F64.pair_exp_limit:   # clamped: far below any row's largest, which the guard needs
            assert power * _log_softplus_true(mpmath.mpf(x) * scale) < -0.69 * F64.pair_exp_limit
            continue
        true = mpmath.exp(power * _log_softplus_true(mpmath.mpf(x) * scale)) / mpmath.mpf(2) ** int(k)
        worst = max(worst, _ulps(p, true))
    assert worst <= 2.0 + 2.0 * power, worst
    p, k = numerics.softplus_pow(M, M.const(-math.inf * np.sign(scale)), scale, power)   # v = 0
    assert math.isfinite(p) and k < -F64.pair_exp_limit
    assert numerics.softplus_pow(M, M.const(math.inf * np.sign(scale)), scale, power)[1] == math.inf
    assert math.isnan(numerics.softplus_pow(M, M.const(math.nan), scale, power)[1])
