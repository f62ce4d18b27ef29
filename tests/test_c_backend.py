"""The C backend (softgen.emit_c): the emitted C compiles without a warning (gcc, clang, as
C++), calls no per-element libm function, agrees with float64 and with the JIT kernel on
every op x algorithm x ISA this host runs, never touches memory past a row (sentinels,
AddressSanitizer/UBSan), runs on AArch64 under qemu, and embeds in a C program; kernels of
the other dtypes (float64, float16, bfloat16, x and y apart) agree with a long double
reference on every ISA here and on AArch64."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import softgen
from softgen import algorithms
from softgen.backends.c import ISAS, NOT_RENDERED, PATTERNS, block_size, rendered_schedule
from softgen.lower import Schedule

from cc import HOST, HOST_ISAS, need, run, strict_flags
from reference import (check, check_relative, check_ulps, masked_rows, misaligned_rows, near_zero_rows, offset_rows,
                       softplus_reference)

REPO = Path(__file__).resolve().parent.parent
CASES = []
for _op in softgen.OPS:
    for _algorithm in softgen.ALGORITHMS:
        try:
            algorithms.build(_op, _algorithm)
        except NotImplementedError:
            continue
        CASES.append((_op, _algorithm))


BEST_ISA = HOST_ISAS[-1]          # the widest one this CPU runs
CLANG_ISAS = sorted({"scalar", BEST_ISA})   # where test_compiles_without_warnings also runs clang
X86_ISAS = ("scalar", "sse2", "avx2", "avx512")
COMPILERS = ("gcc", "clang")
JOBS = len(os.sched_getaffinity(0))


def cross(compiler: str) -> list[str]:
    """The command that compiles C for AArch64 with `compiler`."""
    return ["aarch64-linux-gnu-gcc"] if compiler == "gcc" else ["clang", "--target=aarch64-linux-gnu"]


def run_all(cmds: list[list]) -> None:
    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(run, cmds))


class CBuild:
    """Emitted sources and what is built from them, once per test session."""

    def __init__(self, root: Path):
        self.root = root
        self._done: dict = {}

    def _once(self, key, make):
        if key not in self._done:
            self._done[key] = make()
        return self._done[key]

    def sources(self, isa: str, unroll: int = 4, accumulators: int | None = None) -> dict:
        """{(op, algorithm): CSource}, written to a directory of their own."""
        def make():
            d = self.root / f"src-{isa}-{unroll}-{accumulators}"
            out = {}
            for op, algorithm in CASES:
                name = f"k_{op}_{algorithm}_{isa}_{unroll}_{accumulators}"
                out[op, algorithm] = softgen.emit_c(op, algorithm=algorithm, isa=isa, name=name,
                                                    unroll=unroll, accumulators=accumulators)
                out[op, algorithm].write(d)
            return d, out
        return self._once(("src", isa, unroll, accumulators), make)

    def objects(self, isa: str, compiler: str, unroll: int = 4, accumulators: int | None = None,
                extra: tuple = ("-fPIC",)) -> list[Path]:
        """Every case compiled with the strict warning flags (warnings are errors); -fPIC
        by default, so the same objects serve the shared libraries."""
        def make():
            d, srcs = self.sources(isa, unroll, accumulators)
            cc = cross(compiler) if isa == "neon" else [compiler]
            tag = "-".join([compiler, *extra]).replace("=", "").replace(",", "")
            objs = [d / f"{s.name}.{tag}.o" for s in srcs.values()]
            run_all([[*cc, *strict_flags(isa), *extra, "-c", d / f"{s.name}.c", "-o", o]
                     for s, o in zip(srcs.values(), objs)])
            return objs
        return self._once(("obj", isa, compiler, unroll, accumulators, extra), make)

    def library(self, isa: str, compiler: str, unroll: int = 4, accumulators: int | None = None):
        def make():
            objs = self.objects(isa, compiler, unroll, accumulators)
            lib = self.root / f"lib-{isa}-{compiler}-{unroll}-{accumulators}.so"
            run([compiler, "-shared", "-o", lib, *objs, "-lm"])
            return ctypes.CDLL(str(lib))
        return self._once(("lib", isa, compiler, unroll, accumulators), make)

    def driver(self, isa: str, cc: list, flags: tuple, tag: str) -> Path:
        """A program that runs any of the kernels on cases from a file (see DRIVER)."""
        def make():
            d, srcs = self.sources(isa)
            main = d / "driver.c"
            main.write_text(driver_source(srcs.values()))
            exe = d / f"driver-{tag}"
            objs = [d / f"{s.name}.{tag}.o" for s in srcs.values()] + [d / f"driver.{tag}.o"]
            srcs_c = [d / f"{s.name}.c" for s in srcs.values()] + [main]
            run_all([[*cc, *strict_flags(isa), *flags, "-c", c, "-o", o] for c, o in zip(srcs_c, objs)])
            run([*cc, *flags, "-o", exe, *objs, "-lm"])
            return exe
        return self._once(("driver", isa, tag), make)


@pytest.fixture(scope="session")
def cbuild(tmp_path_factory) -> CBuild:
    return CBuild(tmp_path_factory.mktemp("c_backend"))


# --- checks -------------------------------------------------------------------------------

def expect(op: str, x: np.ndarray, y: np.ndarray, what: str) -> None:
    """y is op(x) within the foundation's tolerance (tests/reference.py)."""
    try:
        check(op, x, y)
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}") from None


def expect_like_jit(op: str, x: np.ndarray, y: np.ndarray, jit, what: str) -> None:
    """Both within tolerance of float64, with the same NaNs and infinities."""
    y_jit = jit(x)
    expect(op, x, y, f"{what} (C)")
    expect(op, x, y_jit, f"{what} (JIT)")
    assert np.array_equal(np.isnan(y), np.isnan(y_jit)), f"{what}: NaNs differ from the JIT's"
    assert np.array_equal(np.where(np.isinf(y), y, 0), np.where(np.isinf(y_jit), y_jit, 0)), \
        f"{what}: infinities differ from the JIT's"


SENTINEL = np.float32(-12345.0)


def aligned(size: int, fill) -> np.ndarray:
    """`size` float32s filled with `fill`, starting on a 64-byte boundary."""
    raw = np.full(size + 16, fill, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip:skip + size]


