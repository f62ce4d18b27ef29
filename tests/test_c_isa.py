"""The C backend's ISA tables: one pattern per ISA, spelled per dtype."""
from dataclasses import fields, replace

import pytest

import softgen
from softgen.backends.c import C_TYPES, ISAS, PATTERNS, c_float
from softgen.ir import DType


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


def test_spellings_follow_the_dtype_table():
    """A float64 lane-swap table is all an ISA would lack to spell float64 vectors."""
    def f64(name):
        return replace(PATTERNS[name], swaps={DType.F64: {}}).for_dtype(DType.F64)
    avx2, avx512, neon, scalar = f64("avx2"), f64("avx512"), f64("neon"), f64("scalar")
    assert (avx2.width, avx2.vec, avx2.ops["add"]) == (4, "__m256d", "_mm256_add_pd({a}, {b})")
    assert avx2.ops["shl"] == "_mm256_slli_epi64({a}, {n})" and avx2.first == "_mm256_cvtsd_f64({v})"
    assert avx2.masked_load == "_mm256_maskload_pd({p}, _mm256_castpd_si256({m}))"
    assert (avx512.width, avx512.mask) == (8, "__mmask8")
    assert (neon.width, neon.vec, neon.ops["fma"]) == (2, "float64x2_t", "vfmaq_f64({c}, {a}, {b})")
    assert (scalar.vec, scalar.ivec, scalar.ops["log"]) == ("double", "uint64_t", "log({a})")


def test_other_dtypes_are_not_enabled():
    for isa in PATTERNS.values():
        with pytest.raises(NotImplementedError, match=f"the {isa.name} C backend has no float64"):
            isa.for_dtype(DType.F64)
    with pytest.raises(TypeError, match="float64"):
        softgen.emit_c("softmax", algorithm="two_pass", dtype="float64")


def test_literals_per_dtype():
    f32, f64 = C_TYPES[DType.F32], C_TYPES[DType.F64]
    assert (c_float(0.1, f32), c_float(2.0, f32), c_float(1e-45, f32)) == ("0.100000001f", "2.0f", "1.40129846e-45f")
    assert (c_float(0.1, f64), c_float(2.0, f64)) == ("0.10000000000000001", "2.0")
