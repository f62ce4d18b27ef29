"""Optimize an LLVM module for a target and turn it into machine code.

`compile_program` gives everything a caller may want from one kernel: the LLVM IR
text (optimized), the assembly, the object file, and for the host a JIT address.
It is the one path from IR program to machine code: softgen.compile (JIT) and
softgen.generate (files for any target) both go through it.  JIT kernels go through the
on-disk cache (cache.py): a kernel built once, by any process, links in milliseconds; its
loop IR and LLVM IR are then rebuilt only when asked for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import llvmlite.binding as llvm

from ...ir import Program, listing
from ...targets import Target, initialize_llvm, llvm_version
from ...lower import Schedule
from ...lower.capabilities import Capabilities
from ...lower.kernel import kernel_name, lower
from . import cache
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


@dataclass(eq=False)
class CompiledModule:
    """One kernel for one target: what it was built from, and (JIT) where it runs."""
    name: str
    target: Target
    program: Program
    schedule: Schedule
    _jit: object = field(default=None, repr=False)   # keeps the JIT library alive
    address: int | None = None
    # other functions in the same module: (program, symbol) pairs (chunk entry points)
    more: tuple = ()

    @cached_property
    def _kernel(self):
        return lower(self.program, Capabilities.of(self.target), self.schedule, self.name)

    @cached_property
    def _more(self) -> list:
        return [lower(p, Capabilities.of(self.target), self.schedule, name) for p, name in self.more]

    @property
    def loop_ir(self) -> str:
        """The lowered kernel (softgen.lower.loopir) the LLVM IR is rendered from."""
        return "\n\n".join(map(str, [self._kernel, *self._more]))

    def _optimize(self) -> "llvm.ModuleRef":
        """A new optimized module (code generation rewrites a module in place: each use
        gets its own)."""
        return optimize(str(render(self._kernel, self.target, *self._more)), self.target.create_target_machine())

    @cached_property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR."""
        return str(self._optimize())

    def asm(self) -> str:
        return self._tm().emit_assembly(llvm.parse_assembly(self.llvm_ir))

    def object(self) -> bytes:
        """A relocatable object (ELF for Linux triples), position independent."""
        return self._tm().emit_object(llvm.parse_assembly(self.llvm_ir))

    def _tm(self):
        return self.target.create_target_machine()

    def _jit_object(self) -> bytes:
        """The object code the JIT links, from the disk cache or built (and kept there)."""
        tgt = self.target
        key = cache.key(llvm=llvm_version(), triple=tgt.triple, cpu=tgt.cpu, features=tgt.features,
                        code="jit", name=self.name, program=listing(self.program),
                        schedule=self.schedule.to_json())
        obj = cache.load(key)
        if obj is None:
            obj = tgt.create_target_machine(jit=True).emit_object(self._optimize())
            cache.store(key, obj)
        return obj

    def link(self) -> None:
        """JIT the kernel into this process: `address` is then its entry point."""
        lljit = llvm.create_lljit_compiler(self.target.create_target_machine(jit=True))
        lib = (llvm.JITLibraryBuilder().add_object_img(self._jit_object()).add_current_process()
               .export_symbol(self.name).link(lljit, self.name))
        self._jit = (lljit, lib)
        self.address = lib[self.name]


def compile_program(program: Program, target: Target, schedule: Schedule = Schedule(),
                    name: str | None = None, jit: bool = False, more: tuple = ()) -> CompiledModule:
    """program as function `name` (default: kernel_name) for target; `more`: (program,
    symbol) pairs of other functions for the same module (ahead of time only)."""
    name = kernel_name(program) if name is None else check_symbol_name(name)
    compiled = CompiledModule(name, target, program, schedule, more=tuple((p, check_symbol_name(n)) for p, n in more))
    if jit:
        target.check_runs_here()   # before the work: a target this CPU cannot run fails fast
        compiled.link()
    else:
        compiled.llvm_ir   # build now: errors surface here, not at the first write
    return compiled


def check_symbol_name(name) -> str:
    """The kernel's name becomes a C symbol: it must be a C identifier."""
    if not isinstance(name, str):
        raise TypeError(f"kernel name must be a string, not {type(name).__name__}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"kernel name {name!r} is not a C identifier (letters, digits, _; "
                         f"not starting with a digit)")
    return name