def call(fn, x: np.ndarray, row_output: bool, x_at: int = 0, y_at: int = 0, x_stride: int | None = None,
         y_stride: int | None = None, operands: tuple = ()) -> np.ndarray:
    """Run a C-ABI kernel on x placed `x_at` floats past a 64-byte boundary with row stride
    x_stride (default n + 3), output likewise; nothing around the output rows may change.
    operands: the arrays after y, a row (or a value) per row of x."""
    rows, n = x.shape
    width = 1 if row_output else n
    x_stride, y_stride = x_stride or n + 3, y_stride or width + 3
    xb = aligned(x_at + rows * x_stride + 16, np.nan)   # reading past a row would poison it
    xb[x_at:x_at + rows * x_stride].reshape(rows, x_stride)[:, :n] = x
    x_before = xb.copy()
    yb = aligned(y_at + rows * y_stride + 16, SENTINEL)
    fn(rows, n, xb.ctypes.data + 4 * x_at, x_stride, yb.ctypes.data + 4 * y_at, y_stride,
       *(v for a in operands for v in (a.ctypes.data, a.strides[0] // a.itemsize)))
    ys = yb[y_at:y_at + rows * y_stride].reshape(rows, y_stride)[:, :width]
    y = ys.copy()
    ys[...] = SENTINEL
    assert (yb == SENTINEL).all(), "the kernel wrote outside its output rows"
    assert np.array_equal(xb, x_before, equal_nan=True), "the kernel wrote to x"
    return y[:, 0] if row_output else y


def kernel(lib, src, operands: int = 0):
    """The kernel's function, typed: x, y and `operands` pointers each with its stride."""
    fn = getattr(lib, src.name)
    fn.argtypes = [ctypes.c_int64, ctypes.c_int64] + [ctypes.c_void_p, ctypes.c_int64] * (2 + operands)
    fn.restype = None
    return fn


@lru_cache(maxsize=None)
def random_rows(n: int) -> np.ndarray:
    """Three rows: normal*4, the same with every third entry -inf, large values around 1000."""
    rng = np.random.default_rng(n)
    x = np.stack([rng.standard_normal(n) * 4, rng.standard_normal(n) * 4,
                  rng.standard_normal(n) * 30 + 1000]).astype(np.float32)
    x[1, 1::3] = -np.inf
    return x


LENGTHS = list(range(71)) + [1000, 4099, 70001]


def special_rows() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    base = (rng.standard_normal(37) * 3).astype(np.float32)

    def with_(**pos):
        row = base.copy()
        for i, v in pos.items():
            row[int(i[1:])] = v
        return row[None]
    huge = np.full(37, -3e38, np.float32)
    huge[[3, 30]] = 3e38
    tiny = np.array([0, -87.5, -90, -95, -100, -103, -104, -110, -np.inf, -60, -88.7], np.float32)
    return {
        "-inf entries": with_(i0=-np.inf, i5=-np.inf, i36=-np.inf),
        "all -inf": np.full((2, 37), -np.inf, np.float32),
        "+inf": with_(i7=np.inf),
        "+inf and -inf": with_(i7=np.inf, i8=-np.inf),
        "+inf and NaN": with_(i7=np.inf, i20=np.nan),
        "NaN": with_(i20=np.nan),
        "3e38, -3e38": np.array([[3e38, -3e38, 3e38, -3e38]], np.float32),
        "3e38 in a long row": huge[None],
        "subnormal outputs": tiny[None],
        "one element": np.array([[2.5], [-np.inf], [np.inf]], np.float32),
        "n = 0": np.zeros((3, 0), np.float32),
        "rows = 0": np.zeros((0, 5), np.float32),
        "huge offsets": (rng.standard_normal((2, 37)) + [[2e4], [-3e5]]).astype(np.float32),
    }


# --- emit_c as an API -------------------------------------------------------------------

def test_variants_have_their_own_default_names():
    """Two variants of one op and algorithm never share a symbol (one library may hold
    both): the C and LLVM backends name them by their operands and empty-row rule."""
    variants = [{}, {"empty_rows": "zero"}, {"temperature": True}, {"where": True}, {"length": True},
                {"length": True, "empty_rows": "zero"}]
    c_names = [softgen.emit_c("softmax", algorithm="two_pass", isa="avx2", **v).name for v in variants]
    llvm_names = [softgen.generate("softmax", algorithm="two_pass", target="x86-64-v3", **v).name for v in variants]
    assert len(set(c_names)) == len(set(llvm_names)) == len(variants)
    assert c_names[1] == "softgen_softmax_two_pass_zero_empty_float32_avx2"
    assert llvm_names[5] == "softgen_softmax_two_pass_length_zero_empty"


def test_default_name_header_and_write(tmp_path):
    src = softgen.emit_c("softmax", algorithm="two_pass", isa="avx2")
    assert isinstance(src, softgen.CSource)
    assert src.name == "softgen_softmax_two_pass_float32_avx2"
    h = src.header
    guard = "SOFTGEN_SOFTMAX_TWO_PASS_FLOAT32_AVX2_H"
    assert f"#ifndef {guard}" in h and f"#define {guard}" in h and h.rstrip().endswith(f"#endif /* {guard} */")
    assert 'extern "C" {' in h and "#include <stdint.h>" in h
    assert f"softgen {softgen.__version__}" in h
    for word in ("op softmax", "algorithm two_pass", "isa avx2"):
        assert word in h
    assert ("void softgen_softmax_two_pass_float32_avx2(int64_t rows, int64_t n, "
            "const float *SOFTGEN_RESTRICT x, int64_t x_row_stride,") in h
    assert "#define SOFTGEN_RESTRICT restrict" in h
    assert f'#include "{src.name}.h"' in src.source
    h_path, c_path = src.write(tmp_path / "new")
    assert (h_path.read_text(), c_path.read_text()) == (src.header, src.source)
    assert (h_path.name, c_path.name) == (f"{src.name}.h", f"{src.name}.c")


def test_templates_make_the_variants():
    """Unroll and accumulator count change the emitted loops, not a copy per ISA."""
    a = softgen.emit_c("softmax", algorithm="online", isa="avx512", name="k", unroll=4, accumulators=2)
    b = softgen.emit_c("softmax", algorithm="online", isa="avx512", name="k", unroll=2)
    assert "+ 64;" in a.source and "+ 64;" not in b.source and "+ 32;" in b.source   # unroll x 16 lanes
    assert "unroll 4 over 2 accumulator sets" in a.source and "unroll 2 over 2 accumulator sets" in b.source
    block = block_size(ISAS['avx512'], 2)
    assert f"blocks of {block}" in a.source and f"+ {block};" in a.source


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(op="softmaxx", algorithm="online"), ValueError, "unknown op 'softmaxx'"),
    (dict(op="softmax", algorithm="fast"), ValueError, "unknown algorithm 'fast'"),
    (dict(op="softmax", algorithm="online", isa="avx1024"), ValueError, "unknown isa 'avx1024'.*neon"),
    (dict(op="softmax", algorithm="online", isa=3), TypeError, "isa must be a string"),
    (dict(op="softmax", algorithm="online", dtype="int32"), TypeError, "unsupported dtype int32"),
    (dict(op="softmax", algorithm="online", dtype="float64", out_dtype="float16"), NotImplementedError,
     "would round twice"),
    (dict(op="softmax", algorithm="online", dtype="nonsense"), TypeError, "unsupported dtype"),
    (dict(op="softmax", algorithm="online", name="2fast"), ValueError, "not a C identifier"),
    (dict(op="softmax", algorithm="online", name="a-b"), ValueError, "not a C identifier"),
    (dict(op="softmax", algorithm="online", name=5), TypeError, "name must be a string"),
    (dict(op="softmax", algorithm="online", unroll=0), ValueError, "unroll must be between"),
    (dict(op="softmax", algorithm="online", unroll=2, accumulators=3), ValueError, "accumulators"),
    (dict(op="softmax", algorithm="online", unroll=2.0), TypeError, "unroll must be an int"),
    (dict(op="log_softmax", algorithm="three_pass_reload"), NotImplementedError, "three_pass_recompute"),
])
def test_bad_arguments(kwargs, error, match):
    op = kwargs.pop("op")
    with pytest.raises(error, match=match):
        softgen.emit_c(op, **kwargs)


# --- compiling ------------------------------------------------------------------------------

@pytest.mark.parametrize("isa, compiler", [(isa, "gcc") for isa in ISAS] + [(isa, "clang") for isa in CLANG_ISAS])
def test_compiles_without_warnings(cbuild, isa, compiler):
    """-O2 -std=c99 -Wall -Wextra -Werror (scalar also -pedantic), every op x algorithm:
    gcc on every ISA, clang on scalar and the widest here (CI time; the dtype tests build
    half their kernels with clang, strict warnings too, on every ISA)."""
    need(*(cross(compiler)[:1] if isa == "neon" else [compiler]))
    assert len(cbuild.objects(isa, compiler)) == len(CASES)


@pytest.mark.parametrize("isa", list(ISAS))
def test_parses_as_cxx(cbuild, isa):
    """All kernels of an ISA in one C++ translation unit (also shows they amalgamate), with
    one of each other dtype pair."""
    cxx = ["clang++", "--target=aarch64-linux-gnu", "-nostdinc++"] if isa == "neon" else ["g++"]
    need(cxx[0])
    d, srcs = cbuild.sources(isa)
    # and kernels of other dtypes (logsumexp: element and row casts): float64 vectors,
    # float16 conversions, the integer lanes of the bfloat16 recipes at full and half width
    others = [softgen.emit_c("logsumexp", algorithm="two_pass", dtype=x, out_dtype=y, isa=isa, name=f"k_{x}_{y}_{isa}")
              for x, y in [("float64", "float64"), ("float16", "float16"), ("float32", "bfloat16"),
                           ("bfloat16", "float64")]]
    for src in others:
        src.write(d)
    unity = d / "all.cpp"
    unity.write_text("".join(f'#include "{s.name}.c"\n' for s in [*srcs.values(), *others]))
    flags = sorted({f for s in others for f in s.flags} - set(ISAS[isa].flags))
    run([*cxx, "-fsyntax-only", "-std=c++11", "-Wall", "-Wextra", "-Werror", *ISAS[isa].flags, *flags, unity])


