"""The sweep of one or more rows side by side: the unrolled main loop over accumulator
sets, a one-vector remainder loop and the masked tail; for reducing passes, blocks
(with their max pre-scan or running exponents) folded into a compensated outer state.

Units may belong to different passes (a pipelined sweep); per-block reductions
(block_max, running) need every unit to run the same pass."""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import numerics
from ..ir import Kind, Op, Pass, Type
from .loopir import I64, i64
from .plan import PassPlan, needed_ops
from .reductions import MAX_IGNORING_NAN, RUNNING_SLACK, PairRunning


@dataclass
class Row:
    """One row inside a pass: its pointers and its row constants as vectors."""
    x: object
    y: object
    splats: dict = field(default_factory=dict)   # row Value -> vector
    shifts: dict = field(default_factory=dict)   # c Value / pair_scale op / acc op -> ExpShift...
    prefetch: int = 0                            # elements ahead to prefetch x (0: none)
    inputs: dict = field(default_factory=dict)   # elementwise operand name -> its row


@dataclass
class Unit:
    """One row of one pass inside a sweep."""
    row: Row
    p: Pass
    plan: PassPlan
    accs: list        # numerics.Accumulator per reduction of p
    lowerings: list   # reductions.Inner per reduction of p
    fast: bool        # exp(x, c) in a fast form (row constants in row.shifts)


