"""LLVM backend: IR program -> vectorized LLVM IR (codegen) -> machine code (compiler)."""
from .codegen import Schedule, build_module
from .compiler import CompiledModule, compile_program

__all__ = ["Schedule", "build_module", "CompiledModule", "compile_program"]
