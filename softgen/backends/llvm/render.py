"""Render a loop-IR kernel (softgen.lower.loopir) as an LLVM module.

A translation, statement by statement: vars become allocas in the entry block (LLVM's
SROA promotes them to registers), structured control flow becomes basic blocks, each
instruction one or a few LLVM instructions.  Float comparisons are ordered, integer ones
signed.  What cannot be rendered (an op this table lacks, an ldexp at a width with no
native instruction) is refused here.
"""
from __future__ import annotations

from llvmlite import ir

from ...lower.loopir import Const, DoWhile, If, Instr, Kernel, Loop, Ty, Var
from ...targets import Target

I32 = ir.IntType(32)
_PREDICATES = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


def llvm_type(t: Ty):
    if t.kind == "array":
        return ir.ArrayType(llvm_type(t.elem), t.count)
    if t.kind == "ptr":
        return ir.PointerType()
    base = {"float": {16: ir.HalfType(), 32: ir.FloatType(), 64: ir.DoubleType()}.get(t.bits),
            "int": ir.IntType(t.bits), "bool": ir.IntType(1)}[t.kind]
    return base if t.lanes == 1 else ir.VectorType(base, t.lanes)


def _suffix(t: Ty) -> str:
    """LLVM's overload suffix of a float or int type: f32, v16f32, v16i16."""
    base = f"{'f' if t.kind == 'float' else 'i'}{t.bits}"
    return base if t.lanes == 1 else f"v{t.lanes}{base}"


def intrinsic(module: ir.Module, name: str, ret, args) -> ir.Function:
    """Declare (once) an LLVM intrinsic as a plain function."""
    if name in module.globals:
        return module.globals[name]
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


def render(kernel: Kernel, target: Target, *more: Kernel) -> ir.Module:
    """One module with the kernel (and `more` kernels beside it)."""
    module = ir.Module(name=kernel.name)
    module.triple = target.triple
    for k in (kernel, *more):
        fnty = ir.FunctionType(ir.VoidType(), [llvm_type(p.ty) for p in k.params])
        _Renderer(ir.Function(module, fnty, name=k.name), k, target).run()
    return module


