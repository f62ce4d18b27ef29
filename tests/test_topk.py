"""softgen.topk_softmax against a float64 reference (and torch's stable sort + softmax where
installed): both orders, renormalize, temperature, ties, -inf, NaN, row lengths 1..70 and
3000, misaligned rows, at every vector width, in C for every ISA and as aarch64 / riscv64
objects under qemu; its program's IR and the verifier's checks;
bad arguments."""
import ctypes

import numpy as np
import pytest

import softgen
from softgen import algorithms, numerics, topk
from softgen.algorithms import Order, TopK, Variant
from softgen.ir import Builder, DType, Operand, VerifyError, verify
from cc import HOST_ISAS, need, run, strict_flags
from f64math import M as F64_MATH
from interpreter import interpret
from widths import width_targets

try:
    import torch
except ImportError:
    torch = None

SHORT_FLOATS = [(np.float16, 2 ** -10)]   # (dtype, its ulp at 1)
try:
    import ml_dtypes
    SHORT_FLOATS.append((ml_dtypes.bfloat16, 2 ** -7))
except ImportError:
    pass
ORDERS = [("topk_then_softmax", False), ("softmax_then_topk", False), ("softmax_then_topk", True)]
LENGTHS = list(range(1, 71)) + [3000]


def reference(x: np.ndarray, k: int, order: str = "topk_then_softmax", renormalize: bool = False,
              temperature=1.0):
    """(weights, indices) in float64 over the last axis: a stable descending sort with NaN
    above +inf, softmax as numpy's exp(x - max) / sum (NaN rows where x has NaN or +inf or
    is all -inf; softmax_then_topk's indices are then 0..k-1)."""
    z = x.astype(np.float64) / np.asarray(temperature, np.float64)[..., None]
    key = np.where(np.isnan(z), np.inf, z)
    rank = np.lexsort((np.arange(z.shape[-1]) + np.where(np.isnan(z), -z.shape[-1], 0), -key), axis=-1)[..., :k]
    with np.errstate(all="ignore"):
        if order == "topk_then_softmax" or renormalize:
            v = np.take_along_axis(z, rank, -1)
            top = v[..., :1]
            e = np.exp(v - top)
            w = np.where(np.isfinite(top), e / e.sum(-1, keepdims=True), np.nan)
        else:
            m = z.max(-1, keepdims=True)
            p = np.where(np.isfinite(m), np.exp(z - m) / np.exp(z - m).sum(-1, keepdims=True), np.nan)
            w = np.take_along_axis(p, rank, -1)
    if order == "softmax_then_topk":
        nan_rows = ~np.isfinite(z.max(-1, initial=-np.inf)) | np.isnan(z).any(-1)
        rank = np.where(nan_rows[..., None], np.arange(k), rank)
    return w, rank


def check(x, k, order="topk_then_softmax", renormalize=False, temperature=1.0, rtol=None, target=None):
    """softgen's result (through the API, or the kernel for `target`) against the reference."""
    if target is None:
        w, i = softgen.topk_softmax(x, k, order=order, renormalize=renormalize, temperature=temperature)
    else:
        w, i = _run_kernel(x, k, order, renormalize, temperature, target)
    ref_w, ref_i = reference(x, k, order, renormalize, temperature)
    np.testing.assert_array_equal(i, ref_i)
    eps = np.finfo(np.float64 if x.dtype == np.float64 else np.float32).eps
    # x times 1 / T rounded: e^(x_j - m) / T's argument is off by up to 3 ulp of |x|
    scaled = np.abs(x[np.isfinite(x)], dtype=np.float64).max(initial=0.0) / np.min(temperature)
    wide = 3 * scaled if np.any(np.asarray(temperature) != 1.0) else 0.0
    np.testing.assert_allclose(w, ref_w, rtol=rtol or (8 + wide) * eps, atol=1e-30, equal_nan=True)
    assert w.dtype == x.dtype and i.dtype == np.int64


def _run_kernel(x, k, order, renormalize, temperature, target):
    """The kernel for `target` on x's rows (the API runs the host's)."""
    compute = DType.F64 if x.dtype == np.float64 else DType.F32
    inv_t = None if temperature == 1.0 else np.asarray(1.0 / np.asarray(temperature), compute.numpy_name)
    kernel = topk.kernel(TopK(k, Order(order), renormalize), compute, compute, inv_t is not None, x.shape[-1], target)
    w = np.empty((x.shape[0], k), compute.numpy_name)
    i = np.empty_like(w)
    kernel(x, inv_t, w, i)
    return w, i.astype(np.int64)


