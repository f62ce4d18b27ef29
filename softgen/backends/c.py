"""C backend: an IR program -> one readable, embeddable C file (plus header) per kernel.

The emitted function has softgen's C ABI (see softgen.backends.llvm.codegen):
  void name(int64_t rows, int64_t n, const float *restrict x, int64_t x_row_stride,
            float *restrict y, int64_t y_row_stride)

Python walks the Program the way the LLVM backend does (same lowerings, see _Emitter)
and runs the numerics recipes through `CMath`, which writes one C statement per
primitive using a small per-ISA table of intrinsic spellings.  The shape of the code (row loop, pass loops with
`unroll` vectors and `accumulators` accumulator sets, blocked reductions, tails,
lane merges, helper functions, header) lives in jinja2 templates in softgen/templates/
(package data, so an installed wheel has them).
"""
from __future__ import annotations

import dataclasses
import re
import string
import struct
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import jinja2

from .. import algorithms, numerics
from ..dtypes import check_dtype
from ..lower.plan import PassPlan, plan_pass
from ..lower.schedule import Schedule
from ..ir import DType, Kind, Op, Pass, Program, Type, Value
from ..version import __version__

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# What the C backend renders of a Schedule: unroll, accumulators, block, fast_exp and
# online_block_max.  Not yet the knobs below: whatever a schedule asks, the C code has these
# values (one row at a time, pairs merged per element); emit_c records the schedule it
# rendered and the knobs it left out on the CSource.
NOT_RENDERED = {"rows": 1, "interleave": 1, "pipeline": False, "nontemporal": False, "prefetch": 0,
                "pair_sum": "merge"}


def rendered_schedule(schedule: Schedule) -> tuple[Schedule, dict]:
    """The schedule the C backend renders for `schedule`, and {knob: value asked} of the
    knobs it leaves out (NOT_RENDERED)."""
    left_out = {k: getattr(schedule, k) for k, v in NOT_RENDERED.items() if getattr(schedule, k) != v}
    return dataclasses.replace(schedule, **NOT_RENDERED), left_out


@dataclass(frozen=True)
class CType:
    """How C spells one element dtype."""
    dtype: DType
    name: str            # the C type
    uint: str            # an unsigned integer of its size
    suffix: str          # of its literals and of libm's functions (1.0f, logf)
    struct_code: str     # its bits for struct.pack
    digits: int          # significant decimal digits that round-trip
    spell: dict          # the Isa patterns' tokens: $ps (ps/pd), $ss, $d (__m256d), $bits


C_TYPES = {
    DType.F32: CType(DType.F32, "float", "uint32_t", "f", "f", 9, dict(ps="ps", ss="ss", d="", bits="32")),
    DType.F64: CType(DType.F64, "double", "uint64_t", "", "d", 17, dict(ps="pd", ss="sd", d="d", bits="64")),
}


@dataclass(frozen=True)
class Isa:
    """How one instruction set spells the numerics primitives (str.format templates).

    An ISA is written once as a pattern whose spellings name the element type by tokens
    ($ps, $ss, $d, $bits, $ctype, $uint, $lf, $lanes; see CType); `for_dtype` fills them in.
    Optional spellings: `ldexp` (else numerics.ldexp_generic), and `greater` / `less`:
    a > b ? a : b and a < b ? a : b, b when unordered (x86 maxps/minps), which CMath
    uses for a select of a comparison's own operands (the clamps)."""
    name: str
    title: str
    vector_bits: int | None         # None: scalar C, one element at a time
    vec: str                        # C type of a vector
    ivec: str                       # ... of an integer vector of the same lanes (as_int / shl)
    mask: str                       # ... of a comparison result
    include: str | None             # intrinsics header
    # (predefined macro, gcc/clang flag that defines it) per target feature the intrinsics
    # use: the source refuses to compile without each, before a compiler fails to inline one
    requires: tuple[tuple[str, str | None], ...]
    ops: dict                       # primitive -> format string
    # lane reduction per dtype (a lane layout, not a spelling; its keys are the dtypes the
    # ISA has): swaps[dtype][half] brings lane k + half to lane k; first: lane 0 as a scalar
    swaps: dict = field(default_factory=dict)
    first: str = "{v}"
    masked_load: str | None = None  # native masked tail access; None: through a stack buffer
    masked_store: str | None = None
    host_features: frozenset = frozenset()  # LLVM feature names needed to run it on x86-64
    ctype: CType = C_TYPES[DType.F32]

    @property
    def width(self) -> int:
        """Elements per vector."""
        return 1 if self.vector_bits is None else self.vector_bits // self.ctype.dtype.bits

    @property
    def flags(self) -> tuple[str, ...]:
        """gcc/clang flags that enable the ISA."""
        return tuple(flag for _, flag in self.requires if flag)

    def for_dtype(self, dtype: DType) -> "Isa":
        """This pattern's spellings for vectors of `dtype`."""
        if dtype not in C_TYPES or dtype not in self.swaps:
            raise NotImplementedError(f"the {self.name} C backend has no {dtype.numpy_name} spelling")
        ctype = C_TYPES[dtype]
        typed = replace(self, ctype=ctype)
        tokens = dict(ctype.spell, ctype=ctype.name, uint=ctype.uint, lf=ctype.suffix, lanes=typed.width)

        def spell(text):
            return text if text is None else string.Template(text).substitute(tokens)
        return replace(typed, vec=spell(self.vec), ivec=spell(self.ivec), mask=spell(self.mask),
                       ops={k: spell(v) for k, v in self.ops.items()},
                       swaps={k: spell(v) for k, v in self.swaps[dtype].items()},
                       first=spell(self.first), masked_load=spell(self.masked_load),
                       masked_store=spell(self.masked_store))