class _Renderer:
    def __init__(self, fn: ir.Function, kernel: Kernel, target: Target):
        self.fn, self.kernel, self.target = fn, kernel, target
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.values = {}
        self.constants = {}
        for arg, p in zip(fn.args, kernel.params):
            arg.name = p.name
            self.values[p] = arg
        # newest first, as allocas were placed before: keeps LLVM's output as it was
        self.slots = {v: self.b.alloca(llvm_type(v.ty)) for v in reversed(kernel.vars)}

    def run(self):
        self.block(self.kernel.body)
        self.b.ret_void()

    def value(self, a):
        if isinstance(a, Const):
            return self.constant(a)
        if isinstance(a, Var):
            return self.slots[a]
        return self.values[a]

    def constant(self, a: Const) -> ir.Constant:
        """One llvmlite constant per value: it formats itself once and keeps the text, where a
        new one per use re-formats a vector lane by lane (the larger part of rendering a
        kernel).  Keyed by repr so that 0.0 and -0.0 (equal, same hash) stay apart."""
        key = (a.ty, repr(a.value))
        found = self.constants.get(key)
        if found is None:
            ty = llvm_type(a.ty)
            value = list(a.value) if isinstance(a.value, tuple) else a.value if a.ty.lanes == 1 else [a.value] * a.ty.lanes
            found = self.constants[key] = ir.Constant(ty, value)
        return found

    # --- control flow ---------------------------------------------------------------------
    def block(self, statements: list):
        for s in statements:
            if isinstance(s, Instr):
                self.instr(s)
            elif isinstance(s, Loop):
                self.loop(s)
            elif isinstance(s, If):
                self.if_(s)
            else:
                self.do_while(s)

    def loop(self, s: Loop):
        head, body, done = (self.fn.append_basic_block(f"{s.name}.{part}") for part in ("head", "body", "done"))
        self.b.branch(head)
        self.b.position_at_end(head)
        self.block(s.head)
        self.b.cbranch(self.value(s.cond), body, done)
        self.b.position_at_end(body)
        self.block(s.body)
        self.b.branch(head)
        self.b.position_at_end(done)

    def if_(self, s: If):
        then = self.fn.append_basic_block(f"{s.name}.then")
        other = self.fn.append_basic_block(f"{s.name}.else") if s.else_ is not None else None
        done = self.fn.append_basic_block(f"{s.name}.done")
        self.b.cbranch(self.value(s.cond), then, other or done)
        for block, statements in [(then, s.then), (other, s.else_)][::-1 if s.else_first else 1]:
            if block is not None:
                self.b.position_at_end(block)
                self.block(statements)
                self.b.branch(done)
        self.b.position_at_end(done)

    def do_while(self, s: DoWhile):
        body = self.fn.append_basic_block(f"{s.name}.body")
        done = self.fn.append_basic_block(f"{s.name}.done")
        self.b.branch(body)
        self.b.position_at_end(body)
        self.block(s.body)
        self.b.cbranch(self.value(s.cond), body, done)
        self.b.position_at_end(done)

    # --- instructions -----------------------------------------------------------------------
    def instr(self, s: Instr):
        rule = getattr(self, f"op_{s.op}", None)
        if rule is None:
            raise NotImplementedError(f"LLVM renderer: no rendering for loop-IR op {s.op!r} (`{s}`)")
        args = [self.value(a) for a in s.args]
        out = rule(s, *args)
        if s.result is not None:
            self.values[s.result] = out

    def _is_float(self, s: Instr) -> bool:
        return s.args[0].ty.kind == "float"

    def _call(self, name: str, s: Instr, *args, **kw):
        ty = llvm_type(s.result.ty)
        fn = intrinsic(self.b.module, f"llvm.{name}.{_suffix(s.result.ty)}", ty, [a.type for a in args])
        return self.b.call(fn, args, **kw)

    def op_add(self, s, a, b):
        return self.b.fadd(a, b) if self._is_float(s) else self.b.add(a, b)

    def op_sub(self, s, a, b):
        return self.b.fsub(a, b) if self._is_float(s) else self.b.sub(a, b)

    def op_mul(self, s, a, b):
        return self.b.fmul(a, b) if self._is_float(s) else self.b.mul(a, b)

    def op_div(self, s, a, b):
        return self.b.fdiv(a, b)

    def op_udiv(self, s, a, b):
        return self.b.udiv(a, b)

    def op_fma(self, s, a, b, c):
        return self._call("fma", s, a, b, c)

    def op_maximum(self, s, a, b):
        # nsz: max(-0, +0) may be either zero, which saves x86 a sign-bit blend
        return self._call("maximum", s, a, b, fastmath=("nsz",))

    def op_fabs(self, s, a):
        return self._call("fabs", s, a)

    def op_log(self, s, a):
        return self._call("log", s, a)

    def _compare(self, s, a, b):
        pred = _PREDICATES[s.op]
        return self.b.fcmp_ordered(pred, a, b) if self._is_float(s) else self.b.icmp_signed(pred, a, b)

    op_lt = op_le = op_gt = op_ge = op_eq = op_ne = _compare

    def op_isnan(self, s, a):
        return self.b.fcmp_unordered("uno", a, a)

    def op_and(self, s, a, b):
        return self.b.and_(a, b)

    def op_or(self, s, a, b):
        return self.b.or_(a, b)

    def op_select(self, s, c, a, b):
        return self.b.select(c, a, b)

    def op_bitcast(self, s, a):
        return self.b.bitcast(a, llvm_type(s.result.ty))

    def op_shl(self, s, a, n):
        return self.b.shl(a, n)

    def op_lshr(self, s, a, n):
        return self.b.lshr(a, n)

    def op_zext(self, s, a):
        return self.b.zext(a, llvm_type(s.result.ty))

    def op_trunc(self, s, a):
        return self.b.trunc(a, llvm_type(s.result.ty))

    def op_convert(self, s, a):
        """float <-> float of another width, rounded to nearest."""
        ty = llvm_type(s.result.ty)
        return self.b.fpext(a, ty) if s.result.ty.bits > s.args[0].ty.bits else self.b.fptrunc(a, ty)

    def op_ldexp(self, s, v, d):
        t = s.result.ty
        suffix = {(32, 16): "ps", (64, 8): "pd"}.get((t.bits, t.lanes))
        if not (self.target.has_avx512 and t.kind == "float" and suffix):
            raise NotImplementedError(f"LLVM renderer: no native ldexp on {t} for {self.target.name}")
        # AVX-512 vscalefps/pd: v * 2^floor(d), subnormals and -inf handled
        ty, mask = llvm_type(t), ir.IntType(t.lanes)
        fn = intrinsic(self.b.module, f"llvm.x86.avx512.mask.scalef.{suffix}.512", ty, [ty, ty, ty, mask, I32])
        return self.b.call(fn, [v, d, v, ir.Constant(mask, -1), ir.Constant(I32, 4)])   # rounding: the current mode

    def op_index(self, s, offset):
        """offset + lane in each lane, as floats."""
        t = s.result.ty
        ty = llvm_type(t)
        start = self.b.sitofp(offset, llvm_type(t.scalar))
        if t.lanes == 1:
            return start
        return self.b.fadd(self.op_splat(s, start), ir.Constant(ty, [float(j) for j in range(t.lanes)]))

    def op_splat(self, s, scalar):
        ty = llvm_type(s.result.ty)
        lanes = s.result.ty.lanes
        vec = self.b.insert_element(ir.Constant(ty, ir.Undefined), scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(vec, ir.Constant(ty, ir.Undefined),
                                     ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))

    def op_extract(self, s, v):
        return self.b.extract_element(v, ir.Constant(I32, s.attrs["lane"]))

    def op_shuffle(self, s, u, v):
        lanes = s.attrs["lanes"]
        return self.b.shuffle_vector(u, v, ir.Constant(ir.VectorType(I32, len(lanes)), list(lanes)))

    def op_all(self, s, mask):
        lanes = s.args[0].ty.lanes
        return self.b.icmp_signed("==", self.b.bitcast(mask, ir.IntType(lanes)), ir.Constant(ir.IntType(lanes), -1))

    def op_lanes_below(self, s, count):
        lanes = s.result.ty.lanes
        vty = ir.VectorType(I32, lanes)
        index = ir.Constant(vty, list(range(lanes)))
        splat = self.b.shuffle_vector(self.b.insert_element(ir.Constant(vty, ir.Undefined), self.b.trunc(count, I32),
                                                            ir.Constant(I32, 0)),
                                      ir.Constant(vty, ir.Undefined), ir.Constant(vty, [0] * lanes))
        return self.b.icmp_unsigned("<", index, splat)

    def op_align_skip(self, s, ptr):
        """Elements from ptr up to the next `align`-byte boundary."""
        i64 = ir.IntType(64)
        addr = self.b.ptrtoint(ptr, i64)
        skip = self.b.and_(self.b.sub(ir.Constant(i64, 0), addr), ir.Constant(i64, s.attrs["align"] - 1))
        return self.b.lshr(skip, ir.Constant(i64, s.attrs["elem"].bytes.bit_length() - 1))

    def op_gep(self, s, base, offset):
        return self.b.gep(base, [offset], source_etype=llvm_type(s.attrs["elem"]))

    def op_load(self, s, ptr):
        return self.b.load(ptr, typ=llvm_type(s.result.ty), align=s.attrs["align"])

    def op_masked_load(self, s, ptr, mask):
        t = s.result.ty
        ty = llvm_type(t)
        fn = intrinsic(self.b.module, f"llvm.masked.load.{_suffix(t)}.p0", ty, [ir.PointerType(), I32, mask.type, ty])
        zero = 0.0 if t.kind == "float" else 0
        return self.b.call(fn, [ptr, ir.Constant(I32, t.bytes), mask, ir.Constant(ty, [zero] * t.lanes)])

    def op_store(self, s, ptr, value):
        st = self.b.store(value, ptr, align=s.attrs["align"])
        if s.attrs.get("nontemporal"):
            st.set_metadata("nontemporal", self.b.module.add_metadata([ir.Constant(I32, 1)]))

    def op_masked_store(self, s, ptr, value, mask):
        t = s.args[1].ty
        fn = intrinsic(self.b.module, f"llvm.masked.store.{_suffix(t)}.p0", ir.VoidType(),
                       [llvm_type(t), ir.PointerType(), I32, mask.type])
        self.b.call(fn, [value, ptr, ir.Constant(I32, t.bytes), mask])

    def op_prefetch(self, s, ptr):
        fn = intrinsic(self.b.module, "llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])
        self.b.call(fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])

    def op_fence(self, s):
        if self.target.arch != "x86_64":
            raise NotImplementedError(f"LLVM renderer: no streaming-store fence for {self.target.arch}")
        self.b.call(intrinsic(self.b.module, "llvm.x86.sse.sfence", ir.VoidType(), []), [])

    def op_read(self, s, slot):
        return self.b.load(slot)

    def op_write(self, s, slot, value):
        self.b.store(value, slot)

    def _element(self, var_ty: Ty, slot, j):
        if var_ty.kind == "array":
            return self.b.gep(slot, [ir.Constant(ir.IntType(64), 0), j], inbounds=True)
        lane_ty = llvm_type(var_ty.scalar)   # a lane of a vector var
        return self.b.gep(self.b.bitcast(slot, lane_ty.as_pointer()), [j], source_etype=lane_ty)

    def op_read_at(self, s, slot, j):
        return self.b.load(self._element(s.args[0].ty, slot, j), typ=llvm_type(s.result.ty))

    def op_write_at(self, s, slot, j, value):
        self.b.store(value, self._element(s.args[0].ty, slot, j))