def test_accumulator_recipes_in_float64():
    """numerics' top-k recipes on float64 scalars: elements inserted into lanes in index
    order, the lanes merged (k = 3: a network padded to 4), against a stable sort; NaN
    above +inf, -inf above the empty entry, -0.0 tied with +0.0."""
    values = [1.0, np.nan, -np.inf, 2.0, -0.0, 0.0, np.inf, 2.0, np.nan, -np.inf, -1.0, 0.0, -np.inf]
    for k in (1, 3, 8):
        acc = numerics.topk_accumulator(k)
        lanes = [tuple(map(F64_MATH.const, acc.start)) for _ in range(3)]
        for j, v in enumerate(values):
            lanes[j % 3] = acc.step(F64_MATH, lanes[j % 3], np.float64(v), np.float64(j))
        state = acc.merge(F64_MATH, acc.merge(F64_MATH, lanes[0], lanes[2]), lanes[1])
        result = acc.result(F64_MATH, state)
        w, i = reference(np.array([values]), k)
        assert [int(v) for v in result[k:]] == i[0].tolist()
        np.testing.assert_array_equal(np.abs(result[:k]), np.abs(np.array(values)[i[0]]))


@pytest.mark.parametrize("order,renormalize", ORDERS)
def test_programs_mean_the_reference(order, renormalize):
    """The programs interpreted in float64 with exact math (the IR's meaning, no backend)."""
    x = np.array([[1, 3, 3, np.nan, 3, np.inf, np.nan, 0, -np.inf], [2, -1, 2, 5, -np.inf, 0, 2, 7, 7],
                  [-np.inf] * 9, [-np.inf] * 8 + [1.0]])
    for k in (1, 3, 9):
        program = algorithms.topk_program(TopK(k, Order(order), renormalize), variant=Variant(temperature=True))
        for row in x:
            outputs = {algorithms.INV_TEMPERATURE: 1 / 0.5}
            interpret(program, row, outputs)
            w, i = reference(row[None], k, order, renormalize, temperature=0.5)
            assert [outputs[algorithms.INDICES][j] for j in range(k)] == i[0].tolist()
            np.testing.assert_allclose([outputs[algorithms.WEIGHTS][j] for j in range(k)], w[0], rtol=1e-14,
                                       equal_nan=True)


def data(rows: int, n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Logits with ties (a quarter of the rows in steps of 0.5) and -inf entries; in
    float64, rows of +-1.5 apart in their low 33 bits only (their order keys' 64-bit compares
    decided by the low 32-bit halves, whose top bit varies)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)) * 3
    x[::4] = np.round(x[::4] * 2) / 2
    x[1::5, ::3] = -np.inf
    if np.dtype(dtype) == np.float64:
        near = (np.float64(1.5).view(np.int64) + rng.integers(0, 2 ** 33, x[3::7].shape)).view(np.float64)
        x[3::7] = near * rng.choice([-1.0, 1.0], (x[3::7].shape[0], 1))
    return x.astype(dtype)


@pytest.mark.parametrize("k", [1, 2, 8])
@pytest.mark.parametrize("order,renormalize", ORDERS)
def test_matches_the_reference(order, renormalize, k):
    for n in LENGTHS:
        if k <= n:
            x = data(9, n + 1, seed=n)
            check(x[:, 1:], k, order, renormalize)   # rows that start one element in


@pytest.mark.parametrize("lanes", sorted(width_targets()))
@pytest.mark.parametrize("k,order,renormalize,temperature", [(2, "topk_then_softmax", False, 1.0),
                                                             (8, "softmax_then_topk", False, 0.7)])
def test_every_width(lanes, k, order, renormalize, temperature):
    target = width_targets()[lanes]
    for n in [k, k + 1, 2 * lanes + 3, 67, 3000]:
        check(data(11, n, seed=n), k, order, renormalize, temperature, target=target)


def test_nan_inf_and_ties():
    x = np.array([[1, 3, 3, np.nan, 3, np.inf, np.nan, 0, -np.inf] * 3,
                  [-np.inf] * 27, [np.inf, 0, np.inf] + [1] * 24, [5] * 27,
                  [-np.inf] * 26 + [2], [3e38, -3e38, 1e-45, -0.0, 0.0, -1e-45, 3e38, 88.0, -0.0] * 3], np.float32)
    for order, renormalize in ORDERS:
        for k in (1, 3, 8):   # 3: a merge network padded to 4 entries
            check(x, k, order, renormalize)


