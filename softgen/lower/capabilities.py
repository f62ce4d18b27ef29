"""What the lowering needs to know about a target, read once from it.

Every stage below the schedule asks this object, not the target's name or arch, so a
new ISA is one entry here."""
from __future__ import annotations

from dataclasses import dataclass

from ..targets import Target


@dataclass(frozen=True)
class Capabilities:
    lanes: int                  # float32 lanes per vector register
    native_ldexp: frozenset     # lane counts with a one-instruction v * 2^d (vscalefps)
    nan_ignoring_max: bool      # a one-instruction max that skips NaN (x86 maxps): acc.max
                                # then keeps a NaN lane mask beside it
    streaming_fence: bool       # streaming stores are weakly ordered: fence before returning

    @classmethod
    def of(cls, target: Target) -> "Capabilities":
        x86 = target.arch == "x86_64"
        return cls(lanes=target.vector_width,
                   native_ldexp=frozenset({16}) if target.has_avx512 else frozenset(),
                   nan_ignoring_max=x86, streaming_fence=x86)
