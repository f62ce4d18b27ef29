"""One pass over a row group: its exp form picked per group, its row constants, the sweep
of its rows, and the merge of their reductions into row values.

The exp forms (numerics has the recipes; lower.plan says which ops have one):
  exact    exp_diff / exp_pair: always right;
  shifted  exp_scaled with row constants from c, no x - c TwoSum: while |c| is in range;
  folded   the shift's exponent folded into the scale: while |c| is small.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import numerics
from ..ir import Kind, Op, Pass, Type, nan_caught
from .context import Context
from .loopir import I64, i64
from .plan import PassPlan, plan_pass
from .reductions import BlockSum, Inner, MaxNaNMask, MaxSkippingNaN, PairRunning
from .sweep import Row, RowSweep, Unit

FORMS = ("folded", "shifted", "exact")


@dataclass
class PassSetup:
    """What a pass needs before its rows are swept (shared by every form)."""
    p: Pass
    plan: PassPlan
    accs: list
    results: list     # per reduction and state component: every row's final lane state (vars)
    row_values: list  # row Values the pass reads
    rows_side_by_side: int
    nontemporal: bool
    is_output: bool   # the last pass: ragged rows' y past their lengths is filled after it


class PassLowering(Context):
    def plan_of(self, p: Pass) -> PassPlan:
        s = self.schedule
        return plan_pass(p, fast_exp=s.fast_exp, online_block_max=s.online_block_max, pair_sum=s.pair_sum)

    def emit_pass(self, p: Pass, env: dict, is_output: bool):
        """One pass over the group's rows, its form picked per group."""
        setup = self.pass_setup(p, is_output)

        def emit(form: str):
            tables = self.pass_tables(setup, env, form)
            self.count_loop(self.group, lambda j0: self.sweep_rows([(setup, tables, self.first)], j0, form),
                            "rowpass", setup.rows_side_by_side)

        if setup.plan.has_fast_form:
            self.pick_form(lambda form: self.form_ok(setup, env, form), emit)
        else:
            emit("exact")
        self.pass_finish(setup, env)

    def pick_form(self, condition, emit, fallback=None, name: str = ""):
        """emit(form) under the first form whose condition holds: folded, shifted, then
        exact (or fallback())."""
        def chain(k: int):
            if k == 2:
                return fallback() if fallback else emit("exact")
            self.b.if_then(condition(FORMS[k]), lambda: emit(FORMS[k]), name + FORMS[k],
                           else_fn=lambda: chain(k + 1))
        chain(0)

    def pass_setup(self, p: Pass, is_output: bool) -> PassSetup:
        plan = self.plan_of(p)
        accs = [numerics.accumulator(op) for op in p.reductions]
        step = min(self.schedule.interleave, self.group)
        if self.length_name and (plan.block_max or plan.running):
            step = 1   # ragged rows side by side need reductions without per-block constants

        return PassSetup(
            p, plan, accs,
            results=[[self.results_var() for _ in acc.identity] for acc in accs],
            row_values=list(dict.fromkeys(v for op in p.ops for v in op.args if v.type is Type.ROW)),
            rows_side_by_side=step,
            nontemporal=(self.schedule.nontemporal and is_output and not accs and step == 1
                         and any(op.kind is Kind.STORE for op in p.ops)),
            is_output=is_output)

    def form_ok(self, setup: PassSetup, env: dict, form: str):
        """Whether every row of the group may run the pass in `form`."""
        if form == "exact" or not setup.plan.has_fast_form:
            return self.true()
        # |c| * log2(e) + 1/2 within EXP_FOLD_LIMIT: the shift's exponent may be folded
        fmt = self.vm.float_format
        c_limit, e_limit = (((fmt.exp_fold_limit - 1) / fmt.log2e, fmt.exp_fold_limit)
                            if form == "folded" else (fmt.exp_shift_limit, fmt.pair_exp_limit))
        rm, plan = self.rm, setup.plan
        return self.all_lanes(
            [self.in_range(rm, env[c], -c_limit, c_limit) for c in plan.exp_shifts] +
            [self.in_range(rm, env[s.args[2]], -e_limit, e_limit) for s in plan.fused.values()])

    def pass_tables(self, setup: PassSetup, env: dict, form: str):
        """The pass's row constants, readable per row: (row value tables, exp shift tables).
        The exp shifts put the row's scale where the element math's ldexp wants it
        (numerics.ExpShift)."""
        rm, plan = self.rm, setup.plan
        tables = {v: self.row_table(env[v]) for v in setup.row_values}
        shift_tables = {}
        if form != "exact":
            folded = form == "folded"
            in_coeffs = self.vm.ldexp_is_native
            for c in plan.exp_shifts:
                recipe = numerics.exp_diff_shift_folded if folded else numerics.exp_diff_shift
                shift_tables[c] = recipe(rm, env[c], in_coeffs).map(self.row_table)
            for scale_op in plan.fused.values():
                _, c, e = scale_op.args
                recipe = numerics.exp_shift_folded if folded else numerics.exp_shift
                shift_tables[scale_op] = recipe(rm, env[c], env[e], in_coeffs).map(self.row_table)
        return tables, shift_tables

    def units_of(self, setup: PassSetup, tables, first, j0, form: str) -> list:
        """The rows j0 .. j0 + rows_side_by_side - 1 of one pass, as sweep units."""
        row_tables, shift_tables = tables
        lowerings = [self.inner_lowering(op, acc, setup.plan) for op, acc in zip(setup.p.reductions, setup.accs)]
        units = []
        for d in range(setup.rows_side_by_side):
            j = self.int_op("add", j0, i64(d)) if d else j0
            row = Row(self.row_x(j, first), self.row_y(j, first),
                      {v: self.row_splat(t, j) for v, t in row_tables.items()},
                      {k: t.map(lambda v: self.row_splat(v, j)) for k, t in shift_tables.items()},
                      inputs={name: self.row_input(name, j, first) for name in self.elementwise})
            fast = form != "exact" and setup.plan.has_fast_form   # a fused sweep may mix passes
            units.append((Unit(row, setup.p, setup.plan, setup.accs, lowerings, fast), j))
        return units

    def sweep_rows(self, passes: list, j0, form: str):
        """Rows j0 .. of each (setup, tables, first row) in `passes`, in one sweep; their
        reduction states go to each setup's result vars."""
        units, where, lengths = [], [], []
        for setup, tables, first in passes:
            for unit, j in self.units_of(setup, tables, first, j0, form):
                units.append(unit)
                where.append((setup, j, first))
                lengths.append(self.row_length(j, first) if self.length_name else None)
        nontemporal = len(units) == 1 and passes[0][0].nontemporal
        full = self.n
        if self.length_name:   # ragged rows: the sweep goes to the longest, each row to its own end
            self.n = lengths[0]
            for length in lengths[1:]:
                self.n = self.pick(self.cmp("lt", self.n, length), length, self.n)
        sweep = RowSweep(self, units, nontemporal, lengths if self.length_name else None)
        for (setup, j, _), states in zip(where, sweep.emit()):
            for results, state in zip(setup.results, states):
                for var, v in zip(results, state):
                    self.b.emit("write_at", var, j, v)
        self.n = full
        if self.fill is not None:
            # right after its output pass, not after the group's: a row's fill allocates
            # its lines (read for ownership) while the next rows' sweeps run
            for (setup, j, first), length in zip(where, lengths):
                if setup.is_output:
                    self.fill_y(j, first, length)

    def fill_y(self, j, first, length):
        """Ragged row first + j: y past its length = self.fill.  One vector at the length,
        then vectors from the next multiple of the width (aligned where the row is, and no
        tail where n is a multiple of it: causal rows of 128, 16 lanes, ran 12% faster than
        with every vector from the length), a masked tail."""
        b, W, end = self.b, self.width, self.n
        v = self.casts.cast(self.vm.const(self.fill), self.compute, self.y_dtype)
        row, i = self.row_y(j, first), self.var(I64, length)

        def fits():
            return self.cmp("le", self.int_op("add", b.read(i), i64(W)), end)

        def store_to(next_of):   # a vector at i, then i = next_of(i)
            self.store(v, row, b.read(i), None, False)
            b.write(i, next_of(self.int_op("add", b.read(i), i64(W))))
        b.if_then(fits(), lambda: store_to(lambda k: self.int_op("mul", self.int_op("udiv", k, i64(W)), i64(W))),
                  "fill.first")
        b.loop_while(fits, lambda: store_to(lambda k: k), "fill")
        if W > 1:
            b.if_then(self.cmp("lt", b.read(i), end),
                      lambda: self.store(v, row, b.read(i), self.tail_mask(b.read(i), end), False), "fill.tail")

    def pass_finish(self, setup: PassSetup, env: dict):
        """The pass's reductions, their rows merged lane-wise, into env."""
        for op, acc, results in zip(setup.p.reductions, setup.accs, setup.results):
            per_row = [tuple(self.b.emit("read_at", var, i64(j), ty=self.vm.ty) for var in results)
                       for j in range(self.group)]
            env[op.results[0]] = self.merge_rows(acc, per_row)

    def inner_lowering(self, op: Op, acc: numerics.Accumulator, plan: PassPlan) -> Inner:
        if op in plan.block_max:
            return BlockSum(acc, op)
        if op in plan.running:
            return PairRunning(acc, op)
        if op.kind is Kind.ACC_MAX and self.caps.nan_ignoring_max:
            return MaxSkippingNaN(acc) if nan_caught(op) else MaxNaNMask(acc, self.caps.mask_registers)
        return Inner(acc)

    # --- merges ---------------------------------------------------------------------------
    def tree_merge(self, lowerings, per_set):
        """Merge the accumulator sets pairwise into one."""
        while len(per_set) > 1:
            nxt = [[low.merge(self.vm, a, c) for low, a, c in zip(lowerings, s1, s2)]
                   for s1, s2 in zip(per_set[::2], per_set[1::2])]
            per_set = nxt + ([per_set[-1]] if len(per_set) % 2 else [])
        return per_set[0]

    def shuffle(self, u, v, lanes: list):
        return self.b.emit("shuffle", u, v, ty=u.ty.vector(len(lanes)), lanes=tuple(lanes))

    def lane_merge(self, acc, state):
        """Reduce one vector state to a scalar state, halving the lanes each step (or, where
        the target has no narrower vectors, merging each lane with its swapped partner)."""
        if not self.caps.narrow_vectors:
            return self.lane_merge_by_swaps(acc, state)
        width = self.width
        while width > 1:
            half = width // 2
            lo = tuple(self.shuffle(v, v, list(range(half))) for v in state)
            hi = tuple(self.shuffle(v, v, list(range(half, width))) for v in state)
            if half == 1:
                lo = tuple(self.b.emit("extract", v, ty=v.ty.scalar, lane=0) for v in lo)
                hi = tuple(self.b.emit("extract", v, ty=v.ty.scalar, lane=0) for v in hi)
            state = acc.merge(self.vm.with_width(half), lo, hi)
            width = half
        return state

    def lane_merge_by_swaps(self, acc, state):
        half = self.width // 2
        while half:
            swapped = tuple(self.b.emit("swap", v, ty=v.ty, half=half) for v in state)
            state = acc.merge(self.vm, state, swapped)
            half //= 2
        return tuple(self.b.emit("extract", v, ty=v.ty.scalar, lane=0) for v in state)

    def merge_rows(self, acc, per_row):
        """per_row[j]: row j's state as vectors -> one state with row j's lanes merged in
        lane j (a scalar state for one row).  Rows are merged pairwise into shared vectors
        (a transposing reduction): R rows cost about R-1 vector merges, not R*log2(W)."""
        if self.group == 1:
            return self.lane_merge(acc, per_row[0])
        W = self.width
        vecs, rows_per_vec, lanes = per_row, 1, W  # lanes: per row in each vector
        while lanes > 1:
            pairs = list(zip(vecs[0::2], vecs[1::2])) if len(vecs) > 1 else [(vecs[0], vecs[0])]
            half = lanes // 2
            lo_idx = [src + r * lanes + t for src in (0, W) for r in range(rows_per_vec) for t in range(half)]
            hi_idx = [i + half for i in lo_idx]
            vecs = [acc.merge(self.vm, tuple(self.shuffle(u, v, lo_idx) for u, v in zip(s1, s2)),
                              tuple(self.shuffle(u, v, hi_idx) for u, v in zip(s1, s2)))
                    for s1, s2 in pairs]
            rows_per_vec, lanes = rows_per_vec * 2, half
        return tuple(self.shuffle(v, v, list(range(self.group))) for v in vecs[0])

    def lane(self, v, j: int):
        return v if self.group == 1 else self.b.emit("extract", v, ty=v.ty.scalar, lane=j)
