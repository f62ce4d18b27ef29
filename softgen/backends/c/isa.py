"""How C spells the loop IR's operations per instruction set and element type: one
pattern per ISA, filled in per dtype (CType) for the compute dtype's vectors; beside it
each ISA's table of the other lane types a kernel meets (`Isa.lanes`: 16-bit storage, the
integer lanes of numerics' conversion recipes, float32 lanes under float64 compute, where=
masks' bytes) and its conversions between float widths (`Isa.converts`)."""
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
    # the Isa patterns' tokens: $ps (ps/pd), $ss, $d (__m256d), $bits, $tag (names of helper
    # functions of other dtypes than float32: name_bits64)
    spell: dict


C_TYPES = {
    DType.F32: CType(DType.F32, "float", "uint32_t", "f", "f", 9, dict(ps="ps", ss="ss", d="", bits="32", tag="")),
    DType.F64: CType(DType.F64, "double", "uint64_t", "", "d", 17, dict(ps="pd", ss="sd", d="d", bits="64", tag="64")),
}

# How x and y hold each storage dtype in memory (the kernel's pointer types): 16-bit floats
# as their bits, bfloat16 the upper half of a float32's, float16 IEEE binary16.
STORAGE_C_TYPES = {DType.F32: "float", DType.F64: "double", DType.F16: "uint16_t", DType.BF16: "uint16_t"}


def elem_c_type(bits: int, kind: str = "float") -> str:
    """The C type of one element of a loop-IR float or int of `bits` (pointers' targets,
    tail buffers): 16-bit floats and ints as uint16_t, mask bytes as uint8_t."""
    if bits == 16:
        return "uint16_t"
    return {"float": {32: "float", 64: "double"}, "int": {8: "uint8_t", 32: "uint32_t", 64: "int64_t"}}[kind][bits]


@dataclass(frozen=True)
class Isa:
    """How one instruction set spells the numerics primitives (str.format templates).

    An ISA is written once as a pattern whose spellings name the element type by tokens
    ($ps, $ss, $d, $bits, $ctype, $uint, $lf, $lanes; see CType); `for_dtype` fills them in.
    Optional spellings: `ldexp` (else numerics.ldexp_generic), and `greater` / `less`:
    a > b ? a : b and a < b ? a : b, b when unordered (x86 maxps/minps), which CMath
    uses for a select of a comparison's own operands (the clamps).

    Vectors of other types than the compute dtype's are spelled by `lanes` (loop-IR type
    -> its C type and operations: the _*_LANES tables below) and `converts`; both are
    concrete per ISA: each lane count there belongs to one compute dtype (16 float32
    lanes or 8 float64 lanes on AVX-512)."""
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
    # per dtype: spellings that differ from the pattern's (dtype -> {primitive: pattern})
    dtype_ops: dict = field(default_factory=dict)
    # loop-IR type (str(Ty): "<8 x i16>", "i32") -> {"type": C type, primitive: spelling};
    # "zext" maps the source's element type ("i16", "i8") to a spelling
    lanes: dict = field(default_factory=dict)
    # (from type, to type) -> spelling of a float conversion, rounding to nearest even
    converts: dict = field(default_factory=dict)
    # float16 <-> float32 conversions are instructions here (Capabilities.native_casts)
    converts_half: bool = False
    # (regex, name, macro, flag): a kernel whose code matches the regex needs the feature
    # too (F16C's conversions beside AVX2)
    optional_requires: tuple = ()

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
        ops = {**self.ops, **self.dtype_ops.get(dtype, {})}
        return replace(typed, vec=spell(self.vec), ivec=spell(self.ivec), mask=spell(self.mask),
                       ops={k: spell(v) for k, v in ops.items()},
                       swaps={k: spell(v) for k, v in self.swaps[dtype].items()},
                       first=spell(self.first), masked_load=spell(self.masked_load),
                       masked_store=spell(self.masked_store))


# --- lanes of other types than the compute dtype's ---------------------------------------
# Integer lanes: the 32-bit ops of numerics' 16-bit conversion recipes (lt/eq are signed,
# lshr logical; zext from and trunc to 16-bit lanes, whose values are below 65536), 16-bit
# lanes (bfloat16, and float16 where it is not converted natively) loaded, stored and read
# one lane at a time; where= masks' bytes (8-bit lanes), loaded and zero-extended to the
# compute dtype's integer lanes (32 or 64 bits), which compare equal to 0.  A C type wider
# than the loop-IR type holds it in its low lanes: "register" says how many elements the C
# type has, and load_register / store_register move a whole register (tails and loads of 4
# bytes or fewer go through a buffer of that size).
_ROUND = "_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC"

