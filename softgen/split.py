"""Split rows: a call with fewer rows than threads cuts each row into chunks of columns.

The kernel's program runs as its chunk kernels (softgen.chunks): each pass over every
(row, chunk) on the pool's threads, storing the chunks' reduction states; the merge kernel
folds them into one state per row (the accumulator's own merge, the one the kernels merge
lanes with); the next pass reads the merged states.  Rows a guard flags run the fallback
program's chunk kernels the same way.  A split row computes what the kernel computes, in
another order of summation: within the kernel's tolerance, not bitwise.

The states of a call live in one array [operand, row, chunk] (chunk 0: merged), and each
kernel's operand addresses are computed from it: the Python work per call is a few list
operations and one ctypes call per merge, beside the pool's tasks.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from . import threads as _threads
from .backends.llvm import compile_program
from .chunks import FLAG, ChunkedProgram, chunked
from .ir import Program
from .lower import Schedule
from .targets import Target

# chunks start on multiples of this many elements (whole cache lines of y where y's rows
# start on one, for every dtype), so no two threads write to one line
CHUNK_ALIGN = 64


def state_addresses(states: np.ndarray):
    """address(k, row, column): where states[k, row, column] is in a contiguous [operand,
    row, chunk] array (its base read once: numpy takes a microsecond to give it)."""
    _, rows, chunks = states.shape
    base, size = states.__array_interface__["data"][0], states.itemsize
    return lambda k, row, column: base + ((k * rows + row) * chunks + column) * size


def merge_chunk(entry: "_Entry", states: np.ndarray, into: int, other: int) -> None:
    """A merge kernel's call folding chunk `other`'s states into chunk `into`'s, for every
    row: operands a (into), b (other), m (into), at a row stride of the chunk count."""
    third = len(entry.operands) // 3
    address = state_addresses(states)
    args = []
    for j, (k, _) in enumerate(entry.operands):
        args += [address(k, 0, other if third <= j < 2 * third else into), states.shape[2]]
    entry.fn(states.shape[1], 0, 0, 0, 0, 0, *args)


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """At most `chunks` column ranges covering [0, n), starting on multiples of CHUNK_ALIGN."""
    step = max(CHUNK_ALIGN, -(-n // chunks // CHUNK_ALIGN) * CHUNK_ALIGN)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


@dataclass(frozen=True)
class _Entry:
    """A chunk kernel ready to call: its function and its operands as (index in the call's
    state array, output?) pairs, or (None, j) for the call's own row operand j; `flags`:
    whether its guard writes the operand `flag`."""
    fn: object
    operands: tuple
    flags: bool


@dataclass(frozen=True)
class _Layout:
    """A plan's kernels as _Entries, and its state operands by index."""
    plan: ChunkedProgram
    names: tuple            # operand names, their index in the call's state array
    passes: tuple
    merges: tuple           # per pass: _Entry or None
    finish: _Entry | None
    fallback: "_Layout | None"


class SplitKernel:
    """A kernel's program as chunk kernels (compiled on first use) for split rows."""

    def __init__(self, program: Program, target: Target, schedule: Schedule, address_of=None):
        """address_of(plan, program): where a chunk kernel's code is (default: JIT-compiled
        for target with schedule, one row per group)."""
        self.plan = chunked(program)
        self.target = target
        self.schedule = Schedule(**{**schedule.to_dict(), "rows_per_group": 1, "pipeline": False})
        self.dtype = np.dtype(program.compute.numpy_name)
        # the program's own operands that are rows of elements (cut into chunks as x)
        self.elementwise = frozenset(j for j, o in enumerate(program.operands) if o.elementwise)
        self.address_of = address_of or self._compile
        self._layout = None
        self._compiled: list = []   # the JIT modules (kept alive)

    def _compile(self, plan: ChunkedProgram, program: Program) -> int:
        compiled = compile_program(program, self.target, self.schedule, jit=True)
        self._compiled.append(compiled)
        return compiled.address

    def layout(self, plan: ChunkedProgram | None = None) -> _Layout:
        """The plan's kernels compiled and laid out (the top plan's kept)."""
        if plan is None:
            self._layout = self._layout or self.layout(self.plan)
            return self._layout
        own = {o.name: (None, j) for j, o in enumerate(plan.source.operands)}
        kernels = [*plan.passes, *filter(None, [plan.finish])]   # (the merges' operands name the same states)
        names = tuple(dict.fromkeys(o.name for p in kernels for o in p.operands if o.name not in own))
        index = {name: k for k, name in enumerate(names)}

        def entry(program):
            if program is None:
                return None
            abi = ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * (6 + 2 * len(program.operands)))
            operands = tuple(own[o.name] if o.name in own else
                             (index[o.name.split("_", 1)[1] if program in plan.merges else o.name], o.output)
                             for o in program.operands)
            return _Entry(abi(self.address_of(self.plan, program)), operands, plan.flags(program))
        return _Layout(plan, names, tuple(map(entry, plan.passes)), tuple(map(entry, plan.merges)),
                       entry(plan.finish), plan.fallback and self.layout(plan.fallback))

    def run(self, rows: int, n: int, x: int, x_stride: int, x_itemsize: int, y: int, y_stride: int,
            y_itemsize: int, chunks: int, threads: int, operands: tuple = ()) -> None:
        """The kernel on [rows, n] at addresses x and y (row strides in elements), with its
        operands (address, stride, itemsize: a value per row, or elementwise a row of them),
        each row in up to `chunks` chunks, on up to `threads` threads."""
        call = _Call((x, x_stride, x_itemsize), (y, y_stride, y_itemsize), chunk_bounds(n, chunks), threads,
                     self.dtype, operands, self.elementwise)
        call.execute(self.layout(), list(range(rows)))


