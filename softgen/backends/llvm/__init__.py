"""LLVM backend: IR program -> vectorized LLVM IR (codegen) -> machine code (compiler)."""
from .codegen import build_module
from .compiler import CompiledModule, compile_program

__all__ = ["build_module", "CompiledModule", "compile_program"]