_SCALAR_LANES = {
    "i32": {"type": "uint32_t", "add": "{a} + {b}", "sub": "{a} - {b}", "and": "{a} & {b}", "or": "{a} | {b}",
            "shl": "{a} << {n}", "lshr": "{a} >> {n}", "lt": "(int32_t){a} < (int32_t){b}", "eq": "{a} == {b}",
            "select": "{c} ? {a} : {b}", "zext": {"i16": "(uint32_t){a}", "i8": "(uint32_t){a}"},
            "trunc": "(uint16_t){a}"},
    "i16": {"type": "uint16_t", "load": "*({p})", "store": "*({p}) = {v}"},
    "f16": {"type": "uint16_t", "load": "*({p})", "store": "*({p}) = {v}"},
    "i8": {"type": "uint8_t", "load": "*({p})"},
    # a double's bits (numerics.frexp), a row's length, indices
    "i64": {"type": "int64_t", "load": "*({p})", "and": "{a} & {b}", "or": "{a} | {b}",
            "lshr": "(int64_t)((uint64_t){a} >> {n})", "zext": {"i8": "(int64_t){a}"}},
}
_SCALAR_CONVERTS = {("f32", "f64"): "(double){a}", ("f64", "f32"): "(float){a}"}


def _x86_i32(p: str, si: str, reg: str) -> dict:
    """32-bit integer lanes in an x86 register: prefix _mm/_mm256/_mm512, its si128 suffix."""
    return {"type": reg, "set1": f"{p}_set1_epi32({{v}})", "add": f"{p}_add_epi32({{a}}, {{b}})",
            "sub": f"{p}_sub_epi32({{a}}, {{b}})", "and": f"{p}_and_{si}({{a}}, {{b}})",
            "or": f"{p}_or_{si}({{a}}, {{b}})", "shl": f"{p}_slli_epi32({{a}}, {{n}})",
            "lshr": f"{p}_srli_epi32({{a}}, {{n}})"}


def _x86_i64(p: str, si: str, reg: str, set1: str) -> dict:
    """64-bit integer lanes (a double's bits: numerics.frexp, top-k's order keys) in an x86
    register."""
    return {"type": reg, "set1": f"{p}_{set1}({{v}})", "sub": f"{p}_sub_epi64({{a}}, {{b}})",
            "and": f"{p}_and_{si}({{a}}, {{b}})", "or": f"{p}_or_{si}({{a}}, {{b}})",
            "shl": f"{p}_slli_epi64({{a}}, {{n}})", "lshr": f"{p}_srli_epi64({{a}}, {{n}})"}


_REGISTER_MOVES = {  # a whole x86 integer register from or to memory
    "__m128i": ("_mm_loadu_si128((const __m128i *)({p}))", "_mm_storeu_si128((__m128i *)({p}), {v})"),
    "__m256i": ("_mm256_loadu_si256((const __m256i *)({p}))", "_mm256_storeu_si256((__m256i *)({p}), {v})"),
}


def _x86_i16(reg: str, load: str | None, store: str | None, lane: str, lanes: int, stream: str | None = None) -> dict:
    """16-bit lanes (bits of 16-bit floats) in an x86 integer register of `lanes` of them."""
    load_register, store_register = _REGISTER_MOVES[reg]
    out = {"type": reg, "load": load, "store": store, "lane": lane, "register": lanes,
           "load_register": load_register, "store_register": store_register}
    if stream:
        out["stream"] = stream
    return out


def _x86_i8(load: str | None) -> dict:
    """Mask bytes in the low lanes of an __m128i; load None: fewer than 8 of them, through a
    buffer."""
    return {"type": "__m128i", "load": load, "register": 16, "load_register": _REGISTER_MOVES["__m128i"][0]}


_SSE_16X8 = _x86_i8(_REGISTER_MOVES["__m128i"][0])
_SSE_8X8 = _x86_i8("_mm_loadl_epi64((const __m128i *)({p}))")
_SSE_NARROW_X8 = _x86_i8(None)
_SSE_ZERO = "_mm_setzero_si128()"
_SSE_BYTES_TO_I32 = f"_mm_unpacklo_epi16(_mm_unpacklo_epi8({{a}}, {_SSE_ZERO}), {_SSE_ZERO})"

