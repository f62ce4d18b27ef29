"""A program cut into kernels for rows reduced in chunks of columns (by threads, or by an
embedding runtime's own), merged, then written chunk by chunk.

Every kernel is an IR program with row operands (one value per row):
  pass k     the program's pass k over one chunk of each row.  It loads the merged states
             of the reductions of earlier passes (`state`), runs the program's row ops up
             to the pass on them (each chunk recomputes those few per-row values), runs the
             pass, and stores the states of its own reductions (`merge.state`).  A pass
             that stores the output writes the chunk's part of y.
  merge k    two chunks' states of pass k's reductions merged (`merge.states`: the
             accumulator's own merge, the one that merges lanes), a into m (may be a).
  finish     for one value per row (logsumexp): the row ops after the last pass, from the
             merged states, storing y[row].
A guard flags its rows out of range in the output operand `flag` (1, else 0) instead of
running its fallback, which needs whole rows: the caller runs the fallback program's own
chunk kernels (`ChunkedProgram.fallback`) on the flagged rows.

Operand names: `s<id>_<part>` for part `part` of the state of the reduction %id, with
`a_`, `b_` and `m_` before it in a merge.  The program's own input operands
(inv_temperature, ...) come first in the pass and finish kernels, as in the program.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Builder, Kind, Op, Operand, Pass, Program, Value, verify

FLAG = "flag"


@dataclass(frozen=True)
class Reduction:
    """A reduction of the source program and its state's operand names."""
    value: Value

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"s{self.value.id}_{part}" for part in range(self.value.type.state_parts))


@dataclass(frozen=True)
class ChunkedProgram:
    source: Program
    passes: tuple[Program, ...]
    reductions: tuple[tuple[Reduction, ...], ...]   # per pass: those it stores
    merges: tuple[Program | None, ...]              # per pass: its merge (None: no reduction)
    finish: Program | None
    fallback: "ChunkedProgram | None"

    def programs(self) -> list[Program]:
        """Every kernel, the fallback's too (names distinct by algorithm)."""
        own = [*self.passes, *filter(None, self.merges), *filter(None, [self.finish])]
        return own + (self.fallback.programs() if self.fallback else [])

    def flags(self, program: Program) -> bool:
        return Operand(FLAG, True) in program.operands

    def entry_name(self, program: Program) -> str:
        """program's part of a C name: pass0, merge0, finish; fallback_pass0 for the
        fallback's."""
        algorithm, _, part = program.algorithm.partition(".")
        return part if algorithm == self.source.algorithm else f"fallback_{part}"

    def protocol(self, name: str) -> list[str]:
        """How a caller runs the entry points <name>_<entry_name> (header text)."""
        lines = ["Chunk entry points: each row cut into C chunks of columns (any ranges covering 0..n-1),",
                 "one array of C values per row for each state operand (chunk c of row r at",
                 "[r * stride + c], stride C; operands are per row, value [r * name_stride]):"]
        lines += self._steps(lambda program: f"{name}_{self.entry_name(program)}")
        if self.fallback is not None:
            lines.append(f"Rows whose `{FLAG}` comes out 1 (chunk 0's) are recomputed with the "
                         f"{name}_fallback_* entry points in the same way:")
            lines += self.fallback._steps(lambda program: f"{name}_{self.entry_name(program)}")
        return lines

    def _steps(self, fn) -> list[str]:
        lines = []
        for k, kernel in enumerate(self.passes):
            own = [o.name for o in _own_inputs(self.source)]
            ins = [o.name for o in kernel.operands if not o.output and o.name not in own]
            outs = [o.name for o in kernel.operands if o.output]
            lines.append(f"- {fn(kernel)}(rows, chunk length, x + chunk start, x_row_stride, y + chunk start, "
                         f"y_row_stride, {', '.join(own + ['...'])}) for each chunk: reads "
                         f"{', '.join(ins) or 'no state'} (merged: chunk 0's), writes {', '.join(outs) or 'y'} "
                         f"(chunk c's).")
            if self.merges[k] is not None:
                lines.append(f"- {fn(self.merges[k])}(rows, 0, NULL, 0, NULL, 0, a_..., b_..., m_...) merges "
                             f"chunk c's states (b) into chunk 0's (a and m), for c = 1..C-1.")
        if self.finish is not None:
            lines.append(f"- {fn(self.finish)}(rows, 0, NULL, 0, y, y_row_stride, states...) stores y[r].")
        return lines


