"""Casts between a program's storage dtypes (what x and y hold) and its compute dtype.

A cast is one conversion instruction where the target has it (Capabilities.native_casts);
otherwise a 16-bit float travels as its bits in 16-bit integer lanes and numerics' integer
recipes widen it to DType.F32 and round back.  DType.F64 compute reaches 16-bit storage
through DType.F32: widening is exact that way; narrowing would round twice, so it is refused.
"""
from __future__ import annotations

from .. import numerics
from ..ir import DType
from .capabilities import Capabilities
from .loopir import Builder, float_ty, int_ty
from .loopmath import LoopMath


def storage_ty(caps: Capabilities, dtype: DType, lanes: int):
    """How values of `dtype` sit in memory and registers before a cast: a float type, or
    16-bit integer lanes where the target cannot convert them in one instruction."""
    if dtype in numerics.SHORT_FLOATS and (dtype, DType.F32) not in caps.native_casts:
        return int_ty(16, lanes)
    return float_ty(dtype.bits, lanes)


class Casts:
    """Casts on vectors of one lane count, emitted into builder `b`."""

    def __init__(self, b: Builder, caps: Capabilities, lanes: int):
        self.b, self.caps, self.lanes = b, caps, lanes

    def _math(self, dtype: DType) -> LoopMath:
        return LoopMath(self.b, float_ty(dtype.bits, self.lanes), numerics.float_format(dtype),
                        self.caps.native_ldexp)

    def _convert(self, v, src: DType, dst: DType):
        """One step: an instruction, or an integer recipe (to or from DType.F32)."""
        if (src, dst) in self.caps.native_casts:
            return self.b.emit("convert", v, ty=float_ty(dst.bits, self.lanes))
        if src in numerics.SHORT_FLOATS and dst is DType.F32:
            return numerics.SHORT_FLOATS[src][0](self._math(DType.F32), v)
        if dst in numerics.SHORT_FLOATS and src is DType.F32:
            return numerics.SHORT_FLOATS[dst][1](self._math(DType.F32), v)
        raise NotImplementedError(f"lowering: no cast from {src.numpy_name} to {dst.numpy_name}")

    def cast(self, v, src: DType, dst: DType):
        """v (of src, as storage_ty gives it) as dst."""
        if src is dst:
            return v
        if DType.F32 not in (src, dst):   # 16-bit <-> F64: in two steps
            if src is DType.F64:
                raise NotImplementedError(
                    f"storing {src.numpy_name} results as {dst.numpy_name} would round twice (through "
                    f"{DType.F32.numpy_name}); compute in {DType.F32.numpy_name} or store a wider dtype")
            return self._convert(self._convert(v, src, DType.F32), DType.F32, dst)
        return self._convert(v, src, dst)