_SSE_LANE16 = "(uint16_t)_mm_extract_epi16({v}, {lane})"
_SSE_8X16 = _x86_i16("__m128i", "_mm_loadu_si128((const __m128i *)({p}))", "_mm_storeu_si128((__m128i *)({p}), {v})",
                     _SSE_LANE16, 8, "_mm_stream_si128((__m128i *)({p}), {v})")
_SSE_4X16 = _x86_i16("__m128i", "_mm_loadl_epi64((const __m128i *)({p}))", "_mm_storel_epi64((__m128i *)({p}), {v})",
                     _SSE_LANE16, 8)
_SSE_2X16 = _x86_i16("__m128i", None, None, _SSE_LANE16, 8)   # 4 bytes: through a buffer
_AVX_16X16 = _x86_i16("__m256i", "_mm256_loadu_si256((const __m256i *)({p}))",
                      "_mm256_storeu_si256((__m256i *)({p}), {v})", "(uint16_t)_mm256_extract_epi16({v}, {lane})", 16,
                      "_mm256_stream_si256((__m256i *)({p}), {v})")
# no packus_epi32 in SSE2: sign-extend the low 16 bits, then a signed pack keeps them
_SSE_I32 = dict(_x86_i32("_mm", "si128", "__m128i"),
                zext={"i16": f"_mm_unpacklo_epi16({{a}}, {_SSE_ZERO})", "i8": _SSE_BYTES_TO_I32},
                trunc="_mm_packs_epi32(_mm_srai_epi32(_mm_slli_epi32({a}, 16), 16), _mm_setzero_si128())")
_AVX_I32 = dict(_x86_i32("_mm256", "si256", "__m256i"),
                zext={"i16": "_mm256_cvtepu16_epi32({a})", "i8": "_mm256_cvtepu8_epi32({a})"},
                # packus per 128-bit half, then the halves' low quarters together
                trunc="_mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32({a}, {a}), 0xD8))")
_SSE_F32 = {"type": "__m128", "set1": "_mm_set1_ps({v})", "load": "_mm_loadu_ps({p})",
            "store": "_mm_storeu_ps({p}, {v})",
            "stream": "_mm_stream_ps({p}, {v})", "sub": "_mm_sub_ps({a}, {b})", "as_int": "_mm_castps_si128({a})",
            "as_float": "_mm_castsi128_ps({a})", "lane": "{v}[{lane}]"}
_AVX_F32 = {"type": "__m256", "set1": "_mm256_set1_ps({v})", "load": "_mm256_loadu_ps({p})",
            "store": "_mm256_storeu_ps({p}, {v})",
            "stream": "_mm256_stream_ps({p}, {v})", "sub": "_mm256_sub_ps({a}, {b})",
            "as_int": "_mm256_castps_si256({a})", "as_float": "_mm256_castsi256_ps({a})", "lane": "{v}[{lane}]"}