def refused(cmd: list, message: str) -> None:
    """cmd fails, and its only error is the source's own #error containing `message`."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    errors = [line for line in res.stderr.splitlines() if "error:" in line]
    assert res.returncode and len(errors) == 1 and "#error" in res.stderr and message in errors[0], \
        f"`{' '.join(map(str, cmd))}`: expected only the #error {message!r}, got:\n{res.stderr[-3000:]}"


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("isa", sorted({"scalar", BEST_ISA}))
@pytest.mark.parametrize("flags", [["-Ofast"], ["-O2", "-ffast-math"], ["-O2", "-ffinite-math-only"], ["-O2"]],
                         ids=" ".join)
def test_refuses_fast_math(cbuild, tmp_path, compiler, isa, flags):
    """Fast math assumes away the infinities and NaN the kernels compute with (an all -inf
    row came out inf, a two-pass row summed to 0): the source refuses it; -O2 compiles."""
    need(compiler)
    d, srcs = cbuild.sources(isa)
    cmd = [compiler, *flags, *ISAS[isa].flags, "-c", d / f"{srcs['softmax', 'two_pass'].name}.c",
           "-o", tmp_path / "k.o"]
    if flags == ["-O2"]:
        run(cmd)
    else:
        refused(cmd, "must not be compiled with -ffast-math, -Ofast or -ffinite-math-only")


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("isa", [isa for isa in X86_ISAS if ISAS[isa].flags])
def test_a_missing_isa_flag_is_named(cbuild, tmp_path, compiler, isa):
    """Without any one of the ISA's flags (-mavx2 but no -mfma...) the build stops at the
    source's #error naming that flag, not at a failed always_inline of an intrinsic."""
    need(compiler)
    if HOST.arch != "x86_64":
        pytest.skip("x86 flags")
    d, srcs = cbuild.sources(isa)
    for macro, flag in ISAS[isa].requires:
        others = [f for f in ISAS[isa].flags if f != flag]
        refused([compiler, "-O2", *others, "-mno-" + flag[2:], "-c", d / f"{srcs['softmax', 'online'].name}.c",
                 "-o", tmp_path / "k.o"], f"{macro} is not defined: compile with {flag}")


@pytest.mark.parametrize("compiler", COMPILERS)
def test_a_missing_f16c_flag_is_named(tmp_path, compiler):
    """An AVX2 kernel that converts float16 needs -mf16c too, and says so."""
    need(compiler)
    if HOST.arch != "x86_64":
        pytest.skip("x86 flags")
    src = softgen.emit_c("logsumexp", algorithm="online", dtype="float16", isa="avx2", name="k")
    src.write(tmp_path)
    refused([compiler, "-O2", "-mavx2", "-mfma", "-mno-f16c", "-c", tmp_path / "k.c", "-o", tmp_path / "k.o"],
            "__F16C__ is not defined: compile with -mf16c (the kernel needs -mavx2 -mfma -mf16c)")


@pytest.mark.parametrize("isa", list(ISAS))
def test_no_per_element_libm_calls(cbuild, isa):
    """The only external calls: logf once per row (log ops) and memcpy for short tails."""
    need("nm", *(["aarch64-linux-gnu-gcc"] if isa == "neon" else ["gcc"]))
    for (op, algorithm), obj in zip(CASES, cbuild.objects(isa, "gcc")):
        undefined = set(run(["nm", "-u", obj]).stdout.split()) - {"U"}
        allowed = {"memcpy"} | ({"logf"} if op != "softmax" else set())
        assert undefined <= allowed, f"{op} x {algorithm} on {isa} calls {undefined - allowed}"


# --- results on this host ---------------------------------------------------------------

@pytest.mark.parametrize("isa, compiler", [(isa, "gcc") for isa in HOST_ISAS] + [(BEST_ISA, "clang")])
@pytest.mark.parametrize("op, algorithm", CASES)
def test_matches_float64_and_jit(cbuild, op, algorithm, isa, compiler):
    """Lengths 0..70 (every tail) and long rows vs float64, and vs the JIT kernel: gcc's
    build on each ISA here, clang's on the widest (CI time; the dtype tests build half
    their kernels with each compiler on every ISA)."""
    need(compiler)
    d, srcs = cbuild.sources(isa)
    fn = kernel(cbuild.library(isa, compiler), srcs[op, algorithm])
    jit = softgen.compile(op, algorithm=algorithm)
    row_output = op == "logsumexp"
    for n in LENGTHS:
        x = random_rows(n)
        expect_like_jit(op, x, call(fn, x, row_output), jit, f"{isa}/{compiler} n={n}")


@pytest.mark.parametrize("isa", HOST_ISAS)
@pytest.mark.parametrize("op, algorithm", CASES)
def test_special_inputs(cbuild, op, algorithm, isa):
    """-inf masks, all -inf, +inf, NaN, +-3e38, subnormal outputs, n = 0, rows = 0, offsets,
    outputs near 0."""
    need("gcc")
    d, srcs = cbuild.sources(isa)
    fn = kernel(cbuild.library(isa, "gcc"), srcs[op, algorithm])
    for what, x in special_rows().items():
        expect(op, x, call(fn, x, op == "logsumexp"), f"{isa}: {what}")
    for n in (1, 37, 300):  # outputs near 0 in rows around +-1e6: within ulps, not of lse's ulps
        for what, rows, checker in (("offset", offset_rows, check_ulps), ("near 0", near_zero_rows, check_relative)):
            x = rows(n)
            try:
                checker(op, x, call(fn, x, op == "logsumexp"))
            except AssertionError as e:
                raise AssertionError(f"{isa}: {what} rows, n={n}: {e}") from None
    if op == "softmax":  # the peers' answers, spelled out
        y = call(fn, np.array([[3e38, -3e38, 3e38, -3e38], [-np.inf] * 4], np.float32), False)
        assert y[0].tolist() == [0.5, 0.0, 0.5, 0.0] and np.isnan(y[1]).all()
        y = call(fn, np.array([[0.0, -90.0]], np.float32), False)
        assert 0 < y[0, 1] < np.finfo(np.float32).tiny  # subnormal, kept


@pytest.mark.parametrize("unroll, accumulators", [(1, 1), (3, 2)])
def test_unroll_and_accumulator_variants(cbuild, unroll, accumulators):
    need("gcc")
    d, srcs = cbuild.sources(BEST_ISA, unroll, accumulators)
    lib = cbuild.library(BEST_ISA, "gcc", unroll, accumulators)
    for (op, algorithm), src in srcs.items():
        fn = kernel(lib, src)
        for n in (0, 1, 17, 63, 64, 65, 200, 5000):
            x = random_rows(n)
            expect(op, x, call(fn, x, op == "logsumexp"),
                   f"{op} x {algorithm} unroll={unroll} accumulators={accumulators} n={n}")


# --- schedules -------------------------------------------------------------------------------

def test_schedule_or_unroll_keywords_render_the_same_c():
    """schedule= says what unroll= / accumulators= say; the CSource records the schedule."""
    by_keywords = softgen.emit_c("softmax", algorithm="online", isa="avx2", name="k", unroll=4, accumulators=2)
    by_schedule = softgen.emit_c("softmax", algorithm="online", isa="avx2", name="k",
                                 schedule=Schedule(unroll=4, accumulators=2))
    assert by_keywords.source == by_schedule.source
    assert by_keywords.schedule == by_schedule.schedule == Schedule(unroll=4, accumulators=2)
    assert by_schedule.not_rendered == {}
    default = softgen.emit_c("softmax", algorithm="online", isa="avx2", name="k")
    assert default.schedule == Schedule() == rendered_schedule(Schedule(), ISAS['avx2'])[0]
    assert default.not_rendered == {}
    assert softgen.emit_c("softmax", algorithm="online", unroll=3, accumulators=2).schedule == \
        Schedule(unroll=3, accumulators=2)   # vector u updates set u % 2


def test_knobs_c_does_not_render_are_reported_not_claimed():
    """C renders every knob, rows per group only as one row or a register's worth of rows
    (no narrower vectors): other group sizes are reported, the rest is in the code
    (pipeline stages, streaming stores, prefetches)."""
    asked = Schedule(unroll=2, rows_per_group=4, interleave=4, pipeline=True, nontemporal=True, prefetch=256,
                     block=512)
    src = softgen.emit_c("softmax", algorithm="three_pass_recompute", isa="avx2", schedule=asked)
    assert src.not_rendered == {"rows_per_group": 4}
    assert src.schedule == Schedule(unroll=2, rows_per_group=8, interleave=4, block=512, pipeline=True,
                                    nontemporal=True, prefetch=256) == rendered_schedule(asked, ISAS["avx2"])[0]
    assert set(src.not_rendered) <= set(NOT_RENDERED)
    assert f"blocks of {block_size(ISAS['avx2'], 2, 512)}" in src.source and "+ 16;" in src.source
    for spelled in ("/* pipeline */", "/* fused.folded */", "_mm256_stream_ps", "_mm_prefetch", "_mm_sfence"):
        assert spelled in src.source, spelled
    full = Schedule(rows_per_group=16, interleave=4, pipeline=True)    # 8 rows of 8 lanes, as the JIT's
    assert softgen.emit_c("softmax", algorithm="two_pass", isa="avx2", schedule=full).not_rendered == {}
    assert softgen.emit_c("softmax", algorithm="two_pass", isa="sse2", schedule=asked).not_rendered == {}


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(schedule=Schedule(), unroll=2), TypeError, "a schedule or unroll= / accumulators=, not both"),
    (dict(schedule=Schedule(), accumulators=1), TypeError, "not both"),
    (dict(schedule={"unroll": 2}), TypeError, "schedule must be a softgen.lower.Schedule"),
    (dict(schedule="fast"), TypeError, "schedule must be"),
    (dict(schedule="auto:8"), ValueError, "auto:ROWSxN"),
    (dict(schedule=Schedule(unroll=32)), ValueError, "unroll must be between 1 and 16"),
])
def test_bad_schedules(kwargs, error, match):
    with pytest.raises(error, match=match):
        softgen.emit_c("softmax", algorithm="online", **kwargs)


