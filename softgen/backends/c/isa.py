"""How C spells the loop IR's operations per instruction set and element type: one
pattern per ISA, filled in per dtype (CType)."""
from __future__ import annotations

import string
import struct
from dataclasses import dataclass, field, replace

from ... import numerics
from ...ir import DType


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
        tokens["mask"] = string.Template(self.mask).substitute(tokens)

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
        "le": "{a} <= {b}", "ne": "{a} != {b}", "isnan": "{a} != {a}", "fabs": "fabs$lf({a})",
        "and": "{a} & {b}", "or": "{a} | {b}", "mask_zero": "0", "stream": "*({p}) = {v}",
        "select_mask": "{c} ? {a} : {b}",
        "all": "{m}",
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
        "le": "_mm_cmple_$ps({a}, {b})", "isnan": "_mm_cmpunord_$ps({a}, {a})",
        "and": "_mm_and_$ps({a}, {b})", "or": "_mm_or_$ps({a}, {b})", "mask_zero": "_mm_setzero_$ps()",
        "select_mask": "_mm_or_$ps(_mm_and_$ps({c}, {a}), _mm_andnot_$ps({c}, {b}))",
        "div": "_mm_div_$ps({a}, {b})", "log": "{fn}_log({a})", "fabs": "_mm_andnot_$ps(_mm_set1_$ps(-0.0$lf), {a})",
        # cmpneq is true when unordered; ordered != (as LLVM's `one`) is false then
        "ne": "_mm_and_$ps(_mm_cmpneq_$ps({a}, {b}), _mm_cmpord_$ps({a}, {b}))",
        "all": "_mm_movemask_$ps({m}) == (1 << $lanes) - 1",
        "stream": "_mm_stream_$ps({p}, {v})", "prefetch": "_mm_prefetch((const char *)({p}), _MM_HINT_T0)",
        "fence": "_mm_sfence()",
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
        "le": "_mm256_cmp_$ps({a}, {b}, _CMP_LE_OQ)", "isnan": "_mm256_cmp_$ps({a}, {a}, _CMP_UNORD_Q)",
        "and": "_mm256_and_$ps({a}, {b})", "or": "_mm256_or_$ps({a}, {b})", "mask_zero": "_mm256_setzero_$ps()",
        "select_mask": "_mm256_blendv_$ps({b}, {a}, {c})",
        "div": "_mm256_div_$ps({a}, {b})", "log": "{fn}_log({a})",
        "fabs": "_mm256_andnot_$ps(_mm256_set1_$ps(-0.0$lf), {a})", "ne": "_mm256_cmp_$ps({a}, {b}, _CMP_NEQ_OQ)",
        "all": "_mm256_movemask_$ps({m}) == (1 << $lanes) - 1",
        "stream": "_mm256_stream_$ps({p}, {v})", "prefetch": "_mm_prefetch((const char *)({p}), _MM_HINT_T0)",
        "fence": "_mm_sfence()",
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
        "le": "_mm512_cmp_${ps}_mask({a}, {b}, _CMP_LE_OQ)", "isnan": "_mm512_cmp_${ps}_mask({a}, {a}, _CMP_UNORD_Q)",
        "and": "_mm512_kand({a}, {b})", "or": "_mm512_kor({a}, {b})", "mask_zero": "($mask)0",
        "select_mask": "_mm512_kor(_mm512_kand({c}, {a}), _mm512_kandn({c}, {b}))",
        "div": "_mm512_div_$ps({a}, {b})", "log": "{fn}_log({a})", "fabs": "_mm512_abs_$ps({a})",
        "ne": "_mm512_cmp_${ps}_mask({a}, {b}, _CMP_NEQ_OQ)", "all": "{m} == ($mask)-1",
        "stream": "_mm512_stream_$ps({p}, {v})", "prefetch": "_mm_prefetch((const char *)({p}), _MM_HINT_T0)",
        "fence": "_mm_sfence()",
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
        "le": "vcleq_f$bits({a}, {b})", "isnan": "vmvnq_u$bits(vceqq_f$bits({a}, {a}))",
        "and": "vandq_u$bits({a}, {b})", "or": "vorrq_u$bits({a}, {b})", "mask_zero": "vdupq_n_u$bits(0)",
        "select_mask": "vbslq_u$bits({c}, {a}, {b})",
        "div": "vdivq_f$bits({a}, {b})", "log": "{fn}_log({a})", "fabs": "vabsq_f$bits({a})",
        "ne": "vandq_u$bits(vmvnq_u$bits(vceqq_f$bits({a}, {b})), vandq_u$bits(vceqq_f$bits({a}, {a}), vceqq_f$bits({b}, {b})))",
        "all": "vminvq_u$bits({m}) != 0",
        "stream": "vst1q_f$bits({p}, {v})", "prefetch": "__builtin_prefetch({p})",
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


def shuffle(isa: Isa, a: str, b: str, lanes: tuple) -> str | None:
    """Lanes `lanes` of the concatenation a:b (indices below the width are a's) as one
    vector, in the ISA's own two-source shuffle (None: it has none for this pattern)."""
    w = isa.width
    if lanes == tuple(range(w)):
        return a
    if isa.name == "avx512":
        idx = ", ".join(map(str, reversed(lanes)))
        return f"_mm512_permutex2var_ps({a}, _mm512_set_epi32({idx}), {b})"
    if isa.name == "avx2":
        within = ", ".join(str(i % w) for i in reversed(lanes))
        from_b = ", ".join("-1" if i >= w else "0" for i in reversed(lanes))
        return (f"_mm256_blendv_ps(_mm256_permutevar8x32_ps({a}, _mm256_set_epi32({within})), "
                f"_mm256_permutevar8x32_ps({b}, _mm256_set_epi32({within})), "
                f"_mm256_castsi256_ps(_mm256_set_epi32({from_b})))")
    if isa.name == "sse2" and max(lanes[:2]) < w <= min(lanes[2:]):
        i0, i1, i2, i3 = lanes
        return f"_mm_shuffle_ps({a}, {b}, _MM_SHUFFLE({i3 - w}, {i2 - w}, {i1}, {i0}))"
    if isa.name == "neon":
        idx = ", ".join(str(4 * i + k) for i in lanes for k in range(4))
        return (f"vreinterpretq_f32_u8(vqtbl2q_u8((uint8x16x2_t){{{{vreinterpretq_u8_f32({a}), "
                f"vreinterpretq_u8_f32({b})}}}}, (uint8x16_t){{{idx}}}))")
    return None