_SSE2_LANES = {
    **_SCALAR_LANES,
    # float32 compute (4 lanes): masks are __m128
    "<4 x i32>": dict(_SSE_I32, lt="_mm_castsi128_ps(_mm_cmplt_epi32({a}, {b}))",
                      eq="_mm_castsi128_ps(_mm_cmpeq_epi32({a}, {b}))",
                      select="_mm_or_si128(_mm_and_si128(_mm_castps_si128({c}), {a}), "
                             "_mm_andnot_si128(_mm_castps_si128({c}), {b}))"),
    "<4 x i16>": _SSE_4X16, "<4 x i8>": _SSE_NARROW_X8,
    # float64 compute (2 lanes): masks are __m128d, 64 bits a lane; 32-bit lanes 0 and 1
    # of a comparison spread to them and back
    "<2 x i32>": dict(_SSE_I32,
                      lt="_mm_castsi128_pd(_mm_shuffle_epi32(_mm_cmplt_epi32({a}, {b}), _MM_SHUFFLE(1, 1, 0, 0)))",
                      eq="_mm_castsi128_pd(_mm_shuffle_epi32(_mm_cmpeq_epi32({a}, {b}), _MM_SHUFFLE(1, 1, 0, 0)))",
                      select="_mm_or_si128("
                             "_mm_and_si128(_mm_shuffle_epi32(_mm_castpd_si128({c}), _MM_SHUFFLE(2, 2, 2, 0)), {a}), "
                             "_mm_andnot_si128(_mm_shuffle_epi32(_mm_castpd_si128({c}), _MM_SHUFFLE(2, 2, 2, 0)), {b}))"),
    "<2 x i16>": _SSE_2X16, "<2 x i8>": _SSE_NARROW_X8,
    # no 64-bit compare in SSE2: equal where both 32-bit halves are; less where the high
    # halves are (signed), or they are equal and the low halves are (unsigned: signed after
    # flipping their top bits); the verdict of lane 1 and 3 then spread to the 64-bit lane
    "<2 x i64>": dict(_x86_i64("_mm", "si128", "__m128i", "set1_epi64x"),
                      zext={"i8": f"_mm_unpacklo_epi32({_SSE_BYTES_TO_I32}, {_SSE_ZERO})"},
                      eq="_mm_castsi128_pd(_mm_and_si128(_mm_cmpeq_epi32({a}, {b}), "
                         "_mm_shuffle_epi32(_mm_cmpeq_epi32({a}, {b}), _MM_SHUFFLE(2, 3, 0, 1))))",
                      lt="_mm_castsi128_pd(_mm_shuffle_epi32(_mm_or_si128(_mm_cmpgt_epi32({b}, {a}), "
                         "_mm_and_si128(_mm_cmpeq_epi32({a}, {b}), _mm_slli_epi64(_mm_cmpgt_epi32("
                         "_mm_xor_si128({b}, _mm_set1_epi32(INT32_MIN)), _mm_xor_si128({a}, _mm_set1_epi32(INT32_MIN))), "
                         "32))), _MM_SHUFFLE(3, 3, 1, 1)))",
                      select="_mm_or_si128(_mm_and_si128(_mm_castpd_si128({c}), {a}), "
                             "_mm_andnot_si128(_mm_castpd_si128({c}), {b}))"),
    "<2 x f32>": {**{k: v for k, v in _SSE_F32.items() if k != "stream"},   # 8 bytes: plain stores
                  "load": "_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)({p})))",
                  "store": "_mm_storel_epi64((__m128i *)({p}), _mm_castps_si128({v}))", "register": 4,
                  "load_register": "_mm_loadu_ps({p})", "store_register": "_mm_storeu_ps({p}, {v})"},
}
_SSE2_CONVERTS = {**_SCALAR_CONVERTS, ("<2 x f32>", "<2 x f64>"): "_mm_cvtps_pd({a})",
                  ("<2 x f64>", "<2 x f32>"): "_mm_cvtpd_ps({a})"}

_AVX2_LANES = {
    **_SCALAR_LANES,
    # float32 compute (8 lanes): masks are __m256
    "<8 x i32>": dict(_AVX_I32, lt="_mm256_castsi256_ps(_mm256_cmpgt_epi32({b}, {a}))",
                      eq="_mm256_castsi256_ps(_mm256_cmpeq_epi32({a}, {b}))",
                      select="_mm256_blendv_epi8({b}, {a}, _mm256_castps_si256({c}))"),
    "<8 x i16>": _SSE_8X16, "<8 x f16>": _SSE_8X16, "<8 x i8>": _SSE_8X8,
    # float64 compute (4 lanes)
    "<4 x i32>": _SSE_I32, "<4 x i16>": _SSE_4X16, "<4 x f16>": _SSE_4X16, "<4 x f32>": _SSE_F32,
    "<4 x i8>": _SSE_NARROW_X8,
    "<4 x i64>": dict(_x86_i64("_mm256", "si256", "__m256i", "set1_epi64x"), zext={"i8": "_mm256_cvtepu8_epi64({a})"},
                      eq="_mm256_castsi256_pd(_mm256_cmpeq_epi64({a}, {b}))",
                      lt="_mm256_castsi256_pd(_mm256_cmpgt_epi64({b}, {a}))",
                      select="_mm256_blendv_epi8({b}, {a}, _mm256_castpd_si256({c}))"),
}
_AVX2_CONVERTS = {
    **_SCALAR_CONVERTS,
    ("<8 x f16>", "<8 x f32>"): "_mm256_cvtph_ps({a})", ("<8 x f32>", "<8 x f16>"): f"_mm256_cvtps_ph({{a}}, {_ROUND})",
    ("<4 x f16>", "<4 x f32>"): "_mm_cvtph_ps({a})", ("<4 x f32>", "<4 x f16>"): f"_mm_cvtps_ph({{a}}, {_ROUND})",
    ("<4 x f32>", "<4 x f64>"): "_mm256_cvtps_pd({a})", ("<4 x f64>", "<4 x f32>"): "_mm256_cvtpd_ps({a})",
    ("f16", "f32"): "_cvtsh_ss({a})", ("f32", "f16"): f"_cvtss_sh({{a}}, {_ROUND})",
}

