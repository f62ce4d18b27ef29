"""Lower an IR program, a Schedule and a target's capabilities to one loop-IR kernel.

The kernel has softgen's C ABI:
  void f(int64_t rows, int64_t n, const T *x, int64_t x_row_stride,
         T *y, int64_t y_row_stride)
Rows go in groups of `rows_per_group` (then one at a time for the rest): row-level values
are vectors with a lane per row of the group, so the row math and the lane merges of
short rows are vectorized across rows; each pass runs over the group's rows in turn
(`interleave` of them side by side, lower.passes and lower.sweep).

With `pipeline`, row groups are software-pipelined: stage k (pass k and the row ops after
it) of iteration t runs on group t - k, and in the steady state one sweep runs every
stage's rows side by side, so the max pass's loads, the exp pass's FMAs and the output
pass's stores overlap.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import numerics
from ..ir import Kind, Op, Pass, Program, Type
from .capabilities import Capabilities
from .casts import Casts
from .loopir import I64, Kernel, i64, verify
from .passes import PassLowering
from .schedule import Schedule


@dataclass
class Stage:
    """A pipeline stage: a pass with the row ops around it."""
    before: list  # row ops before the first pass (stage 0 only)
    pass_: Pass
    after: list   # row ops after the pass, up to the next pass


def stages_of(program: Program) -> list[Stage]:
    stages, before = [], []
    for step in program.steps:
        if isinstance(step, Pass):
            stages.append(Stage(before if not stages else [], step, []))
        elif stages:
            stages[-1].after.append(step)
        else:
            before.append(step)
    return stages


def carried_values(stages: list[Stage]) -> list[list]:
    """Per stage: the row values defined by earlier stages (what it may read)."""
    out, defined = [], []
    for st in stages:
        out.append(list(defined))
        defined += [v for op in st.before + st.after for v in op.results if v.type is Type.ROW]
    return out


def kernel_name(program: Program) -> str:
    """softgen_<op>_<algorithm>, then the names of its input row operands and _zero_empty
    where empty rows give 0 / -inf (a variant: two variants never share a name)."""
    inputs = "".join(f"_{o.name}" for o in program.operands if not o.output)
    return f"softgen_{program.op}_{program.algorithm}{inputs}{'_zero_empty' if program.fills_empty_rows else ''}"


def lower(program: Program, caps: Capabilities, schedule: Schedule = Schedule(),
          name: str | None = None) -> Kernel:
    """The loop-IR kernel of `program` under `schedule` for a target with `caps` (verified)."""
    lowering = KernelLowering(name or kernel_name(program), caps, schedule, program.dtypes, program.operands)
    lowering.emit(program)
    return verify(lowering.kernel)


class KernelLowering(PassLowering):
    def emit(self, program: Program):
        b = self.b
        r = self.var(I64, i64(0))
        rows = self.pick(self.cmp("gt", self.rows, i64(0)), self.rows, i64(0))
        group = self.caps.group_size(self.schedule.rows_per_group, self.width)
        self.length_name = program.length
        self.fill = program.fill if program.length and not program.row_output else None
        pipelined = self.pipelinable(program)
        self.kernel.notes += self.notes(program, group, pipelined)
        if pipelined:
            self.emit_pipelined(program, r, rows, group)
        elif group > 1:
            b.loop_while(lambda: self.cmp("le", self.int_op("add", b.read(r), i64(group)), rows),
                         lambda: self.emit_group(program, r, group), "group")
        b.loop_while(lambda: self.cmp("lt", b.read(r), rows), lambda: self.emit_group(program, r, 1), "row")
        if self.used_nontemporal and self.caps.streaming_fence:
            b.emit("fence")   # streaming stores are weakly ordered: visible before returning

    def notes(self, program: Program, group: int, pipelined: bool) -> list[str]:
        s = self.schedule
        return [f"{program.name}: {self.width} lanes, {group} rows per group"
                + (", pipelined" if pipelined else "") + f", {s.interleave} side by side",
                f"unroll {s.unroll} over {s.acc_sets} accumulator sets, blocks of {self.block}, "
                f"pair sums {s.pair_sum}" + (", streaming stores" if s.nontemporal else "")]

    def emit_group(self, program: Program, r_slot, count: int):
        self.first = self.b.read(r_slot)
        self.rm = self.vm.with_width(count)
        self.emit_steps(program.steps, {})
        self.b.write(r_slot, self.int_op("add", self.first, i64(count)))

    def emit_steps(self, steps: list, env: dict):
        """The program's steps for the group's rows.  env maps each row-level Value to one
        value with a lane per row.  A guard runs the rest if every row is in range, else
        the whole group runs the fallback program."""
        passes = [s for s in steps if isinstance(s, Pass)]
        for k, step in enumerate(steps):
            if isinstance(step, Pass):
                self.emit_pass(step, env, is_output=step is passes[-1])
            elif step.kind is Kind.GUARD and "flag" in step.attrs:
                self.emit_flag(step, env)
            elif step.kind is Kind.GUARD:
                ok = self.all_lanes([self.in_range(self.rm, env[v], lo, hi)
                                     for v, (lo, hi) in zip(step.args, step.attrs["ranges"])])
                self.b.if_then(ok, lambda: self.emit_steps(steps[k + 1:], env), "guard",
                               else_fn=lambda: self.emit_fallback(step.attrs["fallback"]), else_first=True)
                return
            else:
                self.emit_row_op(step, env)

    def emit_flag(self, guard: Op, env: dict):
        """A flagging guard: 1 in its operand for the rows out of range, else 0; the steps
        after it run for every row (the caller runs the fallback on the flagged ones)."""
        rm = self.rm
        ok = None
        for v, (lo, hi) in zip(guard.args, guard.attrs["ranges"]):
            cond = self.in_range(rm, env[v], lo, hi)
            ok = cond if ok is None else self.both(ok, cond)
        flag = rm.select(ok, rm.const(0.0), rm.const(1.0))
        self.store_lanes(flag, lambda j: self.row_operand(guard.attrs["flag"], i64(j)))

    def emit_fallback(self, fallback: Program):
        """The fallback program for the group's rows one at a time, in its smallest code
        shape (one accumulator set, no interleaving, only the exact exp form): it runs only
        for rows outside a guard's range, and at the full schedule it more than doubled the
        kernel's code and compile time."""
        first, rm, schedule = self.first, self.rm, self.schedule
        self.schedule = dataclasses.replace(schedule, unroll=1, accumulators=0, interleave=1, fast_exp=False)
        self.rm = self.vm.with_width(1)

        def one_row(j):
            self.first = self.int_op("add", first, j)
            self.emit_steps(fallback.steps, {})
        self.count_loop(rm.width, one_row, "fallback")
        self.first, self.rm, self.schedule = first, rm, schedule

    def emit_row_op(self, op: Op, env: dict):
        rm, k = self.rm, op.kind
        a = [env[v] for v in op.args]
        if k is Kind.STORE_ROW:
            self.store_lanes(a[0], lambda j: self.row_y(i64(j)))
            results = ()
        elif k is Kind.STORE_OPERAND:
            self.store_lanes(a[0], lambda j: self.row_operand(op.attrs["name"], i64(j), op.attrs.get("at", 0)))
            results = ()
        elif k is Kind.LOAD_OPERAND:
            results = (self.load_lanes(lambda j: self.row_operand(op.attrs["name"], i64(j))),)
        elif k is Kind.WHERE_IN:
            results = (rm.select(self.in_range(rm, a[0], *op.attrs["range"]), a[1], a[2]),)
        elif k is Kind.CAST_ROW:
            results = (Casts(self.b, self.caps, rm.width).cast(a[0], op.attrs["from"], op.attrs["to"]),)
        else:
            results = numerics.row_op(rm, op, a)
        env.update(zip(op.results, results))

    def store_lanes(self, v, row_of):
        """Lane j of v to the element row_of(j) points at, for each row of the group."""
        for j in range(self.group):
            row = row_of(j)
            self.b.emit("store", row.ptr, self.lane(v, j), align=row.elem.bytes)

    def load_lanes(self, row_of):
        """A value with lane j loaded from row_of(j), for each row of the group."""
        loads = [self.b.emit("load", row.ptr, ty=row.elem, align=row.elem.bytes) for row in map(row_of, range(self.group))]
        if self.group == 1:
            return loads[0]
        table = self.var(self.rm.ty)
        for j, v in enumerate(loads):
            self.b.emit("write_at", table, i64(j), v)
        return self.b.read(table)

    # --- software pipelining: the passes of consecutive row groups in one sweep ----------
    def pipelinable(self, program: Program) -> bool:
        """Schedule.pipeline applies to programs of two or more passes with no guard (whose
        fallback would need its own pipeline) and no per-block reductions."""
        if not self.schedule.pipeline or len(program.passes) < 2:
            return False
        if any(isinstance(s, Op) and s.kind is Kind.GUARD for s in program.steps):
            return False
        return not any(plan.block_max or plan.running for plan in map(self.plan_of, program.passes))

    def emit_pipelined(self, program: Program, r_slot, rows, group: int):
        """Stages hand their row values to the next through vars.  Rows after the last full
        group run unpipelined."""
        b = self.b
        self.rm = self.vm.with_width(group)
        stages = stages_of(program)
        count = len(stages)
        groups = b.emit("udiv", rows, i64(group), ty=I64)
        carried = [{v: self.var(self.rm.ty) for v in values} for values in carried_values(stages)]
        t_slot = self.var(I64, i64(0))

        def iteration():
            t = b.read(t_slot)
            firsts = [self.int_op("mul", self.int_op("sub", t, i64(k)), i64(group)) for k in range(count)]
            active = [self.both(self.cmp("ge", t, i64(k)), self.cmp("lt", self.int_op("sub", t, i64(k)), groups))
                      for k in range(count)]
            pipe = _Pipeline(self, stages, carried, firsts)
            # the steady state fuses the stages when a form suits them all; otherwise, as
            # while filling and draining, the stages run one after another (one copy of
            # that code: it is the kernel's largest part)
            fused = self.var(I64, i64(0))
            b.if_then(self.both(active[0], active[-1]), lambda: pipe.steady(fused), "steady")
            b.if_then(self.cmp("eq", b.read(fused), i64(0)), lambda: pipe.ramp(active), "ramp")
            b.write(t_slot, self.int_op("add", t, i64(1)))
        b.loop_while(lambda: self.cmp("lt", b.read(t_slot), self.int_op("add", groups, i64(count - 1))),
                     iteration, "pipeline")
        b.write(r_slot, self.int_op("mul", groups, i64(group)))


