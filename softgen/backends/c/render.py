"""Render a loop-IR kernel (softgen.lower.loopir) as the statements of a C function.

A translation, statement by statement, through the ISA's spelling table (isa.py):
values become `const` locals (t<N>), vars plain locals (v<N>), loops `for (;;)` with the
head before a `break`, ifs and do-whiles as themselves.  A value that a loop head or a
do-while body defines for later is declared before the loop.  Vector values are
registers of the ISA; one-lane values plain C scalars.  What C cannot render (lane
shuffles, vectors of rows) the lowering never produces for it (capabilities()); an op
this table lacks is refused here.
"""
from __future__ import annotations

import re

from ...lower.capabilities import Capabilities
from ...lower.loopir import Const, DoWhile, If, Instr, Kernel, Loop, Ty, Val, Var, remove_dead_code
from .isa import PATTERNS, Isa, c_float, shuffle

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_COMPARES = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


def capabilities(isa: Isa) -> Capabilities:
    """What the lowering may produce for C on `isa`: no vectors narrower than a register
    (lanes merged by swaps, groups of a register's worth of rows or one row); vscalefps
    and x86's NaN-ignoring max where the ISA has them."""
    bits = isa.ctype.dtype.bits
    x86 = "fence" in isa.ops
    return Capabilities(vector_bits=isa.width * bits,
                        native_ldexp=frozenset({(bits, isa.width)}) if "ldexp" in isa.ops else frozenset(),
                        nan_ignoring_max="greater" in isa.ops, streaming_fence=x86,
                        narrow_vectors=False)