def test_temperature_per_row_and_dtypes():
    x = data(6, 200, seed=3)
    check(x, 8, "softmax_then_topk", temperature=np.linspace(0.25, 4.0, 6))
    t = np.linspace(0.25, 4.0, 6)
    for a, b in zip(softgen.topk_softmax(x, 3, temperature=t[:, None]), softgen.topk_softmax(x, 3, temperature=t)):
        np.testing.assert_array_equal(a, b)
    check(x.astype(np.float64), 2, "softmax_then_topk", renormalize=True, temperature=0.5)
    for dtype, ulp in SHORT_FLOATS:
        short = x.astype(dtype)
        w, i = softgen.topk_softmax(short, 2)
        ref_w, ref_i = reference(short.astype(np.float32), 2)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(w.astype(np.float64), ref_w, rtol=ulp)
        assert w.dtype == dtype


def test_axes_shapes_and_integers():
    x = data(4, 30, seed=5).reshape(2, 2, 30)
    w, i = softgen.topk_softmax(np.moveaxis(x, -1, 1), 3, axis=1)
    ref_w, ref_i = reference(x, 3)
    assert w.shape == (2, 3, 2)
    np.testing.assert_array_equal(np.moveaxis(i, 1, -1), ref_i)
    np.testing.assert_allclose(np.moveaxis(w, 1, -1), ref_w, rtol=1e-6)
    x = data(6, 40, seed=6)
    for view in (x[::-2], x[:, ::-3]):   # negative row and element strides
        for a, b in zip(softgen.topk_softmax(view, 3), softgen.topk_softmax(np.ascontiguousarray(view), 3)):
            np.testing.assert_array_equal(a, b)
    w, i = softgen.topk_softmax([3, 1, 2], 2)
    assert w.dtype == np.float64 and i.tolist() == [0, 2]
    w, i = softgen.topk_softmax(np.zeros((0, 5), np.float32), 5)
    assert w.shape == i.shape == (0, 5)


def test_threads_give_one_thread_results():
    x = data(1000, 300, seed=9)
    for temperature in (1.0, np.linspace(0.5, 2.0, 1000)):
        one = softgen.topk_softmax(x, 8, order="softmax_then_topk", temperature=temperature, threads=1)
        two = softgen.topk_softmax(x, 8, order="softmax_then_topk", temperature=temperature, threads=2)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)


def test_rows_past_float32_indices():
    """Rows longer than float32's exact integers are computed in float64 (exact indices)."""
    n = topk.F32_EXACT_INDICES + 3
    x = np.zeros((1, n), np.float32)
    x[0, n - 2], x[0, n - 1] = 2.0, 1.0   # 2^24 + 1 is no float32
    w, i = softgen.topk_softmax(x, 2)
    assert i.tolist() == [[n - 2, n - 1]] and w.dtype == np.float32
    np.testing.assert_allclose(w, [[1 / (1 + np.exp(-1)), 1 / (1 + np.e)]], rtol=1e-6)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("order,renormalize", ORDERS)
def test_against_torch(order, renormalize):
    x = data(64, 257, seed=7)
    x[3, 5] = np.nan
    t = torch.from_numpy(x)
    for k in (1, 2, 8):
        if order == "topk_then_softmax":
            v, ti = torch.sort(t, dim=-1, descending=True, stable=True)
            tw, ti = torch.softmax(v[:, :k], -1), ti[:, :k]
        else:
            tw, ti = torch.sort(torch.softmax(t, -1), dim=-1, descending=True, stable=True)
            tw, ti = tw[:, :k], ti[:, :k]
            tw = tw / tw.sum(-1, keepdim=True) if renormalize else tw
        w, i = softgen.topk_softmax(x, k, order=order, renormalize=renormalize)
        np.testing.assert_array_equal(i, ti.numpy())
        np.testing.assert_allclose(w, tw.numpy(), rtol=2e-6, equal_nan=True)


@pytest.mark.parametrize("args,error,match", [
    ((np.ones((2, 4)), 5), ValueError, r"k must be in 1\.\.4"),
    ((np.ones((2, 4)), 0), ValueError, r"k must be in 1\.\.4"),
    ((np.ones((2, 4)), 2.0), TypeError, "k must be an integer"),
    ((np.ones(()), 1), ValueError, "needs an axis"),
])
def test_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        softgen.topk_softmax(*args)


