"""Split rows: a call with fewer rows than threads cuts each row into chunks of columns.

The kernel's program runs as its chunk kernels (softgen.chunks): each pass over every
(row, chunk) on the pool's threads, storing the chunks' reduction states; the merge kernel
folds them into one state per row (the accumulator's own merge, the one the kernels merge
lanes with); the next pass reads the merged states.  Rows a guard flags run the fallback
program's chunk kernels the same way.  A split row computes what the kernel computes, in
another order of summation: within the kernel's tolerance, not bitwise.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from . import threads as _threads
from .backends.llvm import compile_program
from .chunks import ChunkedProgram, chunked
from .ir import Program
from .lower import Schedule
from .targets import Target

# chunks start on multiples of this many elements (whole cache lines of y where y's rows
# start on one, for every dtype), so no two threads write to one line
CHUNK_ALIGN = 64


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """At most `chunks` column ranges covering [0, n), starting on multiples of CHUNK_ALIGN."""
    step = max(CHUNK_ALIGN, -(-n // chunks // CHUNK_ALIGN) * CHUNK_ALIGN)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


class SplitKernel:
    """A kernel's program as chunk kernels (compiled on first use) for split rows."""

    def __init__(self, program: Program, target: Target, schedule: Schedule, address_of=None):
        """address_of(plan, program): where a chunk kernel's code is (default: JIT-compiled
        for target with schedule, one row per group)."""
        self.plan = chunked(program)
        self.target = target
        self.schedule = Schedule(**{**schedule.to_dict(), "rows_per_group": 1, "pipeline": False})
        self.dtype = np.dtype(program.compute.numpy_name)
        self.address_of = address_of or self._compile
        self._fns: dict = {}
        self._compiled: list = []   # the JIT modules (kept alive)

    def _compile(self, plan: ChunkedProgram, program: Program) -> int:
        compiled = compile_program(program, self.target, self.schedule, jit=True)
        self._compiled.append(compiled)
        return compiled.address

    def fn(self, program: Program):
        """program's kernel as a ctypes function of softgen's ABI with its operands."""
        if program.name not in self._fns:
            abi = ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * (6 + 2 * len(program.operands)))
            self._fns[program.name] = abi(self.address_of(self.plan, program))
        return self._fns[program.name]

    def run(self, rows: int, n: int, x: int, x_stride: int, x_itemsize: int, y: int, y_stride: int,
            y_itemsize: int, chunks: int, threads: int) -> None:
        """The kernel on [rows, n] at addresses x and y (row strides in elements), each row in
        up to `chunks` chunks, on up to `threads` threads."""
        call = _Call(self, (x, x_stride, x_itemsize), (y, y_stride, y_itemsize), chunk_bounds(n, chunks), threads)
        call.execute(self.plan, np.arange(rows))


@dataclass
class _Call:
    split: SplitKernel
    x: tuple   # (address, row stride in elements, itemsize)
    y: tuple
    bounds: list
    threads: int

    def address(self, array: tuple, row: int, column: int) -> int:
        base, stride, itemsize = array
        return base + (int(row) * stride + column) * itemsize

    def execute(self, plan: ChunkedProgram, rows: np.ndarray) -> None:
        """plan on `rows` (their indices): its passes, merges and finish; flagged rows
        through the fallback's plan."""
        states: dict = {}   # operand name -> [rows, chunks] array; column 0 merged
        for k, kernel in enumerate(plan.passes):
            flags = self.run_pass(kernel, rows, states)
            if plan.merges[k] is not None:
                self.merge(plan.merges[k], plan.reductions[k], len(rows), states)
            rows, states = self.fall_back(plan, rows, states, flags)
            if not len(rows):
                return
        if plan.finish is not None:
            flags = self.run_finish(plan.finish, rows, states)
            self.fall_back(plan, rows, states, flags)

    def operand_args(self, program: Program, states: dict, i: int, c: int) -> list:
        """Row i's (chunk c's) operand addresses, each with stride 0 (one row per call)."""
        args = []
        for o in program.operands:
            a = states[o.name]
            args += [a.ctypes.data + (i * a.shape[1] + (c if o.output else 0)) * a.itemsize, 0]
        return args

    def run_pass(self, kernel: Program, rows: np.ndarray, states: dict) -> np.ndarray | None:
        """The pass over every (row, chunk); returns the flags of a guarded pass."""
        count, chunks = len(rows), len(self.bounds)
        for o in kernel.operands:
            if o.output:
                states[o.name] = np.empty((count, chunks), self.split.dtype)
        tasks = []
        for i, row in enumerate(rows):
            for c, (c0, c1) in enumerate(self.bounds):
                tasks.append([1, c1 - c0, self.address(self.x, row, c0), self.x[1], self.address(self.y, row, c0),
                              self.y[1]] + self.operand_args(kernel, states, i, c))
        _threads.run_tasks(self.split.fn(kernel), tasks, self.threads)
        return states.pop("flag")[:, 0] if self.split.plan.flags(kernel) else None

    def merge(self, kernel: Program, reductions: tuple, count: int, states: dict) -> None:
        """Each chunk's states into chunk 0's, for all rows in one call per chunk."""
        fn = self.split.fn(kernel)
        for c in range(1, len(self.bounds)):
            args = []
            for column in (0, c, 0):   # a, b, m
                for red in reductions:
                    for name in red.names:
                        a = states[name]
                        args += [a.ctypes.data + column * a.itemsize, a.shape[1]]
            fn(count, 0, 0, 0, 0, 0, *args)

    def run_finish(self, kernel: Program, rows: np.ndarray, states: dict) -> np.ndarray | None:
        flags = np.empty((len(rows), 1), self.split.dtype)
        states = {**states, "flag": flags}
        fn = self.split.fn(kernel)
        for i, row in enumerate(rows):
            fn(1, 0, 0, 0, self.address(self.y, row, 0), 0, *self.operand_args(kernel, states, i, 0))
        return flags[:, 0] if self.split.plan.flags(kernel) else None

    def fall_back(self, plan: ChunkedProgram, rows: np.ndarray, states: dict, flags) -> tuple:
        """The rows flagged run the fallback plan; the others, and their states, go on."""
        if flags is None or not flags.any():
            return rows, states
        bad = flags != 0
        self.execute(plan.fallback, rows[bad])
        return rows[~bad], {name: np.ascontiguousarray(a[~bad]) for name, a in states.items()}
