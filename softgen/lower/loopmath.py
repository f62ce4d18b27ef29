"""The numerics primitives (softgen.numerics) recorded as loop-IR instructions.

`LoopMath` is the `Math` the recipes run against during lowering: each primitive appends
one instruction on vectors of one float type.  A primitive the target lacks at a width
(ldexp: AVX-512's vscalefps only) is decomposed here, once, by the numerics recipe.
"""
from __future__ import annotations

from .. import numerics
from .loopir import Builder, Const, Ty, bool_ty, int_ty


class LoopMath:
    """Lane-wise math on values of float type `ty` (lanes 1: scalars)."""

    def __init__(self, builder: Builder, ty: Ty, float_format: numerics.FloatFormat,
                 native_ldexp: frozenset = frozenset()):
        self.b = builder
        self.ty = ty
        self.float_format = float_format   # the recipes' constants for this dtype
        self.ity = int_ty(ty.bits, ty.lanes)
        self.mask_ty = bool_ty(ty.lanes)
        self.native_ldexp = native_ldexp   # (bits, lanes) with a one-instruction ldexp

    @property
    def width(self) -> int:
        return self.ty.lanes

    def with_width(self, width: int) -> "LoopMath":
        """The same math (same target choices) on vectors of another width."""
        return LoopMath(self.b, self.ty.vector(width), self.float_format, self.native_ldexp)

    def _op(self, op: str, *args, ty: Ty | None = None):
        return self.b.emit(op, *args, ty=ty or self.ty)

    def const(self, v: float) -> Const:
        return Const(self.ty, float(v))

    def index(self, offset):
        """offset + lane in each lane, as floats (offset: an i64; exact below 2^mantissa bits)."""
        return self._op("index", offset)

    def splat(self, scalar):
        return scalar if self.width == 1 else self._op("splat", scalar)

    def add(self, a, b):
        return self._op("add", a, b)

    def sub(self, a, b):
        return self._op("sub", a, b)

    def mul(self, a, b):
        return self._op("mul", a, b)

    def div(self, a, b):
        return self._op("div", a, b)

    def fma(self, a, b, c):
        return self._op("fma", a, b, c)

    def maximum(self, a, b):
        """NaN if either is NaN; max(-0, +0) may be either zero (no recipe cares)."""
        return self._op("maximum", a, b)

    def fabs(self, a):
        return self._op("fabs", a)

    def log(self, a):
        return self._op("log", a)

    def lt(self, a, b):
        return self._op("lt", a, b, ty=self.mask_ty)

    def gt(self, a, b):
        return self._op("gt", a, b, ty=self.mask_ty)

    def le(self, a, b):
        return self._op("le", a, b, ty=self.mask_ty)

    def eq(self, a, b):
        return self._op("eq", a, b, ty=self.mask_ty)

    def isnan(self, a):
        return self._op("isnan", a, ty=self.mask_ty)

    def select(self, c, a, b):
        return self._op("select", c, a, b, ty=a.ty)

    def mask_or(self, a, b):
        return self._op("or", a, b, ty=a.ty)

    def as_int(self, a):
        return self._op("bitcast", a, ty=self.ity)

    def as_float(self, a):
        return self._op("bitcast", a, ty=self.ty)

    def shl(self, a, n: int):
        return self._op("shl", a, Const(self.ity, n), ty=self.ity)

    @property
    def ldexp_is_native(self) -> bool:
        return (self.ty.bits, self.width) in self.native_ldexp

    def ldexp(self, v, d):
        if self.ldexp_is_native:
            return self._op("ldexp", v, d)
        return numerics.ldexp_generic(self, v, d)

    # --- integer lanes of the float's width (the 16-bit storage recipes) ---------------------
    def iconst(self, v: int) -> Const:
        bits = self.ity.bits
        v &= (1 << bits) - 1
        return Const(self.ity, v - (1 << bits) if v >> (bits - 1) else v)   # as a signed value

    def iand(self, a, b):
        return self._op("and", a, b, ty=self.ity)

    def ior(self, a, b):
        return self._op("or", a, b, ty=self.ity)

    def iadd(self, a, b):
        return self._op("add", a, b, ty=self.ity)

    def isub(self, a, b):
        return self._op("sub", a, b, ty=self.ity)

    def lshr(self, a, n: int):
        return self._op("lshr", a, Const(self.ity, n), ty=self.ity)

    def ilt(self, a, b):
        return self._op("lt", a, b, ty=self.mask_ty)

    def ieq(self, a, b):
        return self._op("eq", a, b, ty=self.mask_ty)

    def widen(self, a):
        """Narrower integer lanes (16-bit float bits, mask bytes) zero-extended to the float's width."""
        return self._op("zext", a, ty=self.ity)

    def narrow(self, a):
        """Integer lanes truncated to 16 bits."""
        return self._op("trunc", a, ty=int_ty(16, self.width))

    def isfinite(self, a):
        return self._op("ne", self.fabs(a), self.const(float("inf")), ty=self.mask_ty)
