"""A program cut into one kernel per pass, so that each row can be split into chunks of
columns reduced apart (by threads, or by an embedding runtime's own) and merged.

Pass k's chunk program runs the pass over a chunk of each row: it loads the row values the
pass reads (computed by the caller from the merged states of earlier passes) from input
operands, and stores each reduction's state (`merge.state`: the chunk's lanes merged) to
output operands.  Between passes the caller merges the chunks' states with the
accumulator's own merge (numerics.ACCUMULATORS, the same one that merges lanes) and runs
the program's row ops on the merged values.  A pass that stores the output writes the
chunk's part of y, so a split row is written in place.

Operand names: `r<id>` for the row value %id, `s<id>_<part>` for part `part` of the state
of the reduction %id.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Builder, Kind, Op, Operand, Pass, Program, Type, Value, verify


@dataclass(frozen=True)
class ChunkPass:
    """Pass `index` of a program as a chunk kernel."""
    index: int
    program: Program
    inputs: tuple[Value, ...]                            # row values loaded, in operand order
    states: tuple[tuple[Value, tuple[str, ...]], ...]    # (reduction, its parts' operand names)


def input_name(v: Value) -> str:
    return f"r{v.id}"


def state_names(acc: Value) -> tuple[str, ...]:
    return tuple(f"s{acc.id}_{part}" for part in range(acc.type.state_parts))


def chunk_passes(program: Program) -> list[ChunkPass]:
    """One ChunkPass per pass of `program` (verified programs)."""
    return [_chunk_pass(program, k, p) for k, p in enumerate(program.passes)]


def _chunk_pass(program: Program, index: int, p: Pass) -> ChunkPass:
    inputs = tuple(dict.fromkeys(v for op in p.ops for v in op.args if v.type is Type.ROW))
    accs = tuple(r for op in p.reductions for r in op.results)
    operands = ([Operand(input_name(v)) for v in inputs]
                + [Operand(name, output=True) for acc in accs for name in state_names(acc)])
    stored_before = any(op.kind is Kind.STORE for q in program.passes[:index] for op in q.ops)
    chunk = Program(program.op, f"{program.algorithm}.pass{index}", [], False, program.storage,
                    program.compute, program.output, tuple(operands), stored_before)
    b = _Continuing(chunk, program)
    for v in inputs:
        chunk.steps.append(Op(Kind.LOAD_OPERAND, (), (v,), {"name": input_name(v)}))
    chunk.steps.append(p)
    for acc in accs:
        for part, name in zip(b.merge_state(acc), state_names(acc)):
            b.store_operand(part, name=name)
    return ChunkPass(index, verify(chunk), inputs, tuple((acc, state_names(acc)) for acc in accs))


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