def chunked(program: Program) -> ChunkedProgram:
    """`program` (verified) cut into chunk kernels (each verified)."""
    passes = program.passes
    reductions = tuple(tuple(Reduction(r) for op in p.reductions for r in op.results) for p in passes)
    earlier = [sum(reductions[:k], ()) for k in range(len(passes))]
    kernels = tuple(_pass_program(program, k, earlier[k], reductions[k]) for k in range(len(passes)))
    finish = _finish_program(program, sum(reductions, ())) if program.row_output else None
    guards = [s for s in program.steps if isinstance(s, Op) and s.kind is Kind.GUARD]
    fallback = chunked(guards[0].attrs["fallback"]) if guards else None
    merges = tuple(_merge_program(program, k, r) if r else None for k, r in enumerate(reductions))
    return ChunkedProgram(program, kernels, reductions, merges, finish, fallback)


def _derived(program: Program, name: str, operands: list, y_stored: bool = False) -> "_Continuing":
    chunk = Program(program.op, f"{program.algorithm}.{name}", [], False, program.storage,
                    program.compute, program.output, tuple(operands), y_stored)
    return _Continuing(chunk, program)


def _row_ops_from_states(b: "_Continuing", program: Program, loaded: tuple, until: int) -> None:
    """Load the states of `loaded`, then the program's row ops up to step `until`, a guard
    flagging instead of falling back."""
    for red in loaded:
        parts = [b.load_operand(name=name) for name in red.names]
        b.program.steps.append(Op(Kind.STATE, tuple(parts), (red.value,), {"type": red.value.type}))
    for step in program.steps[:until]:
        if isinstance(step, Pass):
            continue
        if step.kind is Kind.GUARD:
            step = Op(Kind.GUARD, step.args, (), {"ranges": step.attrs["ranges"], "flag": FLAG})
        b.program.steps.append(step)


def _guarded(program: Program, until: int) -> list:
    return [Operand(FLAG, True)] if any(isinstance(s, Op) and s.kind is Kind.GUARD
                                        for s in program.steps[:until]) else []


def _state_operands(reductions: tuple, output: bool, prefix: str = "") -> list:
    return [Operand(prefix + name, output) for red in reductions for name in red.names]


def _own_inputs(program: Program) -> list:
    """The program's own input operands (inv_temperature ...): every row kernel keeps them."""
    return [o for o in program.operands if not o.output]


def _pass_program(program: Program, k: int, loaded: tuple, stored: tuple) -> Program:
    at = program.steps.index(program.passes[k])
    operands = (_own_inputs(program) + _state_operands(loaded, False) + _state_operands(stored, True)
                + _guarded(program, at))
    y_stored = any(op.kind is Kind.STORE for q in program.passes[:k] for op in q.ops)
    b = _derived(program, f"pass{k}", operands, y_stored)
    _row_ops_from_states(b, program, loaded, at)
    b.program.steps.append(program.passes[k])
    for red in stored:
        for part, name in zip(b.merge_state(red.value), red.names):
            b.store_operand(part, name=name)
    return verify(b.program)


def _finish_program(program: Program, loaded: tuple) -> Program:
    b = _derived(program, "finish", _own_inputs(program) + _state_operands(loaded, False)
                 + _guarded(program, len(program.steps)))
    b.program.row_output = True
    _row_ops_from_states(b, program, loaded, len(program.steps))
    return verify(b.program)


def _merge_program(program: Program, k: int, reductions: tuple) -> Program:
    operands = [o for prefix, out in (("a_", False), ("b_", False), ("m_", True))
                for o in _state_operands(reductions, out, prefix)]
    b = _derived(program, f"merge{k}", operands)
    for red in reductions:
        a, c = ([b.load_operand(name=p + name) for name in red.names] for p in ("a_", "b_"))
        merged = b.merge_states(b.state(a, red.value.type), b.state(c, red.value.type))
        for part, name in zip(b.merge_state(merged), red.names):
            b.store_operand(part, name="m_" + name)
    return verify(b.program)


class _Continuing(Builder):
    """A Builder appending to `chunk` whose new values are numbered after `source`'s."""

    def __init__(self, chunk: Program, source: Program):
        self.program, self._pass = chunk, None
        self._next_id = 1 + max(v.id for v in _values(source))


def _values(program: Program):
    for step in program.steps:
        for op in step.ops if isinstance(step, Pass) else [step]:
            yield from op.args
            yield from op.results
