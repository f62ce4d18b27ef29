"""The numerics primitives (see softgen.numerics) over llvmlite IRBuilder values."""
from __future__ import annotations

from llvmlite import ir

from ... import numerics

F32 = ir.FloatType()
I32 = ir.IntType(32)


def intrinsic(module: ir.Module, name: str, ret, args) -> ir.Function:
    """Declare (once) an LLVM intrinsic as a plain function."""
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


class LLVMMath:
    """Lane-wise float math on <width x float> (width 1: plain float)."""

    def __init__(self, builder: ir.IRBuilder, width: int, use_scalef: bool = False):
        self.b = builder
        self.width = width
        self.ty = F32 if width == 1 else ir.VectorType(F32, width)
        self.ity = I32 if width == 1 else ir.VectorType(I32, width)
        self.suffix = "f32" if width == 1 else f"v{width}f32"
        self.use_scalef = use_scalef and width == 16

    def with_width(self, width: int) -> "LLVMMath":
        """The same math (same ISA choices) on vectors of another width."""
        return LLVMMath(self.b, width, self.use_scalef)

    def _call(self, name: str, *args):
        fn = intrinsic(self.b.module, f"llvm.{name}.{self.suffix}", self.ty, [a.type for a in args])
        return self.b.call(fn, args)

    def const(self, v: float):
        return ir.Constant(self.ty, v) if self.width == 1 else ir.Constant(self.ty, [v] * self.width)

    def splat(self, scalar):
        if self.width == 1:
            return scalar
        vec = self.b.insert_element(ir.Constant(self.ty, ir.Undefined), scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(vec, ir.Constant(self.ty, ir.Undefined),
                                     ir.Constant(ir.VectorType(I32, self.width), [0] * self.width))

    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def fma(self, a, b, c):
        return self._call("fma", a, b, c)

    def maximum(self, a, b):
        # nsz: max(-0, +0) may be either zero (no recipe cares), which saves x86 a
        # sign-bit blend; NaN still propagates.
        fn = intrinsic(self.b.module, f"llvm.maximum.{self.suffix}", self.ty, [a.type, b.type])
        return self.b.call(fn, [a, b], fastmath=("nsz",))

    def fabs(self, a):
        return self._call("fabs", a)

    def log(self, a):
        return self._call("log", a)

    def lt(self, a, b):
        return self.b.fcmp_ordered("<", a, b)

    def gt(self, a, b):
        return self.b.fcmp_ordered(">", a, b)

    def eq(self, a, b):
        return self.b.fcmp_ordered("==", a, b)

    def le(self, a, b):
        return self.b.fcmp_ordered("<=", a, b)

    def select(self, c, a, b):
        return self.b.select(c, a, b)

    def as_int(self, a):
        return self.b.bitcast(a, self.ity)

    def as_float(self, a):
        return self.b.bitcast(a, self.ty)

    def shl(self, a, n: int):
        amount = ir.Constant(self.ity, n) if self.width == 1 else ir.Constant(self.ity, [n] * self.width)
        return self.b.shl(a, amount)

    def ldexp(self, v, d):
        if self.use_scalef:  # AVX-512 vscalefps: v * 2^floor(d), subnormals and -inf handled
            fn = intrinsic(self.b.module, "llvm.x86.avx512.mask.scalef.ps.512", self.ty,
                           [self.ty, self.ty, self.ty, ir.IntType(16), I32])
            return self.b.call(fn, [v, d, v, ir.Constant(ir.IntType(16), -1), ir.Constant(I32, 4)])
        return numerics.ldexp_generic(self, v, d)

    def isfinite(self, a):
        return self.b.fcmp_ordered("!=", self.fabs(a), self.const(float("inf")))