_SCALAR = Isa(
    "scalar", "portable C99", None, "$ctype", "$uint", "int", None, (),
    {
        "set1": "{v}", "load": "*({p})", "store": "*({p}) = {v}",
        "add": "{a} + {b}", "sub": "{a} - {b}", "mul": "{a} * {b}",
        # fmaf would be a libm call per element without hardware FMA.  A float product
        # is exact in double, so this rounds (almost always) like a fused multiply-add.
        "fma": "($ctype)((double){a} * (double){b} + (double){c})",
        "maximum": "({a} > {b} || {a} != {a}) ? {a} : {b}",
        "lt": "{a} < {b}", "gt": "{a} > {b}", "eq": "{a} == {b}", "select": "{c} ? {a} : {b}",
        "as_int": "{fn}_bits({a})", "as_float": "{fn}_from_bits({a})", "shl": "{a} << {n}",
        # row values only (once per row, so a libm call is fine)
        "div": "{a} / {b}", "log": "log$lf({a})",
    },
    swaps={DType.F32: {}})  # the fma spelling needs a wider type: float32 only

_SSE2 = Isa(
    "sse2", "SSE2", 128, "__m128$d", "__m128i", "__m128$d", "emmintrin.h", (("__SSE2__", "-msse2"),),
    {
        "set1": "_mm_set1_$ps({v})", "load": "_mm_loadu_$ps({p})", "store": "_mm_storeu_$ps({p}, {v})",
        "add": "_mm_add_$ps({a}, {b})", "sub": "_mm_sub_$ps({a}, {b})", "mul": "_mm_mul_$ps({a}, {b})",
        # No FMA in SSE2, and mul+add is not enough: exp_pair needs k*ln2_hi exact for
        # |k| up to 2^20.  The helper computes in double like the scalar spelling.
        "fma": "{fn}_fma({a}, {b}, {c})",
        # maxps returns b when either is NaN; OR-ing a NaN a back in keeps it NaN
        "maximum": "_mm_or_$ps(_mm_max_$ps({a}, {b}), _mm_and_$ps(_mm_cmpunord_$ps({a}, {a}), {a}))",
        "lt": "_mm_cmplt_$ps({a}, {b})", "gt": "_mm_cmpgt_$ps({a}, {b})", "eq": "_mm_cmpeq_$ps({a}, {b})",
        "select": "_mm_or_$ps(_mm_and_$ps({c}, {a}), _mm_andnot_$ps({c}, {b}))",
        "greater": "_mm_max_$ps({a}, {b})", "less": "_mm_min_$ps({a}, {b})",
        "as_int": "_mm_cast${ps}_si128({a})", "as_float": "_mm_castsi128_$ps({a})",
        "shl": "_mm_slli_epi$bits({a}, {n})",
    },
    swaps={DType.F32: {2: "_mm_movehl_ps({v}, {v})", 1: "_mm_shuffle_ps({v}, {v}, _MM_SHUFFLE(2, 3, 0, 1))"}},
    first="_mm_cvt${ss}_f$bits({v})",
    host_features=frozenset({"sse2"}))

_AVX2 = Isa(
    "avx2", "AVX2 + FMA", 256, "__m256$d", "__m256i", "__m256$d", "immintrin.h",
    (("__AVX2__", "-mavx2"), ("__FMA__", "-mfma")),
    {
        "set1": "_mm256_set1_$ps({v})", "load": "_mm256_loadu_$ps({p})",
        "store": "_mm256_storeu_$ps({p}, {v})",
        "add": "_mm256_add_$ps({a}, {b})", "sub": "_mm256_sub_$ps({a}, {b})",
        "mul": "_mm256_mul_$ps({a}, {b})", "fma": "_mm256_fmadd_$ps({a}, {b}, {c})",
        "maximum": "_mm256_blendv_$ps(_mm256_max_$ps({a}, {b}), {a}, _mm256_cmp_$ps({a}, {a}, _CMP_UNORD_Q))",
        "lt": "_mm256_cmp_$ps({a}, {b}, _CMP_LT_OQ)", "gt": "_mm256_cmp_$ps({a}, {b}, _CMP_GT_OQ)",
        "eq": "_mm256_cmp_$ps({a}, {b}, _CMP_EQ_OQ)",
        "select": "_mm256_blendv_$ps({b}, {a}, {c})",
        "greater": "_mm256_max_$ps({a}, {b})", "less": "_mm256_min_$ps({a}, {b})",
        "as_int": "_mm256_cast${ps}_si256({a})", "as_float": "_mm256_castsi256_$ps({a})",
        "shl": "_mm256_slli_epi$bits({a}, {n})",
    },
    swaps={DType.F32: {4: "_mm256_permute2f128_ps({v}, {v}, 1)",
                       2: "_mm256_permute_ps({v}, _MM_SHUFFLE(1, 0, 3, 2))",
                       1: "_mm256_permute_ps({v}, _MM_SHUFFLE(2, 3, 0, 1))"}},
    first="_mm256_cvt${ss}_f$bits({v})",
    masked_load="_mm256_maskload_$ps({p}, _mm256_cast${ps}_si256({m}))",
    masked_store="_mm256_maskstore_$ps({p}, _mm256_cast${ps}_si256({m}), {v})",
    host_features=frozenset({"avx2", "fma"}))

