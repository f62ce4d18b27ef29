"""What the lowering needs to know about a target, read once from it.

Every stage below the schedule asks this object, not the target's name or arch, so a
new ISA is one entry here."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import DType
from ..targets import Target


WIDE_CASTS = frozenset({(DType.F32, DType.F64), (DType.F64, DType.F32)})


@dataclass(frozen=True)
class Capabilities:
    vector_bits: int            # bits per vector register the kernels use
    native_ldexp: frozenset     # (bits, lanes) of float vectors with a one-instruction v * 2^d
    nan_ignoring_max: bool      # a one-instruction max that skips NaN (x86 maxps): acc.max
                                # then keeps a NaN lane mask beside it
    streaming_fence: bool       # streaming stores are weakly ordered: fence before returning
    # what the renderer can spell: vectors narrower than a register (halving lane merges,
    # groups of fewer rows than lanes); without them lanes merge by swaps within a register
    # and a group is one row or a register's worth of rows
    narrow_vectors: bool = True
    # (from, to) dtype conversions that are vector instructions; others are decomposed by
    # numerics' integer recipes (F32 <-> F64 is one everywhere)
    native_casts: frozenset = WIDE_CASTS
    # lane masks have registers of their own (AVX-512's k): a mask carried across loop
    # iterations costs nothing there; elsewhere LLVM keeps one packed to narrow integer lanes
    # in a vector register, unpacked and packed again at every step (4 instructions and a
    # spill per vector on AVX2).  Read where x86's max carries a NaN mask (MaxNaNMask).
    mask_registers: bool = True

    def group_size(self, rows: int, lanes: int) -> int:
        """Rows per group for a schedule asking `rows` (row values are vectors of them).
        Without narrow vectors a group of several rows grows to a register's worth: in C,
        8 rows of 32768 ran at 1.83/1.74 elements/ns (gcc/clang, avx2) where one row at a
        time ran at 1.60/1.32 and the JIT's groups of 4 at 1.71."""
        group = min(rows, lanes)
        return group if self.narrow_vectors or group == 1 else lanes

    @classmethod
    def of(cls, target: Target) -> "Capabilities":
        x86 = target.arch == "x86_64"
        half = {(DType.F16, DType.F32), (DType.F32, DType.F16)} if target.converts_half else set()
        return cls(vector_bits=32 * target.vector_width,   # vector_width counts float32 lanes
                   native_ldexp=frozenset({(32, 16), (64, 8)}) if target.has_avx512 else frozenset(),
                   nan_ignoring_max=x86, streaming_fence=x86, native_casts=frozenset(half | WIDE_CASTS),
                   mask_registers=target.has_avx512)

    def lanes(self, dtype: DType) -> int:
        return self.vector_bits // dtype.bits
