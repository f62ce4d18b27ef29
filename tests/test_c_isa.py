"""The C backend's ISA tables: one pattern per ISA, spelled per dtype."""
from dataclasses import fields, replace

import pytest

import softgen
from softgen.backends.c import C_TYPES, ISAS, PATTERNS, c_float
from softgen.backends.c.render import CRenderer
from softgen.ir import DType
from softgen.lower.loopir import Kernel, Ty


def _strings(isa) -> list[str]:
    out = []
    for f in fields(isa):
        v = getattr(isa, f.name)
        out += list(v.values()) if isinstance(v, dict) else [v] if isinstance(v, str) else []
    return out


def test_the_isas_are_float32_spellings():
    assert {name: isa.width for name, isa in ISAS.items()} == dict(scalar=1, sse2=4, avx2=8, avx512=16, neon=4)
    assert all("$" not in text for isa in ISAS.values() for text in _strings(isa))
    assert ISAS["avx2"].ops["add"] == "_mm256_add_ps({a}, {b})" and ISAS["avx2"].vec == "__m256"
    assert ISAS["avx512"].mask == "__mmask16" and ISAS["sse2"].first == "_mm_cvtss_f32({v})"
    assert ISAS["neon"].ops["as_int"] == "vreinterpretq_s32_f32({a})" and ISAS["neon"].ivec == "int32x4_t"
    assert ISAS["scalar"].ops["log"] == "logf({a})" and ISAS["scalar"].vec == "float"


def test_float64_spellings_come_from_the_same_patterns():
    avx2, avx512, neon, scalar, sse2 = (PATTERNS[n].for_dtype(DType.F64)
                                        for n in ("avx2", "avx512", "neon", "scalar", "sse2"))
    assert all("$" not in text for isa in (avx2, avx512, neon, scalar, sse2) for text in _strings(isa))
    assert (avx2.width, avx2.vec, avx2.ops["add"]) == (4, "__m256d", "_mm256_add_pd({a}, {b})")
    assert avx2.lanes["<4 x i64>"]["shl"] == "_mm256_slli_epi64({a}, {n})" and avx2.first == "_mm256_cvtsd_f64({v})"
    assert avx2.masked_load == "_mm256_maskload_pd({p}, _mm256_castpd_si256({m}))"
    assert (avx512.width, avx512.mask, avx512.ops["ldexp"]) == (8, "__mmask8", "_mm512_scalef_pd({a}, {b})")
    assert (neon.width, neon.vec, neon.ops["fma"]) == (2, "float64x2_t", "vfmaq_f64({c}, {a}, {b})")
    assert neon.ops["all"] == "vminvq_u32(vreinterpretq_u32_u64({m})) != 0"   # no vminvq_u64
    assert (scalar.vec, scalar.ivec, scalar.ops["log"], scalar.ops["fma"]) == ("double", "uint64_t", "log({a})",
                                                                                "fma({a}, {b}, {c})")
    assert scalar.ops["as_int"] == "{fn}_bits64({a})" and ISAS["scalar"].ops["as_int"] == "{fn}_bits({a})"
    assert sse2.ops["fma"] == "{fn}_fma64({a}, {b}, {c})" and sse2.swaps == {1: "_mm_shuffle_pd({v}, {v}, 1)"}


def test_16_bit_floats_are_storage_only():
    for isa in PATTERNS.values():
        for dtype in (DType.F16, DType.BF16):
            with pytest.raises(NotImplementedError, match=f"the {isa.name} C backend has no {dtype.numpy_name}"):
                isa.for_dtype(dtype)


def test_lane_tables():
    """Every ISA spells the other lane types of both compute widths: 16-bit storage lanes
    as the bits, the recipes' 32-bit integer lanes, float32 lanes beside float64 compute,
    where= masks' bytes; one C type per loop-IR type, converts between the widths the
    lowering casts."""
    for name, isa in PATTERNS.items():
        w32, w64 = isa.for_dtype(DType.F32).width, isa.for_dtype(DType.F64).width
        ty = (lambda k, b, w: f"{k}{b}" if w == 1 else f"<{w} x {k}{b}>")
        for kind, bits, lanes in [("i", 16, w32), ("i", 32, w32), ("i", 16, w64), ("i", 32, w64), ("i", 8, w32),
                                  ("i", 8, w64)]:
            assert ty(kind, bits, lanes) in isa.lanes, (name, ty(kind, bits, lanes))
        # mask bytes widen to the compute dtype's integer lanes, which compare with 0 (one-lane
        # int64s as C's own)
        for bits, lanes in [(32, w32), (64, w64)]:
            assert "i8" in isa.lanes[ty("i", bits, lanes)]["zext"], (name, bits)
            assert lanes == 1 or "eq" in isa.lanes[ty("i", bits, lanes)], (name, bits)
        assert (ty("f", 32, w64), ty("f", 64, w64)) in isa.converts
        assert (ty("f", 64, w64), ty("f", 32, w64)) in isa.converts
        if isa.converts_half:
            assert (ty("f", 16, w32), ty("f", 32, w32)) in isa.converts and ("f32", "f16") in isa.converts
        lanes = isa.lanes[ty("i", 32, w32)]
        for op in ("add", "sub", "and", "or", "shl", "lshr", "lt", "eq", "select", "zext", "trunc"):
            assert op in lanes, (name, op)
        # a double's bits and top-k's float64 order keys: integer vectors are spelled here
        # only (the pattern's operations are float ones)
        if w64 > 1:
            for op in ("sub", "and", "or", "shl", "lshr", "lt", "eq", "select", "zext"):
                assert op in isa.lanes[ty("i", 64, w64)], (name, op)
    assert PATTERNS["avx2"].lanes["<8 x i32>"]["zext"] == {"i16": "_mm256_cvtepu16_epi32({a})",
                                                           "i8": "_mm256_cvtepu8_epi32({a})"}
    assert PATTERNS["avx512"].lanes["<16 x i32>"]["trunc"] == "_mm512_cvtepi32_epi16({a})"
    assert PATTERNS["avx2"].converts["<8 x f32>", "<8 x f16>"] == \
        "_mm256_cvtps_ph({a}, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)"
    assert PATTERNS["neon"].converts["<4 x f16>", "<4 x f32>"] == "vcvt_f32_f16({a})"
    assert not PATTERNS["sse2"].converts_half and not PATTERNS["scalar"].converts_half


