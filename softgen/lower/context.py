"""The state every lowering step shares: the loop-IR builder, the kernel's parameters,
the vector math, the group being lowered, and memory access by element offset."""
from __future__ import annotations

from dataclasses import dataclass

from .. import numerics
from ..ir import RESERVED_NAMES, DType, Operand
from .capabilities import Capabilities
from .casts import Casts, storage_ty
from .loopir import I64, PTR, Builder, Const, Kernel, Ty, Val, array_ty, bool_ty, float_ty, i64, int_ty
from .loopmath import LoopMath
from .schedule import Schedule

VECTOR_ALIGN = 64  # bytes: an aligned full-width store may be non-temporal
PARAMS = RESERVED_NAMES


@dataclass(frozen=True)
class RowPtr:
    """The start of one row of x or y, and the type its elements have in memory."""
    ptr: Val
    elem: Ty


class Context:
    def __init__(self, name: str, caps: Capabilities, schedule: Schedule, dtypes: tuple[DType, DType, DType],
                 operands: tuple[Operand, ...] = ()):
        self.caps, self.schedule = caps, schedule
        self.x_dtype, compute, self.y_dtype = dtypes
        self.compute = compute
        self.width = caps.lanes(compute)
        self.x_elem, self.y_elem = storage_ty(caps, self.x_dtype, 1), storage_ty(caps, self.y_dtype, 1)
        # a row operand holds a compute value per row, an integer one an int64
        self.operand_elem = {o.name: I64 if o.integer else float_ty(compute.bits) for o in operands}
        names = PARAMS + tuple(p for o in operands for p in (o.name, o.name + "_stride"))
        types = (I64, I64, PTR, I64, PTR, I64) + (PTR, I64) * len(operands)
        self.kernel = Kernel(name, [Val(k, t, p) for k, (t, p) in enumerate(zip(types, names))])
        params = self.kernel.params[len(PARAMS):]
        self.operands = {o.name: (params[2 * k], params[2 * k + 1]) for k, o in enumerate(operands)}
        self.elementwise = [o.name for o in operands if o.elementwise]
        # a boolean operand holds a byte per element; the others x's elements
        self.input_elem = {o.name: int_ty(8) if o.boolean else self.x_elem for o in operands if o.elementwise}
        self.b = Builder(self.kernel)
        self.casts = Casts(self.b, caps, self.width)
        self.vm = LoopMath(self.b, float_ty(compute.bits, self.width), numerics.float_format(compute),
                           caps.native_ldexp)
        self.one = self.vm.with_width(1)  # scalar math of one row (block constants)
        self.rows, self.n, self.x, self.xs, self.y, self.ys = self.kernel.params[:len(PARAMS)]
        self.used_nontemporal = False
        self.first = None  # first row of the group being lowered (i64)
        self.length_name = None  # ragged rows: the operand of their lengths (Program.length)
        self.fill = None         # ragged rows with an output row: y's value past each length
        self.rm = None     # row math: one lane per row of the group

    @property
    def group(self) -> int:
        return self.rm.width

    @property
    def block(self) -> int:
        """Elements per reduction block (the schedule's, at most SUM_CHAIN per accumulator lane)."""
        return numerics.reduction_block(self.schedule.block, self.width, self.schedule.acc_sets)

    # --- integers and control flow ------------------------------------------------------
    def var(self, ty, init=None):
        return self.b.var(ty, init)

    def int_op(self, op: str, a, b):
        return self.b.emit(op, a, b, ty=I64)

    def cmp(self, op: str, a, b):
        return self.b.emit(op, a, b, ty=bool_ty())

    def both(self, a, b):
        return self.b.emit("and", a, b, ty=a.ty)

    def pick(self, cond, a, b):
        return self.b.emit("select", cond, a, b, ty=a.ty)

    def minimum(self, a, b):
        return self.pick(self.cmp("lt", a, b), a, b)

    def count_loop(self, count: int, body_fn, name: str, step: int = 1):
        """body_fn(j) for j in [0, count) by `step`: straight-line for one step, else a loop."""
        if count == step:
            body_fn(i64(0))
            return
        b = self.b
        j = self.var(I64, i64(0))

        def body():
            body_fn(b.read(j))
            b.write(j, self.int_op("add", b.read(j), i64(step)))
        b.loop_while(lambda: self.cmp("lt", b.read(j), i64(count)), body, name)

    def all_lanes(self, conds):
        """True when every condition holds in every lane (conds: bools with a lane per row)."""
        out = conds[0]
        for c in conds[1:]:
            out = self.both(out, c)
        return self.b.emit("all", out, ty=bool_ty()) if self.group > 1 else out

    def in_range(self, m: LoopMath, v, lo: float, hi: float):
        return self.both(m.le(m.const(lo), v), m.le(v, m.const(hi)))

    # --- memory -------------------------------------------------------------------------
    def row_x(self, j, first=None) -> RowPtr:
        """Row `first + j` of x (first: the group's first row by default)."""
        return self._row(RowPtr(self.x, self.x_elem), self.xs, j, first)

    def row_y(self, j, first=None) -> RowPtr:
        return self._row(RowPtr(self.y, self.y_elem), self.ys, j, first)

    def row_operand(self, name: str, j, at: int = 0) -> RowPtr:
        """Row operand `name`'s value for row first + j (value `at` of the row's, for an
        operand of several values per row)."""
        ptr, stride = self.operands[name]
        row = self._row(RowPtr(ptr, self.operand_elem[name]), stride, j, None)
        return RowPtr(self.element_ptr(row, i64(at)), row.elem) if at else row

    def row_input(self, name: str, j, first=None) -> RowPtr:
        """Row first + j of the elementwise operand `name` (laid out as x)."""
        ptr, stride = self.operands[name]
        return self._row(RowPtr(ptr, self.input_elem[name]), stride, j, first)

    def row_length(self, j, first):
        """Row first + j's length: n, or for ragged rows its own clamped to [0, n]."""
        if self.length_name is None:
            return self.n
        ptr, stride = self.operands[self.length_name]
        row = self._row(RowPtr(ptr, I64), stride, j, first)
        length = self.b.emit("load", row.ptr, ty=I64, align=I64.bytes)
        return self.minimum(self.pick(self.cmp("lt", length, i64(0)), i64(0), length), self.n)

    def _row(self, base: RowPtr, stride, j, first) -> RowPtr:
        row = self.int_op("add", self.first if first is None else first, j)
        return RowPtr(self.element_ptr(base, self.int_op("mul", row, stride)), base.elem)

    def element_ptr(self, row: RowPtr, offset):
        return self.b.emit("gep", row.ptr, offset, ty=PTR, elem=row.elem)

    def tail_mask(self, start, end):
        """Lanes below end - start (at most a vector's worth)."""
        return self.b.emit("lanes_below", self.int_op("sub", end, start), ty=bool_ty(self.width))

    def aligned_start(self, row: RowPtr, n):
        """Elements before the first VECTOR_ALIGN-aligned address of the row (at most n)."""
        skip = self.b.emit("align_skip", row.ptr, ty=I64, align=VECTOR_ALIGN, elem=row.elem)
        return self.minimum(skip, n)

    def load(self, row: RowPtr, offset, mask, prefetch: int = 0):
        """A vector of the row's elements as they are stored (a cast follows where they are
        not the compute dtype)."""
        b = self.b
        ty = row.elem.vector(self.width)
        ptr = self.element_ptr(row, offset)
        if mask is None:
            if prefetch:
                b.emit("prefetch", self.element_ptr(row, self.int_op("add", offset, i64(prefetch))))
            return b.emit("load", ptr, ty=ty, align=row.elem.bytes)
        return b.emit("masked_load", ptr, mask, ty=ty)

    def store(self, value, row: RowPtr, offset, mask, nontemporal):
        ptr = self.element_ptr(row, offset)
        if mask is not None:
            self.b.emit("masked_store", ptr, value, mask)
        elif nontemporal:
            # streaming stores start at a VECTOR_ALIGN boundary and go on a vector at a time
            self.b.emit("store", ptr, value, align=min(VECTOR_ALIGN, row.elem.bytes * self.width),
                        nontemporal=True)
        else:
            self.b.emit("store", ptr, value, align=row.elem.bytes)

    # --- row values inside the per-row loops ----------------------------------------------
    def row_table(self, v):
        """A row value readable per row inside the row loop: itself for one row, else kept
        in a var (then one broadcast load per row)."""
        if self.group == 1:
            return v
        return self.var(self.rm.ty, v)

    def row_splat(self, table, j):
        if self.group == 1:
            return self.vm.splat(table)
        return self.vm.splat(self.b.emit("read_at", table, j, ty=self.vm.ty.scalar))

    def results_var(self):
        """Per row of the group: one vector of a reduction's lane state."""
        return self.var(array_ty(self.vm.ty, self.group))

    def true(self) -> Const:
        return Const(bool_ty(), 1)
