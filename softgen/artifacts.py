"""softgen.generate(): one kernel for any target, as LLVM IR, assembly, an object file, or
(for this machine's architecture) a shared library; softgen.emit_c(): one kernel as C.
Both take schedule="auto:ROWSxN": the kernel the JIT runs for that shape (tune.resolve).

The kernel has softgen's C ABI (see `Artifact.c_declaration`); rows are read from x and
written to y with the given row strides (in elements).  logsumexp writes one value per
row.  log_softmax and logsumexp call logf once per row: link with -lm.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import llvmlite.binding as llvm
from numpy.typing import DTypeLike

from . import algorithms, tune
from .backends import c
from .backends.llvm import CompiledModule, compile_program
from .chunks import chunked
from .dtypes import ROW_RANGES, c_parameters, compute_dtype, ir_dtype
from .ir import DType
from .lower import Schedule
from .lower.kernel import kernel_name
from .targets import Target

C_PARAMETERS = c_parameters(DType.F32, DType.F32)


@dataclass(frozen=True, eq=False)
class Artifact:
    """A kernel compiled for `target` with `schedule`.  `asm` and `object` are made on first use."""
    op: str
    algorithm: str
    target: Target
    compiled: CompiledModule
    schedule: Schedule = Schedule()
    dtypes: tuple = (DType.F32, DType.F32, DType.F32)   # x's, compute, y's
    protocol: tuple = ()   # header lines on how to call the entry points (chunks)

    @property
    def name(self) -> str:
        """The kernel's C symbol."""
        return self.compiled.name

    @property
    def llvm_ir(self) -> str:
        return self.compiled.llvm_ir

    @property
    def loop_ir(self) -> str:
        """The kernel after lowering (softgen.lower.loopir), before LLVM."""
        return self.compiled.loop_ir

    @cached_property
    def asm(self) -> str:
        return self.compiled.asm()

    @cached_property
    def object(self) -> bytes:
        """A relocatable, position independent object (ELF for the Linux triples)."""
        return self.compiled.object()

    @property
    def c_declaration(self) -> str:
        """The C declarations of its functions (one, or the chunk entry points)."""
        x, compute, y = self.dtypes
        functions = ((self.compiled.program, self.name), *self.compiled.more)
        return "\n".join(f"void {name}({c_parameters(x, y, p.operands, compute)});" for p, name in functions)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the artifact chosen by the file suffix: .s assembly, .ll LLVM IR, .o object,
        .so shared library (this machine's architecture only), .h the C declaration."""
        path = Path(path)
        writers = {".s": lambda p: p.write_text(self.asm), ".ll": lambda p: p.write_text(self.llvm_ir),
                   ".o": lambda p: p.write_bytes(self.object), ".so": self.shared_library,
                   ".h": lambda p: p.write_text(_header(self))}
        if path.suffix not in writers:
            raise ValueError(f"cannot tell what to write to {str(path)!r} from its suffix; "
                             f"use one of {', '.join(writers)}")
        writers[path.suffix](path)
        return path

    def shared_library(self, path: str | os.PathLike) -> Path:
        """Link the object into a shared library with the system C compiler ($CC or cc).
        The target must be this machine's architecture (running it also needs the CPU
        features the target assumes)."""
        host_arch = llvm.get_process_triple().split("-")[0]
        if self.target.arch != host_arch:
            raise ValueError(f"a shared library for {self.target} ({self.target.arch}) cannot be "
                             f"linked here ({host_arch}); write the object (.o) and link it with a "
                             f"cross compiler")
        cc = os.environ.get("CC", "cc")
        if shutil.which(cc) is None:
            raise RuntimeError(f"no C compiler {cc!r} found to link a shared library; set CC")
        path = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            obj = Path(tmp, f"{self.name}.o")
            obj.write_bytes(self.object)
            done = subprocess.run([cc, "-shared", "-o", str(path), str(obj), "-lm"],
                                  capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{cc} -shared failed: {done.stderr.strip()}")
        return path


def _header(artifact: Artifact) -> str:
    guard = f"{artifact.name.upper()}_H"
    # extern "C": the object defines the plain C symbol, which C++ callers must not mangle
    lines = [*ROW_RANGES, *algorithms.operand_lines(artifact.compiled.program), *artifact.protocol]
    return (f"/* softgen {artifact.op} ({artifact.algorithm}) for {artifact.target}.\n * "
            + "\n * ".join(lines) + " */\n"
            f"#ifndef {guard}\n#define {guard}\n#include <stdint.h>\n"
            '#ifdef __cplusplus\nextern "C" {\n#endif\n'
            f"{artifact.c_declaration}\n"
            "#ifdef __cplusplus\n}\n#endif\n#endif\n")


def generate(op: str, *, algorithm: str, target: Target | str, dtype: DTypeLike = "float32",
             out_dtype: DTypeLike | None = None, name: str | None = None,
             schedule: Schedule | str | None = None, chunks: bool = False, **variant: Any) -> Artifact:
    """Compile `op` with `algorithm` for `target` (a Target or a target string such as
    "x86-64-v3", "aarch64:neoverse-v1", "riscv64"), without running it.  x holds `dtype`,
    y `out_dtype` (default: dtype), computed as softgen.compile does.  `name` is the C
    symbol (default softgen_<op>_<algorithm>[_<operands>][_zero_empty]); `schedule` the
    code shape (default Schedule(), as softgen.compile), or "auto:ROWSxN" for the algorithm's schedule that
    the JIT would run for that shape and those dtypes (algorithm "auto": its choice of
    both; wisdom tuned for `target` if there is some).  variant: temperature, sink, where,
    length, empty_rows as softgen.compile's (algorithms.variant: the operands after y, in
    the header).  chunks: the
    chunk entry points instead (softgen.chunks; <name>_pass0, ..., described in the
    header), in one object, for a caller that splits rows across its own threads."""
    storage = ir_dtype(dtype)
    output = storage if out_dtype is None else ir_dtype(out_dtype)
    tgt = Target.parse(target)
    algorithm, schedule = tune.resolve_request(op, algorithm, schedule, tgt, storage, output)
    schedule = Schedule() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a softgen.lower.Schedule or '{tune.AUTO}ROWSxN', "
                        f"not {schedule!r}")
    program = algorithms.build(op, algorithm, storage, compute_dtype(storage, output), output,
                               algorithms.variant("generate", **variant))
    if not chunks:
        return Artifact(op, algorithm, tgt, compile_program(program, tgt, schedule, name=name), schedule,
                        program.dtypes)
    name = name or kernel_name(program)
    plan = chunked(program)
    entry_points = tuple((p, f"{name}_{plan.entry_name(p)}") for p in plan.programs())
    schedule = dataclasses.replace(schedule, rows_per_group=1, interleave=1, pipeline=False)
    compiled = compile_program(entry_points[0][0], tgt, schedule, name=entry_points[0][1], more=entry_points[1:])
    return Artifact(op, algorithm, tgt, compiled, schedule, program.dtypes, tuple(plan.protocol(name)))


def emit_c(op: str, *, algorithm: str, schedule: Schedule | str | None = None, dtype: DTypeLike = "float32",
           out_dtype: DTypeLike | None = None, **options: Any) -> c.CSource:
    """softgen.backends.c.emit_c (see there for `options`: isa, name, unroll, accumulators)
    that also takes schedule="auto:ROWSxN" (and then algorithm "auto"): the kernel the JIT
    runs for that shape and dtypes on this machine, rendered as far as the C backend
    renders schedules (CSource.not_rendered).  x holds `dtype`, y `out_dtype` (default:
    dtype)."""
    algorithm, schedule = tune.resolve_request(op, algorithm, schedule, "host", dtype, out_dtype)
    if out_dtype is not None:  # the backend's default is dtype
        options["out_dtype"] = out_dtype
    return c.emit_c(op, algorithm=algorithm, schedule=schedule, dtype=dtype, **options)
