"""Optimize an LLVM module for a target and turn it into machine code.

`compile_program` gives everything a caller may want from one kernel: the LLVM IR
text (optimized), the assembly, the object file, and for the host a JIT address.
It is the one path from IR program to machine code: softgen.compile (JIT) and
softgen.generate (files for any target) both go through it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import llvmlite.binding as llvm

from ...ir import Program
from ...targets import Target, initialize_llvm
from ...lower import Schedule
from ...lower.capabilities import Capabilities
from ...lower.kernel import kernel_name, lower
from .render import render


def optimize(module_text: str, tm) -> "llvm.ModuleRef":
    initialize_llvm()
    mod = llvm.parse_assembly(module_text)
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


@dataclass
class CompiledModule:
    name: str
    target: Target
    llvm_ir: str
    _mod_text: str
    loop_ir: str = ""   # the lowered kernel (softgen.lower.loopir) this was rendered from
    _jit: object = field(default=None, repr=False)   # keeps the JIT library alive
    address: int | None = None

    def asm(self) -> str:
        return self._tm().emit_assembly(llvm.parse_assembly(self._mod_text))

    def object(self) -> bytes:
        """A relocatable object (ELF for Linux triples), position independent."""
        return self._tm().emit_object(llvm.parse_assembly(self._mod_text))

    def _tm(self):
        return self.target.create_target_machine()


def compile_program(program: Program, target: Target, schedule: Schedule = Schedule(),
                    name: str | None = None, jit: bool = False) -> CompiledModule:
    name = kernel_name(program) if name is None else check_symbol_name(name)
    if jit:
        target.check_runs_here()   # before the work: a target this CPU cannot run fails fast
    kernel = lower(program, Capabilities.of(target), schedule, name)
    mod = optimize(str(render(kernel, target)), target.create_target_machine())
    text = str(mod)
    compiled = CompiledModule(name, target, text, text, str(kernel))
    if jit:
        lljit = llvm.create_lljit_compiler(target.create_target_machine(jit=True))
        lib = (llvm.JITLibraryBuilder().add_ir(text).add_current_process()
               .export_symbol(name).link(lljit, name))
        compiled._jit = (lljit, lib)
        compiled.address = lib[name]
    return compiled


def check_symbol_name(name) -> str:
    """The kernel's name becomes a C symbol: it must be a C identifier."""
    if not isinstance(name, str):
        raise TypeError(f"kernel name must be a string, not {type(name).__name__}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"kernel name {name!r} is not a C identifier (letters, digits, _; "
                         f"not starting with a digit)")
    return name