_AVX512_LANES = {
    **_SCALAR_LANES,
    # float32 compute (16 lanes): masks are __mmask16
    "<16 x i32>": dict(_x86_i32("_mm512", "si512", "__m512i"),
                       zext={"i16": "_mm512_cvtepu16_epi32({a})", "i8": "_mm512_cvtepu8_epi32({a})"},
                       trunc="_mm512_cvtepi32_epi16({a})", lt="_mm512_cmplt_epi32_mask({a}, {b})",
                       eq="_mm512_cmpeq_epi32_mask({a}, {b})", select="_mm512_mask_blend_epi32({c}, {b}, {a})"),
    "<16 x i16>": _AVX_16X16, "<16 x f16>": _AVX_16X16, "<16 x i8>": _SSE_16X8,
    # float64 compute (8 lanes)
    "<8 x i32>": _AVX_I32, "<8 x i16>": _SSE_8X16, "<8 x f16>": _SSE_8X16, "<8 x f32>": _AVX_F32,
    "<8 x i8>": _SSE_8X8,
    "<8 x i64>": dict(_x86_i64("_mm512", "si512", "__m512i", "set1_epi64"), zext={"i8": "_mm512_cvtepu8_epi64({a})"},
                      eq="_mm512_cmpeq_epi64_mask({a}, {b})", lt="_mm512_cmplt_epi64_mask({a}, {b})",
                      select="_mm512_mask_blend_epi64({c}, {b}, {a})"),
}
_AVX512_CONVERTS = {
    **_SCALAR_CONVERTS,
    ("<16 x f16>", "<16 x f32>"): "_mm512_cvtph_ps({a})",
    ("<16 x f32>", "<16 x f16>"): f"_mm512_cvtps_ph({{a}}, {_ROUND})",
    # 8 lanes in AVX-512F alone (F16C's 256-bit forms need -mf16c): the low half of a 512-bit one
    ("<8 x f16>", "<8 x f32>"): "_mm512_castps512_ps256(_mm512_cvtph_ps(_mm256_castsi128_si256({a})))",
    ("<8 x f32>", "<8 x f16>"): f"_mm256_castsi256_si128(_mm512_cvtps_ph(_mm512_castps256_ps512({{a}}), {_ROUND}))",
    ("<8 x f32>", "<8 x f64>"): "_mm512_cvtps_pd({a})", ("<8 x f64>", "<8 x f32>"): "_mm512_cvtpd_ps({a})",
    ("f16", "f32"): "_mm512_cvtss_f32(_mm512_cvtph_ps(_mm256_set1_epi16((short){a})))",
    ("f32", "f16"):
        f"(uint16_t)_mm_cvtsi128_si32(_mm256_castsi256_si128(_mm512_cvtps_ph(_mm512_set1_ps({{a}}), {_ROUND})))",
}


def _neon_i32(q: str, reg: str) -> dict:
    """32-bit integer lanes in a NEON register: q is "q" (128 bits) or "" (64 bits)."""
    return {"type": reg, "set1": f"vdup{q}_n_s32({{v}})", "add": f"vadd{q}_s32({{a}}, {{b}})",
            "sub": f"vsub{q}_s32({{a}}, {{b}})", "and": f"vand{q}_s32({{a}}, {{b}})",
            "or": f"vorr{q}_s32({{a}}, {{b}})",
            "shl": f"vshl{q}_n_s32({{a}}, {{n}})",
            "lshr": f"vreinterpret{q}_s32_u32(vshr{q}_n_u32(vreinterpret{q}_u32_s32({{a}}), {{n}}))",
            "lt": f"vclt{q}_s32({{a}}, {{b}})", "eq": f"vceq{q}_s32({{a}}, {{b}})",
            "select": f"vbsl{q}_s32({{c}}, {{a}}, {{b}})"}