_AVX512 = Isa(
    "avx512", "AVX-512F", 512, "__m512$d", "__m512i", "__mmask$lanes", "immintrin.h",
    (("__AVX512F__", "-mavx512f"),),   # every intrinsic it uses is AVX-512F (gcc's -mavx512f sets no __FMA__)
    {
        "set1": "_mm512_set1_$ps({v})", "load": "_mm512_loadu_$ps({p})",
        "store": "_mm512_storeu_$ps({p}, {v})",
        "add": "_mm512_add_$ps({a}, {b})", "sub": "_mm512_sub_$ps({a}, {b})",
        "mul": "_mm512_mul_$ps({a}, {b})", "fma": "_mm512_fmadd_$ps({a}, {b}, {c})",
        "maximum": "_mm512_mask_mov_$ps(_mm512_max_$ps({a}, {b}), _mm512_cmp_${ps}_mask({a}, {a}, _CMP_UNORD_Q), {a})",
        "lt": "_mm512_cmp_${ps}_mask({a}, {b}, _CMP_LT_OQ)", "gt": "_mm512_cmp_${ps}_mask({a}, {b}, _CMP_GT_OQ)",
        "eq": "_mm512_cmp_${ps}_mask({a}, {b}, _CMP_EQ_OQ)",
        "select": "_mm512_mask_blend_$ps({c}, {b}, {a})",
        "greater": "_mm512_max_$ps({a}, {b})", "less": "_mm512_min_$ps({a}, {b})",
        "as_int": "_mm512_cast${ps}_si512({a})", "as_float": "_mm512_castsi512_$ps({a})",
        "shl": "_mm512_slli_epi$bits({a}, {n})",
        # vscalefps: v * 2^floor(d), with subnormal results and d = -inf handled
        "ldexp": "_mm512_scalef_$ps({a}, {b})",
    },
    swaps={DType.F32: {8: "_mm512_shuffle_f32x4({v}, {v}, _MM_SHUFFLE(1, 0, 3, 2))",
                       4: "_mm512_shuffle_f32x4({v}, {v}, _MM_SHUFFLE(2, 3, 0, 1))",
                       2: "_mm512_permute_ps({v}, _MM_SHUFFLE(1, 0, 3, 2))",
                       1: "_mm512_permute_ps({v}, _MM_SHUFFLE(2, 3, 0, 1))"}},
    first="_mm512_cvt${ss}_f$bits({v})",
    masked_load="_mm512_maskz_loadu_$ps({m}, {p})",
    masked_store="_mm512_mask_storeu_$ps({p}, {m}, {v})",
    host_features=frozenset({"avx512f"}))

_NEON = Isa(
    "neon", "AArch64 NEON", 128, "float${bits}x${lanes}_t", "int${bits}x${lanes}_t", "uint${bits}x${lanes}_t",
    "arm_neon.h", (("__aarch64__", None),),
    {
        "set1": "vdupq_n_f$bits({v})", "load": "vld1q_f$bits({p})", "store": "vst1q_f$bits({p}, {v})",
        "add": "vaddq_f$bits({a}, {b})", "sub": "vsubq_f$bits({a}, {b})", "mul": "vmulq_f$bits({a}, {b})",
        "fma": "vfmaq_f$bits({c}, {a}, {b})",
        "maximum": "vmaxq_f$bits({a}, {b})",  # FMAX propagates NaN
        "lt": "vcltq_f$bits({a}, {b})", "gt": "vcgtq_f$bits({a}, {b})", "eq": "vceqq_f$bits({a}, {b})",
        "select": "vbslq_f$bits({c}, {a}, {b})",
        "as_int": "vreinterpretq_s${bits}_f$bits({a})", "as_float": "vreinterpretq_f${bits}_s$bits({a})",
        "shl": "vshlq_n_s$bits({a}, {n})",
    },
    swaps={DType.F32: {2: "vextq_f32({v}, {v}, 2)", 1: "vrev64q_f32({v})"}},
    first="vgetq_lane_f$bits({v}, 0)")

PATTERNS = {isa.name: isa for isa in (_SCALAR, _SSE2, _AVX2, _AVX512, _NEON)}
# the ISAs as float32 kernels use them
ISAS = {name: isa.for_dtype(DType.F32) for name, isa in PATTERNS.items()}

def block_size(isa: Isa, accumulators: int, block: int = numerics.REDUCTION_BLOCK) -> int:
    """Elements per block of a reducing pass (numerics.reduction_block): 2048 for AVX-512 x 4
    accumulators, 128 for scalar C (with the default block)."""
    return numerics.reduction_block(block, isa.width, accumulators)


def c_float(v: float, ctype: CType = C_TYPES[DType.F32]) -> str:
    """A C literal of `ctype` holding exactly v rounded to it (no hex floats: C++ before 17
    lacks them)."""
    if v != v:
        return "NAN"
    if v in (float("inf"), float("-inf")):
        return "INFINITY" if v > 0 else "-INFINITY"
    rounded = struct.unpack(ctype.struct_code, struct.pack(ctype.struct_code, v))[0]
    text = f"{rounded:.{ctype.digits}g}"
    return text + (ctype.suffix if any(c in text for c in ".e") else ".0" + ctype.suffix)


_TEMP = re.compile(r"const [\w ]+ (\w+) = ")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def prune(lines: list[str], roots=()) -> list[str]:
    """Drop `const T name = ...;` lines whose name nothing else uses (e.g. a comparison
    whose select became a min/max), so -Wunused-variable has nothing to say."""
    live, kept = set(roots), []
    for line in reversed(lines):
        m = _TEMP.match(line)
        if m and m.group(1) not in live:
            continue
        kept.append(line)
        live.update(_IDENTIFIER.findall(line))
    return kept[::-1]