def test_bad_keywords_and_k_equal_to_n():
    with pytest.raises(ValueError, match="order must be one of topk_then_softmax, softmax_then_topk"):
        softgen.topk_softmax(np.ones(4), 1, order="sorted")
    with pytest.raises(ValueError, match="temperature must be positive"):
        softgen.topk_softmax(np.ones(4), 1, temperature=0.0)
    w, i = softgen.topk_softmax(np.ones((3, 2), np.float32), 2)   # k == n
    assert np.all(w == 0.5) and np.all(i == [0, 1])


def test_program_and_header_lines():
    program = algorithms.topk_program(TopK(2, Order.SOFTMAX_THEN_TOPK), variant=Variant(temperature=True))
    text = str(program)
    assert text.splitlines()[0] == ("kernel top2_softmax.softmax_then_topk (x[n] -> y[n], in inv_temperature[row], "
                                    "out weights[row, 2], out indices[row, 2])")
    assert "acc.topk %2, %3 k=2" in text and "= merge.topk %4 k=2" in text and "name='indices' at=1" in text
    lines = algorithms.operand_lines(program)
    assert lines[1].startswith("weights[r * weights_stride + j], j < 2: ")
    with pytest.raises(NotImplementedError, match="no sink"):
        algorithms.topk_program(TopK(2), variant=Variant(sink=True))


def _program(k_acc, k_merge, slots=(0, 1)):
    b = Builder("top2_softmax", "test")
    b.program.operands = (Operand("weights", output=True, count=2),)
    with b.pass_():
        acc = b.acc_topk(b.load_x(), b.index(), **({"k": k_acc} if k_acc else {}))
    parts = b.merge_topk(acc, k_merge)
    for at in slots:
        b.store_operand(parts[0], name="weights", at=at)
    return b.program