_NEON_U16 = {"type": "uint16x4_t", "load": "vld1_u16({p})", "store": "vst1_u16({p}, {v})",
             "lane": "vget_lane_u16({v}, {lane})", "register": 4, "load_register": "vld1_u16({p})",
             "store_register": "vst1_u16({p}, {v})"}
_NEON_F16 = {"type": "float16x4_t", "load": "vreinterpret_f16_u16(vld1_u16({p}))",
             "store": "vst1_u16({p}, vreinterpret_u16_f16({v}))",
             "lane": "vget_lane_u16(vreinterpret_u16_f16({v}), {lane})", "register": 4,
             "load_register": "vreinterpret_f16_u16(vld1_u16({p}))",
             "store_register": "vst1_u16({p}, vreinterpret_u16_f16({v}))"}
# mask bytes: 4 or 2 of them, through a buffer
_NEON_U8 = {"type": "uint8x8_t", "load": None, "register": 8, "load_register": "vld1_u8({p})"}
_NEON_BYTES_TO_U32 = "vmovl_u16(vget_low_u16(vmovl_u8({a})))"
_NEON_LANES = {
    **_SCALAR_LANES,
    # float32 compute (4 lanes): masks are uint32x4_t
    "<4 x i32>": dict(_neon_i32("q", "int32x4_t"),
                      zext={"i16": "vreinterpretq_s32_u32(vmovl_u16({a}))",
                            "i8": f"vreinterpretq_s32_u32({_NEON_BYTES_TO_U32})"},
                      trunc="vmovn_u32(vreinterpretq_u32_s32({a}))"),
    "<4 x i16>": _NEON_U16, "<4 x f16>": _NEON_F16, "<4 x i8>": _NEON_U8,
    # float64 compute (2 lanes): in the low half of 64-bit registers; 4 bytes through a buffer
    "<2 x i32>": {k: v for k, v in _neon_i32("", "int32x2_t").items() if k not in ("lt", "eq", "select")}
                 | {"zext": {"i16": "vreinterpret_s32_u32(vget_low_u32(vmovl_u16({a})))"}},
    "<2 x i16>": dict(_NEON_U16, load=None, store=None), "<2 x f16>": dict(_NEON_F16, load=None, store=None),
    "<2 x i8>": _NEON_U8,
    "<2 x i64>": {"type": "int64x2_t", "set1": "vdupq_n_s64({v})", "sub": "vsubq_s64({a}, {b})",
                  "and": "vandq_s64({a}, {b})", "or": "vorrq_s64({a}, {b})", "shl": "vshlq_n_s64({a}, {n})",
                  "lshr": "vreinterpretq_s64_u64(vshrq_n_u64(vreinterpretq_u64_s64({a}), {n}))",
                  "zext": {"i8": f"vreinterpretq_s64_u64(vmovl_u32(vget_low_u32({_NEON_BYTES_TO_U32})))"},
                  "eq": "vceqq_s64({a}, {b})", "lt": "vcltq_s64({a}, {b})", "select": "vbslq_s64({c}, {a}, {b})"},
    "<2 x f32>": {"type": "float32x2_t", "set1": "vdup_n_f32({v})", "load": "vld1_f32({p})",
                  "store": "vst1_f32({p}, {v})",
                  "sub": "vsub_f32({a}, {b})", "as_int": "vreinterpret_s32_f32({a})",
                  "as_float": "vreinterpret_f32_s32({a})", "lane": "vget_lane_f32({v}, {lane})"},
}
_NEON_CONVERTS = {
    **_SCALAR_CONVERTS,
    ("<4 x f16>", "<4 x f32>"): "vcvt_f32_f16({a})", ("<4 x f32>", "<4 x f16>"): "vcvt_f16_f32({a})",
    ("<2 x f16>", "<2 x f32>"): "vget_low_f32(vcvt_f32_f16({a}))",
    ("<2 x f32>", "<2 x f64>"): "vcvt_f64_f32({a})", ("<2 x f64>", "<2 x f32>"): "vcvt_f32_f64({a})",
    ("f16", "f32"): "vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16({a}))), 0)",
    ("f32", "f16"): "vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32({a}))), 0)",
}


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
        "as_int": "{fn}_bits$tag({a})", "as_float": "{fn}_from_bits$tag({a})", "shl": "{a} << {n}",
        # row values only (once per row, so a libm call is fine)
        "div": "{a} / {b}", "log": "log$lf({a})",
        "le": "{a} <= {b}", "ne": "{a} != {b}", "isnan": "{a} != {a}", "fabs": "fabs$lf({a})",
        "and": "{a} & {b}", "or": "{a} | {b}", "mask_zero": "0", "stream": "*({p}) = {v}",
        "select_mask": "{c} ? {a} : {b}",
        "all": "{m}",
    },
    swaps={DType.F32: {}, DType.F64: {}},
    # no wider type to fuse a double product in: C99's fma (glibc picks the FMA instruction
    # where the CPU has one); shifts of a double's bits as unsigned (no signed overflow)
    dtype_ops={DType.F64: {"fma": "fma({a}, {b}, {c})", "shl": "(int64_t)((uint64_t){a} << {n})"}},
    lanes=_SCALAR_LANES, converts=_SCALAR_CONVERTS)

