"""C backend: a loop-IR kernel -> one readable, embeddable C file (plus header).

The emitted function has softgen's C ABI:
  void name(int64_t rows, int64_t n, const T *restrict x, int64_t x_row_stride,
            U *restrict y, int64_t y_row_stride)
T and U are the C types of x's dtype and of the output's (STORAGE_C_TYPES): float, double,
or uint16_t holding the bits of a bfloat16 (a float32's upper half) or a float16 (IEEE
binary16).  16-bit dtypes compute in float32, float64 (on either side) in double.

The program is lowered once (softgen.lower, with the capabilities C has on the ISA:
render.capabilities) to the same loop IR the LLVM backend renders; render.py spells its
statements through the ISA's table (isa.py); the file around them (includes, feature
checks, helpers, the header) lives in jinja2 templates in softgen/templates/ (package
data, so an installed wheel has them).
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ... import algorithms
from ...chunks import chunked
from ...dtypes import ROW_RANGES, c_parameters, compute_dtype, ir_dtype
from ...ir import DType, Program
from ...lower.kernel import kernel_name, lower
from ...lower.schedule import Schedule
from ...version import __version__
from .isa import C_TYPES, ISAS, PATTERNS, STORAGE_C_TYPES, CType, Isa, block_size, c_float
from .render import CRenderer, capabilities, tail_helpers

if TYPE_CHECKING:
    import jinja2

__all__ = ["C_TYPES", "ISAS", "PATTERNS", "STORAGE_C_TYPES", "CType", "CSource", "Isa", "NOT_RENDERED",
           "block_size", "c_float", "emit_c", "emit_program", "rendered_schedule"]

# How the header describes each storage dtype's layout
LAYOUTS = {
    DType.F32: "float32 (float)",
    DType.F64: "float64 (double)",
    DType.BF16: "bfloat16 as uint16_t: the upper 16 bits of a float32 (sign, 8 exponent bits, 7 mantissa bits)",
    DType.F16: "float16 as uint16_t: IEEE 754 binary16 bits (sign, 5 exponent bits, 10 mantissa bits)",
}

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"
# The knobs C may render otherwise than asked: rows per group only as a register's worth of
# rows or one row (render.capabilities: no vectors narrower than a register), interleave
# then at most that.  emit_c records the schedule it rendered and what it changed.
NOT_RENDERED = ("rows_per_group", "interleave")


def rendered_schedule(schedule: Schedule, isa: Isa) -> tuple[Schedule, dict]:
    """The schedule the C backend renders for `schedule` on `isa`, and {knob: value asked}
    of the knobs it renders otherwise (see NOT_RENDERED)."""
    rows = capabilities(isa).group_size(schedule.rows_per_group, isa.width)
    if rows == min(schedule.rows_per_group, isa.width):
        return schedule, {}
    rendered = dataclasses.replace(schedule, rows_per_group=rows, interleave=min(schedule.interleave, rows))
    return rendered, {k: getattr(schedule, k) for k in NOT_RENDERED if getattr(schedule, k) != getattr(rendered, k)}


@lru_cache(maxsize=None)
def _environment(directory: str) -> jinja2.Environment:
    import jinja2   # here, not at the top: JIT-only use of softgen never loads it
    return jinja2.Environment(loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


_COMMENT_CONTINUATION = re.compile(r"\*(\s|/|$)")


def _reindent(text: str) -> str:
    """Indent C by brace depth, so templates need not care about indentation.  Comment
    lines keep their own layout; a line after one ending in a comma is a continuation."""
    out, depth, blank, continued = [], 0, False, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if not blank and out:
                out.append("")
            blank = True
            continue
        blank = False
        if line.startswith("#"):
            out.append(line)
            continue
        if _COMMENT_CONTINUATION.match(line):
            out.append("    " * depth + " " + line)
            continue
        if line.startswith("}"):
            depth -= 1
        out.append("    " * (depth + continued) + line)
        depth += line.count("{") - line.count("}") + line.startswith("}")
        continued = line.endswith(",")
    return "\n".join(out).strip() + "\n"


@dataclass(frozen=True)
class CSource:
    """An emitted kernel: `header` (<name>.h) and `source` (<name>.c)."""
    name: str
    op: str
    algorithm: str
    isa: str
    header: str
    source: str
    # the schedule rendered, and {knob: value asked} of the knobs left out (NOT_RENDERED)
    schedule: Schedule = Schedule()
    not_rendered: dict = field(default_factory=dict)
    # (macro, flag) of features the kernel needs beyond its ISA's (F16C's float16
    # conversions in an AVX2 kernel)
    extra_requires: tuple = ()
    dtype: str = "float32"        # x's
    out_dtype: str = "float32"    # y's

    @property
    def flags(self) -> tuple[str, ...]:
        """Compiler flags that enable the kernel's ISA and what else it uses (gcc/clang)."""
        return ISAS[self.isa].flags + tuple(flag for _, flag in self.extra_requires if flag)

    def write(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the header and the C file, to `path` as its suffix says: a directory (no
        suffix, or one that exists) gets <name>.h and <name>.c; FILE.c is written with its
        header FILE.h beside it, which it includes.  Missing directories are created.
        Returns (header, C file)."""
        c = Path(path)
        if c.is_dir() or not c.suffix:
            c = c / f"{self.name}.c"
        if c.suffix != ".c":
            raise ValueError(f"cannot write C to {str(c)!r}: give a directory or a file ending in .c")
        h = c.with_suffix(".h")
        c.parent.mkdir(parents=True, exist_ok=True)
        h.write_text(self.header)
        c.write_text(self.source.replace(f'#include "{self.name}.h"', f'#include "{h.name}"', 1))
        return h, c


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_choice(what: str, value, choices) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
    return value


def _check_count(what: str, value, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be between {lo} and {hi}, got {value}")
    return value


def emit_c(op: str, *, algorithm: str, dtype="float32", out_dtype=None, isa: str = "scalar",
           name: str | None = None, schedule: Schedule | None = None, unroll: int | None = None,
           accumulators: int | None = None, chunks: bool = False, **variant) -> CSource:
    """C source for op x algorithm on `isa` (scalar, sse2, avx2, avx512, neon).

    dtype: x's (float32, float64, float16, bfloat16); out_dtype: y's (default: dtype).
    float64 on either side computes in double, anything else in float32; float64 results
    are not stored as a 16-bit dtype (they would round twice: NotImplementedError).
    schedule: the code shape (default: Schedule() as far as NOT_RENDERED allows); or
    instead unroll: vectors per main-loop iteration (default 4) and accumulators:
    independent accumulator sets (default: one per unrolled vector).  softgen.emit_c also
    takes schedule="auto:ROWSxN".  chunks: instead of the kernel, its chunk entry points
    (softgen.chunks: each pass over chunks of columns, the merges of their states, and the
    guard's fallback the same way; the header says how to call them), for a caller that
    splits rows across its own threads.  variant: temperature, sink, where, length,
    empty_rows as softgen.compile's (algorithms.variant: the operands after y, described in
    the header).  Compile the .c with the kernel's flags
    (CSource.flags, e.g. -mavx512f; -mavx2 -mfma -mf16c for an AVX2 kernel converting
    float16) and link with -lm."""
    storage = ir_dtype(dtype)
    output = storage if out_dtype is None else ir_dtype(out_dtype)
    program = algorithms.build(op, algorithm, storage, compute_dtype(storage, output), output,
                               algorithms.variant("emit_c", **variant))
    if name is None:
        dtypes = storage.numpy_name + ("" if output is storage else f"_{output.numpy_name}")
        name = f"{kernel_name(program)}_{dtypes}_{isa}"
    if not chunks:
        return emit_program(program, isa=isa, name=name, schedule=schedule, unroll=unroll, accumulators=accumulators)
    target, name = _isa_and_name(program, isa, name)
    schedule, left_out = _c_schedule(schedule, unroll, accumulators, target)
    plan = chunked(program)
    entry_points = [(p, f"{name}_{plan.entry_name(p)}") for p in plan.programs()]
    schedule = dataclasses.replace(schedule, rows_per_group=1, interleave=1, pipeline=False)
    return _render(program, target, name, schedule, left_out, entry_points, tuple(plan.protocol(name)))


def emit_program(program: Program, *, isa: str = "scalar", name: str, schedule: Schedule | None = None,
                 unroll: int | None = None, accumulators: int | None = None) -> CSource:
    """C source for one IR program (emit_c's, or a program of its own API such as top-k
    gating's) on `isa` as function `name`, with emit_c's schedule= or unroll= /
    accumulators=."""
    target, name = _isa_and_name(program, isa, name)
    schedule, left_out = _c_schedule(schedule, unroll, accumulators, target)
    return _render(program, target, name, schedule, left_out)


def _isa_and_name(program: Program, isa: str, name) -> tuple[Isa, str]:
    """The ISA pattern for the program's compute dtype, and the checked function name."""
    target = PATTERNS[_check_choice("isa", isa, tuple(PATTERNS))].for_dtype(program.compute)
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if not _IDENT.match(name):
        raise ValueError(f"name {name!r} is not a C identifier")
    return target, name


def _c_schedule(schedule, unroll, accumulators, isa: Isa) -> tuple[Schedule, dict]:
    """(the schedule rendered, knobs left out) from emit_c's schedule= or its unroll= /
    accumulators=."""
    if schedule is None:
        unroll = 4 if unroll is None else _check_count("unroll", unroll, 1, 16)
        accumulators = unroll if accumulators is None else _check_count("accumulators", accumulators, 1, unroll)
        return rendered_schedule(Schedule(unroll=unroll, accumulators=0 if accumulators == unroll else accumulators),
                                 isa)
    if unroll is not None or accumulators is not None:
        raise TypeError("emit_c takes a schedule or unroll= / accumulators=, not both")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a softgen.lower.Schedule (softgen.emit_c also takes 'auto:ROWSxN'), "
                        f"not {schedule!r}")
    _check_count("Schedule.unroll", schedule.unroll, 1, 16)
    return rendered_schedule(schedule, isa)


def _layouts(program: Program) -> list[str]:
    """The header's lines on x's and y's types, unless both are float32."""
    x, compute, y = program.dtypes
    if x is y is DType.F32:
        return []
    lines = [f"x and y: {LAYOUTS[x]}." if x is y else f"x: {LAYOUTS[x]}; y: {LAYOUTS[y]}."]
    lines.append(f"Computed in {compute.numpy_name}" + (
        "; 16-bit results are rounded to nearest even from float32 (NaN stays NaN)."
        if y.bits == 16 else "."))
    return lines


@dataclass
class _Rendered:
    """Kernels lowered and rendered for one file: their functions, and what the file around
    them needs (the helpers they use, shared)."""
    kernels: list = field(default_factory=list)   # per function: name, params, notes, body
    used: dict = field(default_factory=dict)
    partials: dict = field(default_factory=dict)
    lane_index: bool = False

    def add(self, program: Program, isa: Isa, fn: str, prefix: str, schedule: Schedule) -> None:
        kernel = lower(program, capabilities(isa), schedule, fn)
        inputs = frozenset({"x"} | {o.name for o in program.operands if not o.output})
        renderer = CRenderer(kernel, isa, prefix, inputs)
        body = renderer.body()
        x, compute, y = program.dtypes
        self.kernels.append(dict(name=fn, params=c_parameters(x, y, program.operands, compute, "SOFTGEN_RESTRICT "),
                                 notes=kernel.notes, body=body))
        self.used.update(renderer.used)
        self.partials.update(renderer.partials)
        self.lane_index |= renderer.lane_index


def _render(program: Program, isa: Isa, name: str, schedule: Schedule, left_out: dict,
            entry_points: list | None = None, protocol: tuple = ()) -> CSource:
    """The C file of `program` as function `name`, or of `entry_points` ((program, function
    name) pairs, described in the header by the lines of `protocol`)."""
    rendered = _Rendered()
    for kernel_program, fn in entry_points or [(program, name)]:
        rendered.add(kernel_program, isa, fn, name, schedule)
    text = "\n".join(line for k in rendered.kernels for line in k["body"])
    extras = [(title, macro, flag) for pattern, title, macro, flag in isa.optional_requires if re.search(pattern, text)]
    extra = tuple((macro, flag) for _, macro, flag in extras)
    requires = isa.requires + extra
    flags = tuple(flag for _, flag in requires if flag)
    helpers = [macro for _, macro in sorted(rendered.used.items())]
    partials = tail_helpers(rendered.partials)
    x, _, y = program.dtypes
    # ctype: what the kernel computes in; x_type / y_type: what x and y hold
    ctx = dict(name=name, op=program.op, algorithm=program.algorithm, isa=isa, version=__version__,
               title=" + ".join([isa.title, *(title for title, _, _ in extras)]),
               ctype=isa.ctype, x_type=STORAGE_C_TYPES[x], y_type=STORAGE_C_TYPES[y], dtype=x.numpy_name,
               out_dtype=y.numpy_name, layouts=_layouts(program), requires=requires, flags=flags,
               row_output=program.row_output, kernels=rendered.kernels, writes_y=program.writes_y,
               protocol=(*algorithms.operand_lines(program), *protocol),
               lane_index_values=[c_float(i, isa.ctype) for i in range(isa.width)],
               guard=f"{name.upper()}_H", row_ranges=ROW_RANGES)
    env = _environment(str(TEMPLATES))
    needs_string = bool(partials) or any(k.startswith("scalar.as_") for k in rendered.used)
    source = env.get_template("source.c.j2").render(ctx, helpers=helpers, lane_index=rendered.lane_index,
                                                    tail_helpers=partials, needs_string=needs_string)
    header = env.get_template("header.h.j2").render(ctx)
    return CSource(name, program.op, program.algorithm, isa.name, header, _reindent(source), schedule, left_out,
                   extra, x.numpy_name, y.numpy_name)