class CMath:
    """The numerics primitives as C statements: each call appends `const T tN = ...;`
    to `lines` and returns the name tN.  Constants are materialized once per instance."""

    def __init__(self, isa: Isa, fn: str, used: set, prefix: str = "t"):
        self.isa, self.fn, self.prefix = isa, fn, prefix
        self.float_format = numerics.float_format(isa.ctype.dtype)  # the recipes' constants
        self.lines: list[str] = []
        self.used = used   # "isa.primitive" spelled, so the file emits the helpers they call
        self._consts: dict[str, str] = {}
        self._compares: dict[str, tuple[str, str, str]] = {}  # mask name -> (op, a, b)
        self._count = 0

    def fresh(self) -> int:
        self._count += 1
        return self._count - 1

    def temp(self, ctype: str, expr: str) -> str:
        name = f"{self.prefix}{self.fresh()}"
        self.lines.append(f"const {ctype} {name} = {expr};")
        return name

    def _op(self, ctype: str, prim: str, **args) -> str:
        self.used.add(f"{self.isa.name}.{prim}")
        return self.temp(ctype, self.isa.ops[prim].format(fn=self.fn, **args))

    def const(self, v: float) -> str:
        lit = c_float(v, self.isa.ctype)
        if lit not in self._consts:
            self._consts[lit] = self._op(self.isa.vec, "set1", v=lit)
        return self._consts[lit]

    def add(self, a, b):
        return self._op(self.isa.vec, "add", a=a, b=b)

    def sub(self, a, b):
        return self._op(self.isa.vec, "sub", a=a, b=b)

    def mul(self, a, b):
        return self._op(self.isa.vec, "mul", a=a, b=b)

    def fma(self, a, b, c):
        return self._op(self.isa.vec, "fma", a=a, b=b, c=c)

    def maximum(self, a, b):
        return self._op(self.isa.vec, "maximum", a=a, b=b)

    def lt(self, a, b):
        mask = self._op(self.isa.mask, "lt", a=a, b=b)
        self._compares[mask] = ("lt", a, b)
        return mask

    def gt(self, a, b):
        mask = self._op(self.isa.mask, "gt", a=a, b=b)
        self._compares[mask] = ("gt", a, b)
        return mask

    def eq(self, a, b):
        return self._op(self.isa.mask, "eq", a=a, b=b)

    def select(self, c, a, b):
        if "greater" in self.isa.ops and c in self._compares:
            op, p, q = self._compares[c]
            big, small = (p, q) if op == "gt" else (q, p)   # c is big > small
            if (a, b) == (big, small):    # big > small ? big : small
                return self._op(self.isa.vec, "greater", a=big, b=small)
            if (a, b) == (small, big):    # small < big ? small : big
                return self._op(self.isa.vec, "less", a=small, b=big)
        return self._op(self.isa.vec, "select", c=c, a=a, b=b)

    def as_int(self, a):
        return self._op(self.isa.ivec, "as_int", a=a)

    def as_float(self, a):
        return self._op(self.isa.vec, "as_float", a=a)

    def shl(self, a, n: int):
        return self._op(self.isa.ivec, "shl", a=a, n=n)

    def div(self, a, b):
        return self._op(self.isa.vec, "div", a=a, b=b)

    def log(self, a):
        return self._op(self.isa.vec, "log", a=a)

    def ldexp(self, v, d):
        if "ldexp" in self.isa.ops:
            return self._op(self.isa.vec, "ldexp", a=v, b=d)
        return numerics.ldexp_generic(self, v, d)


@dataclass
class CFunction:
    """A generated `static inline` helper: one result is returned, several go through pointers."""
    name: str
    vec: str
    params: list[str]
    lines: list[str]
    results: tuple[str, ...]

    @property
    def returns_value(self) -> bool:
        return len(self.results) == 1


def _acc_name(t: Type) -> str:
    return t.value.split(".")[1]


class _Helpers:
    """The helper functions one kernel needs, generated on first use, in use order."""

    def __init__(self, isa: Isa, fn: str):
        self.isa, self.fn = isa, fn
        self.functions: dict[str, CFunction] = {}
        self.used: set[str] = set()

    def math(self, isa: Isa, prefix: str) -> CMath:
        return CMath(isa, self.fn, self.used, prefix)

    def _get(self, recipe: str, n_in: int, body, isa: Isa) -> CFunction:
        """The helper for `recipe` (body(m, *params) -> result or tuple of results)."""
        name = f"{self.fn}_{recipe}"
        if name not in self.functions:
            cm = self.math(isa, "t")
            params = [f"a{i}" for i in range(n_in)]
            out = body(cm, *params)
            results = out if isinstance(out, tuple) else (out,)
            self.functions[name] = CFunction(name, isa.vec, params, prune(cm.lines, results), tuple(results))
        return self.functions[name]

    def exp_diff(self) -> CFunction:
        return self._get("exp_diff", 2, numerics.exp_diff, self.isa)

    def exp_pair(self) -> CFunction:
        return self._get("exp_pair", 1, numerics.exp_pair, self.isa)

    def exp_scaled(self) -> CFunction:
        """exp_scaled(x, lo, e_magic, *coeffs): the ExpShift spread over parameters."""
        n = len(numerics.float_format(self.isa.ctype.dtype).exp_poly) + 1
        return self._get("exp_scaled", 3 + n, lambda m, x, lo, em, *cs: numerics.exp_scaled(
            m, x, numerics.ExpShift(lo, em, cs)), self.isa)

    def pair_scale(self) -> CFunction:
        return self._get("pair_scale", 4, lambda m, p, k, c, e: numerics.pair_scale(m, (p, k), c, e),
                         self.isa)

    def merge(self, t: Type) -> CFunction:
        acc = numerics.ACCUMULATORS[t]
        k = len(acc.identity)
        return self._get(f"merge_{_acc_name(t)}", 2 * k, lambda m, *s: acc.merge(m, s[:k], s[k:]), self.isa)

    def fold(self, t: Type) -> CFunction:
        acc = numerics.ACCUMULATORS[t]
        k = len(acc.outer_identity)
        return self._get(f"fold_{_acc_name(t)}", k + len(acc.identity),
                         lambda m, *s: acc.fold(m, s[:k], s[k:]), self.isa)

    def unfold(self, t: Type) -> CFunction:
        acc = numerics.ACCUMULATORS[t]
        return self._get(f"unfold_{_acc_name(t)}", len(acc.outer_identity),
                         lambda m, *s: acc.unfold(m, s), self.isa)


def assign(f: CFunction, args, outs) -> str:
    """The statement that calls helper `f` on `args` and puts its results in `outs`."""
    if f.returns_value:
        return f"{outs[0]} = {f.name}({', '.join(args)});"
    return f"{f.name}({', '.join([*args, *(f'&{o}' for o in outs)])});"