_SSE2 = Isa(
    "sse2", "SSE2", 128, "__m128$d", "__m128i", "__m128$d", "emmintrin.h", (("__SSE2__", "-msse2"),),
    {
        "set1": "_mm_set1_$ps({v})", "load": "_mm_loadu_$ps({p})", "store": "_mm_storeu_$ps({p}, {v})",
        "add": "_mm_add_$ps({a}, {b})", "sub": "_mm_sub_$ps({a}, {b})", "mul": "_mm_mul_$ps({a}, {b})",
        # No FMA in SSE2, and mul+add is not enough: exp_pair needs k*ln2_hi exact for
        # |k| up to 2^20.  The helper computes in double like the scalar spelling (float64:
        # C99's fma per lane).
        "fma": "{fn}_fma$tag({a}, {b}, {c})",
        # maxps returns b when either is NaN; OR-ing a NaN a back in keeps it NaN
        "maximum": "_mm_or_$ps(_mm_max_$ps({a}, {b}), _mm_and_$ps(_mm_cmpunord_$ps({a}, {a}), {a}))",
        "lt": "_mm_cmplt_$ps({a}, {b})", "gt": "_mm_cmpgt_$ps({a}, {b})", "eq": "_mm_cmpeq_$ps({a}, {b})",
        "select": "_mm_or_$ps(_mm_and_$ps({c}, {a}), _mm_andnot_$ps({c}, {b}))",
        "greater": "_mm_max_$ps({a}, {b})", "less": "_mm_min_$ps({a}, {b})",
        "as_int": "_mm_cast${ps}_si128({a})", "as_float": "_mm_castsi128_$ps({a})",
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
    swaps={DType.F32: {2: "_mm_movehl_ps({v}, {v})", 1: "_mm_shuffle_ps({v}, {v}, _MM_SHUFFLE(2, 3, 0, 1))"},
           DType.F64: {1: "_mm_shuffle_pd({v}, {v}, 1)"}},
    first="_mm_cvt${ss}_f$bits({v})",
    host_features=frozenset({"sse2"}), lanes=_SSE2_LANES, converts=_SSE2_CONVERTS)

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
                       1: "_mm256_permute_ps({v}, _MM_SHUFFLE(2, 3, 0, 1))"},
           DType.F64: {2: "_mm256_permute2f128_pd({v}, {v}, 1)", 1: "_mm256_permute_pd({v}, 5)"}},
    first="_mm256_cvt${ss}_f$bits({v})",
    masked_load="_mm256_maskload_$ps({p}, _mm256_cast${ps}_si256({m}))",
    masked_store="_mm256_maskstore_$ps({p}, _mm256_cast${ps}_si256({m}), {v})",
    host_features=frozenset({"avx2", "fma", "f16c"}), lanes=_AVX2_LANES, converts=_AVX2_CONVERTS, converts_half=True,
    # float16 conversions (F16C): required of the kernels that convert float16 only
    optional_requires=((r"_cvtph_ps|_cvtps_ph|_cvtsh_ss|_cvtss_sh", "F16C", "__F16C__", "-mf16c"),))

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
                       1: "_mm512_permute_ps({v}, _MM_SHUFFLE(2, 3, 0, 1))"},
           DType.F64: {4: "_mm512_shuffle_f64x2({v}, {v}, _MM_SHUFFLE(1, 0, 3, 2))",
                       2: "_mm512_shuffle_f64x2({v}, {v}, _MM_SHUFFLE(2, 3, 0, 1))",
                       1: "_mm512_permute_pd({v}, 0x55)"}},
    first="_mm512_cvt${ss}_f$bits({v})",
    masked_load="_mm512_maskz_loadu_$ps({m}, {p})",
    masked_store="_mm512_mask_storeu_$ps({p}, {m}, {v})",
    host_features=frozenset({"avx512f"}), lanes=_AVX512_LANES, converts=_AVX512_CONVERTS, converts_half=True)

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
        "le": "vcleq_f$bits({a}, {b})", "isnan": "vmvnq_u$bits(vceqq_f$bits({a}, {a}))",
        "and": "vandq_u$bits({a}, {b})", "or": "vorrq_u$bits({a}, {b})", "mask_zero": "vdupq_n_u$bits(0)",
        "select_mask": "vbslq_u$bits({c}, {a}, {b})",
        "div": "vdivq_f$bits({a}, {b})", "log": "{fn}_log({a})", "fabs": "vabsq_f$bits({a})",
        "ne": "vandq_u$bits(vmvnq_u$bits(vceqq_f$bits({a}, {b})), vandq_u$bits(vceqq_f$bits({a}, {a}), vceqq_f$bits({b}, {b})))",
        "all": "vminvq_u$bits({m}) != 0",
        "stream": "vst1q_f$bits({p}, {v})", "prefetch": "__builtin_prefetch({p})",
    },
    swaps={DType.F32: {2: "vextq_f32({v}, {v}, 2)", 1: "vrev64q_f32({v})"}, DType.F64: {1: "vextq_f64({v}, {v}, 1)"}},
    first="vgetq_lane_f$bits({v}, 0)",
    # no 64-bit NOT or across-lanes min: masks' 64-bit lanes seen as 32-bit ones
    dtype_ops={DType.F64: {
        "isnan": "vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(vceqq_f64({a}, {a}))))",
        "ne": "vandq_u64(vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(vceqq_f64({a}, {b})))), "
              "vandq_u64(vceqq_f64({a}, {a}), vceqq_f64({b}, {b})))",
        "all": "vminvq_u32(vreinterpretq_u32_u64({m})) != 0"}},
    lanes=_NEON_LANES, converts=_NEON_CONVERTS, converts_half=True)

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
    double = isa.ctype.dtype is DType.F64
    if isa.name == "avx512":
        idx = ", ".join(map(str, reversed(lanes)))
        if double:
            return f"_mm512_permutex2var_pd({a}, _mm512_set_epi64({idx}), {b})"
        return f"_mm512_permutex2var_ps({a}, _mm512_set_epi32({idx}), {b})"
    if isa.name == "avx2" and double:   # as float32 lane pairs
        pairs = tuple(2 * i + k for i in lanes for k in range(2))
        single = shuffle(PATTERNS["avx2"].for_dtype(DType.F32), f"_mm256_castpd_ps({a})", f"_mm256_castpd_ps({b})",
                         pairs)
        return f"_mm256_castps_pd({single})"
    if isa.name == "avx2":
        within = ", ".join(str(i % w) for i in reversed(lanes))
        from_b = ", ".join("-1" if i >= w else "0" for i in reversed(lanes))
        return (f"_mm256_blendv_ps(_mm256_permutevar8x32_ps({a}, _mm256_set_epi32({within})), "
                f"_mm256_permutevar8x32_ps({b}, _mm256_set_epi32({within})), "
                f"_mm256_castsi256_ps(_mm256_set_epi32({from_b})))")
    if isa.name == "sse2" and double and lanes[0] < w <= lanes[1]:
        return f"_mm_shuffle_pd({a}, {b}, {lanes[0] | (lanes[1] - w) << 1})"
    if isa.name == "sse2" and not double and max(lanes[:2]) < w <= min(lanes[2:]):
        i0, i1, i2, i3 = lanes
        return f"_mm_shuffle_ps({a}, {b}, _MM_SHUFFLE({i3 - w}, {i2 - w}, {i1}, {i0}))"
    if isa.name == "neon":
        size = isa.ctype.dtype.bits // 8
        f = f"f{isa.ctype.dtype.bits}"
        idx = ", ".join(str(size * i + k) for i in lanes for k in range(size))
        return (f"vreinterpretq_{f}_u8(vqtbl2q_u8((uint8x16x2_t){{{{vreinterpretq_u8_{f}({a}), "
                f"vreinterpretq_u8_{f}({b})}}}}, (uint8x16_t){{{idx}}}))")
    return None
