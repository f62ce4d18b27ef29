"""Render a loop-IR kernel (softgen.lower.loopir) as the statements of a C function.

A translation, statement by statement, through the ISA's spelling table (isa.py):
values become `const` locals (t<N>), vars plain locals (v<N>), loops `for (;;)` with the
head before a `break`, ifs and do-whiles as themselves.  A value that a loop head or a
do-while body defines for later is declared before the loop.  Vector values are
registers of the ISA; one-lane values plain C scalars.  Values of the compute dtype (and
its masks) are spelled by the ISA's pattern filled in for that dtype; other lane types
(integer vectors of every width, 16-bit storage, float32 lanes under float64 compute,
mask bytes) by the ISA's `lanes` and `converts` tables.  What C
cannot render (lane shuffles, vectors of rows) the lowering never produces for it
(capabilities()); an op the tables lack is refused here.
"""
from __future__ import annotations

import re

from ...ir import DType
from ...lower.capabilities import WIDE_CASTS, Capabilities
from ...lower.loopir import Const, DoWhile, If, Instr, Kernel, Loop, Ty, Val, Var, remove_dead_code
from .isa import C_TYPES, PATTERNS, Isa, c_float, elem_c_type, shuffle

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_COMPARES = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
HALF_CASTS = frozenset({(DType.F16, DType.F32), (DType.F32, DType.F16)})


def capabilities(isa: Isa) -> Capabilities:
    """What the lowering may produce for C on `isa` (filled in for the compute dtype): no
    vectors narrower than a register (lanes merged by swaps, groups of a register's worth
    of rows or one row); vscalefps/pd and x86's NaN-ignoring max where the ISA has them;
    float16 <-> float32 in one instruction where it has that (F16C, AVX-512F, NEON), else
    numerics' integer recipes."""
    bits = isa.ctype.dtype.bits
    x86 = "fence" in isa.ops
    return Capabilities(vector_bits=isa.width * bits,
                        native_ldexp=frozenset({(bits, isa.width)}) if "ldexp" in isa.ops else frozenset(),
                        nan_ignoring_max="greater" in isa.ops, streaming_fence=x86,
                        narrow_vectors=False,
                        native_casts=WIDE_CASTS | (HALF_CASTS if isa.converts_half else frozenset()))