# (k, order, temperature) of the C kernels built with gcc
C_CASES = [(2, "topk_then_softmax", 1.0), (8, "softmax_then_topk", 0.5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", HOST_ISAS)
def test_c_kernels(tmp_path, isa, dtype):
    """The emitted C (each ISA this host runs) built with gcc's strict flags, on
    misaligned rows of several lengths, against the reference: float64's order keys are
    64-bit integer lanes."""
    need("gcc")
    sources = [topk.emit_c(k, order=order, isa=isa, temperature=t != 1.0, dtype=np.dtype(dtype).name, name=f"k{k}")
               for k, order, t in C_CASES]
    ctype = "double" if dtype == np.float64 else "float"
    for src in sources:
        src.write(tmp_path)
        assert "y is not used" in src.header and f"indices[r * indices_stride + j], j < {src.name[1:]}" in src.header
        assert f"{ctype} *weights" in src.header
    lib_path = tmp_path / "libtopk.so"
    run(["gcc", *strict_flags(isa), "-fPIC", "-shared", "-o", lib_path,
         *(tmp_path / f"{src.name}.c" for src in sources), "-lm"])
    lib = ctypes.CDLL(str(lib_path))
    for (k, order, t), src in zip(C_CASES, sources):
        fn = getattr(lib, src.name)
        fn.restype = None
        fn.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                       ctypes.c_int64] + [ctypes.c_void_p, ctypes.c_int64] * (2 + (t != 1.0))
        inv_t = np.array([1 / t], dtype)
        for n in (k, 9, 67, 3000):
            x = data(13, n + 1, seed=n, dtype=dtype)[:, 1:]
            w, i = np.empty((13, k), dtype), np.empty((13, k), dtype)
            fn(13, n, x.ctypes.data, x.strides[0] // x.itemsize, None, 0,
               *((inv_t.ctypes.data, 0) if t != 1.0 else ()),
               w.ctypes.data, k, i.ctypes.data, k)
            ref_w, ref_i = reference(x, k, order, temperature=t)
            np.testing.assert_array_equal(i, ref_i)
            np.testing.assert_allclose(w, ref_w, rtol=1e-6 if dtype == np.float32 else 1e-13, equal_nan=True)


_QEMU_DRIVER = """#include <stdint.h>
#include <stdio.h>
void {name}(int64_t rows, int64_t n, const {c} *x, int64_t x_stride, {c} *y, int64_t y_stride,
            const {c} *inv_t, int64_t inv_t_stride, {c} *w, int64_t w_stride, {c} *i, int64_t i_stride);
static {c} x[{rows} * {n}], w[{rows} * {k}], i[{rows} * {k}];
int main(void) {{
  {c} inv_t[1] = {{{inv_t}}};
  FILE *f = fopen("x.bin", "rb");
  if (!f || fread(x, sizeof x, 1, f) != 1) return 1;
  fclose(f);
  {name}({rows}, {n}, x, {n}, 0, 0, inv_t, 0, w, {k}, i, {k});
  f = fopen("out.bin", "wb");
  fwrite(w, sizeof w, 1, f);
  fwrite(i, sizeof i, 1, f);
  return fclose(f);
}}
"""
# (how the kernel is made, cross compiler, qemu command line)
_QEMU = {"neon C": ("aarch64-linux-gnu-gcc", ["qemu-aarch64"]),
         "aarch64": ("aarch64-linux-gnu-gcc", ["qemu-aarch64"]),
         "riscv64": ("riscv64-linux-gnu-gcc", ["qemu-riscv64", "-cpu", "rv64,v=true,vext_spec=v1.0,vlen=128"])}


@pytest.mark.parametrize("where,dtype", [("neon C", np.float64), ("aarch64", np.float32), ("riscv64", np.float64)])
def test_cross_kernels_under_qemu(tmp_path, where, dtype):
    """The NEON C and the aarch64 / riscv64 objects (float64: 64-bit integer lanes' compares
    and selects) cross-built and run under qemu, against the reference."""
    cc, qemu = _QEMU[where]
    need(cc, qemu[0])
    k, rows, n, t = 8, 13, 67, 0.5
    options = dict(order="softmax_then_topk", temperature=True, dtype=np.dtype(dtype).name, name="topk_x")
    if where == "neon C":
        topk.emit_c(k, isa="neon", **options).write(tmp_path)
        kernel = tmp_path / "topk_x.c"
    else:
        kernel = tmp_path / "topk_x.o"
        topk.generate(k, target=where, n=n, **options).write(kernel)
    c = "double" if dtype == np.float64 else "float"
    (tmp_path / "main.c").write_text(_QEMU_DRIVER.format(name="topk_x", c=c, rows=rows, n=n, k=k, inv_t=1 / t))
    run([cc, "-O2", "-static", "-o", tmp_path / "main", tmp_path / "main.c", kernel, "-lm"])
    x = data(rows, n, seed=3, dtype=dtype)
    x.tofile(tmp_path / "x.bin")
    run([*qemu, tmp_path / "main"], cwd=tmp_path)
    out = np.fromfile(tmp_path / "out.bin", dtype).reshape(2, rows, k)
    ref_w, ref_i = reference(x, k, "softmax_then_topk", temperature=t)
    np.testing.assert_array_equal(out[1], ref_i)
    np.testing.assert_allclose(out[0], ref_w, rtol=1e-6 if dtype == np.float32 else 1e-13, equal_nan=True)


def test_generated_shared_library(tmp_path):
    """topk.generate's object as a shared library with its header, called as C would."""
    need("cc")
    artifact = topk.generate(3, order="softmax_then_topk", name="router")
    header = artifact.write(tmp_path / "router.h").read_text()
    assert "void router(int64_t rows, int64_t n, const float *x, int64_t x_row_stride, float *y, " \
           "int64_t y_row_stride, float *weights, int64_t weights_stride, float *indices, " \
           "int64_t indices_stride);" in header and "weights[r * weights_stride + j], j < 3" in header
    fn = ctypes.CDLL(str(artifact.write(tmp_path / "router.so"))).router
    fn.restype = None
    x = data(5, 40, seed=11)
    w, i = np.empty((5, 3), np.float32), np.empty((5, 3), np.float32)
    fn(*(ctypes.c_int64(v) for v in (5, 40, x.ctypes.data, 40, 0, 0, w.ctypes.data, 3, i.ctypes.data, 3)))
    ref_w, ref_i = reference(x, 3, "softmax_then_topk")
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(w, ref_w, rtol=1e-6)


@pytest.mark.parametrize("k_acc,k_merge,slots,match", [
    (None, 2, (0, 1), "acc.topk needs a positive integer k="),
    (2, 3, (0, 1), "merge.topk needs the k= of its acc.topk"),
    (2, 2, (0, 0), "output operand 'weights' must have each of its 2 value"),
])
def test_verifier(k_acc, k_merge, slots, match):
    verify(_program(2, 2))
    with pytest.raises(VerifyError, match=match):
        verify(_program(k_acc, k_merge, slots))
