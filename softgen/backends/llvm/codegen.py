"""IR program -> LLVM module: lowered once (softgen.lower) to the loop IR, rendered here."""
from __future__ import annotations

from llvmlite import ir

from ...ir import Program
from ...lower import Schedule
from ...lower.capabilities import Capabilities
from ...lower.kernel import lower
from ...targets import Target
from .render import render


def build_module(program: Program, target: Target, schedule: Schedule = Schedule(),
                 name: str | None = None) -> ir.Module:
    return render(lower(program, Capabilities.of(target), schedule, name), target)