def scheduled_kernels(tmp_path, isa: str, schedule: Schedule) -> dict:
    """{(op, algorithm): kernel} of every op x algorithm emitted for `isa` with `schedule`,
    built with gcc into one library."""
    need("gcc")
    sources = {case: softgen.emit_c(case[0], algorithm=case[1], isa=isa, name=f"k_{case[0]}_{case[1]}",
                                    schedule=schedule) for case in CASES}
    for src in sources.values():
        src.write(tmp_path)
    lib_path = tmp_path / "libk.so"
    run(["gcc", *strict_flags(isa), "-fPIC", "-shared", "-o", lib_path,
         *(tmp_path / f"{src.name}.c" for src in sources.values()), "-lm"])
    lib = ctypes.CDLL(str(lib_path))
    return {case: kernel(lib, src) for case, src in sources.items()}


# The JIT's lowerings, C's too: pipelined row groups (a register's worth of rows, or one row
# on scalar C), interleaved rows, streaming stores after a plain head, prefetches, the exact
# exp form, per-element online merges, short blocks, the pair-sum forms
C_SCHEDULES = [Schedule(rows_per_group=16, pipeline=True, fast_exp=False),
               Schedule(rows_per_group=16, unroll=1, pipeline=True, interleave=2, online_block_max=False),
               Schedule(nontemporal=True, prefetch=256, unroll=2, accumulators=1, block=96, online_block_max=False),
               Schedule(pair_sum="scan")]   # running pair sums: the default, in the others


def mixed_rows(rows: int, n: int) -> np.ndarray:
    """Random rows with every fourth one special (-inf, NaN, +inf, huge offsets), so each
    pipeline position and row group meets them."""
    rng = np.random.default_rng(rows * n)
    x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
    for k, i in enumerate(range(0, rows, 4)):
        x[i, k % n] = (-np.inf, np.nan, np.inf, 3e5, -3e5)[k % 5]
        x[i, (3 * k + 1) % n] = -np.inf
    return x


@pytest.mark.parametrize("isa, schedule", [(BEST_ISA, s) for s in C_SCHEDULES] +
                         [(isa, C_SCHEDULES[1]) for isa in HOST_ISAS if isa not in (BEST_ISA, "sse2")],
                         ids=lambda v: v if isinstance(v, str) else v.to_json())
def test_emitted_schedules_compute_correctly(tmp_path, isa, schedule):
    """Every schedule on the widest ISA here, pipelined groups on each narrower one but
    SSE2 (left out for CI time: its default-schedule C runs in the other tests, pipelined
    groups at 4 lanes in the JIT's); many rows with special ones mixed in, misaligned."""
    for (op, algorithm), fn in scheduled_kernels(tmp_path, isa, schedule).items():
        for n in (1, 17, 65, 200, 5000):
            x = random_rows(n)
            expect(op, x, call(fn, x, op == "logsumexp"), f"{op} x {algorithm} {schedule} n={n}")
        for rows, n, at in ((37, 64, 0), (9, 300, 3), (18, 2500, 5), (3, 1, 1)):
            x = mixed_rows(rows, n)
            expect(op, x, call(fn, x, op == "logsumexp", x_at=at, y_at=(at * 7) % 16),
                   f"{isa} {op} x {algorithm} {schedule} {rows}x{n}")


# --- the correctness matrix: long rows, misaligned and strided, special values ------------

SCHEDULES = [(4, None), (3, 2)]   # (unroll, accumulators): the default, and sets that do not divide
LONG = 2 ** 17


def matrix_lengths(isa: str, unroll: int, accumulators: int | None) -> tuple[int, list[int]]:
    """(block, lengths): around one reduction block, several blocks and a partial one that
    goes through the unrolled loop, the one-vector loop and the tail, and a row past LONG."""
    width = ISAS[isa].width
    block = block_size(ISAS[isa], accumulators or unroll)
    partial = block // 2 + unroll * width + width + max(width - 1, 1)
    return block, [block - 1, block, block + 1, 3 * block + partial, LONG + partial]


def _late_large(x, at, rng):
    x[1], x[-1] = 30, 50   # the row max moves by ~20 after a block: the two-pass exponent
    return x


ROW_KINDS = {  # name: (scale, inject(x, positions, rng))
    "scale 1": (1, lambda x, at, rng: x),
    "-inf": (30, lambda x, at, rng: np.put(x, at, -np.inf) or x),
    "tiny": (300, lambda x, at, rng: np.put(x, at, rng.choice([1e-40, -1e-45, 1e-38, -0.0], len(at))) or x),
    "+-3e38": (30, lambda x, at, rng: np.put(x, at, np.where(np.arange(len(at)) % 2, 3e38, -3e38)) or x),
    "+inf late": (1, lambda x, at, rng: np.put(x, at[-1:], np.inf) or x),
    "30 early, 50 late": (1, _late_large),
    "-inf first block": (300, lambda x, at, rng: np.put(x, np.arange(min(at[2], len(x))), -np.inf) or x),
    "all -inf": (1, lambda x, at, rng: np.put(x, np.arange(len(x)), -np.inf) or x),
}