class _Pipeline:
    """One iteration of the pipelined loop: stage k on the group starting at firsts[k]."""

    def __init__(self, low: KernelLowering, stages: list, carried: list, firsts: list):
        self.low, self.stages, self.carried, self.firsts = low, stages, carried, firsts

    def start(self, k: int) -> dict:
        """Stage k's env: the row values its group got from stage k - 1 (and its row ops
        before the first pass)."""
        low = self.low
        low.first = self.firsts[k]
        env = {v: low.b.read(slot) for v, slot in self.carried[k].items()}
        for op in self.stages[k].before:
            low.emit_row_op(op, env)
        return env

    def end(self, k: int, env: dict):
        """Stage k's row ops after its pass, then its row values to stage k + 1."""
        low = self.low
        low.first = self.firsts[k]
        for op in self.stages[k].after:
            low.emit_row_op(op, env)
        if k + 1 < len(self.stages):
            for v, slot in self.carried[k + 1].items():
                low.b.write(slot, env[v])

    def is_output(self, k: int) -> bool:
        return k == len(self.stages) - 1

    def ramp(self, active: list):
        """Filling or draining the pipeline: the active stages one after another, the last
        first (it reads its vars before the stage before it writes them)."""
        for k in reversed(range(len(self.stages))):
            self.low.b.if_then(active[k], lambda k=k: self.run_alone(k, self.start(k)), f"ramp{k}")

    def run_alone(self, k: int, env: dict):
        self.low.first = self.firsts[k]
        self.low.emit_pass(self.stages[k].pass_, env, is_output=self.is_output(k))
        self.end(k, env)

    def steady(self, fused_slot):
        """Every stage on its group in one sweep, when all take the folded or all the shifted
        form (then fused_slot is set to 1)."""
        low = self.low
        envs = [self.start(k) for k in range(len(self.stages))]
        setups = [low.pass_setup(st.pass_, is_output=self.is_output(k)) for k, st in enumerate(self.stages)]

        def all_ok(form: str):
            out = low.true()
            for setup, env in zip(setups, envs):
                out = low.both(out, low.form_ok(setup, env, form))
            return out

        def fused(form: str):
            own = [dict(env) for env in envs]
            tables = [low.pass_tables(setup, env, form) for setup, env in zip(setups, own)]
            passes = list(zip(setups, tables, self.firsts))
            low.count_loop(low.group, lambda j0: low.sweep_rows(passes, j0, form), "fused",
                           setups[0].rows_side_by_side)
            for k, (setup, env) in enumerate(zip(setups, own)):
                low.pass_finish(setup, env)
                self.end(k, env)
            low.b.write(fused_slot, i64(1))

        low.pick_form(all_ok, fused, fallback=lambda: None, name="fused.")

