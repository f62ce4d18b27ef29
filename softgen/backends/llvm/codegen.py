"""Lower an IR program to an LLVM module with one vectorized kernel function.

The function has softgen's C ABI:
  void f(int64_t rows, int64_t n, const float *x, int64_t x_row_stride,
         float *y, int64_t y_row_stride)
Per row, each pass is: an unrolled main loop (`unroll` vectors per iteration, each
with its own accumulators), a one-vector remainder loop, then one masked vector
for the tail, so nothing past the row is read or written.  Reducing passes run
that in blocks of `block` elements folded into a compensated outer accumulator.
Loop-carried state lives in allocas that LLVM's SROA promotes to registers.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from ... import numerics
from ...ir import Kind, Op, Pass, Program, Type
from ...targets import Target
from .vmath import F32, I1, I32, LLVMMath, intrinsic

I64 = ir.IntType(64)
PTR = ir.PointerType()


@dataclass(frozen=True)
class Schedule:
    """Code-shape parameters of one kernel (the autotuner searches over these)."""
    unroll: int = 4          # vectors per main-loop iteration, one accumulator set each
    block: int = numerics.REDUCTION_BLOCK
    nontemporal: bool = False  # streaming stores for the final output pass

    def __post_init__(self):
        if self.unroll < 1 or self.block < 1:
            raise ValueError("unroll and block must be >= 1")


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


class _KernelEmitter:
    def __init__(self, fn: ir.Function, target: Target, schedule: Schedule):
        self.fn = fn
        self.target = target
        self.schedule = schedule
        self.width = target.vector_width
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.vm = LLVMMath(self.b, self.width, use_scalef=target.has_avx512)
        self.sm = LLVMMath(self.b, 1)
        self.rows, self.n, self.x, self.xs, self.y, self.ys = fn.args

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

    def if_then(self, cond, then_fn, name: str):
        then = self.fn.append_basic_block(f"{name}.then")
        done = self.fn.append_basic_block(f"{name}.done")
        self.b.cbranch(cond, then, done)
        self.b.position_at_end(then)
        then_fn()
        self.b.branch(done)
        self.b.position_at_end(done)

    def i64(self, v: int):
        return ir.Constant(I64, v)

    # --- the row loop ------------------------------------------------------------
    def emit(self, program: Program):
        b = self.b
        r = self.var(I64, self.i64(0))
        rows = b.select(b.icmp_signed(">", self.rows, self.i64(0)), self.rows, self.i64(0))

        def row_body():
            row = b.load(r)
            self.xrow = b.gep(self.x, [b.mul(row, self.xs)], source_etype=F32)
            self.yrow = b.gep(self.y, [b.mul(row, self.ys)], source_etype=F32)
            done = self.fn.append_basic_block("row.done")
            self.emit_program(program, done)
            b.position_at_end(done)
            b.store(b.add(row, self.i64(1)), r)

        self.loop_while(lambda: b.icmp_signed("<", b.load(r), rows), row_body, "row")
        b.ret_void()

    def emit_program(self, program: Program, done: ir.Block):
        """Emit one row of `program`, ending with a branch to `done`."""
        env: dict = {}
        passes = program.passes
        for step in program.steps:
            if isinstance(step, Pass):
                is_output = step is passes[-1]
                self.emit_pass(step, env, nontemporal=self.schedule.nontemporal and is_output)
            elif step.kind is Kind.GUARD:
                self.emit_guard(step, env, done)
            else:
                self.emit_row_op(step, env)
        self.b.branch(done)

    def emit_guard(self, op: Op, env: dict, done: ir.Block):
        sm, v = self.sm, env[op.args[0]]
        ok = self.b.and_(sm.le(sm.const(op.attrs["lo"]), v), sm.le(v, sm.const(op.attrs["hi"])))
        cont = self.fn.append_basic_block("guard.ok")
        fallback = self.fn.append_basic_block("guard.fallback")
        self.b.cbranch(ok, cont, fallback)
        self.b.position_at_end(fallback)
        self.emit_program(op.attrs["fallback"], done)
        self.b.position_at_end(cont)

    def emit_row_op(self, op: Op, env: dict):
        sm, a = self.sm, [env[v] for v in op.args]
        k = op.kind
        if k in (Kind.MERGE_MAX, Kind.MERGE_SUM, Kind.MERGE_PAIR, Kind.MERGE_ONLINE):
            results = env[op.args[0]]
        elif k is Kind.CONST:
            results = (sm.const(op.attrs["value"]),)
        elif k is Kind.ADD:
            results = (sm.add(*a),)
        elif k is Kind.SUB_ROW:
            results = (sm.sub(*a),)
        elif k is Kind.MUL_ROW:
            results = (sm.mul(*a),)
        elif k is Kind.RECIP:
            results = (sm.div(sm.const(1.0), a[0]),)
        elif k is Kind.LOG:
            results = (sm.log(a[0]),)
        elif k is Kind.WHERE_FINITE:
            results = (sm.select(sm.isfinite(a[0]), a[1], a[2]),)
        elif k is Kind.STORE_ROW:
            self.b.store(a[0], self.yrow)
            results = ()
        else:
            raise NotImplementedError(f"LLVM backend: no lowering for row op {op}")
        env.update(zip(op.results, results))

    # --- passes ----------------------------------------------------------------------
    def emit_pass(self, p: Pass, env: dict, nontemporal: bool):
        b, vm, W, U = self.b, self.vm, self.width, self.schedule.unroll
        splats = {v: vm.splat(env[v]) for op in p.ops for v in op.args if v.type is Type.ROW}
        reductions = p.reductions
        accs = [numerics.ACCUMULATORS[op.results[0].type] for op in reductions]
        i = self.var(I64, self.i64(0))
        inner = [[[self.var(vm.ty) for _ in acc.identity] for acc in accs] for _ in range(U)]
        outer = [[self.var(vm.ty, vm.const(c)) for c in acc.outer_identity] for acc in accs]

        def load_states(slots):
            return [tuple(b.load(s) for s in acc_slots) for acc_slots in slots]

        def store_states(slots, states):
            for acc_slots, state in zip(slots, states):
                for s, v in zip(acc_slots, state):
                    b.store(v, s)

        def body(u: int, offset, mask=None):
            states = load_states(inner[u])
            new = self.emit_body(p, splats, offset, states, mask, nontemporal)
            store_states(inner[u], new)

        def block(end):
            for u in range(U):
                store_states(inner[u], [[vm.const(c) for c in acc.identity] for acc in accs])

            def chunk():
                base = b.load(i)
                for u in range(U):
                    body(u, b.add(base, self.i64(u * W)))
                b.store(b.add(base, self.i64(U * W)), i)

            def one_vector():
                base = b.load(i)
                body(0, base)
                b.store(b.add(base, self.i64(W)), i)

            if U > 1:
                self.loop_while(lambda: b.icmp_signed("<=", b.add(b.load(i), self.i64(U * W)), end),
                                chunk, "chunk")
            self.loop_while(lambda: b.icmp_signed("<=", b.add(b.load(i), self.i64(W)), end),
                            one_vector, "vec")
            self.if_then(b.icmp_signed("<", b.load(i), end),
                         lambda: self.masked_tail(body, b.load(i), end), "tail")
            b.store(end, i)
            if accs:
                merged = self.tree_merge(accs, [load_states(inner[u]) for u in range(U)])
                store_states(outer, [acc.fold(vm, o, m) for acc, o, m
                                     in zip(accs, load_states(outer), merged)])

        if accs:  # blocks of `block` elements, each folded into the outer accumulators
            def one_block():
                start = b.load(i)
                end = b.add(start, self.i64(self.schedule.block))
                block(b.select(b.icmp_signed("<", end, self.n), end, self.n))
            self.loop_while(lambda: b.icmp_signed("<", b.load(i), self.n), one_block, "block")
            for op, acc, state in zip(reductions, accs, load_states(outer)):
                env[op.results[0]] = self.lane_merge(acc, acc.unfold(vm, state))
        else:
            block(self.n)
        b.store(self.i64(0), i)

    def masked_tail(self, body, start, end):
        b, W = self.b, self.width
        left = b.trunc(b.sub(end, start), I32)
        lanes = ir.Constant(ir.VectorType(I32, W), list(range(W)))
        splat = b.shuffle_vector(b.insert_element(ir.Constant(lanes.type, ir.Undefined), left,
                                                  ir.Constant(I32, 0)),
                                 ir.Constant(lanes.type, ir.Undefined), ir.Constant(lanes.type, [0] * W))
        mask = b.icmp_unsigned("<", lanes, splat)
        body(0, start, mask)

    def tree_merge(self, accs, per_unroll):
        """Merge the `unroll` accumulator sets pairwise into one."""
        while len(per_unroll) > 1:
            nxt = [[acc.merge(self.vm, a, c) for acc, a, c in zip(accs, s1, s2)]
                   for s1, s2 in zip(per_unroll[::2], per_unroll[1::2])]
            per_unroll = nxt + ([per_unroll[-1]] if len(per_unroll) % 2 else [])
        return per_unroll[0]

    def lane_merge(self, acc, state):
        """Reduce a vector state to one scalar state, halving the lanes each step."""
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
            state = acc.merge(LLVMMath(b, half), lo, hi)
            width = half
        return state

    # --- one vector of a pass body ------------------------------------------------
    def emit_body(self, p: Pass, splats, offset, states, mask, nontemporal):
        b, vm = self.b, self.vm
        vals: dict = {}
        new_states = []
        for op in p.ops:
            a = [vals[v] if v in vals else splats[v] for v in op.args]
            k = op.kind
            if k is Kind.LOAD_X:
                out = self.load(self.xrow, offset, mask)
            elif k is Kind.LOAD_Y:
                out = self.load(self.yrow, offset, mask)
            elif k is Kind.SUB:
                out = vm.sub(*a)
            elif k is Kind.MUL:
                out = vm.mul(*a)
            elif k is Kind.EXP:
                out = numerics.exp_diff(vm, *a)
            elif k is Kind.EXP_PAIR:
                out = numerics.exp_pair(vm, a[0])
            elif k is Kind.PAIR_SCALE:
                out = numerics.pair_scale(vm, *a)
            elif k is Kind.STORE:
                self.store(a[0], self.yrow, offset, mask, nontemporal)
                continue
            elif op.results and op.results[0].type.is_accumulator:
                acc = numerics.ACCUMULATORS[op.results[0].type]
                old = states[len(new_states)]
                new = acc.merge(vm, old, acc.element(vm, a[0]))
                if mask is not None:
                    new = tuple(vm.select(mask, n, o) for n, o in zip(new, old))
                new_states.append(new)
                continue
            else:
                raise NotImplementedError(f"LLVM backend: no lowering for pass op {op}")
            vals[op.results[0]] = out
        return new_states

    def load(self, row_ptr, offset, mask):
        b, vm = self.b, self.vm
        ptr = b.gep(row_ptr, [offset], source_etype=F32)
        if mask is None:
            return b.load(ptr, typ=vm.ty, align=4)
        fn = intrinsic(b.module, f"llvm.masked.load.{vm.suffix}.p0", vm.ty,
                       [PTR, I32, mask.type, vm.ty])
        return b.call(fn, [ptr, ir.Constant(I32, 4), mask, vm.const(0.0)])

    def store(self, value, row_ptr, offset, mask, nontemporal):
        b, vm = self.b, self.vm
        ptr = b.gep(row_ptr, [offset], source_etype=F32)
        if mask is None:
            st = b.store(value, ptr, align=4)
            if nontemporal:
                st.set_metadata("nontemporal", b.module.add_metadata([ir.Constant(I32, 1)]))
            return
        fn = intrinsic(b.module, f"llvm.masked.store.{vm.suffix}.p0", ir.VoidType(),
                       [vm.ty, PTR, I32, mask.type])
        b.call(fn, [value, ptr, ir.Constant(I32, 4), mask])