class RowSweep:
    def __init__(self, ctx, units: list, nontemporal: bool, lengths: list | None = None):
        """lengths: ragged rows' own lengths, one per unit (ctx.n their longest), or None."""
        self.ctx, self.b, self.vm = ctx, ctx.b, ctx.vm
        self.units, self.nontemporal, self.lengths = units, nontemporal, lengths
        self.plan = units[0].plan   # for block_max and running (one pass then)
        self.i = ctx.var(I64)
        A = ctx.schedule.acc_sets
        self.inner = [[[[ctx.var(t) for t in low.types(self.vm)] for low in u.lowerings] for _ in range(A)]
                      for u in units]

    # --- state in vars ----------------------------------------------------------------------
    def load_states(self, slots):
        return [tuple(self.b.read(s) for s in acc_slots) for acc_slots in slots]

    def store_states(self, slots, states):
        for acc_slots, state in zip(slots, states):
            for s, v in zip(acc_slots, state):
                self.b.write(s, v)

    def set_prefetch(self, elements: int):
        for u in self.units:
            u.row.prefetch = elements

    # --- one sweep over [start, end) ------------------------------------------------------------
    def sweep(self, start, end, body, aligned_stores=False):
        """Vectors [start, end) of every unit (of ragged rows: to each row's own end, the
        rows side by side up to the first of those ends, then each on alone)."""
        if self.lengths is None or len(self.units) == 1:   # (one row: ctx.n is its length)
            self.sweep_units(start, end, body, aligned_stores, range(len(self.units)))
            return
        ctx = self.ctx
        ends = [ctx.minimum(end, length) for length in self.lengths]
        common = ends[0]
        for e in ends[1:]:
            common = ctx.minimum(common, e)
        common = ctx.pick(ctx.cmp("lt", common, start), start, common)   # (a row may end before start)
        self.sweep_units(start, common, body, aligned_stores, range(len(self.units)))
        for r, e in enumerate(ends):
            self.sweep_units(common, e, body, False, (r,))

    def sweep_units(self, start, end, body, aligned_stores, which):
        """Vectors [start, end) of the units `which`: unrolled loop, one-vector loop, masked
        tail.  body(r, acc_set, offset, mask, aligned, loads) emits unit r's vector."""
        ctx, b, i, W, U = self.ctx, self.b, self.i, self.ctx.width, self.ctx.schedule.unroll
        A = ctx.schedule.acc_sets
        b.write(i, start)

        def advance(count: int, aligned: bool):
            base = b.read(i)
            for u in range(count):
                self.step(body, u % A, ctx.int_op("add", base, i64(u * W)) if u else base, None, aligned, which)
            b.write(i, ctx.int_op("add", base, i64(count * W)))

        def fits(count: int):
            return lambda: ctx.cmp("le", ctx.int_op("add", b.read(i), i64(count * W)), end)

        if U > 1:
            b.loop_while(fits(U), lambda: advance(U, aligned_stores), "chunk")
        b.loop_while(fits(1), lambda: advance(1, aligned_stores), "vec")
        if W > 1:   # a partial vector
            b.if_then(ctx.cmp("lt", b.read(i), end),
                      lambda: self.step(body, 0, b.read(i), ctx.tail_mask(b.read(i), end), False, which), "tail")

    def step(self, body, acc_set: int, offset, mask, aligned: bool, which):
        # every unit's loads before any unit's stores: rows a multiple of 4 KB apart
        # would otherwise make each load wait on the store before it (4K aliasing)
        loads = {r: self.preload(self.units[r], offset, mask) for r in which}
        for r in which:
            body(r, acc_set, offset, mask, aligned, loads[r])

    def element_fn(self, block_fast: bool):
        def element(r, a, offset, mask, aligned, loads):
            u = self.units[r]
            states = self.load_states(self.inner[r][a])
            new = self.emit_body(u, offset, states, mask, block_fast, self.nontemporal and aligned, loads)
            self.store_states(self.inner[r][a], new)
        return element

    # --- the whole row ------------------------------------------------------------------------
    def emit(self) -> list:
        """Each unit's reduction states as vectors (lanes not yet merged)."""
        if not any(u.accs for u in self.units):
            self.elementwise()
            return [[] for _ in self.units]
        return Blocks(self).emit()

    def elementwise(self):
        ctx = self.ctx
        self.set_prefetch(ctx.schedule.prefetch // ctx.x_elem.bytes)
        start = i64(0)
        if self.nontemporal:  # plain stores up to the first aligned vector of y: that head
            # may hold more elements than one vector (15 at 4 bytes and 8 lanes)
            start = ctx.aligned_start(self.units[0].row.y, ctx.n)
            self.sweep(i64(0), start, self.element_fn(False))
            ctx.used_nontemporal = True
        self.sweep(start, ctx.n, self.element_fn(False), aligned_stores=self.nontemporal)

    # --- one vector of a pass body ------------------------------------------------------------
    def eval_ops(self, u: Unit, wanted, offset, mask, loads=None) -> dict:
        """Values of `wanted` for one vector: only the ops they depend on (loads, math)."""
        vals = dict(loads or {})
        for op in needed_ops(u.p, wanted):
            if op.results[0] not in vals:
                self.elementwise_op(op, u, offset, mask, vals, fast=False)
        return vals

    def preload(self, u: Unit, offset, mask) -> dict:
        """The loads of one vector of the unit's pass."""
        vals: dict = {}
        for op in u.p.ops:
            if op.kind in (Kind.LOAD_X, Kind.LOAD_Y, Kind.LOAD_IN, Kind.LOAD_KEEP):
                self.elementwise_op(op, u, offset, mask, vals, fast=False)
        return vals

    def elementwise_op(self, op: Op, u: Unit, offset, mask, vals: dict, fast: bool):
        vm, k, row = self.vm, op.kind, u.row
        a = [vals[v] if v in vals else row.splats[v] for v in op.args]
        if k is Kind.LOAD_X:
            out = self.ctx.load(row.x, offset, mask, prefetch=row.prefetch)
        elif k is Kind.LOAD_Y:
            out = self.ctx.load(row.y, offset, mask)
        elif k is Kind.LOAD_IN:
            out = self.ctx.load(row.inputs[op.attrs["name"]], offset, mask)
        elif k is Kind.LOAD_KEEP:
            out = numerics.keep_bias(vm, self.ctx.load(row.inputs[op.attrs["name"]], offset, mask))
        elif k is Kind.KEEP:
            out = numerics.keep(vm, *a, op.attrs["value"])
        elif k is Kind.FILL_EMPTY:
            out = numerics.fill_empty(vm, *a, op.attrs["value"])
        elif k is Kind.INDEX:
            out = vm.index(offset)
        elif k is Kind.CAST:
            out = self.ctx.casts.cast(a[0], op.attrs["from"], op.attrs["to"])
        elif k in (Kind.SUB, Kind.SUB_E):
            out = vm.sub(*a)
        elif k in (Kind.MUL, Kind.MUL_E):
            out = vm.mul(*a)
        elif k is Kind.EXP:
            out = (numerics.exp_scaled(vm, a[0], row.shifts[op.args[1]]) if fast
                   else numerics.exp_diff(vm, *a))
        elif k is Kind.EXP_PAIR:
            out = (numerics.exp_pair_floored if op in u.plan.summed else numerics.exp_pair)(vm, a[0])
        elif k is Kind.SOFTPLUS_POW:
            out = numerics.softplus_pow(vm, a[0], op.attrs["scale"], op.attrs["power"])
        elif k is Kind.SOFTPLUS:
            out = numerics.softplus(vm, a[0], op.attrs["scale"])
        elif k is Kind.PAIR_SCALE:
            out = numerics.pair_scale(vm, *a)
        else:
            raise NotImplementedError(f"lowering: no rule for pass op {op}")
        vals[op.results[0]] = out

    def emit_body(self, u: Unit, offset, states, mask, block_fast: bool, nontemporal: bool, loads: dict):
        """One vector of the pass (its loads already done); returns the new accumulator states."""
        vm, plan, row = self.vm, u.plan, u.row
        vals = dict(loads)
        new_states = []
        fused_x = {}  # pair_scale op -> the x of its fused exp_pair
        for op in u.p.ops:
            if op in plan.skipped or (op.results and op.results[0] in vals):
                continue
            if u.fast and op in plan.fused:
                fused_x[plan.fused[op]] = vals[op.args[0]]
            elif op.kind is Kind.PAIR_SCALE and op in fused_x:
                vals[op.results[0]] = numerics.exp_scaled(vm, fused_x[op], row.shifts[op])
            elif op.kind is Kind.STORE:
                self.ctx.store(vals[op.args[0]], row.y, offset, mask, nontemporal)
            elif op.results and op.results[0].type.is_accumulator:
                k = len(new_states)
                old = states[k]
                new = u.lowerings[k].step(vm, old, *self.step_args(op, u, vals, block_fast))
                if mask is not None:
                    new = tuple(vm.select(mask, n, o) for n, o in zip(new, old))
                new_states.append(new)
            else:
                self.elementwise_op(op, u, offset, mask, vals, u.fast)
        return new_states

    def step_args(self, op: Op, u: Unit, vals: dict, block_fast: bool) -> tuple:
        """The arguments of reduction op's step for one vector."""
        vm, plan, row = self.vm, u.plan, u.row
        if op in plan.block_max:
            return self.block_term(op, row, vals[plan.keys[op]], block_fast)
        if op in plan.running:
            p, k = vals[op.args[0]]
            return ((vm.ldexp(p, vm.sub(k, row.shifts[op])), k),)
        return tuple(vals[v] if v in vals else row.splats[v] for v in op.args)

    def block_term(self, op: Op, row: Row, key, block_fast: bool):
        """The element arguments of a block_max reduction's block sum for one vector of its
        key: e^x * 2^-e (pair), or e^(x - m), x, m (online)."""
        shift, e_or_m = row.shifts[op]
        if op.kind is Kind.ACC_PAIR:
            return (numerics.exp_scaled(self.vm, key, shift),)
        e = numerics.exp_scaled(self.vm, key, shift) if block_fast else numerics.exp_diff(self.vm, key, e_or_m)
        return e, key, e_or_m

    def block_state(self, op: Op, row: Row, merged):
        """A block's lane sums as the accumulator's inner state, for the fold."""
        vm = self.vm
        _, e_or_m = row.shifts[op]
        if op.kind is Kind.ACC_PAIR:
            s = merged[0]
            # a NaN input makes the sum NaN; the exponent carries that to the guard
            return s, vm.select(vm.isnan(s), vm.const(float("nan")), e_or_m)
        return numerics.block_online_state(vm, e_or_m, merged)


class Blocks:
    """A reducing sweep: blocks of ctx.block elements, each folded into the outer state
    (a row of one block skips the fold)."""

    def __init__(self, sweep: RowSweep):
        self.s, self.ctx, self.b, self.vm = sweep, sweep.ctx, sweep.b, sweep.vm
        units, ctx = sweep.units, sweep.ctx
        self.outer = [[[ctx.var(self.vm.ty) for _ in acc.outer_identity] for acc in u.accs] for u in units]
        self.exponents = [[ctx.var(ctx.one.ty, ctx.one.const(float("-inf"))) for _ in sweep.plan.running]
                          for _ in units]
        self.final = [[[ctx.var(self.vm.ty) for _ in acc.identity] for acc in u.accs] for u in units]

    def emit(self) -> list:
        ctx, s = self.ctx, self.s
        self.b.if_then(ctx.cmp("le", ctx.n, i64(ctx.block)), self.one_block_only, "short", else_fn=self.blocks)
        s.set_prefetch(0)
        return [s.load_states(final) for final in self.final]

    def one_block_only(self):
        """A row of one block: folding it into the empty outer state and unfolding
        again would give it back unchanged (compensation zero), so skip both."""
        for final, merged in zip(self.final, self.block(i64(0), self.ctx.n)):
            self.s.store_states(final, merged)

    def blocks(self):
        s, vm, b = self.s, self.vm, self.b
        for u, outer in zip(s.units, self.outer):
            s.store_states(outer, [[vm.const(c) for c in acc.identities(vm.float_format)[1]] for acc in u.accs])
        b.write(s.i, i64(0))
        b.loop_while(lambda: self.ctx.cmp("lt", b.read(s.i), self.ctx.n), self.one_block, "block")
        for u, outer, final in zip(s.units, self.outer, self.final):
            s.store_states(final, [acc.unfold(vm, state) for acc, state in zip(u.accs, s.load_states(outer))])

    def one_block(self):
        ctx, s = self.ctx, self.s
        start = self.b.read(s.i)
        end = ctx.minimum(ctx.int_op("add", start, i64(ctx.block)), ctx.n)
        for u, outer, merged in zip(s.units, self.outer, self.block(start, end)):
            s.store_states(outer, [acc.fold(self.vm, o, m) for acc, o, m
                                   in zip(u.accs, s.load_states(outer), merged)])
        self.b.write(s.i, end)

    def block(self, start, end):
        """The reductions over [start, end) of every unit, as inner states."""
        s, ctx, plan = self.s, self.ctx, self.s.plan
        s.set_prefetch(0)
        block_fast = self.block_max_scan(start, end) if plan.block_max else None
        # the sweep re-reads the block from L1: fetch the next one meanwhile
        s.set_prefetch(ctx.block if plan.block_max else ctx.schedule.prefetch // ctx.x_elem.bytes)
        if plan.running:
            self.seed_exponents(start, end)
            self.b.do_while(lambda: [self.sum_block(start, end, block_fast), self.raise_exponents()][1],
                            "block.again")
        else:
            self.sum_block(start, end, block_fast)
        A = ctx.schedule.acc_sets
        merged = [ctx.tree_merge(u.lowerings, [s.load_states(s.inner[r][a]) for a in range(A)])
                  for r, u in enumerate(s.units)]
        return [[low.finish(self, u.row, m) for low, m in zip(u.lowerings, per_unit)]
                for u, per_unit in zip(s.units, merged)]

    def block_state(self, op, row, merged):
        return self.s.block_state(op, row, merged)

    def sum_block(self, start, end, block_fast):
        s, vm = self.s, self.vm
        for r, u in enumerate(s.units):
            for op, slot in zip(s.plan.running, self.exponents[r]):
                u.row.shifts[op] = vm.splat(self.b.read(slot))
            for a in range(self.ctx.schedule.acc_sets):
                s.store_states(s.inner[r][a], [low.identity(vm) for low in u.lowerings])
        if block_fast is None:
            s.sweep(start, end, s.element_fn(False))
        else:
            self.b.if_then(block_fast, lambda: s.sweep(start, end, s.element_fn(True)), "block.fast",
                           else_fn=lambda: s.sweep(start, end, s.element_fn(False)))

    def block_max_scan(self, start, end):
        """Max of each block_max key over [start, end) per row, then the rows' block constants.
        Returns the condition for the online reductions' fast form (None: no condition)."""
        s, ctx, vm, b, plan = self.s, self.ctx, self.vm, self.b, self.s.plan
        A = ctx.schedule.acc_sets
        keys = [plan.keys[op] for op in plan.block_max]
        neg_inf = vm.const(float("-inf"))
        slots = [[[ctx.var(vm.ty, neg_inf) for _ in keys] for _ in range(A)] for _ in s.units]

        def scan(r, a, offset, mask, aligned, loads):
            vals = s.eval_ops(s.units[r], keys, offset, mask, loads)
            for slot, key in zip(slots[r][a], keys):
                v = vals[key] if mask is None else vm.select(mask, vals[key], neg_inf)
                old = b.read(slot)
                b.write(slot, vm.select(vm.lt(old, v), v, old))  # NaN is caught by the sums

        s.sweep(start, end, scan)
        conds = []
        for r, u in enumerate(s.units):
            for k, op in enumerate(plan.block_max):
                mx = ctx.lane_merge(numerics.ACCUMULATORS[Type.ACC_MAX], (self.max_of_sets(slots[r], k),))[0]
                conds += self.block_constants(op, u.row, mx)
        out = conds[0] if conds else None
        for c in conds[1:]:
            out = ctx.both(out, c)
        return out

    def max_of_sets(self, per_set, k: int):
        vm, b = self.vm, self.b
        vec = b.read(per_set[0][k])
        for other_slots in per_set[1:]:
            other = b.read(other_slots[k])
            vec = vm.select(vm.lt(vec, other), other, vec)
        return vec

    def block_constants(self, op: Op, row: Row, mx) -> list:
        """Row constants of one block_max reduction from its block's max; the conditions
        of its fast form."""
        ctx, one, vm = self.ctx, self.ctx.one, self.vm
        if op.kind is Kind.ACC_PAIR:  # sum e^x * 2^-e, e the block's exponent
            e = numerics.block_exponent(one, mx)
            row.shifts[op] = (numerics.exp_shift(one, one.const(1.0), e, vm.ldexp_is_native).map(vm.splat), vm.splat(e))
            return []
        # sum e^(x - m), m the block's max (the lowest finite value for an all -inf block)
        fmt = one.float_format
        m = numerics.clamp_below(one, mx, -fmt.max)
        row.shifts[op] = (numerics.exp_diff_shift(one, m, vm.ldexp_is_native).map(vm.splat), vm.splat(m))
        return [ctx.in_range(one, m, -fmt.exp_shift_limit, fmt.exp_shift_limit)]

    # --- running pair sums ----------------------------------------------------------------------
    def seed_exponents(self, start, end):
        """At a row's first block, PairRunning starts from the exponent of the largest of
        its first vector (a lower bound of the row's largest), so usual rows need no
        second sum."""
        s, ctx, b, one, vm = self.s, self.ctx, self.b, self.ctx.one, self.vm
        first = ctx.cmp("eq", start, i64(0))
        stop = ctx.int_op("add", start, i64(ctx.width))
        mask = ctx.tail_mask(start, ctx.minimum(stop, end))
        for u, slots in zip(s.units, self.exponents):
            for op, slot in zip(s.plan.running, slots):
                key = s.plan.keys[op]
                v = vm.select(mask, s.eval_ops(u, [key], start, mask)[key], vm.const(float("-inf")))
                top = ctx.lane_merge(MAX_IGNORING_NAN, (v,))[0]
                k0 = numerics.exp_pair_floored(one, top)[1]
                b.write(slot, one.select(first, k0, b.read(slot)))

    def raise_exponents(self):
        """After a block of PairRunning sums: rows whose largest exponent outgrew theirs
        take it; returns whether any did (then the block is summed again)."""
        s, ctx, b, vm, one = self.s, self.ctx, self.b, self.vm, self.ctx.one
        again = None
        for r, u in enumerate(s.units):
            running = [k for k, low in enumerate(u.lowerings) if isinstance(low, PairRunning)]
            for k, slot in zip(running, self.exponents[r]):
                vec = b.read(s.inner[r][0][k][1])
                for per_set in s.inner[r][1:]:
                    other = b.read(per_set[k][1])
                    vec = vm.select(vm.lt(vec, other), other, vec)
                top = ctx.lane_merge(MAX_IGNORING_NAN, (vec,))[0]
                e = b.read(slot)
                grew = one.lt(one.add(e, one.const(RUNNING_SLACK)), top)
                b.write(slot, one.select(grew, top, e))
                again = grew if again is None else b.emit("or", again, grew, ty=grew.ty)
        return again