def test_abi_types_per_dtype():
    """x's and y's C types: float, double, uint16_t for the 16-bit floats; x and y may differ."""
    cases = {("float32", None): ("float", "float"), ("float64", None): ("double", "double"),
             ("bfloat16", None): ("uint16_t", "uint16_t"), ("float16", "float32"): ("uint16_t", "float"),
             ("float32", "bfloat16"): ("float", "uint16_t"), ("float32", "float64"): ("float", "double")}
    for (x, y), (tx, ty) in cases.items():
        src = softgen.emit_c("logsumexp", algorithm="two_pass", dtype=x, out_dtype=y, isa="avx2", name="k")
        decl = f"void k(int64_t rows, int64_t n, const {tx} *SOFTGEN_RESTRICT x, int64_t x_row_stride, " \
               f"{ty} *SOFTGEN_RESTRICT y, int64_t y_row_stride);"
        assert decl in src.header, (x, y, src.header)
        assert src.dtype == x and src.out_dtype == (y or x)
    h = softgen.emit_c("softmax", algorithm="online", dtype="bfloat16", out_dtype="float32", isa="neon").header
    assert "softgen_softmax_online_bfloat16_float32_neon" in h
    assert "x: bfloat16 as uint16_t: the upper 16 bits of a float32" in h and "y: float32 (float)" in h
    h = softgen.emit_c("softmax", algorithm="online", dtype="float16", isa="scalar").header
    assert "x and y: float16 as uint16_t: IEEE 754 binary16 bits" in h and "rounded to nearest even" in h


def test_f16c_is_required_of_the_avx2_kernels_that_convert_float16():
    half = softgen.emit_c("softmax", algorithm="online", dtype="float16", isa="avx2")
    assert half.flags == ("-mavx2", "-mfma", "-mf16c") and "_mm256_cvtph_ps" in half.source
    assert "#if !defined(__F16C__)" in half.source and "-mavx2 -mfma -mf16c" in half.header
    assert "isa avx2 (AVX2 + FMA + F16C)" in half.header
    for kwargs in (dict(dtype="bfloat16"), dict(dtype="float64"), dict(isa="avx512", dtype="float16")):
        src = softgen.emit_c("softmax", algorithm="online", **{"isa": "avx2", **kwargs})
        assert "-mf16c" not in src.flags and "F16C" not in src.source, kwargs


def test_float64_results_are_not_stored_as_16_bits():
    for out in ("float16", "bfloat16"):
        with pytest.raises(NotImplementedError, match=f"storing float64 results as {out} would round twice"):
            softgen.emit_c("softmax", algorithm="online", dtype="float64", out_dtype=out, isa="avx2")
    with pytest.raises(TypeError, match="unsupported dtype"):
        softgen.emit_c("softmax", algorithm="online", dtype="int8")
    with pytest.raises(NotImplementedError, match="three_pass_reload keeps"):
        softgen.emit_c("softmax", algorithm="three_pass_reload", dtype="float32", out_dtype="bfloat16")


def test_literals_per_dtype():
    f32, f64 = C_TYPES[DType.F32], C_TYPES[DType.F64]
    assert (c_float(0.1, f32), c_float(2.0, f32), c_float(1e-45, f32)) == ("0.100000001f", "2.0f", "1.40129846e-45f")
    assert (c_float(0.1, f64), c_float(2.0, f64)) == ("0.10000000000000001", "2.0")


@pytest.mark.parametrize("isa", ["sse2", "avx2", "avx512", "neon"])
def test_integer_vectors_are_never_spelled_as_floats(isa):
    """An integer vector's operation the lane table lacks is refused, not spelled by the
    compute dtype's float pattern (`_mm256_sub_pd` on 64-bit integer lanes did not compile;
    a mask-selected vector was once a C `?:` of whole registers)."""
    table = PATTERNS[isa].for_dtype(DType.F64)
    r = CRenderer(Kernel("k", []), table, "k")
    i64 = Ty("int", 64, table.width)
    assert r.spell(i64, "sub", a="a", b="b") == table.lanes[str(i64)]["sub"].format(a="a", b="b")
    with pytest.raises(NotImplementedError, match=f"cannot render add on <{table.width} x i64> for {isa}"):
        r.spell(i64, "add", a="a", b="b")