@dataclass
class _Reduction:
    """One accumulator of a pass: C names of its states and the helpers that merge them."""
    type: Type
    blocked: bool                 # block-max form: sets sum e^(x - block max), folded per block
    inner: list[list[str]]        # [accumulator set][state component]
    identity: list[str]           # C literals of an empty inner state
    outer: list[str]              # the compensated state across blocks
    outer_identity: list[str]
    final: list[str]              # the unfolded vector state, merged across lanes
    results: list[str]            # the row scalars
    merge: CFunction              # merges inner states (blocked: block sums)
    fold: CFunction
    unfold: CFunction
    lane_merge: CFunction | None  # None: one lane, nothing to merge
    scan: list[str] = field(default_factory=list)          # blocked: running max per set
    block_max: str = ""                                    # blocked: the block's max, splat
    block_shift: list[str] = field(default_factory=list)   # blocked: its exp_scaled constants

    @property
    def block_inputs(self) -> list[str]:
        """The inner state that the fold adds (blocked: the block's max and its sums, an
        online state as numerics.block_online_state makes it)."""
        return [self.block_max, *self.inner[0]] if self.blocked else self.inner[0]


@dataclass
class _PassView:
    """A pass as the templates see it.  Forms of a sweep over the row: "plain", "fast"
    (exp via row constants), either + "+block" (block-max terms via the block's
    constants), "scan" (the block-max pre-scan)."""
    index: int
    splats: list[str]             # vector row values, declared before the sweeps
    reductions: list[_Reduction]
    fast_lines: list[str]         # row constants of the fast form
    fast_condition: str           # when the fast form is exact ("" : always)
    block_lines: list[str]        # per block, after the scan: block constants
    block_condition: str
    body: object                  # body(offset, acc_set, masked, form) -> list[str]
    kind: str = "pass"

    @property
    def has_fast(self) -> bool:
        return bool(self.fast_lines)

    @property
    def block_max(self) -> bool:
        return any(r.blocked for r in self.reductions)


@dataclass
class _RowView:
    lines: list[str]
    kind: str = "row"


@dataclass
class _GuardView:
    condition: str
    fallback: list
    name: str
    kind: str = "guard"


# row ops computed by a numerics recipe, in scalar C
_ROW_RECIPES = {Kind.LOG_PAIR: numerics.log_pair, Kind.LOG1P: numerics.log1p}


def _between(v: str, lo: float, hi: float, ctype: CType) -> str:
    return f"{c_float(lo, ctype)} <= {v} && {v} <= {c_float(hi, ctype)}"


def _in_range(v: str, limit: float, ctype: CType) -> str:
    return _between(v, -limit, limit, ctype)


def _shift_values(shift: numerics.ExpShift) -> list[str]:
    return [shift.lo, shift.e_magic, *shift.coeffs]


