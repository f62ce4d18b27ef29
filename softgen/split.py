"""Split rows: a call with fewer rows than threads cuts each row into chunks of columns.

The kernel's program runs as its chunk kernels (softgen.chunks): each pass over every
(row, chunk) on the pool's threads, storing the chunks' reduction states; the merge kernel
folds them into one state per row (the accumulator's own merge, the one the kernels merge
lanes with); the next pass reads the merged states.  Rows a guard flags run the fallback
program's chunk kernels the same way.  A split row computes what the kernel computes, in
another order of summation: within the kernel's tolerance, not bitwise.

The states of a call live in one array [operand, row, chunk] (chunk 0: merged).  A call
runs as one job of the pool (softgen.threads.run_steps): its steps (each pass's tasks,
each merge, the finish) in one int64 table made from a template kept per call shape.  The
job's memory (table and states) is kept too, one per caller at a time: a call takes one
an earlier call of its shape left, and one native call (softgen_patch) writes its table
from the template and the call's addresses (x, y, operands).  A guard's flag stops the
job after the pass writing it; the flagged rows then run the fallback's plan, the others
the rest of their own.
"""
from __future__ import annotations

import ctypes
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import threads as _threads
from .backends.llvm import compile_program
from .chunks import FLAG, ChunkedProgram, chunked
from .ir import Program
from .lower import Schedule
from .targets import Target
from .threads import HELP, STEP_ARG_BYTES, STEP_ARGS, STEP_FLAG_BYTES, STEP_FLAG_ROWS, STEP_FLAG_STRIDE, \
    STEP_FLAGS, STEP_FN, STEP_INVOKE, STEP_TABLE, STEP_TASKS, STEPS, STOPPED

# the plans kept per kernel (one per call shape; a program cycling through more shapes
# builds them again)
MAX_PLANS = 32
# where a slot of a plan's table adds its offset: to nothing, the table's own address (its
# steps and the call's states are in it), x, y, the call's own operand j (OPERAND + j);
# STATES (the call's states) while a plan is laid out, then TABLE
CONSTANT, TABLE, X, Y, OPERAND, STATES = 0, 1, 2, 3, 4, -1

# chunks start on multiples of this many elements (whole cache lines of y where y's rows
# start on one, for every dtype), so no two threads write to one line
CHUNK_ALIGN = 64


def state_addresses(states: np.ndarray):
    """address(k, row, column): where states[k, row, column] is in a contiguous [operand,
    row, chunk] array (its base read once: numpy takes a microsecond to give it)."""
    _, rows, chunks = states.shape
    base, size = states.__array_interface__["data"][0], states.itemsize
    return lambda k, row, column: base + ((k * rows + row) * chunks + column) * size


