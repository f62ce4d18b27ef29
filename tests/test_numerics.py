"""numerics' per-dtype constants: float32's table against numpy's description of the format."""
import math

import numpy as np
import pytest

from softgen import numerics
from softgen.ir import DType

F32 = numerics.F32


def test_float32_layout_matches_numpy():
    info = np.finfo(np.float32)
    assert (F32.exponent_bits, F32.mantissa_bits) == (info.nexp, info.nmant)
    assert F32.exponent_bias == info.maxexp - 1 == 127
    assert F32.max == float(info.max)
    assert F32.round_magic == float.fromhex("0x1.8p23")
    assert F32.exp_magic == F32.round_magic + 127 + F32.scale_bias


def test_float32_constants_are_float32_values():
    values = (F32.max, F32.log2e, F32.ln2_hi, F32.ln2_lo, *F32.exp_poly, F32.round_magic, F32.exp_magic,
              F32.two_pow_minus_bias)
    assert all(float(np.float32(v)) == v for v in values)


def test_cody_waite_split_and_polynomial():
    assert F32.ln2_hi + F32.ln2_lo == pytest.approx(math.log(2), rel=1e-15)
    # k * ln2_hi is exact for |k| up to pair_exp_limit: ln2_hi has that many trailing zero bits
    assert float(np.float32(F32.ln2_hi * F32.pair_exp_limit)) == F32.ln2_hi * F32.pair_exp_limit
    t = np.linspace(-math.log(2) / 2, math.log(2) / 2, 101)
    poly = sum(c * t ** (i + 1) for i, c in enumerate(F32.exp_poly))
    assert np.max(np.abs(1 + poly - np.exp(t))) < 2e-7


def test_limits_are_ordered():
    assert F32.exp_fold_limit < F32.exp_shift_limit < F32.pair_exp_limit
    assert F32.pair_input_floor * F32.log2e < -F32.pair_exp_limit  # an all -inf row fails the guard
    assert F32.ldexp_min_exp < -(F32.exponent_bias + F32.mantissa_bits)
    assert -F32.scale_bias - F32.exponent_bias < F32.ldexp_min_exp


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


def test_only_float32_is_enabled():
    assert numerics.float_format(DType.F32) is F32
    for dtype in (DType.F64, DType.F16, DType.BF16):
        with pytest.raises(NotImplementedError, match=f"computing in {dtype.numpy_name} is not enabled"):
            numerics.float_format(dtype)