class CRenderer:
    def __init__(self, kernel: Kernel, isa: Isa, fn: str, const_params: frozenset = frozenset({"x"})):
        """fn: the prefix of the file's helpers; const_params: the parameters that point to
        const data (x, and input operands)."""
        self.kernel, self.isa, self.fn = kernel, isa, fn
        self.scalar = PATTERNS["scalar"].for_dtype(isa.ctype.dtype)   # one-lane values
        # one-lane floats by their bits (float32 ones beside float64 compute)
        self.scalars = {t.dtype.bits: PATTERNS["scalar"].for_dtype(t.dtype) for t in C_TYPES.values()}
        # "isa.primitive" (+ the dtype's tag) -> (macro, the table that spelled it): the
        # helpers the file may need (templates/primitives.c.j2 defines those it has)
        self.used: dict[str, tuple[str, Isa]] = {}
        self.lane_index = False              # the tail masks' lane numbers
        self.partials: dict = {}             # ("load" | "store", Ty) -> tail helper (partial_helper)
        self.names = {p: p.name for p in kernel.params}
        self.const_ptrs = {p for p in kernel.params if p.name in const_params}  # and what derives from them
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
        lines = _prune(self.lines)
        used = {name for line in lines for name in _IDENTIFIER.findall(line)}
        # a kernel that reads neither x nor y (a merge of chunk states) still has the ABI's
        # parameters
        return [f"(void){p.name};" for p in self.kernel.params if p.name not in used] + lines

    def emit(self, text: str, defines: str | None = None):
        self.lines.append((text, defines))

    # --- types and operands -----------------------------------------------------------------
    def table(self, t: Ty) -> Isa | None:
        """The pattern table of t: the compute dtype's vectors and their masks, one-lane
        values by their bits; None for other lane types.  Integer vectors are the lane
        tables' alone: the pattern spells float operations, which a C compiler would reject
        on integer registers (or worse, convert)."""
        if t.lanes == 1:
            return self.scalars.get(t.bits, self.scalar)
        if t.kind == "bool" or (t.kind == "float" and t.bits == self.isa.ctype.dtype.bits):
            return self.isa
        return None

    def lanes(self, t: Ty) -> dict | None:
        """The ISA's entry for a lane type other than the compute dtype's (Isa.lanes)."""
        return self.isa.lanes.get(str(t))

    def is_compute(self, t: Ty) -> bool:
        return t.kind == "float" and t.bits == self.isa.ctype.dtype.bits and t.lanes == self.isa.width

    def ctype(self, t: Ty) -> str:
        if t.kind == "bool":
            return self.table(t).mask
        if t.kind == "int" and t.bits == 64 and t.lanes == 1:
            return "int64_t"
        entry = self.lanes(t)
        if entry is not None:
            return entry["type"]
        table = self.table(t)
        if table is None:
            raise NotImplementedError(f"C renderer: no C type for {t} on {self.isa.name}")
        return table.vec if t.kind == "float" else table.ivec

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
            lit = c_float(c.value, C_TYPES[DType.F64 if t.bits == 64 else DType.F32])
            return lit if t.lanes == 1 else self.spell(t, "set1", v=lit)
        if t.kind == "bool" and t.lanes > 1:
            return self.spell(t, "mask_zero") if not c.value else self.refuse(f"constant {c}")
        v = int(c.value)
        if t.kind == "int" and t.lanes > 1:   # lanes of a conversion recipe or of a double's bits
            suffix = "LL" if t.bits == 64 else ""
            return self.spell(t, "set1", v=f"({v + 1}{suffix} - 1)" if v == -2 ** (t.bits - 1) else f"{v}{suffix}")
        if t.kind == "int" and t.bits < 64:
            return f"{v & ((1 << t.bits) - 1)}u"   # the C type is unsigned
        return str(v) if abs(v) < 2 ** 31 else f"{v}LL"

    def spell(self, t: Ty, prim: str, **args) -> str:
        entry = self.lanes(t)
        if entry is not None and entry.get(prim) is not None:
            return entry[prim].format(fn=self.fn, **args)
        table = self.table(t)
        if table is None or prim not in table.ops:
            self.refuse(f"{prim} on {t}")
        self.used[f"{table.name}.{prim}{table.ctype.spell['tag']}"] = (f"{table.name}_{prim}", table)
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
            elem = s.attrs["elem"]
            self.emit(f"{const}{elem_c_type(elem.bits, elem.kind)} *const {name} = {text};", name)
        else:
            self.emit(f"const {self.ctype(s.result.ty)} {name} = {text};", name)

    # --- arithmetic -----------------------------------------------------------------------------
    def _arith(self, s, a, b):
        t = s.result.ty
        if t.kind == "int" and t.bits == 64 and t.lanes == 1:   # indices
            return f"{a} {dict(add='+', sub='-', mul='*')[s.op]} {b}"
        return self.spell(t, s.op, a=a, b=b)

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
        if t.kind == "int" and t.bits == 64 and t.lanes == 1:
            return f"{a} {_COMPARES[s.op]} {b}"
        if t.kind == "float":
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
        if t.lanes == 1 and t.kind in ("int", "bool"):
            return f"{c} ? {a} : {b}"
        if t.kind == "int":
            return self.spell(t, "select", c=c, a=a, b=b)
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
        if t.kind == "float":
            return self.spell(t, "as_float", a=a)
        return self.spell(s.args[0].ty, "as_int", a=a)

    def op_shl(self, s, a, n):
        return self.spell(s.result.ty, "shl", a=a, n=int(s.args[1].value))

    def op_lshr(self, s, a, n):
        return self.spell(s.result.ty, "lshr", a=a, n=int(s.args[1].value))

    def op_zext(self, s, a):
        """Narrower integer lanes widened, spelled per source element type (Isa.lanes)."""
        source = str(s.args[0].ty.scalar)
        spellings = (self.lanes(s.result.ty) or {}).get("zext", {})
        if source not in spellings:
            self.refuse(f"a zero-extension from {s.args[0].ty} to {s.result.ty}")
        return spellings[source].format(a=a)

    def op_trunc(self, s, a):
        return self.spell(s.args[0].ty, "trunc", a=a)

    def op_convert(self, s, a):
        """float <-> float of another width, rounded to nearest even."""
        key = (str(s.args[0].ty), str(s.result.ty))
        if key not in self.isa.converts:
            self.refuse(f"a conversion from {key[0]} to {key[1]}")
        return self.isa.converts[key].format(a=a)

    # --- lanes ----------------------------------------------------------------------------------
    def op_splat(self, s, v):
        return self.spell(s.result.ty, "set1", v=v)

    def op_extract(self, s, v):
        lane, t = s.attrs["lane"], s.args[0].ty
        entry = self.lanes(t)
        if entry is not None and "lane" in entry:
            return entry["lane"].format(v=v, lane=lane)
        if lane == 0 and self.is_compute(t):
            return self.isa.first.format(v=v)
        return f"{v}[{lane}]"   # gcc/clang vector subscript

    def op_shuffle(self, s, a, b):
        text = shuffle(self.isa, a, b, s.attrs["lanes"])
        if text is None or s.result.ty.lanes != self.isa.width:
            self.refuse(f"the shuffle `{s}`")
        return text

    def op_all(self, s, m):
        return self.spell(s.args[0].ty, "all", m=m)

    def op_swap(self, s, v):
        return self.isa.swaps[s.attrs["half"]].format(v=v)

    def op_index(self, s, offset):
        """offset + lane in each lane, as floats (the lanes' numbers from the tail masks' table)."""
        t = s.result.ty
        start = f"({self.isa.ctype.name})({offset})"
        if t.lanes == 1:
            return start
        self.lane_index = True
        lanes = self.spell(t, "load", p=f"{self.fn}_lane_index")
        return self.spell(t, "add", a=self.spell(t, "set1", v=start), b=lanes)

    def op_lanes_below(self, s, count):
        t = s.result.ty
        self.lane_index = True
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
        t = s.result.ty
        entry = self.lanes(t)
        if entry is not None and entry.get("load") is None:   # smaller than any load: a buffer
            return self.partial("load", t, p=p, rem=t.lanes)
        return self.spell(t, "load", p=p)

    def op_masked_load(self, s, p, mask):
        t = s.result.ty
        if self.isa.masked_load and self.is_compute(t):
            return self.isa.masked_load.format(p=p, m=mask)
        return self.partial("load", t, p=p, rem=self.mask_count(s.args[1]))

    def op_store(self, s, p, v):
        t = s.args[1].ty
        entry = self.lanes(t)
        if entry is not None and entry.get("store") is None:
            return self.partial("store", t, p=p, v=v, rem=t.lanes)
        stream = s.attrs.get("nontemporal") and (entry is None or "stream" in entry)
        return self.spell(t, "stream" if stream else "store", p=p, v=v)

    def op_masked_store(self, s, p, v, mask):
        t = s.args[1].ty
        if self.isa.masked_store and self.is_compute(t):
            return self.isa.masked_store.format(p=p, v=v, m=mask)
        return self.partial("store", t, p=p, v=v, rem=self.mask_count(s.args[2]))

    def partial(self, kind: str, t: Ty, **args) -> str:
        """A call of the helper that moves the first `rem` elements of t through a stack
        buffer (tails, and vectors smaller than any load)."""
        key = (kind, t)
        if key not in self.partials:
            self.partials[key] = self.partial_helper(kind, t)
        h = self.partials[key]
        if kind == "load":
            return f"{self.fn}_load_partial{h['tag']}({args['p']}, {args['rem']})"
        return f"{self.fn}_store_partial{h['tag']}({args['p']}, {args['v']}, {args['rem']})"

    def partial_helper(self, kind: str, t: Ty) -> dict:
        """What templates/tail.c.j2 needs to define a partial load or store of t: the
        vector's C type, the element's, the buffer's length (the C type's elements) and
        the whole-register move from or to `buf` (lanes only loaded, mask bytes, have no
        store)."""
        entry = self.lanes(t)
        if entry is None:
            table = self.table(t)
            vec, lanes, move = table.vec, t.lanes, table.ops[kind]
        else:
            vec, lanes = entry["type"], entry.get("register", t.lanes)
            move = entry.get(f"{kind}_register", entry.get(kind))
        elem = elem_c_type(t.bits, t.kind)
        zero = c_float(0.0, C_TYPES[DType.F64 if t.bits == 64 else DType.F32]) if t.kind == "float" and t.bits > 16 \
            else "0"
        return dict(kind=kind, tag="" if self.is_compute(t) else f"_{t.kind[0]}{t.bits}", vec=vec, elem=elem,
                    lanes=lanes, zero=zero, move=move.format(p="buf", v="v"))

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


def tail_helpers(partials: dict) -> list[dict]:
    """The partial loads, then the partial stores (the compute dtype's first)."""
    order = sorted(partials.items(), key=lambda kv: (kv[0][0] != "load", kv[1]["tag"]))
    return [h for _, h in order]


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