class _Emitter:
    """Walks a Program into views the templates render.  The lowering is softgen.lowering's
    plan, as in llvm/codegen.py: exp(x, c) as exp_scaled with row constants where |c| allows,
    exp_pair -> pair_scale fused into one exp_scaled, and online reductions per block
    as a max pre-scan plus block sums (numerics.BLOCK_SUMS) folded into the row state."""

    def __init__(self, isa: Isa, fn: str, accumulators: int, lowering: dict):
        self.isa, self.fn, self.accumulators = isa, fn, accumulators
        self.ctype, self.fmt = isa.ctype, numerics.float_format(isa.ctype.dtype)
        self.scalar = _SCALAR.for_dtype(isa.ctype.dtype)   # row values
        self.lowering = lowering   # plan_pass's flags
        self.helpers = _Helpers(isa, fn)
        self.tail_helpers: set[str] = set()   # lane_index, load_partial, store_partial

    # --- programs and row ops ---------------------------------------------------
    def program(self, program: Program, prefix: str = "") -> list:
        env: dict = {}
        steps = []
        for step in program.steps:
            if isinstance(step, Pass):
                index = program.passes.index(step)
                steps.append(self.pass_(step, env, index, f"{prefix}p{index}_"))
            elif step.kind is Kind.GUARD:
                condition = " && ".join(_between(env[v], lo, hi, self.ctype) for v, (lo, hi) in zip(step.args, step.attrs["ranges"]))
                fallback = step.attrs["fallback"]
                steps.append(_GuardView(condition, self.program(fallback, prefix + "f_"), fallback.algorithm))
            else:
                steps.append(_RowView(self.row_op(step, env, prefix)))
        return steps

    def row_op(self, op: Op, env: dict, prefix: str) -> list[str]:
        a = [env[v] for v in op.args]
        k, ct = op.kind, self.ctype
        if k is Kind.STORE_ROW:
            return [f"yr[0] = {a[0]};"]
        recipe = _ROW_RECIPES.get(k)
        if op.args and op.args[0].type.is_accumulator:  # merge.*
            recipe = numerics.ACCUMULATORS[op.args[0].type].result
        if recipe:
            cm = self.helpers.math(self.scalar, f"{prefix}v{op.results[0].id}_")
            out = recipe(cm, *a)
            env.update(zip(op.results, out if isinstance(out, (tuple, list)) else (out,)))
            return cm.lines
        expr = {
            Kind.CONST: lambda: c_float(op.attrs["value"], ct),
            Kind.ADD: lambda: f"{a[0]} + {a[1]}",
            Kind.SUB_ROW: lambda: f"{a[0]} - {a[1]}",
            Kind.MUL_ROW: lambda: f"{a[0]} * {a[1]}",
            Kind.RECIP: lambda: f"{c_float(1.0, ct)} / {a[0]}",
            Kind.LOG: lambda: f"log{ct.suffix}({a[0]})",  # once per row: a libm call is fine here
            Kind.WHERE_FINITE: lambda: f"isfinite({a[0]}) ? {a[1]} : {a[2]}",
        }.get(k)
        if expr is None:
            raise NotImplementedError(f"C backend: no lowering for row op {op}")
        name = f"{prefix}v{op.results[0].id}"
        env[op.results[0]] = name
        return [f"const {ct.name} {name} = {expr()};"]

    # --- passes -----------------------------------------------------------------------
    def splat(self, cm: CMath, scalar: str) -> str:
        return cm.temp(self.isa.vec, self.isa.ops["set1"].format(v=scalar))

    def pass_(self, p: Pass, env: dict, index: int, prefix: str) -> _PassView:
        isa, h = self.isa, self.helpers
        row = h.math(isa, f"{prefix}s")
        splats = {}
        for op in p.ops:
            for v in op.args:
                if v.type is Type.ROW and v not in splats:
                    splats[v] = self.splat(row, env[v])
        plan = plan_pass(p, **self.lowering)
        reductions = {op: self.reduction(op, prefix, op in plan.block_max) for op in p.reductions}
        for op, red in reductions.items():
            env[op.results[0]] = red.results
        fast_lines, fast_condition, shifts = self.fast_form(plan, env, prefix)
        block_lines, block_condition = self.block_constants(list(reductions.values()), prefix)
        bodies = {}  # generated before rendering, so that every helper they call is known

        def body(offset: str, acc_set: int, masked: bool, form: str) -> list[str]:
            key = (offset, acc_set, masked, form)
            if key not in bodies:
                bodies[key] = self.body(plan, splats, reductions, shifts, offset, acc_set, masked, form)
            return bodies[key]

        forms = (["fast"] if fast_lines else []) + (["plain"] if fast_condition or not fast_lines else [])
        if block_lines:
            forms += [f + "+block" for f in forms] + ["scan"]
        used = set()
        for form in forms:
            for masked in {False, self.isa.width > 1}:
                for line in body("i", 0, masked, form):
                    used.update(_IDENTIFIER.findall(line))
        return _PassView(index, prune(row.lines, used), list(reductions.values()), fast_lines, fast_condition,
                         block_lines, block_condition, body)

    def fast_form(self, plan: PassPlan, env: dict, prefix: str):
        """Row constants of the fast form: exp_diff_shift per exp shift c, exp_shift per
        fused exp_pair -> pair_scale.  Returns (lines, condition, shifts)."""
        scalar, vec = self.helpers.math(self.scalar, f"{prefix}r"), self.helpers.math(self.isa, f"{prefix}f")
        shifts, conditions = {}, []
        for c in plan.exp_shifts:
            shifts[c] = numerics.exp_diff_shift(scalar, env[c])
            conditions.append(_in_range(env[c], self.fmt.exp_shift_limit, self.ctype))
        for user in plan.fused.values():
            # pair_scale's e is the two-pass exponent, which the guard keeps in range
            shifts[user] = numerics.exp_shift(scalar, env[user.args[1]], env[user.args[2]])
        splatted = {key: [self.splat(vec, v) for v in _shift_values(s)] for key, s in shifts.items()}
        roots = [v for names in splatted.values() for v in names] + [env[c] for c in shifts if isinstance(c, Value)]
        return prune(scalar.lines + vec.lines, roots), " && ".join(conditions), splatted

    def block_constants(self, reductions: list[_Reduction], prefix: str):
        """Per block of a block-max pass: the max of each scan, the clamped block max m and
        the exp_scaled constants of e^(x - m), as vectors.  Returns (lines, condition)."""
        if not any(r.blocked for r in reductions):
            return [], ""
        vec = self.helpers.math(self.isa, f"{prefix}b")
        scalar = self.helpers.math(self.scalar, f"{prefix}c")
        splats = self.helpers.math(self.isa, f"{prefix}d")
        conditions, roots = [], []
        for red in (r for r in reductions if r.blocked):
            v = red.scan[0]
            for other in red.scan[1:]:
                v = vec.select(vec.lt(v, other), other, v)
            for half in _halves(self.isa):
                w = vec.temp(self.isa.vec, self.isa.swaps[half].format(v=v))
                v = vec.select(vec.lt(v, w), w, v)
            top = vec.temp(self.ctype.name, self.isa.first.format(v=v))
            # an all -inf block: m = -FLT_MAX, so e^(x - m) is 0 for its -inf entries
            m = numerics.clamp_below(scalar, top, -self.fmt.max)
            conditions.append(_in_range(m, self.fmt.exp_shift_limit, self.ctype))
            red.block_max = self.splat(splats, m)
            red.block_shift = [self.splat(splats, s) for s in _shift_values(numerics.exp_diff_shift(scalar, m))]
            roots += [m, red.block_max, *red.block_shift]
        return prune(vec.lines + scalar.lines + splats.lines, roots), " && ".join(conditions)

    def reduction(self, op: Op, prefix: str, blocked: bool) -> _Reduction:
        t = op.results[0].type
        acc = numerics.ACCUMULATORS[t]
        inner_t = numerics.BLOCK_SUMS[t] if blocked else t
        inner_acc = numerics.ACCUMULATORS[inner_t]
        base = f"{prefix}{_acc_name(t)}{op.results[0].id}"
        h = self.helpers
        return _Reduction(
            t, blocked,
            [[f"{base}_a{s}_{j}" for j in range(len(inner_acc.identity))] for s in range(self.accumulators)],
            [c_float(c, self.ctype) for c in inner_acc.identity],
            [f"{base}_o{j}" for j in range(len(acc.outer_identity))],
            [c_float(c, self.ctype) for c in acc.outer_identity],
            [f"{base}_l{j}" for j in range(len(acc.identity))],
            [f"{base}_r{j}" for j in range(len(acc.identity))],
            h.merge(inner_t), h.fold(t), h.unfold(t),
            h.merge(t) if self.isa.width > 1 else None,
            [f"{base}_m{s}" for s in range(self.accumulators)] if blocked else [])

    def body(self, plan: PassPlan, splats: dict, reductions: dict, shifts: dict,
             offset: str, acc_set: int, masked: bool, form: str) -> list[str]:
        """One vector of the pass at row offset `offset`; masked: only lanes < rem are live."""
        isa, h = self.isa, self.helpers
        cm = h.math(isa, "e")
        fast, block_fast, scan = form.startswith("fast"), form.endswith("+block"), form == "scan"
        vals: dict = {}
        fused = plan.fused
        ops = plan.scan_ops if scan else plan.pass_.ops
        for op in ops:
            k = op.kind
            if fast and op in fused:
                continue  # computed by its pair_scale
            if k is Kind.PAIR_SCALE and fast:
                x = vals[next(e for e, user in fused.items() if user is op).args[0]]
                vals[op.results[0]] = self.call(cm, h.exp_scaled(), [x, *shifts[op]])[0]
                continue
            a = [vals[v] if v in vals else splats[v] for v in op.args]
            if k in (Kind.LOAD_X, Kind.LOAD_Y):
                out = cm.temp(isa.vec, self.load("xr" if k is Kind.LOAD_X else "yr", offset, masked))
            elif k is Kind.SUB:
                out = cm.sub(*a)
            elif k is Kind.MUL:
                out = cm.mul(*a)
            elif k is Kind.EXP and fast:
                out = self.call(cm, h.exp_scaled(), [a[0], *shifts[op.args[1]]])[0]
            elif k is Kind.EXP:
                out = self.call(cm, h.exp_diff(), a)[0]
            elif k is Kind.EXP_PAIR:
                out = self.call(cm, h.exp_pair(), a)
            elif k is Kind.PAIR_SCALE:
                out = self.call(cm, h.pair_scale(), [*a[0], *a[1:]])[0]
            elif k is Kind.STORE:
                cm.lines.append(self.store(offset, a[0], masked))
                continue
            elif op in reductions and scan:
                self.scan_max(cm, reductions[op], a[0], acc_set, masked)
                continue
            elif op in reductions:
                self.accumulate(cm, reductions[op], a, acc_set, masked, block_fast)
                continue
            else:
                raise NotImplementedError(f"C backend: no lowering for pass op {op}")
            vals[op.results[0]] = out
        return prune(cm.lines)

    def scan_max(self, cm: CMath, red: _Reduction, v: str, acc_set: int, masked: bool):
        """The block-max pre-scan: a NaN is skipped here; the sums will carry it."""
        if masked:
            v = cm.select("tail_mask", v, cm.const(float("-inf")))
        s = red.scan[acc_set]
        cm.lines.append(f"{s} = {cm.select(cm.lt(s, v), v, s)};")

    def accumulate(self, cm: CMath, red: _Reduction, args, acc_set: int, masked: bool, block_fast: bool):
        """state = merge(state, element(*args)); in the tail only where the lane is live.
        Blocked: the block sum's element of e^(x - block max), x = args[0]."""
        if red.blocked:
            h, x = self.helpers, args[0]
            e = self.call(cm, h.exp_scaled(), [x, *red.block_shift]) if block_fast else \
                self.call(cm, h.exp_diff(), [x, red.block_max])
            element = numerics.ACCUMULATORS[numerics.BLOCK_SUMS[red.type]].element(cm, *e, x, red.block_max)
        else:
            element = numerics.ACCUMULATORS[red.type].element(cm, *args)
        state = red.inner[acc_set]
        if not masked:
            cm.lines.append(assign(red.merge, [*state, *element], state))
            return
        new = self.call(cm, red.merge, [*state, *element])
        for s, n in zip(state, new):
            cm.lines.append(f"{s} = {cm.select('tail_mask', n, s)};")

    def call(self, cm: CMath, f: CFunction, args) -> tuple[str, ...]:
        if f.returns_value:
            return (cm.temp(self.isa.vec, f"{f.name}({', '.join(args)})"),)
        outs = tuple(f"{cm.prefix}{cm.fresh()}" for _ in f.results)
        cm.lines.append(f"{self.isa.vec} {', '.join(outs)};")
        cm.lines.append(assign(f, args, outs))
        return outs

    def load(self, row: str, offset: str, masked: bool) -> str:
        ptr = f"{row} + {offset}"
        if not masked:
            return self.isa.ops["load"].format(p=ptr)
        if self.isa.masked_load:
            return self.isa.masked_load.format(p=ptr, m="tail_mask")
        self.tail_helpers.add("load_partial")
        return f"{self.fn}_load_partial({ptr}, rem)"

    def store(self, offset: str, v: str, masked: bool) -> str:
        ptr = f"yr + {offset}"
        if not masked:
            return self.isa.ops["store"].format(p=ptr, v=v) + ";"
        if self.isa.masked_store:
            return self.isa.masked_store.format(p=ptr, v=v, m="tail_mask") + ";"
        self.tail_helpers.add("store_partial")
        return f"{self.fn}_store_partial({ptr}, {v}, rem);"

    def tail_mask(self, p: _PassView) -> list[str]:
        """`tail_mask` (lanes below rem) where the tail of pass p needs one."""
        if not (p.reductions or self.isa.masked_load):
            return []
        self.tail_helpers.add("lane_index")
        cm = self.helpers.math(self.isa, "m")
        index = cm.temp(self.isa.vec, self.isa.ops["load"].format(p=f"{self.fn}_lane_index"))
        mask = cm.lt(index, cm.temp(self.isa.vec, self.isa.ops["set1"].format(v=f"({self.ctype.name})rem")))
        return cm.lines + [f"const {self.isa.mask} tail_mask = {mask};"]


