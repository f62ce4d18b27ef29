"""Split rows: a call with fewer rows than threads cuts each row into chunks of columns.

Each pass of the kernel's program runs as a chunk kernel (softgen.chunks) over every
(row, chunk) on the pool's threads; between passes the chunks' reduction states are merged
with the accumulator's own merge (numerics.ACCUMULATORS: the one the kernels merge lanes
with) and the program's row ops run on the merged values, here in numpy through the same
numerics recipes (`NumpyMath`).  A guard's rows out of range run its fallback program the
same way.  So a split row computes what the kernel computes, in another order of summation:
within the kernel's tolerance, not bitwise.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from . import numerics
from . import threads as _threads
from .backends.llvm import compile_program
from .chunks import ChunkPass, chunk_passes
from .dtypes import check_dtype
from .ir import DType, Kind, Op, Pass, Program
from .lower import Schedule
from .targets import Target

# chunks start on multiples of this many elements (whole cache lines of y where y's rows
# start on one, for every dtype), so no two threads write to one line
CHUNK_ALIGN = 64


class NumpyMath:
    """numerics' Math on numpy arrays of one compute dtype (a lane per row).  fma rounds
    twice in float64 (numpy has no fused multiply-add); in float32 it is exact through
    float64.  The row recipes use it for exact products only where the product is exact."""

    def __init__(self, dtype: DType):
        self.float_format = numerics.float_format(dtype)
        self.dt = np.dtype(dtype.numpy_name)
        self.it = np.dtype(f"i{self.dt.itemsize}")

    def const(self, v):
        return self.dt.type(v)

    def _f(self, v):
        return np.asarray(v, self.dt)

    def add(self, a, b):
        return self._f(np.add(a, b, dtype=self.dt))

    def sub(self, a, b):
        return self._f(np.subtract(a, b, dtype=self.dt))

    def mul(self, a, b):
        return self._f(np.multiply(a, b, dtype=self.dt))

    def div(self, a, b):
        return self._f(np.divide(a, b, dtype=self.dt))

    def fma(self, a, b, c):
        wide = np.float64
        return self._f(np.asarray(a, wide) * np.asarray(b, wide) + np.asarray(c, wide))

    def maximum(self, a, b):
        return self._f(np.maximum(a, b))

    def fabs(self, a):
        return self._f(np.abs(a))

    def log(self, a):
        return self._f(np.log(a))

    def lt(self, a, b):
        return np.less(a, b)

    def gt(self, a, b):
        return np.greater(a, b)

    def le(self, a, b):
        return np.less_equal(a, b)

    def eq(self, a, b):
        return np.equal(a, b)

    def isnan(self, a):
        return np.isnan(a)

    def isfinite(self, a):
        return np.isfinite(a)

    def select(self, c, a, b):
        return self._f(np.where(c, a, b))

    def mask_or(self, a, b):
        return np.logical_or(a, b)

    def ldexp(self, v, d):
        """v * 2^d, d integer-valued (or +-inf, NaN: as the kernels' ldexp gives)."""
        d = np.asarray(d, self.dt)
        scaled = np.ldexp(v, np.clip(np.nan_to_num(d), -4096, 4096).astype(np.int32))
        return self._f(np.where(np.isnan(d), np.nan, scaled))

    def as_int(self, a):
        return self._f(a).view(self.it)

    def as_float(self, a):
        return np.asarray(a, self.it).view(self.dt)

    def shl(self, a, n: int):
        return np.left_shift(a, n)


@dataclass
class _Rows:
    """The rows a split call is computing: their indices, and the program's row values so far
    (numpy arrays, one entry per row)."""
    index: np.ndarray
    env: dict


class SplitKernel:
    """A kernel's program (and its guards' fallbacks) as chunk kernels for split rows."""

    def __init__(self, program: Program, target: Target, schedule: Schedule, out_dtype: np.dtype):
        self.program, self.target, self.out_dtype = program, target, out_dtype
        self.schedule = Schedule(**{**schedule.to_dict(), "rows_per_group": 1, "pipeline": False})
        self.math = NumpyMath(program.compute)
        self._compiled: dict = {}   # id(program) -> [(ChunkPass, ctypes function)]

    def passes(self, program: Program) -> list:
        if id(program) not in self._compiled:
            fns = []
            for cp in chunk_passes(program):
                compiled = compile_program(cp.program, self.target, self.schedule, jit=True)
                abi = ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * (6 + 2 * len(cp.program.operands)))
                fns.append((cp, abi(compiled.address), compiled))
            self._compiled[id(program)] = fns
        return self._compiled[id(program)]

    def run(self, rows: int, n: int, x: int, x_stride: int, x_itemsize: int, y: int, y_stride: int,
            y_itemsize: int, chunks: int, threads: int) -> None:
        """The kernel on [rows, n] at addresses x and y (row strides in elements), each row in
        `chunks` chunks on up to `threads` threads."""
        call = _Call(self, n, x, x_stride, x_itemsize, y, y_stride, y_itemsize, chunk_bounds(n, chunks), threads)
        with np.errstate(all="ignore"):   # the row math meets inf and NaN as the kernels do
            call.execute(self.program, _Rows(np.arange(rows), {}))


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """`chunks` column ranges covering [0, n), starting on multiples of CHUNK_ALIGN."""
    step = -(-n // chunks // CHUNK_ALIGN) * CHUNK_ALIGN or CHUNK_ALIGN
    starts = list(range(0, n, step))
    return [(s, min(s + step, n)) for s in starts]


@dataclass
class _Call:
    split: SplitKernel
    n: int
    x: int
    x_stride: int
    x_itemsize: int
    y: int
    y_stride: int
    y_itemsize: int
    bounds: list
    threads: int

    def execute(self, program: Program, rows: _Rows) -> None:
        """program's steps on `rows`: passes as chunk kernels, row ops in numpy."""
        chunk_fns = iter(self.split.passes(program))
        for k, step in enumerate(program.steps):
            if isinstance(step, Pass):
                self.run_pass(*next(chunk_fns)[:2], rows)
            elif step.kind is Kind.GUARD:
                rows = self.guard(step, program.steps[k + 1:], rows)
                if rows is None:
                    return
            else:
                self.row_op(step, rows)

    def run_pass(self, cp: ChunkPass, fn, rows: _Rows) -> None:
        """The pass over every (row, chunk); each reduction's chunk states merged into env."""
        dt = self.split.math.dt
        count, chunks = len(rows.index), len(self.bounds)
        inputs = [np.ascontiguousarray(np.broadcast_to(rows.env[v], count), dt) for v in cp.inputs]
        states = {name: np.empty((count, chunks), dt) for _, names in cp.states for name in names}
        operands = [(a, 1) for a in inputs] + [(states[o.name], chunks) for o in cp.program.operands if o.output]
        tasks = []
        for i, row in enumerate(rows.index):
            for c, (c0, c1) in enumerate(self.bounds):
                row = int(row)
                task = [1, c1 - c0, self.x + (row * self.x_stride + c0) * self.x_itemsize, self.x_stride,
                        self.y + (row * self.y_stride + c0) * self.y_itemsize, self.y_stride]
                for a, per_row in operands:
                    task += [a.ctypes.data + (i * per_row + (c if per_row > 1 else 0)) * dt.itemsize, 0]
                tasks.append(task)
        _threads.run_tasks(fn, tasks, self.threads)
        for acc, names in cp.states:
            merge = numerics.ACCUMULATORS[acc.type].merge
            state = tuple(states[name][:, 0] for name in names)
            for c in range(1, chunks):
                state = merge(self.split.math, state, tuple(states[name][:, c] for name in names))
            rows.env[acc] = state

    def guard(self, op: Op, rest: list, rows: _Rows) -> _Rows | None:
        """The rows in range go on (returned); the others run the fallback program."""
        m = self.split.math
        ok = np.ones(len(rows.index), bool)
        for v, (lo, hi) in zip(op.args, op.attrs["ranges"]):
            ok &= (m.const(lo) <= rows.env[v]) & (rows.env[v] <= m.const(hi))
        if not ok.all():
            self.execute(op.attrs["fallback"], _Rows(rows.index[~ok], {}))
        if not ok.any():
            return None
        return _Rows(rows.index[ok], {v: _take(a, ok) for v, a in rows.env.items()})

    def row_op(self, op: Op, rows: _Rows) -> None:
        """A row op on the rows' values (a store writes them to y)."""
        env, values = rows.env, [rows.env[v] for v in op.args]
        if op.kind is Kind.CAST_ROW:
            env[op.results[0]] = np.asarray(values[0]).astype(check_dtype(op.attrs["to"]))
        elif op.kind is Kind.STORE_ROW:
            out = np.ascontiguousarray(np.broadcast_to(values[0], len(rows.index)), self.split.out_dtype)
            for i, row in enumerate(rows.index):
                ctypes.memmove(self.y + int(row) * self.y_stride * self.y_itemsize, out.ctypes.data + i * out.itemsize,
                               out.itemsize)
        else:
            env.update(zip(op.results, numerics.row_op(self.split.math, op, values)))


def _take(value, rows: np.ndarray):
    """The entries of `rows` of a row value (an array, a scalar for every row, or a state)."""
    if isinstance(value, tuple):
        return tuple(_take(v, rows) for v in value)
    return value[rows] if np.ndim(value) else value
