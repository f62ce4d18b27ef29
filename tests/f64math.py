"""numerics' Math on float64 scalars with an exact fma: the recipes run through it against
mpmath (test_numerics) and the accumulators against float64 references (test_topk)."""
import math
from fractions import Fraction

import numpy as np

from softgen import numerics


def _fma(a: float, b: float, c: float) -> float:
    """a*b + c rounded once (math.fma exists from Python 3.13 only)."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)) or a == 0 or b == 0:
        return a * b + c  # no rounding in the product; inf and NaN as IEEE's fma
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:
        return 0.0
    try:
        return float(exact)  # correctly rounded, subnormals included
    except OverflowError:
        return math.copysign(math.inf, exact)


class F64Math:
    """numerics' Math on float64 scalars; ldexp is the recipe's own (ldexp_generic)."""
    float_format = numerics.F64

    def const(self, v):
        return np.float64(v)

    def add(self, a, b):
        return np.float64(a) + np.float64(b)

    def sub(self, a, b):
        return np.float64(a) - np.float64(b)

    def mul(self, a, b):
        return np.float64(a) * np.float64(b)

    def div(self, a, b):
        return np.float64(a) / np.float64(b)

    def fma(self, a, b, c):
        return np.float64(_fma(float(a), float(b), float(c)))

    def maximum(self, a, b):
        return np.maximum(np.float64(a), np.float64(b))  # NaN if either is

    def lt(self, a, b):
        return bool(a < b)

    def gt(self, a, b):
        return bool(a > b)

    def le(self, a, b):
        return bool(a <= b)

    def eq(self, a, b):
        return bool(a == b)

    def select(self, c, a, b):
        return a if c else b

    def as_int(self, a):
        return np.float64(a).view(np.int64)

    def as_float(self, i):
        return np.int64(i).view(np.float64)

    def shl(self, i, n):
        u = (int(i) << n) % 2 ** 64  # bits shifted out are lost, as in a machine shift
        return np.int64(u - 2 ** 64 if u >= 2 ** 63 else u)

    def ldexp(self, v, d):
        return numerics.ldexp_generic(self, v, d)

    def log(self, a):
        return np.log(np.float64(a))

    def isnan(self, a):
        return bool(np.isnan(a))

    def fabs(self, a):
        return np.abs(np.float64(a))

    def mask_or(self, a, b):
        return a or b

    # integer lanes of a double's bits (numerics.frexp)
    def iconst(self, v):
        return np.int64(v - 2 ** 64 if v >= 2 ** 63 else v)

    def iand(self, a, b):
        return np.int64(a) & np.int64(b)

    def ior(self, a, b):
        return np.int64(a) | np.int64(b)

    def lshr(self, i, n):
        return np.int64((int(i) % 2 ** 64) >> n)

    def isub(self, a, b):
        return np.int64(a) - np.int64(b)

    def ilt(self, a, b):
        return bool(np.int64(a) < np.int64(b))

    def ieq(self, a, b):
        return bool(np.int64(a) == np.int64(b))


M = F64Math()