@lru_cache(maxsize=None)
def matrix_rows(n: int, block: int, count: int) -> np.ndarray:
    """`count` rows cycling through ROW_KINDS: normal values at scale 1, 30 or 300 with
    entries injected at both ends, around the first block boundary and in the middle."""
    rng = np.random.default_rng([n, block])
    at = np.unique(np.clip([0, 1, block - 1, block, n // 2, n - 2, n - 1], 0, n - 1))
    rows = []
    for r in range(count):
        scale, inject = list(ROW_KINDS.values())[r % len(ROW_KINDS)]
        rows.append(inject((rng.standard_normal(n) * scale).astype(np.float32), at, rng))
    return np.stack(rows)


def odd_stride(n: int, pad: int) -> int:
    """n + pad or one more, odd: consecutive rows then start at every 4-byte offset of a
    64-byte line in turn."""
    return n + pad + (n + pad + 1) % 2


@pytest.mark.parametrize("unroll, accumulators", SCHEDULES)
@pytest.mark.parametrize("isa", HOST_ISAS)
@pytest.mark.parametrize("op, algorithm", CASES)
def test_correctness_matrix(cbuild, op, algorithm, isa, unroll, accumulators):
    """Rows past every block and tail path, each at its own misaligned address with row
    strides larger than n, with -inf, +-3e38, tiny and late-large entries: float64 agrees
    and nothing outside the output rows is written."""
    need("gcc")
    _, srcs = cbuild.sources(isa, unroll, accumulators)
    fn = kernel(cbuild.library(isa, "gcc", unroll, accumulators), srcs[op, algorithm])
    block, lengths = matrix_lengths(isa, unroll, accumulators)
    row_output = op == "logsumexp"
    for i, n in enumerate(lengths):
        x = matrix_rows(n, block, len(ROW_KINDS) if n > LONG else 2 * len(ROW_KINDS))
        y = call(fn, x, row_output, x_at=(7 * i + 3) % 16, y_at=(5 * i + 1) % 16, x_stride=odd_stride(n, 5),
                 y_stride=3 if row_output else odd_stride(n, 2))
        for r, what in enumerate(ROW_KINDS):
            rows = slice(r, None, len(ROW_KINDS))
            expect(op, x[rows], y[rows], f"{isa} unroll={unroll} accumulators={accumulators} n={n} {what}")


def test_header_links_from_cxx(cbuild, cxx_caller):
    """The header's extern "C": a C++ program includes it and links the C object."""
    need("gcc")
    d, srcs = cbuild.sources(BEST_ISA)
    src = srcs["log_softmax", "online"]
    obj = cbuild.objects(BEST_ISA, "gcc")[CASES.index(("log_softmax", "online"))]
    x, y = cxx_caller(d / f"{src.name}.h", [obj], src.name)
    expect("log_softmax", x, y, "called from C++")


# --- a driver program: sanitizers and qemu -------------------------------------------------

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
{includes}

typedef void (*kernel_fn)(int64_t, int64_t, const float *, int64_t, float *, int64_t);
static const struct {{ const char *name; kernel_fn fn; int row_output; }} kernels[] = {{
{table}
}};

/* driver KERNEL IN OUT: IN holds int64 count, then per case int64 rows, int64 n and rows*n
   floats; OUT gets each case's output.  Buffers are exactly the size of the data, so a read
   or write past the last row is a heap overflow. */
int main(int argc, char **argv)
{{
    size_t k = 0;
    while (argc == 4 && k < sizeof kernels / sizeof kernels[0] && strcmp(kernels[k].name, argv[1]) != 0)
        k++;
    if (argc != 4 || k == sizeof kernels / sizeof kernels[0]) {{
        fprintf(stderr, "usage: driver KERNEL IN OUT\n");
        return 2;
    }}
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    int64_t count, shape[2];
    if (!in || !out || fread(&count, sizeof count, 1, in) != 1)
        return 3;
    for (int64_t c = 0; c < count; c++) {{
        if (fread(shape, sizeof shape, 1, in) != 1)
            return 3;
        size_t nx = (size_t)(shape[0] * shape[1]), ny = kernels[k].row_output ? (size_t)shape[0] : nx;
        float *x = (float *)malloc(nx * sizeof(float) + 1), *y = (float *)malloc(ny * sizeof(float) + 1);
        if (!x || !y || fread(x, sizeof(float), nx, in) != nx)
            return 3;
        kernels[k].fn(shape[0], shape[1], x, shape[1], y, kernels[k].row_output ? 1 : shape[1]);
        if (fwrite(y, sizeof(float), ny, out) != ny)
            return 3;
        free(x);
        free(y);
    }}
    return fclose(out) != 0;
}}
"""


def driver_source(srcs) -> str:
    srcs = list(srcs)
    return DRIVER.format(
        includes="\n".join(f'#include "{s.name}.h"' for s in srcs),
        table="\n".join(f'    {{"{s.name}", {s.name}, {int(s.op == "logsumexp")}}},' for s in srcs))


def run_driver(prefix: list, exe: Path, src, xs: list[np.ndarray], tmp: Path) -> list[np.ndarray]:
    inp, outp = tmp / f"{src.name}.in", tmp / f"{src.name}.out"
    with open(inp, "wb") as f:
        f.write(np.int64(len(xs)).tobytes())
        for x in xs:
            f.write(np.array(x.shape, np.int64).tobytes() + np.ascontiguousarray(x).tobytes())
    run([*prefix, exe, src.name, inp, outp], timeout=300)
    flat = np.fromfile(outp, np.float32)
    outs, at = [], 0
    for x in xs:
        size = x.shape[0] if src.op == "logsumexp" else x.size
        outs.append(flat[at:at + size].reshape(x.shape[:1] if src.op == "logsumexp" else x.shape))
        at += size
    assert at == flat.size
    return outs


def check_with_driver(prefix, exe, srcs, xs, tmp, what):
    for (op, algorithm), src in srcs.items():
        for x, y in zip(xs, run_driver(prefix, exe, src, xs, tmp)):
            expect(op, x, y, f"{what} {op} x {algorithm} n={x.shape[1]}")


@pytest.mark.parametrize("isa", sorted({"scalar", BEST_ISA}))
def test_sanitizers(cbuild, isa, tmp_path):
    """Odd lengths under -fsanitize=address,undefined: no out-of-bounds access, no UB."""
    need("gcc")
    flags = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all")
    exe = cbuild.driver(isa, ["gcc"], flags, "asan")
    xs = [random_rows(n) for n in [*range(1, 71, 2), 2049, 4099]] + [np.zeros((2, 0), np.float32)]
    check_with_driver([], exe, cbuild.sources(isa)[1], xs, tmp_path, f"{isa} sanitized")


def test_neon_under_qemu(cbuild, tmp_path):
    """The NEON kernels, cross-compiled for AArch64 (static), run under qemu-aarch64."""
    need("aarch64-linux-gnu-gcc", "qemu-aarch64")
    exe = cbuild.driver("neon", ["aarch64-linux-gnu-gcc"], ("-static",), "qemu")
    xs = [random_rows(n) for n in [*range(0, 35), 70, 1000, 4099]] + list(special_rows().values())
    check_with_driver(["qemu-aarch64"], exe, cbuild.sources("neon")[1], xs, tmp_path, "neon (qemu)")


# --- the embedding example -----------------------------------------------------------------

def test_embed_c_example(tmp_path):
    """examples/embed_c: make emits a kernel, builds the C program, and it runs."""
    need("make", "cc")
    res = run(["make", "-C", REPO / "examples" / "embed_c", f"BUILD={tmp_path}", f"PYTHON={sys.executable}",
               f"ISA={BEST_ISA}", "run"], timeout=300)
    assert "max |row sum - 1| =" in res.stdout and "\nok\n" in res.stdout
    assert (tmp_path / "embed_softmax.c").exists()


# --- other dtypes: float64, float16, bfloat16, x and y of their own ------------------------

DTYPE_PAIRS = [("float64", "float64"), ("float16", "float16"), ("bfloat16", "bfloat16"), ("bfloat16", "float32"),
               ("float32", "float16")]
# pairs that convert between float32 and float64 in lanes narrower than a register (and
# 16-bit storage to float64 through float32): a cast row result (logsumexp, in row groups)
# and per-element casts (softmax, with streaming stores): DTYPE_SCHEDULES from the second
EXTRA_PAIRS = {("float32", "float64"), ("float64", "float32"), ("float16", "float64"), ("bfloat16", "float64")}
EXTRA_CASES = [("logsumexp", "two_pass"), ("softmax", "online")]
# pairs whose x and y each take the paths of another pair's (bfloat16's loads, float32's
# stores...): half their cases per ISA, the other half on the next
HALF_PAIRS = {("bfloat16", "float32"), ("float32", "float16")}
# numpy type of the bits, mantissa bits, lowest normal exponent, largest finite, a NaN, a sentinel
FORMATS = {
    "float64": (np.float64, 52, -1022, np.finfo(np.float64).max, np.float64(np.nan), np.float64(-12345.0)),
    "float32": (np.float32, 23, -126, np.finfo(np.float32).max, np.float32(np.nan), np.float32(-12345.0)),
    "float16": (np.uint16, 10, -14, 65504.0, np.uint16(0x7E00), np.uint16(0xC0DE)),
    "bfloat16": (np.uint16, 7, -126, 3.3895313892515355e38, np.uint16(0x7FC0), np.uint16(0xC0DE)),
}
# Per kernel of a pair, in turn (small ones: the C compiler's time is most of these tests'):
# a short unroll, groups of a register's worth of rows (row results cast in vectors, lane
# merges by shuffles; the exact exp form, whose code is half the fast forms'), streaming
# stores with prefetches and short blocks, scanned pair sums
DTYPE_SCHEDULES = [Schedule(unroll=2), Schedule(rows_per_group=16, unroll=1, fast_exp=False),
                   Schedule(nontemporal=True, prefetch=256, unroll=1, block=96, online_block_max=False),
                   Schedule(unroll=1, pair_sum="scan")]


def dtype_cases(x_dtype: str, y_dtype: str) -> list[tuple[str, str]]:
    """The (op, algorithm)s tested of a pair: every one it has (three_pass_reload keeps
    e^(x - m) in y, which a narrower y would round twice: refused), EXTRA_CASES of the
    EXTRA_PAIRS."""
    if (x_dtype, y_dtype) in EXTRA_PAIRS:
        return EXTRA_CASES
    x, y = softgen.dtypes.ir_dtype(x_dtype), softgen.dtypes.ir_dtype(y_dtype)
    out = []
    for op, algorithm in CASES:
        try:
            algorithms.build(op, algorithm, x, softgen.dtypes.compute_dtype(x, y), y)
        except NotImplementedError:
            continue
        out.append((op, algorithm))
    return out


def to_storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values rounded to nearest even in `dtype`, as the bits the kernels take."""
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return values.astype(np.float16).view(np.uint16)
    if dtype == "bfloat16":
        with np.errstate(over="ignore"):
            bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return np.where(np.isnan(values), (bits >> 16) | 0x40, rounded).astype(np.uint16)
    with np.errstate(over="ignore"):
        return values.astype(FORMATS[dtype][0])


def from_storage(raw: np.ndarray, dtype: str) -> np.ndarray:
    """The values of `dtype`'s bits, as float64."""
    if dtype == "float16":
        return raw.view(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)


def reference_ld(op: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(op(x), |lse| or 0 where not finite) in long double, as reference.reference forms them
    (the max terms counted apart, log1p)."""
    if op == "softplus_normalize":
        return softplus_reference(x), np.zeros(x.shape)
    x = x.astype(np.longdouble)
    with np.errstate(all="ignore"):
        m = x.max(-1, keepdims=True) if x.shape[-1] else np.full(x.shape[:-1] + (1,), -np.inf, np.longdouble)
        top = x == m
        u = np.where(top, 0.0, np.exp(x - m)).sum(-1, keepdims=True) + (top.sum(-1, keepdims=True) - 1)
        u = np.where(np.isfinite(m), u, np.nan)
        lse = np.where(np.isfinite(m), m + np.log1p(u), m)
        scale = np.where(np.isfinite(lse), np.abs(lse), 0.0)
        if op == "softmax":
            return np.exp(x - m) / (1 + u), np.zeros_like(x)
        if op == "log_softmax":
            return (x - m) - np.log1p(u), np.broadcast_to(scale, x.shape)
        return lse[..., 0], scale[..., 0]


def ulp(v: np.ndarray, dtype: str) -> np.ndarray:
    """The spacing of `dtype` at |v| (its subnormals' below the normal range)."""
    _, mantissa, lowest, *_ = FORMATS[dtype]
    e = np.frexp(np.abs(v).astype(np.float64))[1] - 1
    e = np.where(v == 0, lowest, np.maximum(e, lowest))
    return np.ldexp(1.0, e - mantissa)


def expect_dtype(op: str, x: np.ndarray, y: np.ndarray, x_dtype: str, y_dtype: str, what: str) -> None:
    """y (float64 values of y_dtype) against a long double reference: float64 within 8 ulps
    (log ops: of the lse as well), narrower results within half an ulp (correctly
    rounded, but for 2^-20 of the magnitudes a float32 computation goes through, 2^-45 a
    float64 one); NaN and infinities where it has them.  float32 results of float32
    computations as the float32 tests hold them (reference.check)."""
    compute = "float64" if "float64" in (x_dtype, y_dtype) else "float32"
    if y_dtype == compute == "float32":
        return expect(op, x.astype(np.float32), y.astype(np.float32), what)
    ref, scale = reference_ld(op, x)
    nan_ref, nan_y = np.isnan(ref), np.isnan(y)
    assert np.array_equal(nan_ref, nan_y), \
        f"{what}: NaN positions differ: ref {np.argwhere(nan_ref)[:5]}, got {np.argwhere(nan_y)[:5]}"
    ok = ~nan_ref
    ref, scale, got = ref[ok], scale[ok], y[ok]
    with np.errstate(over="ignore"):
        rounded = from_storage(to_storage(ref.astype(np.float64), y_dtype), y_dtype)
    inf = np.isinf(rounded)
    assert np.array_equal(rounded[inf], got[inf]), f"{what}: infinities differ"
    ref, scale, got = ref[~inf], scale[~inf], got[~inf]
    err = np.abs(got.astype(np.longdouble) - ref)
    if y_dtype == "float64":
        tol = 8 * (ulp(ref, y_dtype) + ulp(scale, y_dtype) * (scale > 0))
    else:
        tol = 0.5 * ulp(ref, y_dtype) + 2.0 ** (-45 if compute == "float64" else -20) * (np.abs(ref) + scale)
    bad = err > tol
    assert not bad.any(), (f"{what}: {bad.sum()} outputs off by more than the tolerance, e.g. "
                           f"{float(got[bad][0])!r} for {float(ref[bad][0])!r} (tolerance {float(tol[bad][0]):.3g})")


def dtype_rows(x_dtype: str, compute_lanes: int) -> list[np.ndarray]:
    """Inputs (float64 values of x_dtype): every length up to 2 vectors and past, a long row,
    special values, many rows with specials mixed in (row groups, pipelines)."""
    rng = np.random.default_rng(11)
    big = FORMATS[x_dtype][3]
    offset = 2e4 if x_dtype == "float16" else 3e5
    deep = [-700.0, -708.0, -720.0, -740.0, -744.0, -745.1, -750.0] if x_dtype == "float64" else \
        [-87.5, -90.0, -95.0, -100.0, -103.0, -104.0, -110.0, -88.7]
    row = rng.standard_normal(37) * 3

    def with_(**pos):
        r = row.copy()
        for i, v in pos.items():
            r[int(i[1:])] = v
        return r[None]
    xs = [np.stack([rng.standard_normal(n) * 4, rng.standard_normal(n) * 30 + 100, rng.standard_normal(n)])
          for n in range(2 * compute_lanes + 2)]
    xs[-1][0, 1::3] = -np.inf
    xs += [rng.standard_normal((2, 3001)) * 4, rng.standard_normal((1, 20011)) * 8]
    many = rng.standard_normal((37, 23)) * 4
    for k, i in enumerate(range(0, 37, 4)):
        many[i, k % 23] = (-np.inf, np.nan, np.inf, offset, -offset)[k % 5]
        many[i, (3 * k + 1) % 23] = -np.inf
    xs += [many,
           with_(i0=-np.inf, i5=-np.inf, i36=-np.inf), np.full((2, 37), -np.inf), with_(i7=np.inf),
           with_(i7=np.inf, i8=-np.inf), with_(i7=np.inf, i20=np.nan), with_(i20=np.nan),
           np.array([[big, -big, big, -big]]), np.where(np.arange(37) % 9 == 3, big, -big)[None],
           np.array([[0.0, *deep, -np.inf, -60.0]]),                 # subnormal results of the compute dtype
           np.array([[0.0, -10.0, -16.0, -17.0, -18.0, -20.0, -25.0, -33.0, -40.0]]),   # of float16's
           np.array([[2.5], [-np.inf], [np.inf]]), np.zeros((3, 0)), np.zeros((0, 5)),
           rng.standard_normal((2, 37)) + [[offset / 15], [-offset]]]
    return [from_storage(to_storage(x, x_dtype), x_dtype) for x in xs]


DTYPE_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
{includes}

typedef void (*kernel_fn)(int64_t, int64_t, const void *, int64_t, void *, int64_t);
{wrappers}
static const struct {{ const char *name; kernel_fn fn; size_t x_size, y_size; }} kernels[] = {{
{table}
}};

/* bytes at a 64-byte boundary inside *raw (free that) */
static unsigned char *aligned(size_t bytes, void **raw)
{{
    *raw = malloc(bytes + 64);
    return *raw ? (unsigned char *)*raw + (64 - (uintptr_t)*raw % 64) : NULL;
}}

/* driver IN OUT KERNEL...: IN holds cases, each int64 rows, n, x_row_stride, y_row_stride,
   x_at, y_at, x_len, y_len, then the x buffer (x_len elements) and the y buffer; every
   kernel runs every case on copies of the buffers starting at 64-byte boundaries, with
   rows x_at / y_at elements in, and OUT gets each y buffer afterwards.  Exit 4: a kernel
   wrote to x. */
int main(int argc, char **argv)
{{
    FILE *in = argc > 3 ? fopen(argv[1], "rb") : NULL, *out = argc > 3 ? fopen(argv[2], "wb") : NULL;
    unsigned char *data;
    long size;
    if (!in || !out || fseek(in, 0, SEEK_END) || (size = ftell(in)) < 0 || fseek(in, 0, SEEK_SET))
        return 2;
    data = (unsigned char *)malloc((size_t)size + 1);
    if (!data || fread(data, 1, (size_t)size, in) != (size_t)size)
        return 3;
    for (int a = 3; a < argc; a++) {{
        size_t k = 0;
        while (k < sizeof kernels / sizeof kernels[0] && strcmp(kernels[k].name, argv[a]) != 0)
            k++;
        if (k == sizeof kernels / sizeof kernels[0]) {{
            fprintf(stderr, "no kernel %s\n", argv[a]);
            return 2;
        }}
        for (const unsigned char *p = data; p < data + size;) {{
            int64_t h[8];
            void *x_raw, *y_raw;
            memcpy(h, p, sizeof h);
            p += sizeof h;
            size_t x_bytes = (size_t)h[6] * kernels[k].x_size, y_bytes = (size_t)h[7] * kernels[k].y_size;
            unsigned char *x = aligned(x_bytes, &x_raw), *y = aligned(y_bytes, &y_raw);
            if (!x || !y)
                return 3;
            memcpy(x, p, x_bytes);
            memcpy(y, p + x_bytes, y_bytes);
            kernels[k].fn(h[0], h[1], x + h[4] * kernels[k].x_size, h[2], y + h[5] * kernels[k].y_size, h[3]);
            if (memcmp(x, p, x_bytes) != 0) {{
                fprintf(stderr, "%s wrote to x\n", kernels[k].name);
                return 4;
            }}
            if (fwrite(y, 1, y_bytes, out) != y_bytes)
                return 3;
            p += x_bytes + y_bytes;
            free(x_raw);
            free(y_raw);
        }}
    }}
    free(data);
    return fclose(out) != 0;
}}
"""


def dtype_driver_source(defined, declared) -> str:
    """DTYPE_DRIVER with the kernels `defined` in its unit (their .c included) and those
    `declared` (another unit's: their .h)."""
    size = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
    ctype = {"float64": "double", "float32": "float", "float16": "uint16_t", "bfloat16": "uint16_t"}
    srcs = [*defined, *declared]
    return DTYPE_DRIVER.format(
        includes="\n".join([f'#include "{s.name}.c"' for s in defined] + [f'#include "{s.name}.h"' for s in declared]),
        wrappers="\n".join(
            f"static void call_{s.name}(int64_t rows, int64_t n, const void *x, int64_t xs, void *y, int64_t ys)\n"
            f"{{\n    {s.name}(rows, n, (const {ctype[s.dtype]} *)x, xs, ({ctype[s.out_dtype]} *)y, ys);\n}}"
            for s in srcs),
        table="\n".join(f'    {{"{s.name}", call_{s.name}, {size[s.dtype]}, {size[s.out_dtype]}}},' for s in srcs))


def dtype_sources(cbuild: CBuild, isa: str, compiler: str) -> tuple[Path, dict]:
    """{(x dtype, y dtype): [(op, algorithm, CSource)]}: the kernels of each pair's op x
    algorithm that `compiler` builds for `isa`, written to a directory of their own.  The
    compilers take every other kernel of a pair, the other way round on the next ISA
    (each kernel runs once per ISA, and meets both compilers over two ISAs; HALF_PAIRS:
    half their kernels per ISA); the schedules are taken in turn."""
    def make():
        d = cbuild.root / f"dtypes-{isa}-{compiler}"
        at = list(PATTERNS).index(isa)
        mine = (COMPILERS.index(compiler) + at) % 2
        out = {}
        for x_dtype, y_dtype in DTYPE_PAIRS + sorted(EXTRA_PAIRS):
            out[x_dtype, y_dtype] = []
            turn = (x_dtype, y_dtype) in EXTRA_PAIRS
            cases = list(enumerate(dtype_cases(x_dtype, y_dtype)))
            if (x_dtype, y_dtype) in HALF_PAIRS:
                cases = cases[at % 2::2]
            for k, (i, (op, algorithm)) in enumerate(cases):
                if k % 2 != mine:
                    continue
                src = softgen.emit_c(op, algorithm=algorithm, dtype=x_dtype, out_dtype=y_dtype, isa=isa,
                                     name=f"k_{op}_{algorithm}_{x_dtype}_{y_dtype}_{isa}",
                                     schedule=DTYPE_SCHEDULES[(i + turn) % len(DTYPE_SCHEDULES)])
                src.write(d)
                out[x_dtype, y_dtype].append((op, algorithm, src))
        return d, out
    return cbuild._once(("dtype-src", isa, compiler), make)


def dtype_driver(cbuild: CBuild, isa: str, compiler: str, link: list) -> Path:
    """The kernels of dtype_sources in one program (DTYPE_DRIVER): two translation units
    compiled side by side with the strict flags and each kernel's own (F16C's -mf16c in
    AVX2 kernels that convert float16)."""
    d, srcs = dtype_sources(cbuild, isa, compiler)
    flat = [s for kernels in srcs.values() for _, _, s in kernels]
    flags = sorted({f for s in flat for f in s.flags} - set(ISAS[isa].flags))
    cc = cross(compiler) if isa == "neon" else [compiler]
    units = [d / "driver.c", d / "kernels.c"]
    units[0].write_text(dtype_driver_source(flat[0::2], flat[1::2]))
    units[1].write_text("".join(f'#include "{s.name}.c"\n' for s in flat[1::2]))
    exe = d / f"driver-{compiler}"
    objs = [u.with_suffix(f".{compiler}.o") for u in units]
    run_all([[*cc, *strict_flags(isa), *flags, "-c", u, "-o", o] for u, o in zip(units, objs)])
    run([*cc, *link, "-o", exe, *objs, "-lm"])
    return exe


def odd_strides(i: int, n: int) -> tuple[int, int, int, int]:
    """(x_at, y_at, x_row_stride, y_row_stride) of case i: every element offset in turn,
    odd strides larger than n."""
    return (7 * i + 3) % 16, (5 * i + 1) % 16, odd_stride(n, 5), odd_stride(n, 2)


def check_dtype_kernels(prefix: list, exe: Path, srcs: dict, isa: str, tmp: Path, what: str) -> None:
    """Every kernel of every pair on dtype_rows (one run of the driver per pair): results
    within expect_dtype's tolerance, nothing written around the output rows or to x."""
    for (x_dtype, y_dtype), kernels in srcs.items():
        compute = "float64" if "float64" in (x_dtype, y_dtype) else "float32"
        lanes = PATTERNS[isa].for_dtype(softgen.ir.DType.F64 if compute == "float64" else softgen.ir.DType.F32).width
        xs = dtype_rows(x_dtype, lanes)
        x_np, _, _, _, x_nan, _ = FORMATS[x_dtype]
        y_np, *_, y_sentinel = FORMATS[y_dtype]
        inp, outp = tmp / f"{x_dtype}-{y_dtype}.in", tmp / f"{x_dtype}-{y_dtype}.out"
        layouts = []
        with open(inp, "wb") as f:
            for i, x in enumerate(xs):
                rows, n = x.shape
                x_at, y_at, x_stride, y_stride = odd_strides(i, n)
                xb = np.full(x_at + rows * x_stride + 16, x_nan, x_np)   # reading past a row: NaN
                xb[x_at:x_at + rows * x_stride].reshape(rows, x_stride)[:, :n] = to_storage(x, x_dtype)
                y_len = y_at + rows * y_stride + 16
                f.write(np.array([rows, n, x_stride, y_stride, x_at, y_at, xb.size, y_len], np.int64).tobytes())
                f.write(xb.tobytes() + np.full(y_len, y_sentinel, y_np).tobytes())
                layouts.append((y_at, y_stride, y_len))
        run([*prefix, exe, inp, outp, *(s.name for _, _, s in kernels)], timeout=600)
        flat, at = np.fromfile(outp, y_np), 0
        for op, algorithm, src in kernels:
            for x, (y_at, y_stride, y_len) in zip(xs, layouts):
                rows, n = x.shape
                yb, at = flat[at:at + y_len], at + y_len
                written = np.zeros(y_len, bool)
                rows_at = written[y_at:y_at + rows * y_stride].reshape(rows, y_stride)
                rows_at[:, :1 if op == "logsumexp" else n] = True
                y = from_storage(yb[written].reshape(rows, 1 if op == "logsumexp" else n), y_dtype)
                assert (yb[~written] == y_sentinel).all(), \
                    f"{what} {src.name}: wrote outside its output rows ({rows}x{n})"
                expect_dtype(op, x, y[:, 0] if op == "logsumexp" else y, x_dtype, y_dtype,
                             f"{what} {op} x {algorithm} {x_dtype}->{y_dtype} {rows}x{n}")
        assert at == flat.size


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("isa", HOST_ISAS)
def test_dtypes_compute_correctly(cbuild, tmp_path, isa, compiler):
    """float64, float16 and bfloat16 (and bfloat16 in / float32 out, float32 in / float16
    out): every op x algorithm each pair has, half of them built by each compiler (strict
    warnings, one program per ISA and compiler), on every tail length up to two vectors, a
    long row, special values and many rows, misaligned with odd strides."""
    need(compiler)
    exe = dtype_driver(cbuild, isa, compiler, [])
    check_dtype_kernels([], exe, dtype_sources(cbuild, isa, compiler)[1], isa, tmp_path, f"{isa}/{compiler}")


@pytest.mark.parametrize("compiler", COMPILERS)
def test_dtypes_neon_under_qemu(cbuild, tmp_path, compiler):
    """The NEON kernels of every pair, cross-compiled for AArch64 (static), under qemu."""
    need(cross(compiler)[0], "aarch64-linux-gnu-gcc", "qemu-aarch64")
    exe = dtype_driver(cbuild, "neon", compiler, ["-static"])
    check_dtype_kernels(["qemu-aarch64"], exe, dtype_sources(cbuild, "neon", compiler)[1], "neon", tmp_path,
                        f"neon/{compiler} (qemu)")


# the family's kernels on the scalar ISA and the widest this CPU runs (the rest of the
# lowering is the same for them at every ISA: the tests above run it)
FAMILY_ISAS = sorted({"scalar", BEST_ISA})


@pytest.mark.parametrize("isa", FAMILY_ISAS)
@pytest.mark.parametrize("op,algorithm", [("softmax", "two_pass"), ("log_softmax", "online"),
                                          ("logsumexp", "three_pass_recompute"), ("softmax", "three_pass_reload")])
def test_temperature_and_sink_variant(tmp_path, op, algorithm, isa):
    """emit_c(temperature=True, sink=True): 1 / T and a sink per row after y, as the JIT's
    variant computes them."""
    need("gcc")
    src = softgen.emit_c(op, algorithm=algorithm, isa=isa, name=f"t_{op}", temperature=True, sink=True)
    assert ("const float *inv_temperature, int64_t inv_temperature_stride, const float *sink, "
            "int64_t sink_stride") in src.header
    assert "inv_temperature[r * inv_temperature_stride]: 1 / T" in src.header and "sink[r * sink_stride]" in src.header
    _, c = src.write(tmp_path)
    lib = tmp_path / "t.so"
    run(["gcc", *strict_flags(isa), "-fPIC", "-shared", c, "-o", lib, "-lm"])
    fn = getattr(ctypes.CDLL(str(lib)), src.name)
    x = (np.random.default_rng(2).standard_normal((5, 777)) * 9).astype(np.float32)
    x[1, ::5] = -np.inf
    inv = np.float32([0.25, 1.0, 3.0, 0.5, 7.0])
    sink = np.float32([0.0, -np.inf, 4.0, 30.0, -2.0])
    y = np.empty(5 if op == "logsumexp" else x.shape, np.float32)
    fn(ctypes.c_int64(5), ctypes.c_int64(777), ctypes.c_void_p(x.ctypes.data), ctypes.c_int64(777),
       ctypes.c_void_p(y.ctypes.data), ctypes.c_int64(1 if op == "logsumexp" else 777),
       ctypes.c_void_p(inv.ctypes.data), ctypes.c_int64(1), ctypes.c_void_p(sink.ctypes.data), ctypes.c_int64(1))
    jit = softgen.compile(op, algorithm=algorithm, temperature=True, sink=True)
    np.testing.assert_allclose(y, jit(x, operands=(inv, sink)), rtol=2e-6, atol=1e-30)
    plain = softgen.compile(op, algorithm=algorithm, temperature=True)
    with np.errstate(divide="ignore"):
        assert not np.allclose(y, plain(x, operands=(inv,)))   # the sink takes its share


@pytest.mark.parametrize("isa", FAMILY_ISAS)
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_unified_max_in_c(tmp_path, op, isa):
    """algorithm unified_max in C: phi per row after y; rows far from it take the fallback."""
    need("gcc")
    src = softgen.emit_c(op, algorithm="unified_max", isa=isa, name=f"u_{op}")
    assert "const float *phi, int64_t phi_stride" in src.header
    _, c = src.write(tmp_path)
    lib = tmp_path / "u.so"
    run(["gcc", *strict_flags(isa), "-fPIC", "-shared", c, "-o", lib, "-lm"])
    fn = getattr(ctypes.CDLL(str(lib)), src.name)
    x = (np.random.default_rng(4).standard_normal((4, 501)) * 6).astype(np.float32)
    phi = np.float32([10.0, 500.0, -np.inf, 0.0])   # in range, far, never, in range
    y = np.empty(4 if op == "logsumexp" else x.shape, np.float32)
    fn(ctypes.c_int64(4), ctypes.c_int64(501), ctypes.c_void_p(x.ctypes.data), ctypes.c_int64(501),
       ctypes.c_void_p(y.ctypes.data), ctypes.c_int64(1 if op == "logsumexp" else 501),
       ctypes.c_void_p(phi.ctypes.data), ctypes.c_int64(1))
    expect(op, x, y, f"unified_max {op} {isa}")


@pytest.mark.parametrize("isa", FAMILY_ISAS)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_backward_in_c(tmp_path, op, isa):
    """The backward kernels in C: dy after y (x holds the forward output), as the JIT's."""
    need("gcc")
    src = softgen.emit_c(op, algorithm="backward", isa=isa, name=f"b_{op}")
    assert "const float *dy, int64_t dy_stride" in src.header and "dy: the gradient" in src.header
    _, c = src.write(tmp_path)
    lib = tmp_path / "b.so"
    run(["gcc", *strict_flags(isa), "-fPIC", "-shared", c, "-o", lib, "-lm"])
    fn = getattr(ctypes.CDLL(str(lib)), src.name)
    rng = np.random.default_rng(6)
    y = getattr(softgen, op)((rng.standard_normal((3, 333)) * 3).astype(np.float32))
    dy = rng.standard_normal((3, 333)).astype(np.float32)
    dx = np.empty_like(y)
    fn(ctypes.c_int64(3), ctypes.c_int64(333), ctypes.c_void_p(y.ctypes.data), ctypes.c_int64(333),
       ctypes.c_void_p(dx.ctypes.data), ctypes.c_int64(333), ctypes.c_void_p(dy.ctypes.data), ctypes.c_int64(333))
    np.testing.assert_allclose(dx, getattr(softgen, f"{op}_backward")(y, dy), rtol=1e-5, atol=1e-7)


# where= masks and ragged rows: the kernels read a byte per element (where) or an int64
# per row (length) after y
VARIANT_PAIRS = [("softmax", "two_pass"), ("logsumexp", "online")]
VARIANT_HEADERS = {"where": "const uint8_t *where, int64_t where_stride",
                   "length": "const int64_t *length, int64_t length_stride"}


def variant_rows(variant: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """x (the special rows, and rows with NaN and +inf among -inf) and the variant's operand:
    masks with fully masked rows and NaN / +inf under the mask, as misaligned rows of bytes
    (any nonzero byte keeps: 1 to 255); or lengths from -2 to n + 3 (clamped to [0, n])."""
    x, keep = masked_rows(n, n)
    rng = np.random.default_rng(n)
    if variant == "where":
        return x, misaligned_rows(np.where(keep, rng.integers(1, 256, keep.shape), 0).astype(np.uint8))
    lengths = rng.integers(-2, n + 4, x.shape[0])
    lengths[:2] = -2, n + 3
    return x, lengths


@pytest.mark.parametrize("variant", list(VARIANT_HEADERS))
@pytest.mark.parametrize("isa", FAMILY_ISAS)
@pytest.mark.parametrize("op,algorithm", VARIANT_PAIRS)
def test_where_and_length_variants(tmp_path, op, algorithm, isa, variant):
    """emit_c(where=True) / emit_c(length=True) compute what the JIT's variant does, on
    rows with tails, misaligned."""
    need("gcc")
    src = softgen.emit_c(op, algorithm=algorithm, isa=isa, name=f"{variant}_{op}", **{variant: True})
    assert VARIANT_HEADERS[variant] in src.header
    _, c = src.write(tmp_path)
    lib = tmp_path / f"{variant}.so"
    run(["gcc", *strict_flags(isa), "-fPIC", "-shared", c, "-o", lib, "-lm"])
    fn = kernel(ctypes.CDLL(str(lib)), src, operands=1)
    jit = softgen.compile(op, algorithm=algorithm, **{variant: True})
    for n in (1, 19, 1001):
        x, operand = variant_rows(variant, n)
        y = call(fn, x, op == "logsumexp", x_at=1, y_at=3, operands=(operand,))
        # the JIT's width may differ (sums in another order): subnormal results differ in
        # their last few bits
        np.testing.assert_allclose(y, jit(x, operands=(operand,)), rtol=1e-6, atol=np.finfo(np.float32).tiny,
                                   err_msg=f"{variant} {op} {isa} n={n}")


@pytest.mark.parametrize("isa", list(ISAS))
def test_where_masks_compile_at_every_width(tmp_path, isa):
    """The mask bytes beside 16-bit storage (bfloat16: bytes and 16-bit lanes widened to
    32 bits) and under float64 compute (bytes widened to 64-bit lanes) compile without a
    warning on every ISA, NEON with the cross gcc."""
    cc = cross("gcc") if isa == "neon" else ["gcc"]
    need(cc[0])
    srcs = [softgen.emit_c("softmax", algorithm="two_pass", isa=isa, dtype=dtype, name=f"where_{dtype}", where=True)
            for dtype in ("bfloat16", "float64")]
    run_all([[*cc, *strict_flags(isa), "-c", src.write(tmp_path)[1], "-o", tmp_path / f"{src.name}.o"]
             for src in srcs])