class CRenderer:
    def __init__(self, kernel: Kernel, isa: Isa, fn: str):
        self.kernel, self.isa, self.fn = kernel, isa, fn
        self.scalar = PATTERNS["scalar"].for_dtype(isa.ctype.dtype)   # one-lane values
        self.used: set[str] = set()          # "isa.primitive": helpers the file must define
        self.tail_helpers: set[str] = set()  # lane_index, load_partial, store_partial
        self.names = {p: p.name for p in kernel.params}
        self.const_ptrs = {kernel.params[2]}  # x and what is derived from it
        self.compares: dict = {}             # mask value -> (op, a, b): select peepholes
        self.mask_counts: dict = {}          # tail mask -> its lane count (partial access)
        self.lines: list = []                # (text, name it defines or None)

    def body(self) -> list[str]:
        """Vars start at zero, so no compiler sees one read unset (a pipeline stage reads
        its values before the stage before it first wrote them, on paths it never takes)."""
        remove_dead_code(self.kernel)
        for v in self.kernel.vars:
            if v.ty.kind == "array":
                self.emit(f"{self.ctype(v.ty.elem)} v{v.id}[{v.ty.count}];")
            else:
                self.emit(f"{self.ctype(v.ty)} v{v.id} = {self.literal(Const(v.ty, 0))};")
        self.block(self.kernel.body)
        return _prune(self.lines)

    def emit(self, text: str, defines: str | None = None):
        self.lines.append((text, defines))

    # --- types and operands -----------------------------------------------------------------
    def table(self, t: Ty) -> Isa:
        return self.isa if t.lanes > 1 else self.scalar

    def ctype(self, t: Ty) -> str:
        if t.kind == "float":
            return self.table(t).vec
        if t.kind == "int":
            return "int64_t" if t.bits == 64 else self.table(t).ivec
        if t.kind == "bool":
            return self.table(t).mask
        raise NotImplementedError(f"C renderer: no C type for {t}")

    def operand(self, a) -> str:
        if isinstance(a, Var):
            return f"v{a.id}"
        if isinstance(a, Val):
            return self.names[a]
        return self.literal(a)

    def literal(self, c: Const) -> str:
        t = c.ty
        if isinstance(c.value, tuple):
            raise NotImplementedError(f"C renderer: no per-lane constant {c}")
        if t.kind == "float":
            lit = c_float(c.value, self.isa.ctype)
            return lit if t.lanes == 1 else self.spell(t, "set1", v=lit)
        if t.kind == "bool" and t.lanes > 1:
            return self.spell(t, "mask_zero") if not c.value else self.refuse(f"constant {c}")
        return str(int(c.value))

    def spell(self, t: Ty, prim: str, **args) -> str:
        table = self.table(t)
        if prim not in table.ops:
            self.refuse(f"{prim} on {t} ({table.name})")
        self.used.add(f"{table.name}.{prim}")
        return table.ops[prim].format(fn=self.fn, **args)

    def refuse(self, what: str):
        raise NotImplementedError(f"C renderer: cannot render {what} for {self.isa.name}")

    # --- control flow -------------------------------------------------------------------------
    def block(self, statements: list, hoisted: frozenset = frozenset()):
        for s in statements:
            if isinstance(s, Instr):
                self.instr(s, s.result in hoisted)
            elif isinstance(s, Loop):
                carried = self.declare_ahead(s.head)
                self.emit(f"for (;;) {{ /* {s.name} */")
                self.block(s.head, carried)
                self.emit(f"if (!({self.operand(s.cond)})) break;")
                self.block(s.body)
                self.emit("}")
            elif isinstance(s, If):
                self.emit(f"if ({self.operand(s.cond)}) {{ /* {s.name} */")
                self.block(s.then)
                if s.else_ is not None:
                    self.emit("} else {")
                    self.block(s.else_)
                self.emit("}")
            else:
                carried = self.declare_ahead(s.body)
                self.emit(f"do {{ /* {s.name} */")
                self.block(s.body, carried)
                self.emit(f"}} while ({self.operand(s.cond)});")

    def declare_ahead(self, statements: list) -> frozenset:
        """Values a loop head or do-while body defines that stay visible after it (loopir):
        declared before the loop, assigned inside."""
        values = [s.result for s in statements if isinstance(s, Instr) and s.result is not None]
        for v in values:
            self.names[v] = f"t{v.id}"
            self.emit(f"{self.ctype(v.ty)} t{v.id};", f"t{v.id}")
        return frozenset(values)

    def instr(self, s: Instr, hoisted: bool):
        rule = getattr(self, f"op_{s.op}", None)
        if rule is None:
            self.refuse(f"loop-IR op {s.op!r} (`{s}`)")
        text = rule(s, *[self.operand(a) for a in s.args])
        if s.result is None:
            self.emit(text + ";")
            return
        name = self.names.setdefault(s.result, f"t{s.result.id}")
        if hoisted:
            self.emit(f"{name} = {text};", name)
        elif s.result.ty.kind == "ptr":
            const = "const " if s.result in self.const_ptrs else ""
            self.emit(f"{const}{self.isa.ctype.name} *const {name} = {text};", name)
        else:
            self.emit(f"const {self.ctype(s.result.ty)} {name} = {text};", name)

    # --- arithmetic -----------------------------------------------------------------------------
    def _arith(self, s, a, b):
        t = s.result.ty
        if t.kind == "float":
            return self.spell(t, s.op, a=a, b=b)
        return f"{a} {dict(add='+', sub='-', mul='*')[s.op]} {b}"

    op_add = op_sub = op_mul = _arith

    def op_div(self, s, a, b):
        return self.spell(s.result.ty, "div", a=a, b=b)

    def op_udiv(self, s, a, b):
        return f"{a} / {b}"

    def op_fma(self, s, a, b, c):
        return self.spell(s.result.ty, "fma", a=a, b=b, c=c)

    def op_maximum(self, s, a, b):
        return self.spell(s.result.ty, "maximum", a=a, b=b)

    def op_fabs(self, s, a):
        return self.spell(s.result.ty, "fabs", a=a)

    def op_log(self, s, a):
        return self.spell(s.result.ty, "log", a=a)

    def op_ldexp(self, s, v, d):
        return self.spell(s.result.ty, "ldexp", a=v, b=d)

    def _compare(self, s, a, b):
        t = s.args[0].ty
        if t.kind != "float":
            return f"{a} {_COMPARES[s.op]} {b}"
        self.compares[s.result] = (s.op, s.args[0], s.args[1])
        return self.spell(t, s.op, a=a, b=b)

    op_lt = op_le = op_gt = op_ge = op_eq = op_ne = _compare

    def op_isnan(self, s, a):
        return self.spell(s.args[0].ty, "isnan", a=a)

    def _logic(self, s, a, b):
        return self.spell(s.result.ty, s.op, a=a, b=b)

    op_and = op_or = _logic

    def op_select(self, s, c, a, b):
        t = s.result.ty
        if t.kind == "bool" and t.lanes > 1:
            return self.spell(t, "select_mask", c=c, a=a, b=b)
        if t.kind != "float":
            return f"{c} ? {a} : {b}"
        peephole = self.min_max(s)
        if peephole:
            return peephole
        return self.spell(t, "select", c=c, a=a, b=b)

    def min_max(self, s) -> str | None:
        """select(a > b, a, b) as the ISA's max (and min alike) where it has one: b when
        unordered, as the select gives."""
        t, (c, a, b) = s.result.ty, s.args
        if "greater" not in self.table(t).ops or c not in self.compares:
            return None
        op, p, q = self.compares[c]
        if op not in ("lt", "gt"):
            return None
        big, small = (p, q) if op == "gt" else (q, p)
        if (a, b) == (big, small):
            return self.spell(t, "greater", a=self.operand(big), b=self.operand(small))
        if (a, b) == (small, big):
            return self.spell(t, "less", a=self.operand(small), b=self.operand(big))
        return None

    def op_bitcast(self, s, a):
        t = s.result.ty
        return self.spell(t, "as_float" if t.kind == "float" else "as_int", a=a)

    def op_shl(self, s, a, n):
        return self.spell(s.result.ty, "shl", a=a, n=n)

    # --- lanes ----------------------------------------------------------------------------------
    def op_splat(self, s, v):
        return self.spell(s.result.ty, "set1", v=v)

    def op_extract(self, s, v):
        lane = s.attrs["lane"]
        return self.isa.first.format(v=v) if lane == 0 else f"{v}[{lane}]"   # gcc/clang vector subscript

    def op_shuffle(self, s, a, b):
        text = shuffle(self.isa, a, b, s.attrs["lanes"])
        if text is None or s.result.ty.lanes != self.isa.width:
            self.refuse(f"the shuffle `{s}`")
        return text

    def op_all(self, s, m):
        return self.spell(s.args[0].ty, "all", m=m)

    def op_swap(self, s, v):
        return self.isa.swaps[s.attrs["half"]].format(v=v)

    def op_lanes_below(self, s, count):
        t = s.result.ty
        self.tail_helpers.add("lane_index")
        index = self.spell(t, "load", p=f"{self.fn}_lane_index")
        limit = self.spell(t, "set1", v=f"({self.isa.ctype.name})({count})")
        self.mask_counts[s.result] = count
        return self.spell(t, "lt", a=index, b=limit)

    # --- memory ---------------------------------------------------------------------------------
    def op_gep(self, s, base, offset):
        if s.args[0] in self.const_ptrs:
            self.const_ptrs.add(s.result)
        return f"{base} + {offset}"

    def op_align_skip(self, s, p):
        shift = s.attrs["elem"].bytes.bit_length() - 1
        return f"(int64_t)((((uintptr_t)0 - (uintptr_t)({p})) & {s.attrs['align'] - 1}u) >> {shift})"

    def op_load(self, s, p):
        return self.spell(s.result.ty, "load", p=p)

    def op_masked_load(self, s, p, mask):
        if self.isa.masked_load:
            return self.isa.masked_load.format(p=p, m=mask)
        self.tail_helpers.add("load_partial")
        return f"{self.fn}_load_partial({p}, {self.mask_count(s.args[1])})"

    def op_store(self, s, p, v):
        t = s.args[1].ty
        return self.spell(t, "stream" if s.attrs.get("nontemporal") else "store", p=p, v=v)

    def op_masked_store(self, s, p, v, mask):
        if self.isa.masked_store:
            return self.isa.masked_store.format(p=p, v=v, m=mask)
        self.tail_helpers.add("store_partial")
        return f"{self.fn}_store_partial({p}, {v}, {self.mask_count(s.args[2])})"

    def mask_count(self, mask) -> str:
        if mask not in self.mask_counts:
            self.refuse("a masked access whose mask is not a tail's")
        return self.mask_counts[mask]

    def op_prefetch(self, s, p):
        return self.isa.ops["prefetch"].format(p=p) if "prefetch" in self.isa.ops else "(void)0"

    def op_fence(self, s):
        if "fence" not in self.isa.ops:
            self.refuse("a streaming-store fence")
        return self.isa.ops["fence"]

    # --- vars -----------------------------------------------------------------------------------
    def op_read(self, s, var):
        return var

    def op_write(self, s, var, value):
        return f"{var} = {value}"

    def op_read_at(self, s, var, j):
        return f"{var}[{j}]"   # an array's element, or a vector's lane (gcc/clang vector subscript)

    def op_write_at(self, s, var, j, value):
        return f"{var}[{j}] = {value}"


def _prune(lines: list) -> list[str]:
    """Drop definitions nothing reads (a comparison whose select became a max, a row
    pointer a pass does not use), so -Wunused-variable has nothing to say."""
    live, kept = set(), []
    for text, defines in reversed(lines):
        if defines is not None and defines not in live:
            continue
        kept.append(text)
        live.update(_IDENTIFIER.findall(text))
    return kept[::-1]