def _halves(isa: Isa) -> list[int]:
    """The lane distances of a lane reduction: width/2, ..., 1."""
    return [isa.width >> k for k in range(1, isa.width.bit_length())]


def _tree(n: int) -> list[tuple[int, int]]:
    """Pairwise merge order of n accumulator sets into set 0: [(dst, src), ...]."""
    order, live = [], list(range(n))
    while len(live) > 1:
        order += list(zip(live[::2], live[1::2]))
        live = live[::2]
    return order


@lru_cache(maxsize=None)
def _environment(directory: str) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


_COMMENT_CONTINUATION = re.compile(r"\*(\s|/|$)")


def _reindent(text: str) -> str:
    """Indent C by brace depth, so templates need not care about indentation.  Comment
    lines keep their own layout; a line after one ending in a comma is a continuation."""
    out, depth, blank, continued = [], 0, False, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if not blank and out:
                out.append("")
            blank = True
            continue
        blank = False
        if line.startswith("#"):
            out.append(line)
            continue
        if _COMMENT_CONTINUATION.match(line):
            out.append("    " * depth + " " + line)
            continue
        if line.startswith("}"):
            depth -= 1
        out.append("    " * (depth + continued) + line)
        depth += line.count("{") - line.count("}") + line.startswith("}")
        continued = line.endswith(",")
    return "\n".join(out).strip() + "\n"


