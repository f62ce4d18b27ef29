"""Lower an IR program to an LLVM module with one vectorized kernel function.

The function has softgen's C ABI:
  void f(int64_t rows, int64_t n, const float *x, int64_t x_row_stride,
         float *y, int64_t y_row_stride)
Rows go in groups of `rows` (then one at a time for the rest): row-level values are
vectors with a lane per row of the group, so the row math and the lane merges of short
rows are vectorized across rows; each pass runs over the group's rows in turn
(`interleave` of them side by side).  Per row, each pass is: an unrolled main loop
(`unroll` vectors per iteration over `accumulators` accumulator sets), a one-vector
remainder loop, then one masked vector for the tail, so nothing past the row is read or
written.  Reducing passes run that in blocks of `block` elements (fewer if a lane
would sum more than numerics.SUM_CHAIN of them) folded into a compensated outer
accumulator (a row of one block skips the fold).  Loop-carried state
lives in allocas that LLVM's SROA promotes to registers.

With `pipeline`, row groups are software-pipelined: stage k (pass k and the row ops after
it) of iteration t runs on group t - k, and in the steady state one sweep runs every
stage's rows side by side, so the max pass's loads, the exp pass's FMAs and the output
pass's stores overlap (emit_pipelined).

Lowerings (softgen.lowering decides them per pass, numerics.py has the formulas):
  exp(x, c)       exp_scaled with row constants from c, no x - c TwoSum: "folded" when the
                  shift is small, "shifted" while |c| is in range, exp_diff beyond; the
                  pass is emitted for each form and a branch per row group picks.
  exp_pair -> pair_scale
                  fused into one exp_scaled with 1/S and 2^-E in row constants.
  acc.max (x86)   maxps plus a NaN lane mask (_MaxNaNMask).
  acc.pair        a plain sum against a running block exponent (_PairRunning), or a
                  block max scan, or a merge per element (Schedule.pair_sum).
  acc.online      per block: a max scan (the block is then in L1), then a sum of
                  e^(x - block max) (the max's terms counted apart), folded once per block
                  (Schedule.online_block_max).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from ... import numerics
from ...lower.plan import PassPlan, needed_ops, plan_pass
from ...lower.schedule import Schedule
from ...ir import Kind, Op, Pass, Program, Type
from ...targets import Target
from .vmath import F32, I32, LLVMMath, intrinsic

I64 = ir.IntType(64)
PTR = ir.PointerType()
VECTOR_ALIGN = 64  # bytes: an aligned full-width store may be non-temporal
# _PairRunning sums a block again when one of its exponents exceeds the block's by more:
# below it terms stay under 2^33 and a row's sum under 2^64, which ldexp_generic (it
# scales by 2^(d + 64) first) and the lane merges need.
RUNNING_SLACK = 32.0


@dataclass
class _Stage:
    """A pipeline stage: a pass with the row ops around it."""
    before: list  # row ops before the first pass (stage 0 only)
    pass_: Pass
    after: list   # row ops after the pass, up to the next pass


def _stages(program: Program) -> list[_Stage]:
    stages, before = [], []
    for step in program.steps:
        if isinstance(step, Pass):
            stages.append(_Stage(before if not stages else [], step, []))
        elif stages:
            stages[-1].after.append(step)
        else:
            before.append(step)
    return stages


def _carried_values(stages: list[_Stage]) -> list[list]:
    """Per stage: the row values defined by earlier stages (what it may read)."""
    out, defined = [], []
    for st in stages:
        out.append(list(defined))
        defined += [v for op in st.before + st.after for v in op.results if v.type is Type.ROW]
    return out


def kernel_name(program: Program) -> str:
    return f"softgen_{program.op}_{program.algorithm}"


def build_module(program: Program, target: Target, schedule: Schedule = Schedule(),
                 name: str | None = None) -> ir.Module:
    module = ir.Module(name=name or kernel_name(program))
    module.triple = target.triple
    fnty = ir.FunctionType(ir.VoidType(), [I64, I64, PTR, I64, PTR, I64])
    fn = ir.Function(module, fnty, name=name or kernel_name(program))
    for arg, arg_name in zip(fn.args, ("rows", "n", "x", "x_row_stride", "y", "y_row_stride")):
        arg.name = arg_name
    _KernelEmitter(fn, target, schedule).emit(program)
    return module


class _Inner:
    """How one reduction accumulates inside a block: its lanes' state until the fold.
    The default is the numerics Accumulator itself (identity, element + merge)."""

    def __init__(self, acc: numerics.Accumulator):
        self.acc = acc

    def types(self, vm):
        return [vm.ty for _ in self.acc.identity]

    def identity(self, vm):
        return [vm.const(c) for c in self.acc.identity]

    def step(self, vm, old, *args):
        return self.acc.merge(vm, old, self.acc.element(vm, *args))

    def merge(self, vm, a, b):
        return self.acc.merge(vm, a, b)

    def finish(self, emitter, row, state):
        return state


class _BlockSum(_Inner):
    """block_max reductions: the block's terms (see block_term) summed by the accumulator
    numerics.BLOCK_SUMS names."""

    def __init__(self, acc, op):
        super().__init__(numerics.ACCUMULATORS[numerics.BLOCK_SUMS[op.results[0].type]])
        self.op = op

    def finish(self, emitter, row, state):
        return emitter.block_state(self.op, row, state)


class _MaxIgnoringNaN:
    """For lane merges of values whose NaNs are dealt with elsewhere: x86 maxps."""

    @staticmethod
    def merge(m, a, b):
        return (m.select(m.lt(a[0], b[0]), b[0], a[0]),)


_MAX_IGNORING_NAN = _MaxIgnoringNaN()


class _MaxNaNMask(_Inner):
    """acc.max as a NaN-ignoring max plus a lane mask of NaNs seen, made NaN at the end:
    x86's maxps is one instruction where the NaN-propagating maximum takes three, and
    the mask OR runs outside the vector float pipes."""

    def types(self, vm):
        return [vm.ty, ir.VectorType(ir.IntType(1), vm.width)]

    def identity(self, vm):
        return [vm.const(float("-inf")), ir.Constant(self.types(vm)[1], [0] * vm.width)]

    def step(self, vm, old, x):
        m, nan = old
        return vm.select(vm.lt(m, x), x, m), vm.b.or_(nan, vm.b.fcmp_unordered("uno", x, x))

    def merge(self, vm, a, b):
        return vm.select(vm.lt(a[0], b[0]), b[0], a[0]), vm.b.or_(a[1], b[1])

    def finish(self, emitter, row, state):
        vm = emitter.vm
        return (vm.select(state[1], vm.const(float("nan")), state[0]),)


class _PairRunning(_Inner):
    """acc.pair as a plain sum of p * 2^(k - e) (one ldexp and one add per element instead of
    a merge's max, two ldexps and add), plus the largest k seen.  e is per row and block: the
    largest k of earlier blocks (-inf at first); a block whose largest k exceeds e by more
    than RUNNING_SLACK is summed again with that k as e.  Terms far below e vanish, which is
    right: e is an exponent the row really has.  A NaN makes the sum NaN, and finish makes
    the exponent NaN then, for the two-pass guard."""

    def __init__(self, acc, op):
        super().__init__(acc)
        self.op = op

    def identity(self, vm):
        return [vm.const(0.0), vm.const(float("-inf"))]

    def step(self, vm, old, term_and_k):
        term, k = term_and_k
        return vm.add(old[0], term), vm.select(vm.lt(old[1], k), k, old[1])

    def merge(self, vm, a, b):
        return vm.add(a[0], b[0]), vm.select(vm.lt(a[1], b[1]), b[1], a[1])

    def finish(self, emitter, row, state):
        """(S, E) with E the largest exponent seen, as a merge would leave it: S may reach
        2^RUNNING_SLACK against the running e, and pair_scale's fast forms assume no
        element exceeds 2^(E + 1)."""
        vm = emitter.vm
        s, k_max, e = state[0], state[1], row.shifts[self.op]
        top = vm.select(vm.lt(e, k_max), k_max, e)
        s = vm.ldexp(s, vm.sub(e, top))
        return s, vm.select(vm.b.fcmp_unordered("uno", s, s), vm.const(float("nan")), top)


@dataclass
class _Row:
    """One row inside a pass: its pointers and its row constants as vectors."""
    x: ir.Value
    y: ir.Value
    splats: dict = field(default_factory=dict)   # row Value -> vector
    shifts: dict = field(default_factory=dict)   # c Value / pair_scale op / acc op -> ExpShift...
    prefetch: int = 0                            # elements ahead to prefetch x (0: none)


@dataclass
class _Unit:
    """One row of one pass inside a sweep."""
    row: _Row
    p: Pass
    plan: PassPlan
    accs: list        # numerics.Accumulator per reduction of p
    lowerings: list   # _Inner per reduction of p
    fast: bool        # exp(x, c) in a fast form (row constants in row.shifts)


@dataclass
class _PassSetup:
    """What a pass needs before its rows are swept (shared by every form)."""
    p: Pass
    plan: PassPlan
    accs: list
    results: list     # per reduction and state component: every row's final lane state (slots)
    row_values: list  # row Values the pass reads
    step: int         # rows of the group swept side by side
    nontemporal: bool


class _KernelEmitter:
    def __init__(self, fn: ir.Function, target: Target, schedule: Schedule):
        self.fn = fn
        self.target = target
        self.schedule = schedule
        self.width = target.vector_width
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.vm = LLVMMath(self.b, self.width, use_scalef=target.has_avx512)
        self.one = self.vm.with_width(1)  # scalar math of one row (block constants)
        self.rows, self.n, self.x, self.xs, self.y, self.ys = fn.args
        self.used_nontemporal = False
        self.first = None  # first row of the group being emitted (i64)
        self.rm = None     # row math: one lane per row of the group

    @property
    def group(self) -> int:
        return self.rm.width

    @property
    def block(self) -> int:
        """Elements per reduction block (the schedule's, at most SUM_CHAIN per accumulator lane)."""
        return numerics.reduction_block(self.schedule.block, self.width, self.schedule.acc_sets)

    # --- small helpers ---------------------------------------------------------
    def var(self, ty, init=None):
        """A mutable local (alloca in the entry block, promoted to SSA by LLVM)."""
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            slot = self.b.alloca(ty)
        if init is not None:
            self.b.store(init, slot)
        return slot

    def loop_while(self, cond_fn, body_fn, name: str):
        head = self.fn.append_basic_block(f"{name}.head")
        body = self.fn.append_basic_block(f"{name}.body")
        done = self.fn.append_basic_block(f"{name}.done")
        self.b.branch(head)
        self.b.position_at_end(head)
        self.b.cbranch(cond_fn(), body, done)
        self.b.position_at_end(body)
        body_fn()
        self.b.branch(head)
        self.b.position_at_end(done)

    def count_loop(self, count: int, body_fn, name: str, step: int = 1):
        """body_fn(j) for j in [0, count) by `step`: straight-line for one step, else a loop."""
        if count == step:
            body_fn(self.i64(0))
            return
        b = self.b
        j = self.var(I64, self.i64(0))

        def body():
            body_fn(b.load(j))
            b.store(b.add(b.load(j), self.i64(step)), j)
        self.loop_while(lambda: b.icmp_signed("<", b.load(j), self.i64(count)), body, name)

    def if_then(self, cond, then_fn, name: str, else_fn=None):
        then = self.fn.append_basic_block(f"{name}.then")
        other = self.fn.append_basic_block(f"{name}.else") if else_fn else None
        done = self.fn.append_basic_block(f"{name}.done")
        self.b.cbranch(cond, then, other or done)
        self.b.position_at_end(then)
        then_fn()
        self.b.branch(done)
        if else_fn:
            self.b.position_at_end(other)
            else_fn()
            self.b.branch(done)
        self.b.position_at_end(done)

    def i64(self, v: int):
        return ir.Constant(I64, v)

    def all_lanes(self, conds):
        """True when every condition holds in every lane (conds: i1 or <R x i1> values)."""
        b = self.b
        out = conds[0]
        for c in conds[1:]:
            out = b.and_(out, c)
        if self.group > 1:
            out = b.icmp_signed("==", b.bitcast(out, ir.IntType(self.group)), ir.Constant(ir.IntType(self.group), -1))
        return out

    def in_range(self, m: LLVMMath, v, lo: float, hi: float):
        return self.b.and_(m.le(m.const(lo), v), m.le(v, m.const(hi)))

    def row_ptr(self, base, stride, j, first=None):
        """Row `first + j` (first: the group's first row by default)."""
        b = self.b
        return b.gep(base, [b.mul(b.add(self.first if first is None else first, j), stride)], source_etype=F32)

    # --- the row loop ------------------------------------------------------------
    def emit(self, program: Program):
        b = self.b
        r = self.var(I64, self.i64(0))
        rows = b.select(b.icmp_signed(">", self.rows, self.i64(0)), self.rows, self.i64(0))
        group = min(self.schedule.rows, self.width)
        if self.pipelinable(program):
            self.emit_pipelined(program, r, rows, group)
        elif group > 1:
            self.loop_while(lambda: b.icmp_signed("<=", b.add(b.load(r), self.i64(group)), rows),
                            lambda: self.emit_group(program, r, group), "group")
        self.loop_while(lambda: b.icmp_signed("<", b.load(r), rows),
                        lambda: self.emit_group(program, r, 1), "row")
        if self.used_nontemporal and self.target.arch == "x86_64":
            # streaming stores are weakly ordered: make them visible before returning
            b.call(intrinsic(b.module, "llvm.x86.sse.sfence", ir.VoidType(), []), [])
        b.ret_void()

    def emit_group(self, program: Program, r_slot, count: int):
        b = self.b
        self.first = b.load(r_slot)
        self.rm = self.vm.with_width(count)
        done = self.fn.append_basic_block("group.done")
        self.emit_program(program, done)
        b.position_at_end(done)
        b.store(b.add(self.first, self.i64(count)), r_slot)

    # --- software pipelining: the passes of consecutive row groups in one sweep ----------
    def pipelinable(self, program: Program) -> bool:
        """Schedule.pipeline applies to programs of two or more passes with no guard (whose
        fallback would need its own pipeline) and no per-block reductions."""
        if not self.schedule.pipeline or len(program.passes) < 2:
            return False
        if any(isinstance(s, Op) and s.kind is Kind.GUARD for s in program.steps):
            return False
        return not any(plan.block_max or plan.running for plan in map(self.plan_of, program.passes))

    def plan_of(self, p: Pass) -> PassPlan:
        return plan_pass(p, fast_exp=self.schedule.fast_exp, online_block_max=self.schedule.online_block_max,
                         pair_sum=self.schedule.pair_sum)

    def emit_pipelined(self, program: Program, r_slot, rows, group: int):
        """Stage k (pass k and the row ops after it) of iteration t runs on group t - k, so the
        steady state sweeps group t's first pass, group t-1's second, ... side by side: their
        work uses different units of the core (the max pass loads, the exp pass the FMA pipes,
        the output pass the store port), and the first pass's loads from memory overlap the
        later passes' math.  Stages hand their row values to the next through stack slots.
        Rows after the last full group run unpipelined."""
        b = self.b
        self.rm = self.vm.with_width(group)
        stages = _stages(program)
        count = len(stages)
        groups = b.udiv(rows, self.i64(group))
        carried = [{v: self.var(self.rm.ty) for v in values} for values in _carried_values(stages)]
        t_slot = self.var(I64, self.i64(0))

        def iteration():
            t = b.load(t_slot)
            firsts = [b.mul(b.sub(t, self.i64(k)), self.i64(group)) for k in range(count)]
            active = [b.and_(b.icmp_signed(">=", t, self.i64(k)), b.icmp_signed("<", b.sub(t, self.i64(k)), groups))
                      for k in range(count)]
            self.if_then(b.and_(active[0], active[-1]), lambda: self.pipelined_steady(stages, carried, firsts),
                         "steady", else_fn=lambda: self.pipelined_ramp(stages, carried, firsts, active))
            b.store(b.add(t, self.i64(1)), t_slot)
        self.loop_while(lambda: b.icmp_signed("<", b.load(t_slot), b.add(groups, self.i64(count - 1))),
                        iteration, "pipeline")
        b.store(b.mul(groups, self.i64(group)), r_slot)

    def stage_start(self, stages, carried, firsts, k: int) -> dict:
        """Stage k's env: the row values its group got from stage k - 1 (and its row ops before
        the first pass)."""
        self.first = firsts[k]
        env = {v: self.b.load(slot) for v, slot in carried[k].items()}
        for op in stages[k].before:
            self.emit_row_op(op, env)
        return env

    def stage_end(self, stages, carried, firsts, k: int, env: dict):
        """Stage k's row ops after its pass, then its row values to stage k + 1."""
        self.first = firsts[k]
        for op in stages[k].after:
            self.emit_row_op(op, env)
        if k + 1 < len(stages):
            for v, slot in carried[k + 1].items():
                self.b.store(env[v], slot)

    def pipelined_ramp(self, stages, carried, firsts, active):
        """Filling or draining the pipeline: the active stages one after another, the last
        first (it reads its slots before the stage before it writes them)."""
        for k in reversed(range(len(stages))):
            def run(k=k):
                env = self.stage_start(stages, carried, firsts, k)
                self.emit_pass(stages[k].pass_, env, is_output=k == len(stages) - 1)
                self.stage_end(stages, carried, firsts, k, env)
            self.if_then(active[k], run, f"ramp{k}")

    def pipelined_steady(self, stages, carried, firsts):
        """Every stage on its group in one sweep, when all take the folded or all the shifted
        form; otherwise one pass after another (each picking its own form)."""
        count = len(stages)
        envs = [self.stage_start(stages, carried, firsts, k) for k in range(count)]
        setups = [self.pass_setup(st.pass_, is_output=k == count - 1) for k, st in enumerate(stages)]

        def all_ok(form: str):
            out = ir.Constant(ir.IntType(1), 1)
            for setup, env in zip(setups, envs):
                out = self.b.and_(out, self.form_ok(setup, env, form))
            return out

        def fused(form: str):
            own = [dict(env) for env in envs]
            tables = [self.pass_tables(setup, env, form) for setup, env in zip(setups, own)]
            self.count_loop(self.group, lambda j0: self.sweep_rows(list(zip(setups, tables, firsts)), j0, form),
                            "fused", setups[0].step)
            for k, (setup, env) in enumerate(zip(setups, own)):
                self.pass_finish(setup, env)
                self.stage_end(stages, carried, firsts, k, env)

        def one_by_one():
            for k, env in enumerate(dict(env) for env in envs):
                self.first = firsts[k]
                self.emit_pass(stages[k].pass_, env, is_output=k == count - 1)
                self.stage_end(stages, carried, firsts, k, env)

        self.if_then(all_ok("folded"), lambda: fused("folded"), "fused.folded",
                     else_fn=lambda: self.if_then(all_ok("shifted"), lambda: fused("shifted"), "fused.shifted",
                                                  else_fn=one_by_one))

    def emit_program(self, program: Program, done: ir.Block):
        """Emit `program` for the group's rows, ending with a branch to `done`.
        env maps each row-level Value to one LLVM value with a lane per row."""
        env: dict = {}
        passes = program.passes
        for step in program.steps:
            if isinstance(step, Pass):
                self.emit_pass(step, env, is_output=step is passes[-1])
            elif step.kind is Kind.GUARD:
                self.emit_guard(step, env, done)
            else:
                self.emit_row_op(step, env)
        self.b.branch(done)

    def emit_guard(self, op: Op, env: dict, done: ir.Block):
        """All rows in range go on; otherwise the whole group runs the fallback program."""
        ok = self.all_lanes([self.in_range(self.rm, env[v], lo, hi) for v, (lo, hi) in zip(op.args, op.attrs["ranges"])])
        cont = self.fn.append_basic_block("guard.ok")
        fallback = self.fn.append_basic_block("guard.fallback")
        self.b.cbranch(ok, cont, fallback)
        self.b.position_at_end(fallback)
        self.emit_program(op.attrs["fallback"], done)
        self.b.position_at_end(cont)

    def emit_row_op(self, op: Op, env: dict):
        rm, k = self.rm, op.kind
        a = [env[v] for v in op.args]
        if op.args and op.args[0].type.is_accumulator:  # merge.*
            results = numerics.ACCUMULATORS[op.args[0].type].result(rm, a[0])
        elif k is Kind.CONST:
            results = (rm.const(op.attrs["value"]),)
        elif k is Kind.ADD:
            results = (rm.add(*a),)
        elif k is Kind.SUB_ROW:
            results = (rm.sub(*a),)
        elif k is Kind.MUL_ROW:
            results = (rm.mul(*a),)
        elif k is Kind.RECIP:
            results = (rm.div(rm.const(1.0), a[0]),)
        elif k is Kind.LOG:
            results = (rm.log(a[0]),)
        elif k is Kind.LOG_PAIR:
            results = numerics.log_pair(rm, *a)
        elif k is Kind.LOG1P:
            results = (numerics.log1p(rm, a[0]),)
        elif k is Kind.WHERE_FINITE:
            results = (rm.select(rm.isfinite(a[0]), a[1], a[2]),)
        elif k is Kind.STORE_ROW:
            for j in range(self.group):
                self.b.store(self.lane(a[0], j), self.row_ptr(self.y, self.ys, self.i64(j)))
            results = ()
        else:
            raise NotImplementedError(f"LLVM backend: no lowering for row op {op}")
        env.update(zip(op.results, results))

    def lane(self, v, j: int):
        return v if self.group == 1 else self.b.extract_element(v, ir.Constant(I32, j))

    # --- row constants inside the per-row loop -----------------------------------------
    def row_table(self, v):
        """A row value readable per row inside the row loop: itself for one row, else
        spilled to a small stack array once (then one broadcast load per row)."""
        if self.group == 1:
            return v
        slot = self.var(self.rm.ty)
        self.b.store(v, slot)
        return self.b.bitcast(slot, ir.PointerType(F32))

    def element_ptr(self, array_slot, j):
        return self.b.gep(array_slot, [self.i64(0), j], inbounds=True)

    def row_splat(self, table, j):
        if self.group == 1:
            return self.vm.splat(table)
        b = self.b
        return self.vm.splat(b.load(b.gep(table, [j])))

    # --- passes ----------------------------------------------------------------------
    def emit_pass(self, p: Pass, env: dict, is_output: bool):
        """One pass over the group's rows, its form (exact, shifted, folded) picked per group."""
        setup = self.pass_setup(p, is_output)

        def emit(form: str):
            tables = self.pass_tables(setup, env, form)
            self.count_loop(self.group, lambda j0: self.sweep_rows([(setup, tables, self.first)], j0, form),
                            "rowpass", setup.step)

        if setup.plan.has_fast_form:
            self.if_then(self.form_ok(setup, env, "folded"), lambda: emit("folded"), "folded",
                         else_fn=lambda: self.if_then(self.form_ok(setup, env, "shifted"), lambda: emit("shifted"),
                                                      "shifted", else_fn=lambda: emit("exact")))
        else:
            emit("exact")
        self.pass_finish(setup, env)

    def pass_setup(self, p: Pass, is_output: bool) -> "_PassSetup":
        plan = self.plan_of(p)
        accs = [numerics.ACCUMULATORS[op.results[0].type] for op in p.reductions]
        step = min(self.schedule.interleave, self.group)  # rows of the group done side by side
        return _PassSetup(
            p, plan, accs,
            results=[[self.var(ir.ArrayType(self.vm.ty, self.group)) for _ in acc.identity] for acc in accs],
            row_values=list(dict.fromkeys(v for op in p.ops for v in op.args if v.type is Type.ROW)),
            step=step,
            nontemporal=(self.schedule.nontemporal and is_output and not accs and step == 1
                         and any(op.kind is Kind.STORE for op in p.ops)))

    def form_ok(self, setup: "_PassSetup", env: dict, form: str):
        """Whether every row of the group may run the pass in `form` ("folded": the shift's
        exponent folds into the scale; "shifted": exp_scaled is exact; "exact": always)."""
        if form == "exact" or not setup.plan.has_fast_form:
            return ir.Constant(ir.IntType(1), 1)
        # |c| * log2(e) + 1/2 within EXP_FOLD_LIMIT: the shift's exponent may be folded
        c_limit, e_limit = (((numerics.EXP_FOLD_LIMIT - 1) / numerics.LOG2E, numerics.EXP_FOLD_LIMIT)
                            if form == "folded" else (numerics.EXP_SHIFT_LIMIT, numerics.PAIR_EXP_LIMIT))
        rm, plan = self.rm, setup.plan
        return self.all_lanes(
            [self.in_range(rm, env[c], -c_limit, c_limit) for c in plan.exp_shifts] +
            [self.in_range(rm, env[s.args[2]], -e_limit, e_limit) for s in plan.fused.values()])

    def pass_tables(self, setup: "_PassSetup", env: dict, form: str):
        """The pass's row constants, readable per row: (row value tables, exp shift tables)."""
        rm, plan = self.rm, setup.plan
        tables = {v: self.row_table(env[v]) for v in setup.row_values}
        shift_tables = {}
        if form != "exact":
            folded = form == "folded"
            for c in plan.exp_shifts:
                recipe = numerics.exp_diff_shift_folded if folded else numerics.exp_diff_shift
                shift_tables[c] = self.shift_table(recipe(rm, env[c]))
            for scale_op in plan.fused.values():
                _, c, e = scale_op.args
                recipe = numerics.exp_shift_folded if folded else numerics.exp_shift
                shift_tables[scale_op] = self.shift_table(recipe(rm, env[c], env[e]))
        return tables, shift_tables

    def sweep_rows(self, passes: list, j0, form: str):
        """Rows j0 .. j0 + step - 1 of each (setup, tables, first row) in `passes`, in one sweep;
        their reduction states go to each setup's result slots."""
        b = self.b
        units, where = [], []
        for setup, (tables, shift_tables), first in passes:
            lowerings = [self.inner_lowering(op, acc, setup.plan) for op, acc in zip(setup.p.reductions, setup.accs)]
            for d in range(setup.step):
                j = b.add(j0, self.i64(d)) if d else j0
                row = _Row(self.row_ptr(self.x, self.xs, j, first), self.row_ptr(self.y, self.ys, j, first),
                           {v: self.row_splat(t, j) for v, t in tables.items()},
                           {k: self.shift_splat(t, j) for k, t in shift_tables.items()})
                fast = form != "exact" and setup.plan.has_fast_form   # a fused sweep may mix passes
                units.append(_Unit(row, setup.p, setup.plan, setup.accs, lowerings, fast))
                where.append((setup, j))
        nontemporal = len(units) == 1 and passes[0][0].nontemporal
        for (setup, j), states in zip(where, self.emit_row_pass(units, nontemporal)):
            for slots, state in zip(setup.results, states):
                for slot, v in zip(slots, state):
                    b.store(v, self.element_ptr(slot, j))

    def pass_finish(self, setup: "_PassSetup", env: dict):
        """The pass's reductions, their rows merged lane-wise, into env."""
        b = self.b
        for op, acc, slots in zip(setup.p.reductions, setup.accs, setup.results):
            per_row = [tuple(b.load(self.element_ptr(s, self.i64(j))) for s in slots)
                       for j in range(self.group)]
            env[op.results[0]] = self.merge_rows(acc, per_row)

    def shift_table(self, shift: numerics.ExpShift):
        return numerics.ExpShift(self.row_table(shift.lo), self.row_table(shift.e_magic),
                                 tuple(self.row_table(c) for c in shift.coeffs))

    def shift_splat(self, table: numerics.ExpShift, j):
        return numerics.ExpShift(self.row_splat(table.lo, j), self.row_splat(table.e_magic, j),
                                 tuple(self.row_splat(c, j) for c in table.coeffs))

    def emit_row_pass(self, units: list, nontemporal: bool):
        """One sweep over the rows of `units` (interleaved: each step does one vector of every
        unit; units may belong to different passes).  Returns each unit's reduction states as
        vectors (lanes not yet merged).  Per-block reductions (block_max, running) need every
        unit to run the same pass."""
        b, vm, W, U, A = self.b, self.vm, self.width, self.schedule.unroll, self.schedule.acc_sets
        i = self.var(I64)
        rows = [u.row for u in units]
        inner = [[[[self.var(t) for t in low.types(vm)] for low in u.lowerings] for _ in range(A)] for u in units]
        outer = [[[self.var(vm.ty) for _ in acc.outer_identity] for acc in u.accs] for u in units]
        plan = units[0].plan  # for block_max and running (one pass then)

        def load_states(slots):
            return [tuple(b.load(s) for s in acc_slots) for acc_slots in slots]

        def store_states(slots, states):
            for acc_slots, state in zip(slots, states):
                for s, v in zip(acc_slots, state):
                    b.store(v, s)

        def sweep(start, end, body, aligned_stores=False):
            """Vectors [start, end) of every unit: unrolled loop, one-vector loop, masked tail."""
            b.store(start, i)

            def step(a, offset, mask, aligned):
                # every unit's loads before any unit's stores: rows a multiple of 4 KB apart
                # would otherwise make each load wait on the store before it (4K aliasing)
                loads = [self.preload(u, offset, mask) for u in units]
                for r in range(len(units)):
                    body(r, a, offset, mask, aligned, loads[r])

            def chunk():
                base = b.load(i)
                for u in range(U):
                    step(u % A, b.add(base, self.i64(u * W)), None, aligned_stores)
                b.store(b.add(base, self.i64(U * W)), i)

            def one_vector():
                base = b.load(i)
                step(0, base, None, aligned_stores)
                b.store(b.add(base, self.i64(W)), i)

            def tail():
                step(0, b.load(i), self.tail_mask(b.load(i), end), False)

            if U > 1:
                self.loop_while(lambda: b.icmp_signed("<=", b.add(b.load(i), self.i64(U * W)), end),
                                chunk, "chunk")
            self.loop_while(lambda: b.icmp_signed("<=", b.add(b.load(i), self.i64(W)), end),
                            one_vector, "vec")
            self.if_then(b.icmp_signed("<", b.load(i), end), tail, "tail")

        def element_fn(block_fast: bool):
            def element(r, a, offset, mask, aligned, loads):
                u = units[r]
                states = load_states(inner[r][a])
                new = self.emit_body(u.p, u.plan, u.lowerings, u.row, offset, states, mask, u.fast,
                                     block_fast, nontemporal and aligned, loads)
                store_states(inner[r][a], new)
            return element

        def set_prefetch(elements: int):
            for row in rows:
                row.prefetch = elements

        if not any(u.accs for u in units):
            set_prefetch(self.schedule.prefetch // 4)
            start = self.i64(0)
            if nontemporal:  # plain stores up to the first aligned vector of y: that head
                # may hold more elements than one vector (15 at 4 bytes and 8 lanes)
                start = self.aligned_start(rows[0].y, self.n)
                sweep(self.i64(0), start, element_fn(False))
                self.used_nontemporal = True
            sweep(start, self.n, element_fn(False), aligned_stores=nontemporal)
            return [[] for _ in units]

        def block(start, end):
            """The reductions over [start, end) of every unit, as inner states."""
            set_prefetch(0)
            block_fast = self.block_max_scan(units[0].p, plan, rows, start, end, sweep) if plan.block_max else None
            # the sweep re-reads the block from L1: fetch the next one meanwhile
            set_prefetch(self.block if plan.block_max else self.schedule.prefetch // 4)

            def sum_block():
                for r, u in enumerate(units):
                    for op, slot in zip(plan.running, exponents[r]):
                        u.row.shifts[op] = vm.splat(b.load(slot))
                    for a in range(A):
                        store_states(inner[r][a], [low.identity(vm) for low in u.lowerings])
                if block_fast is None:
                    sweep(start, end, element_fn(False))
                else:
                    self.if_then(block_fast, lambda: sweep(start, end, element_fn(True)), "block.fast",
                                 else_fn=lambda: sweep(start, end, element_fn(False)))

            if plan.running:
                self.seed_exponents(plan, rows, exponents, start, end)
                self.do_while(lambda: [sum_block(), self.raise_exponents(plan, rows, units[0].lowerings, inner,
                                                                         exponents)][1],
                              "block.again")
            else:
                sum_block()
            merged = [self.tree_merge(u.lowerings, [load_states(inner[r][a]) for a in range(A)])
                      for r, u in enumerate(units)]
            return [[low.finish(self, u.row, m) for low, m in zip(u.lowerings, per_unit)]
                    for u, per_unit in zip(units, merged)]

        def one_block():
            start = b.load(i)
            end = b.add(start, self.i64(self.block))
            end = b.select(b.icmp_signed("<", end, self.n), end, self.n)
            for r, merged in enumerate(block(start, end)):
                store_states(outer[r], [acc.fold(vm, o, m) for acc, o, m
                                        in zip(units[r].accs, load_states(outer[r]), merged)])
            b.store(end, i)

        def blocks():
            for u, per_unit in zip(units, outer):
                store_states(per_unit, [[vm.const(c) for c in acc.outer_identity] for acc in u.accs])
            b.store(self.i64(0), i)
            self.loop_while(lambda: b.icmp_signed("<", b.load(i), self.n), one_block, "block")
            for r, u in enumerate(units):
                store_states(final[r], [acc.unfold(vm, state) for acc, state in zip(u.accs, load_states(outer[r]))])

        def one_block_only():
            """A row of one block: folding it into the empty outer state and unfolding
            again would give it back unchanged (compensation zero), so skip both."""
            for r, merged in enumerate(block(self.i64(0), self.n)):
                store_states(final[r], merged)

        exponents = [[self.var(self.one.ty, self.one.const(float("-inf"))) for _ in plan.running] for _ in units]
        final = [[[self.var(vm.ty) for _ in acc.identity] for acc in u.accs] for u in units]
        self.if_then(b.icmp_signed("<=", self.n, self.i64(self.block)), one_block_only, "short",
                     else_fn=blocks)
        set_prefetch(0)
        return [load_states(final[r]) for r in range(len(units))]

    def seed_exponents(self, plan: PassPlan, rows: list, exponents, start, end):
        """At a row's first block, _PairRunning starts from the exponent of the largest of
        its first vector (a lower bound of the row's largest), so usual rows need no
        second sum."""
        b, one, vm = self.b, self.one, self.vm
        first = b.icmp_signed("==", start, self.i64(0))
        stop = b.add(start, self.i64(self.width))
        mask = self.tail_mask(start, b.select(b.icmp_signed("<", stop, end), stop, end))
        for row, slots in zip(rows, exponents):
            for op, slot in zip(plan.running, slots):
                key = plan.keys[op]
                v = vm.select(mask, self.eval_ops(plan.pass_, plan, [key], row, start, mask)[key],
                              vm.const(float("-inf")))
                top = self.lane_merge(_MAX_IGNORING_NAN, (v,))[0]
                k0 = numerics.exp_pair_floored(one, top)[1]
                b.store(one.select(first, k0, b.load(slot)), slot)

    def raise_exponents(self, plan: PassPlan, rows: list, lowerings, inner, exponents):
        """After a block of _PairRunning sums: rows whose largest exponent outgrew theirs
        take it; returns whether any did (then the block is summed again)."""
        b, vm, one, A = self.b, self.vm, self.one, self.schedule.acc_sets
        again = ir.Constant(ir.IntType(1), 0)
        running = [k for k, low in enumerate(lowerings) if isinstance(low, _PairRunning)]
        for r in range(len(rows)):
            for k, slot in zip(running, exponents[r]):
                vec = b.load(inner[r][0][k][1])
                for a in range(1, A):
                    other = b.load(inner[r][a][k][1])
                    vec = vm.select(vm.lt(vec, other), other, vec)
                top = self.lane_merge(_MAX_IGNORING_NAN, (vec,))[0]
                e = b.load(slot)
                grew = one.lt(one.add(e, one.const(RUNNING_SLACK)), top)
                b.store(one.select(grew, top, e), slot)
                again = b.or_(again, grew)
        return again

    def do_while(self, body_fn, name: str):
        """Run body_fn's code, again while the i1 it returns is true."""
        body = self.fn.append_basic_block(f"{name}.body")
        done = self.fn.append_basic_block(f"{name}.done")
        self.b.branch(body)
        self.b.position_at_end(body)
        again = body_fn()
        self.b.cbranch(again, body, done)
        self.b.position_at_end(done)

    # --- block-max reductions ------------------------------------------------------------
    def block_max_scan(self, p: Pass, plan: PassPlan, rows: list, start, end, sweep):
        """Max of each block_max key over [start, end) per row, then the rows' block constants.
        Returns the condition for the online reductions' fast form (None: no condition)."""
        b, vm, one, A = self.b, self.vm, self.one, self.schedule.acc_sets
        keys = [plan.keys[op] for op in plan.block_max]
        slots = [[[self.var(vm.ty) for _ in keys] for _ in range(A)] for _ in rows]
        neg_inf = vm.const(float("-inf"))
        for per_row in slots:
            for per_set in per_row:
                for s in per_set:
                    b.store(neg_inf, s)

        def scan(r, a, offset, mask, aligned, loads):
            vals = self.eval_ops(p, plan, keys, rows[r], offset, mask, loads)
            for s, key in zip(slots[r][a], keys):
                v = vals[key] if mask is None else vm.select(mask, vals[key], neg_inf)
                old = b.load(s)
                b.store(vm.select(vm.lt(old, v), v, old), s)  # NaN is caught by the sums

        sweep(start, end, scan)
        conds = []
        for r, row in enumerate(rows):
            for k, op in enumerate(plan.block_max):
                vec = b.load(slots[r][0][k])
                for a in range(1, A):
                    other = b.load(slots[r][a][k])
                    vec = vm.select(vm.lt(vec, other), other, vec)
                mx = self.lane_merge(numerics.ACCUMULATORS[Type.ACC_MAX], (vec,))[0]
                if op.kind is Kind.ACC_PAIR:  # sum e^x * 2^-e, e the block's exponent
                    e = numerics.block_exponent(one, mx)
                    row.shifts[op] = (self.splat_shift(numerics.exp_shift(one, one.const(1.0), e)), vm.splat(e))
                else:  # sum e^(x - m), m the block's max (-FLT_MAX for an all -inf block)
                    m = numerics.clamp_below(one, mx, -numerics.FLT_MAX)
                    row.shifts[op] = (self.splat_shift(numerics.exp_diff_shift(one, m)), vm.splat(m))
                    conds.append(self.in_range(one, m, -numerics.EXP_SHIFT_LIMIT, numerics.EXP_SHIFT_LIMIT))
        if not conds:
            return None
        out = conds[0]
        for c in conds[1:]:
            out = b.and_(out, c)
        return out

    def splat_shift(self, shift: numerics.ExpShift) -> numerics.ExpShift:
        vm = self.vm
        return numerics.ExpShift(vm.splat(shift.lo), vm.splat(shift.e_magic),
                                 tuple(vm.splat(c) for c in shift.coeffs))

    def block_term(self, op: Op, row: _Row, key, block_fast: bool):
        """The element arguments of a block_max reduction's block sum for one vector of its
        key: e^x * 2^-e (pair), or e^(x - m), x, m (online)."""
        shift, e_or_m = row.shifts[op]
        if op.kind is Kind.ACC_PAIR:
            return (numerics.exp_scaled(self.vm, key, shift),)
        e = numerics.exp_scaled(self.vm, key, shift) if block_fast else numerics.exp_diff(self.vm, key, e_or_m)
        return e, key, e_or_m

    def block_state(self, op: Op, row: _Row, merged):
        """A block's lane sums as the accumulator's inner state, for the fold."""
        vm = self.vm
        _, e_or_m = row.shifts[op]
        if op.kind is Kind.ACC_PAIR:
            s = merged[0]
            # a NaN input makes the sum NaN; the exponent carries that to the guard
            return s, vm.select(self.b.fcmp_unordered("uno", s, s), vm.const(float("nan")), e_or_m)
        return numerics.block_online_state(vm, e_or_m, merged)

    # --- merges ------------------------------------------------------------------------
    def inner_lowering(self, op: Op, acc: numerics.Accumulator, plan: PassPlan) -> _Inner:
        if op in plan.block_max:
            return _BlockSum(acc, op)
        if op in plan.running:
            return _PairRunning(acc, op)
        if op.kind is Kind.ACC_MAX and self.target.arch == "x86_64":
            return _MaxNaNMask(acc)
        return _Inner(acc)

    def tree_merge(self, lowerings, per_set):
        """Merge the accumulator sets pairwise into one."""
        vm = self.vm
        while len(per_set) > 1:
            nxt = [[low.merge(vm, a, c) for low, a, c in zip(lowerings, s1, s2)]
                   for s1, s2 in zip(per_set[::2], per_set[1::2])]
            per_set = nxt + ([per_set[-1]] if len(per_set) % 2 else [])
        return per_set[0]

    def lane_merge(self, acc, state):
        """Reduce one vector state to a scalar state, halving the lanes each step."""
        b, width = self.b, self.width
        while width > 1:
            half = width // 2
            idx = [ir.Constant(ir.VectorType(I32, half), list(range(k * half, (k + 1) * half)))
                   for k in (0, 1)]
            lo = tuple(b.shuffle_vector(v, v, idx[0]) for v in state)
            hi = tuple(b.shuffle_vector(v, v, idx[1]) for v in state)
            if half == 1:
                lo = tuple(b.extract_element(v, ir.Constant(I32, 0)) for v in lo)
                hi = tuple(b.extract_element(v, ir.Constant(I32, 0)) for v in hi)
            state = acc.merge(self.vm.with_width(half), lo, hi)
            width = half
        return state

    def merge_rows(self, acc, per_row):
        """per_row[j]: row j's state as vectors -> one state with row j's lanes merged in
        lane j (a scalar state for one row).  Rows are merged pairwise into shared vectors
        (a transposing reduction): R rows cost about R-1 vector merges, not R*log2(W)."""
        if self.group == 1:
            return self.lane_merge(acc, per_row[0])
        b, W = self.b, self.width
        vecs, rows_per_vec, lanes = per_row, 1, W  # lanes: per row in each vector
        while lanes > 1:
            pairs = list(zip(vecs[0::2], vecs[1::2])) if len(vecs) > 1 else [(vecs[0], vecs[0])]
            half = lanes // 2
            lo_idx = [src + r * lanes + t for src in (0, W) for r in range(rows_per_vec) for t in range(half)]
            hi_idx = [i + half for i in lo_idx]
            lo_c, hi_c = (ir.Constant(ir.VectorType(I32, W), idx) for idx in (lo_idx, hi_idx))
            vecs = [acc.merge(self.vm, tuple(b.shuffle_vector(u, v, lo_c) for u, v in zip(s1, s2)),
                              tuple(b.shuffle_vector(u, v, hi_c) for u, v in zip(s1, s2)))
                    for s1, s2 in pairs]
            rows_per_vec, lanes = rows_per_vec * 2, half
        first = ir.Constant(ir.VectorType(I32, self.group), list(range(self.group)))
        return tuple(b.shuffle_vector(v, v, first) for v in vecs[0])

    # --- one vector of a pass body ------------------------------------------------
    def eval_ops(self, p: Pass, plan: PassPlan, wanted, row: _Row, offset, mask, loads=None) -> dict:
        """Values of `wanted` for one vector: only the ops they depend on (loads, math)."""
        vals = dict(loads or {})
        for op in needed_ops(p, wanted):
            if op.results[0] not in vals:
                self.emit_elementwise(op, plan, row, offset, mask, vals, fast=False)
        return vals

    def preload(self, unit: _Unit, offset, mask) -> dict:
        """The loads of one vector of the unit's pass."""
        vals: dict = {}
        for op in unit.p.ops:
            if op.kind in (Kind.LOAD_X, Kind.LOAD_Y):
                self.emit_elementwise(op, unit.plan, unit.row, offset, mask, vals, fast=False)
        return vals

    def emit_elementwise(self, op: Op, plan: PassPlan, row: _Row, offset, mask, vals: dict, fast: bool):
        vm, k = self.vm, op.kind
        a = [vals[v] if v in vals else row.splats[v] for v in op.args]
        if k is Kind.LOAD_X:
            out = self.load(row.x, offset, mask, prefetch=row.prefetch)
        elif k is Kind.LOAD_Y:
            out = self.load(row.y, offset, mask)
        elif k is Kind.SUB:
            out = vm.sub(*a)
        elif k is Kind.MUL:
            out = vm.mul(*a)
        elif k is Kind.EXP:
            out = (numerics.exp_scaled(vm, a[0], row.shifts[op.args[1]]) if fast
                   else numerics.exp_diff(vm, *a))
        elif k is Kind.EXP_PAIR:
            out = (numerics.exp_pair_floored if op in plan.summed else numerics.exp_pair)(vm, a[0])
        elif k is Kind.PAIR_SCALE:
            out = numerics.pair_scale(vm, *a)
        else:
            raise NotImplementedError(f"LLVM backend: no lowering for pass op {op}")
        vals[op.results[0]] = out

    def emit_body(self, p: Pass, plan: PassPlan, lowerings, row: _Row, offset, states, mask,
                  fast: bool, block_fast: bool, nontemporal: bool, loads: dict):
        """One vector of the pass (its loads already done); returns the new accumulator states."""
        vm = self.vm
        vals = dict(loads)
        new_states = []
        fused_x = {}  # pair_scale op -> the x of its fused exp_pair
        for op in p.ops:
            k = op.kind
            if op in plan.skipped or (op.results and op.results[0] in vals):
                continue
            if fast and op in plan.fused:
                fused_x[plan.fused[op]] = vals[op.args[0]]
            elif op in plan.block_max:
                old = states[len(new_states)]
                new = lowerings[len(new_states)].step(vm, old, *self.block_term(op, row, vals[plan.keys[op]], block_fast))
                new_states.append(new if mask is None else tuple(vm.select(mask, n, o) for n, o in zip(new, old)))
            elif k is Kind.PAIR_SCALE and op in fused_x:
                vals[op.results[0]] = numerics.exp_scaled(vm, fused_x[op], row.shifts[op])
            elif k is Kind.STORE:
                self.store(vals[op.args[0]], row.y, offset, mask, nontemporal)
            elif op in plan.running:
                old = states[len(new_states)]
                p, k = vals[op.args[0]]
                new = lowerings[len(new_states)].step(vm, old, (vm.ldexp(p, vm.sub(k, row.shifts[op])), k))
                if mask is not None:
                    new = tuple(vm.select(mask, n, o) for n, o in zip(new, old))
                new_states.append(new)
            elif op.results and op.results[0].type.is_accumulator:
                old = states[len(new_states)]
                new = lowerings[len(new_states)].step(vm, old, *(vals[v] if v in vals else row.splats[v]
                                                                   for v in op.args))
                if mask is not None:
                    new = tuple(vm.select(mask, n, o) for n, o in zip(new, old))
                new_states.append(new)
            else:
                self.emit_elementwise(op, plan, row, offset, mask, vals, fast)
        return new_states

    # --- memory ------------------------------------------------------------------------
    def tail_mask(self, start, end):
        b, W = self.b, self.width
        left = b.trunc(b.sub(end, start), I32)
        lanes = ir.Constant(ir.VectorType(I32, W), list(range(W)))
        splat = b.shuffle_vector(b.insert_element(ir.Constant(lanes.type, ir.Undefined), left,
                                                  ir.Constant(I32, 0)),
                                 ir.Constant(lanes.type, ir.Undefined), ir.Constant(lanes.type, [0] * W))
        return b.icmp_unsigned("<", lanes, splat)

    def aligned_start(self, row_ptr, n):
        """Elements before the first VECTOR_ALIGN-aligned address of the row (at most n)."""
        b = self.b
        addr = b.ptrtoint(row_ptr, I64)
        skip = b.lshr(b.and_(b.sub(self.i64(0), addr), self.i64(VECTOR_ALIGN - 1)), self.i64(2))
        return b.select(b.icmp_signed("<", skip, n), skip, n)

    def prefetch(self, row_ptr, offset, ahead: int):
        b = self.b
        ptr = b.gep(row_ptr, [b.add(offset, self.i64(ahead))], source_etype=F32)
        fn = intrinsic(b.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
        b.call(fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])

    def load(self, row_ptr, offset, mask, prefetch: int = 0):
        b, vm = self.b, self.vm
        ptr = b.gep(row_ptr, [offset], source_etype=F32)
        if mask is None:
            if prefetch:
                self.prefetch(row_ptr, offset, prefetch)
            return b.load(ptr, typ=vm.ty, align=4)
        fn = intrinsic(b.module, f"llvm.masked.load.{vm.suffix}.p0", vm.ty,
                       [PTR, I32, mask.type, vm.ty])
        return b.call(fn, [ptr, ir.Constant(I32, 4), mask, vm.const(0.0)])

    def store(self, value, row_ptr, offset, mask, nontemporal):
        b, vm = self.b, self.vm
        ptr = b.gep(row_ptr, [offset], source_etype=F32)
        if mask is None:
            # streaming stores start at a VECTOR_ALIGN boundary and go on a vector at a time
            st = b.store(value, ptr, align=min(VECTOR_ALIGN, 4 * vm.width) if nontemporal else 4)
            if nontemporal:
                st.set_metadata("nontemporal", b.module.add_metadata([ir.Constant(I32, 1)]))
            return
        fn = intrinsic(b.module, f"llvm.masked.store.{vm.suffix}.p0", ir.VoidType(),
                       [vm.ty, PTR, I32, mask.type])
        b.call(fn, [value, ptr, ir.Constant(I32, 4), mask])