def merge_chunk(entry: "_Entry", states: np.ndarray, other: int) -> None:
    """A merge kernel's call folding every row's chunk `other` into its chunk 0 now, in a
    contiguous [operand, row, chunk] array (the task a plan's merge step runs)."""
    _, rows, columns = states.shape
    entry.fn(*_merge_task(entry, rows, columns, other, state_addresses(states)))


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """At most `chunks` column ranges covering [0, n), starting on multiples of CHUNK_ALIGN."""
    step = max(CHUNK_ALIGN, -(-n // chunks // CHUNK_ALIGN) * CHUNK_ALIGN)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


@dataclass(frozen=True)
class _Entry:
    """A chunk kernel ready to call: its function (and its code's address) and its operands
    as (index in the call's state array, output?) pairs, or (None, j) for the call's own row
    operand j; `flags`: whether its guard writes the operand `flag`."""
    fn: object
    address: int
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
        self._plans: dict = {}      # by a call's _Shape but `elementwise`: (the _Shape, the top plan)

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
            address = self.address_of(self.plan, program)
            return _Entry(abi(address), address, operands, plan.flags(program))
        return _Layout(plan, names, tuple(map(entry, plan.passes)), tuple(map(entry, plan.merges)),
                       entry(plan.finish), plan.fallback and self.layout(plan.fallback))

    def run(self, rows: int, n: int, x: int, x_stride: int, x_itemsize: int, y: int, y_stride: int,
            y_itemsize: int, chunks: int, threads: int, operands: tuple = ()) -> None:
        """The kernel on [rows, n] at addresses x and y (row strides in elements), with its
        operands (address, stride, itemsize: a value per row, or elementwise a row of them),
        each row in up to `chunks` chunks, on up to `threads` threads."""
        key = (rows, n, chunks, x_stride, x_itemsize, y_stride, y_itemsize,
               tuple([(stride, itemsize) for _, stride, itemsize in operands]) if operands else ())
        shape, plan = self._plans.get(key) or self._new_plan(key)
        call = _Call(shape, threads, self.dtype, (x, y, *[address for address, _, _ in operands]))
        call.execute(self.layout(), list(range(rows)), plan)

    def _new_plan(self, key: tuple) -> tuple:
        """(the call shape, its plan) for a call of `key`: kept."""
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        shape = _Shape(*key, self.elementwise)
        kept = self._plans[key] = shape, _plan(self.layout(), shape, range(shape.rows), 0, self.dtype.itemsize)
        return kept


class _Shape(NamedTuple):
    """A call's shape: what its plan depends on (besides the kernel)."""
    rows: int
    n: int
    chunks: int
    x_stride: int
    x_itemsize: int
    y_stride: int
    y_itemsize: int
    operands: tuple           # the program's own: (stride, itemsize)
    elementwise: frozenset    # which of them are elementwise (a row of elements)


@dataclass(frozen=True)
class _Plan:
    """A call's job as one int64 table: the job's fields, its steps' headers, their tasks'
    arguments (each slot offset + the call's bases[base]: softgen_patch), then room for the
    call's states [operand, row, chunk].  `free`: memories of calls done with them, for
    the next calls to take."""
    offset: np.ndarray
    base: np.ndarray
    steps: int
    ends: tuple      # per step: the pass whose merges it ends (len(passes): the finish)
    states: tuple    # the states' shape
    memory: type     # a ctypes array of the table's and the states' int64s, and a line more (to align them)
    bases: type      # a ctypes array of the bases: CONSTANT's, TABLE's, X's, Y's, the operands'
    template: tuple  # softgen_patch's arguments: offset's and base's addresses, their length
    free: list = dataclasses.field(default_factory=list)


def _plan(layout: _Layout, shape: _Shape, rows, first: int, size: int) -> _Plan:
    """layout's steps from pass `first` on, over `rows` (their indices in the call, the
    state array's rows in that order): each pass over every (row, chunk), then its merges
    of each chunk's states into chunk 0's; the finish's one task per row.  The guard's
    flags are checked after the last step of the pass (or finish) writing them."""
    bounds = chunk_bounds(shape.n, shape.chunks)

    def state(k, i, c):
        return STATES, ((k * len(rows) + i) * len(bounds) + c) * size
    steps = []   # (entry, tasks, the pass it ends)
    for k in range(first, len(layout.passes)):
        entry, merge = layout.passes[k], layout.merges[k]
        steps.append((entry, [_pass_task(entry, shape, row, c0, c1, lambda j, out: state(j, i, c if out else 0))
                              for i, row in enumerate(rows) for c, (c0, c1) in enumerate(bounds)], k))
        if merge is not None:
            steps += [(merge, [_merge_task(merge, len(rows), len(bounds), c, state)], k) for c in range(1, len(bounds))]
    if layout.finish is not None and first <= len(layout.passes):
        steps.append((layout.finish, [_finish_task(layout.finish, shape, row, lambda j, _: state(j, i, 0))
                                      for i, row in enumerate(rows)], len(layout.passes)))
    flags = {}
    if FLAG in layout.names:
        flags = {STEP_FLAGS: state(layout.names.index(FLAG), 0, 0), STEP_FLAG_ROWS: len(rows),
                 STEP_FLAG_STRIDE: len(bounds) * size, STEP_FLAG_BYTES: size}
    checked = {s for s, (_, _, end) in enumerate(steps)
               if (s + 1 == len(steps) or steps[s + 1][2] != end) and _flagged(layout, end)}
    return _table(steps, {s: flags for s in checked}, (len(layout.names), len(rows), len(bounds)), size,
                  OPERAND + len(shape.operands))


def _flagged(layout: _Layout, end: int) -> bool:
    """Whether pass `end` (len(passes): the finish) writes the guard's flags."""
    return (layout.passes[end] if end < len(layout.passes) else layout.finish).flags


def _table(steps: list, flags: dict, states: tuple, size: int, bases: int) -> _Plan:
    """The job's fields, the steps' headers, then their tasks' arguments, as one table's
    slots (their offsets added to one of `bases` bases); the states after them."""
    native = _threads.native_functions()
    slots = [0] * (_threads.JOB_SLOTS + len(steps) * _threads.STEP_SLOTS)
    job = {HELP: native.steps, STEPS: len(steps), STEP_TABLE: (TABLE, 8 * _threads.JOB_SLOTS), STOPPED: len(steps)}
    for field, value in job.items():
        slots[field] = value
    for s, (entry, tasks, _) in enumerate(steps):
        arity = len(tasks[0])
        header = {STEP_INVOKE: native.call(arity), STEP_FN: entry.address, STEP_TASKS: len(tasks),
                  STEP_ARGS: (TABLE, 8 * len(slots)), STEP_ARG_BYTES: 8 * arity, **flags.get(s, {})}
        for field, value in header.items():
            slots[_threads.JOB_SLOTS + s * _threads.STEP_SLOTS + field] = value
        slots += [value for task in tasks for value in task]
    states_at = 8 * len(slots)
    pairs = [(TABLE, states_at + value[1]) if isinstance(value, tuple) and value[0] == STATES else
             value if isinstance(value, tuple) else (CONSTANT, value) for value in slots]
    memory = ctypes.c_int64 * (len(slots) + -(-math.prod(states) * size // 8) + _threads.CACHE_LINE // 8)
    offset, base = np.array([o for _, o in pairs], np.int64), np.array([b for b, _ in pairs], np.int64)
    return _Plan(offset, base, len(steps), tuple(end for _, _, end in steps), states, memory,
                 ctypes.c_int64 * bases, (offset.ctypes.data, base.ctypes.data, len(offset)))


def _own_operand(shape: _Shape, j: int, row: int, column: int) -> tuple:
    """Own operand j's slot for `row` (at `column` of an elementwise one's row)."""
    stride, itemsize = shape.operands[j]
    return OPERAND + j, (row * stride + (column if j in shape.elementwise else 0)) * itemsize


def _pass_task(entry: _Entry, shape: _Shape, row: int, c0: int, c1: int, state) -> list:
    """A pass over one row's chunk [c0, c1): one row per call, operands at stride 0."""
    task = [1, c1 - c0, (X, (row * shape.x_stride + c0) * shape.x_itemsize), shape.x_stride,
            (Y, (row * shape.y_stride + c0) * shape.y_itemsize), shape.y_stride]
    for k, which in entry.operands:
        task += [_own_operand(shape, which, row, c0) if k is None else state(k, which), 0]
    return task


def _merge_task(entry: _Entry, rows: int, columns: int, other: int, state) -> list:
    """The merge of every row's chunk `other` into its chunk 0: operands a (chunk 0), b
    (other), m (chunk 0), at a row stride of the chunk count."""
    third = len(entry.operands) // 3
    task = [rows, 0, 0, 0, 0, 0]
    for j, (k, _) in enumerate(entry.operands):
        task += [state(k, 0, other if third <= j < 2 * third else 0), columns]
    return task


def _finish_task(entry: _Entry, shape: _Shape, row: int, state) -> list:
    """The finish of one row: y[row] from its merged states."""
    task = [1, 0, 0, 0, (Y, row * shape.y_stride * shape.y_itemsize), 0]
    for k, which in entry.operands:
        task += [_own_operand(shape, which, row, 0) if k is None else state(k, which), 0]
    return task


@dataclass
class _Call:
    shape: _Shape
    threads: int
    dtype: np.dtype
    addresses: tuple   # x, y, then the own operands'

    def execute(self, layout: _Layout, rows: list, plan: _Plan | None = None) -> None:
        """layout's plan on `rows` (their indices); the rows a guard flags through the
        fallback's plan, the others on from the pass after the guard's."""
        plan = plan or _plan(layout, self.shape, rows, 0, self.dtype.itemsize)
        stopped, states = self.run(plan)
        while stopped is not None:
            rows, states = self.fall_back(layout, rows, states)
            if not rows:
                return
            plan = _plan(layout, self.shape, rows, plan.ends[stopped] + 1, self.dtype.itemsize)
            if not plan.steps:
                return
            stopped, states = self.run(plan, states)

    def run(self, plan: _Plan, states: np.ndarray | None = None) -> tuple:
        """plan's steps as one job, the states of earlier passes given: (None, None) when
        done, else (the step after which a flag stopped it, the states).  The job's memory
        is one a call done with it left (or new), its table patched from the template."""
        memory = plan.free.pop() if plan.free else plan.memory()
        skip = _threads.first_line(memory)
        job = ctypes.addressof(memory) + 8 * skip
        bases = plan.bases(0, job, *self.addresses)
        _threads.native_functions().patch(job, *plan.template, bases)
        if states is not None:
            self.states(memory, plan, skip)[...] = states
        _threads.run_steps(job, min(self.threads, plan.states[1] * plan.states[2]))
        stopped = memory[skip + STOPPED]
        if stopped == plan.steps:
            plan.free.append(memory)
            return None, None
        return stopped, self.states(memory, plan, skip)

    def states(self, memory, plan: _Plan, skip: int) -> np.ndarray:
        """The call's states in the job's memory (after its table)."""
        at = 8 * (skip + len(plan.offset))
        return np.frombuffer(memory, self.dtype, math.prod(plan.states), at).reshape(plan.states)

    def fall_back(self, layout: _Layout, rows: list, states: np.ndarray) -> tuple:
        """The rows flagged run the fallback plan; the others, and their states, go on."""
        bad = states[layout.names.index(FLAG), :, 0] != 0
        self.execute(layout.fallback, [row for row, b in zip(rows, bad) if b])
        return [row for row, b in zip(rows, bad) if not b], states[:, ~bad]