@dataclass(frozen=True)
class CSource:
    """An emitted kernel: `header` (<name>.h) and `source` (<name>.c)."""
    name: str
    op: str
    algorithm: str
    isa: str
    header: str
    source: str
    # the schedule rendered (None: unroll= / accumulators= that no Schedule says, sets that
    # do not divide unroll), and {knob: value asked} of the knobs left out (NOT_RENDERED)
    schedule: Schedule | None = None
    not_rendered: dict = field(default_factory=dict)

    @property
    def flags(self) -> tuple[str, ...]:
        """Compiler flags that enable the kernel's ISA (gcc/clang)."""
        return ISAS[self.isa].flags

    def write(self, directory) -> tuple[Path, Path]:
        """Write <name>.h and <name>.c into `directory` (created if missing)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        h, c = d / f"{self.name}.h", d / f"{self.name}.c"
        h.write_text(self.header)
        c.write_text(self.source)
        return h, c


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_choice(what: str, value, choices) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
    return value


def _check_count(what: str, value, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be between {lo} and {hi}, got {value}")
    return value


def emit_c(op: str, *, algorithm: str, dtype="float32", isa: str = "scalar", name: str | None = None,
           schedule: Schedule | None = None, unroll: int | None = None,
           accumulators: int | None = None) -> CSource:
    """C source for op x algorithm on `isa` (scalar, sse2, avx2, avx512, neon).

    schedule: the code shape (default: Schedule() as far as NOT_RENDERED allows); or
    instead unroll: vectors per main-loop iteration (default 4) and accumulators:
    independent accumulator sets (default: one per unrolled vector; need not divide unroll).
    softgen.emit_c also takes schedule="auto:ROWSxN".  Compile the .c with the ISA's flags
    (CSource.flags, e.g. -mavx512f) and link with -lm."""
    storage = next(d for d in DType if d.numpy_name == check_dtype(dtype).name)
    program = algorithms.build(op, algorithm, storage, storage)
    target = PATTERNS[_check_choice("isa", isa, tuple(PATTERNS))].for_dtype(program.compute)
    if name is None:
        name = f"softgen_{op}_{algorithm}_{storage.numpy_name}_{isa}"
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if not _IDENT.match(name):
        raise ValueError(f"name {name!r} is not a C identifier")
    return _render(program, target, name, *_c_schedule(schedule, unroll, accumulators))


def _c_schedule(schedule, unroll, accumulators) -> tuple[Schedule, int, int, dict]:
    """(the rendered schedule's other knobs, unroll, accumulator sets, knobs left out) from
    emit_c's schedule= or its unroll= / accumulators=."""
    if schedule is None:
        unroll = 4 if unroll is None else _check_count("unroll", unroll, 1, 16)
        accumulators = unroll if accumulators is None else _check_count("accumulators", accumulators, 1, unroll)
        sets = 0 if accumulators == unroll else accumulators
        knobs = Schedule(unroll=unroll, accumulators=sets) if unroll % accumulators == 0 else Schedule()
        return rendered_schedule(knobs)[0], unroll, accumulators, {}
    if unroll is not None or accumulators is not None:
        raise TypeError("emit_c takes a schedule or unroll= / accumulators=, not both")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a softgen.lower.Schedule (softgen.emit_c also takes 'auto:ROWSxN'), "
                        f"not {schedule!r}")
    _check_count("Schedule.unroll", schedule.unroll, 1, 16)
    rendered, left_out = rendered_schedule(schedule)
    return rendered, rendered.unroll, rendered.acc_sets, left_out


def _render(program: Program, isa: Isa, name: str, knobs: Schedule, unroll: int, accumulators: int,
            left_out: dict) -> CSource:
    lowering = dict(fast_exp=knobs.fast_exp, online_block_max=knobs.online_block_max, pair_sum=knobs.pair_sum)
    emitter = _Emitter(isa, name, accumulators, lowering)
    # ctype: what the kernel computes in; storage: what x and y hold
    ctx = dict(name=name, op=program.op, algorithm=program.algorithm, isa=isa, version=__version__,
               ctype=isa.ctype, storage=C_TYPES[program.storage], dtype=program.storage.numpy_name,
               row_output=program.row_output, steps=emitter.program(program), unroll=unroll,
               accumulators=accumulators, block=block_size(isa, accumulators, knobs.block),
               tree=_tree(accumulators), tail_mask=emitter.tail_mask, assign=assign, zip=zip,
               halves=_halves(isa),
               swapped=lambda names, half: [isa.swaps[half].format(v=v) for v in names],
               lane_index=[c_float(i, isa.ctype) for i in range(isa.width)],
               zero=c_float(0.0, C_TYPES[program.storage]),
               guard=f"{name.upper()}_H")
    env = _environment(str(TEMPLATES))
    # The kernel first: rendering its passes generates the helpers it calls.
    kernel = env.get_template("kernel.c.j2").render(ctx)
    helpers = emitter.helpers
    source = env.get_template("source.c.j2").render(
        ctx, kernel=kernel, functions=list(helpers.functions.values()), tail_helpers=emitter.tail_helpers,
        used=helpers.used)
    header = env.get_template("header.h.j2").render(ctx)
    rendered = knobs if (knobs.unroll, knobs.acc_sets) == (unroll, accumulators) else None
    return CSource(name, program.op, program.algorithm, isa.name, header, _reindent(source), rendered, left_out)
