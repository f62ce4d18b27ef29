"""LLVM backend: a loop-IR kernel -> LLVM IR (render) -> machine code (compiler)."""
from .compiler import CompiledModule, compile_program
from .render import render

__all__ = ["render", "CompiledModule", "compile_program"]