@dataclass
class _Call:
    x: tuple   # (address, row stride in elements, itemsize)
    y: tuple
    bounds: list
    threads: int
    dtype: np.dtype
    row_operands: tuple   # the program's own: (address, stride, itemsize)

    elementwise: frozenset = frozenset()   # which of them are elementwise (a row of elements)

    def row_operand(self, j: int, row: int, column: int = 0) -> int:
        """Own operand j's address for `row` (at `column` of an elementwise one's row)."""
        address, stride, itemsize = self.row_operands[j]
        return address + (row * stride + (column if j in self.elementwise else 0)) * itemsize

    def execute(self, layout: _Layout, rows: list) -> None:
        """layout's plan on `rows` (their indices): its passes, merges and finish; flagged
        rows through the fallback's plan."""
        states = np.empty((len(layout.names), len(rows), len(self.bounds)), self.dtype)
        flag = layout.names.index(FLAG) if FLAG in layout.names else None
        for entry, merge in zip(layout.passes, layout.merges):
            self.run_pass(entry, rows, states)
            if merge is not None:   # each chunk's states into chunk 0's
                for c in range(1, len(self.bounds)):
                    merge_chunk(merge, states, 0, c)
            rows, states = self.fall_back(layout, rows, states, flag if entry.flags else None)
            if not rows:
                return
        if layout.finish is not None:
            self.run_finish(layout.finish, rows, states)
            self.fall_back(layout, rows, states, flag if layout.finish.flags else None)

    def run_pass(self, entry: _Entry, rows: list, states: np.ndarray) -> None:
        """The pass over every (row, chunk), one row per call, operands at stride 0."""
        x, xs, xi = self.x
        y, ys, yi = self.y
        address = state_addresses(states)
        tasks = []
        for i, row in enumerate(rows):
            for c, (c0, c1) in enumerate(self.bounds):
                task = [1, c1 - c0, x + (row * xs + c0) * xi, xs, y + (row * ys + c0) * yi, ys]
                for k, output in entry.operands:
                    task += [self.row_operand(output, row, c0) if k is None else
                             address(k, i, c if output else 0), 0]
                tasks.append(task)
        _threads.run_tasks(entry.fn, tasks, self.threads)

    def run_finish(self, entry: _Entry, rows: list, states: np.ndarray) -> None:
        y, ys, yi = self.y
        address = state_addresses(states)
        for i, row in enumerate(rows):
            args = []
            for k, j in entry.operands:
                args += [self.row_operand(j, row) if k is None else address(k, i, 0), 0]
            entry.fn(1, 0, 0, 0, y + row * ys * yi, 0, *args)

    def fall_back(self, layout: _Layout, rows: list, states: np.ndarray, flag: int | None) -> tuple:
        """The rows flagged run the fallback plan; the others, and their states, go on."""
        if flag is None:
            return rows, states
        bad = states[flag, :, 0] != 0
        if not bad.any():
            return rows, states
        self.execute(layout.fallback, [row for row, b in zip(rows, bad) if b])
        return [row for row, b in zip(rows, bad) if not b], np.ascontiguousarray(states[:, ~bad])
