"""The runtime's own native functions (softgen.masks' prefix lengths, softgen.threads' pool
and job runners), written as LLVM IR text: each library compiled for the host on its first
use, once per process, into one JIT, and never freed, so that the addresses callers keep
stay valid (a plan's table holds them; a forked child has the same code at the same
addresses)."""
from __future__ import annotations

import os
import threading
from typing import Callable

import llvmlite.binding as llvm

from ...targets import Target


class HostFunctions:
    """Libraries of IR text by name, compiled on first use; their functions' addresses."""

    def __init__(self):
        self._lljit = None
        self._libraries: dict = {}
        self.reset_lock()

    def reset_lock(self) -> None:
        """A new lock (a forked child's copy may be held by a thread it does not have)."""
        self._lock = threading.Lock()

    def addresses(self, library: str, ir: Callable[[], str], symbols: tuple[str, ...]) -> dict[str, int]:
        """{symbol: address} of `symbols`, exported by `library` (built from the IR text ir()
        the first time it is asked for)."""
        linked = self._libraries.get(library)
        if linked is None:
            with self._lock:
                linked = self._libraries.get(library) or self._link(library, ir(), symbols)
        return {name: linked[name] for name in symbols}

    def _link(self, library: str, text: str, symbols: tuple[str, ...]):
        if self._lljit is None:
            self._lljit = llvm.create_lljit_compiler(Target.parse("host").create_target_machine(jit=True))
        builder = llvm.JITLibraryBuilder().add_ir(text)
        for name in symbols:
            builder.export_symbol(name)
        self._libraries[library] = builder.link(self._lljit, library)
        return self._libraries[library]


HOST = HostFunctions()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=HOST.reset_lock)
