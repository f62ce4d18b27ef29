"""float64 references with numpy's semantics (longdouble for float64 data), the
tolerances the tests hold kernels to, per dtype, and the cases and rows the test files
share."""
import ml_dtypes
import numpy as np
import pytest

import softgen
from softgen import ops

# every op x algorithm softgen builds
PAIRS = [(op, algo) for op in softgen.OPS for algo in softgen.ALGORITHMS if algo in ops.get(op).algorithms]

SMALLEST_SUBNORMAL = 2.0 ** -149
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
# what a kernel computing in each dtype is held to (relative)
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 4e-15}


def finfo(dtype):
    return ml_dtypes.finfo(dtype) if np.dtype(dtype) == BFLOAT16 else np.finfo(dtype)


def compute_dtype(*dtypes) -> np.dtype:
    """softgen's rule: float64 if x or y is float64, else float32."""
    return np.dtype(np.float64 if np.dtype(np.float64) in map(np.dtype, dtypes) else np.float32)


def _stats(x: np.ndarray):
    """(x, m, u) in float64 (longdouble for float64 x): the row max and the sum of
    e^(x - m) less 1, as SciPy forms it (the max terms counted apart), so that log1p(u) is
    right where u is tiny; NaN where m is not finite, as numpy's sum of exp(x - m) would be."""
    x = x.astype(np.longdouble if x.dtype == np.float64 else np.float64)
    with np.errstate(all="ignore"):
        m = x.max(-1, keepdims=True) if x.shape[-1] else np.full(x.shape[:-1] + (1,), -np.inf, x.dtype)
        top = x == m
        u = np.where(top, 0.0, np.exp(x - m)).sum(-1, keepdims=True) + (top.sum(-1, keepdims=True) - 1.0)
    return x, m, np.where(np.isfinite(m), u, np.nan)


PAIR_EXP_LIMIT = 2.0 ** 20


def softplus_reference(x: np.ndarray, scale: float = 1.0, power: float = 1.0) -> np.ndarray:
    """softplus_normalize in longdouble, exactly as softgen defines it: v = softplus(scale *
    x)^power, y = v / sum v formed as e^(u - max u) / sum, u = power * log softplus (so v may
    under- or overflow any float: log softplus(z) is z below -40, to 4e-18).  A row with NaN or
    +inf is a NaN row (softgen's choice, as its softmax: numpy and torch would give 0 but NaN
    at an inf), an all -inf row 0/0, and so is a row whose largest v is beyond 2^+-2^20
    (float64's own formula underflows or overflows long before)."""
    z = x.astype(np.longdouble) * np.longdouble(scale)
    with np.errstate(all="ignore"):
        log_sp = np.where(z < -40, z, np.log(np.logaddexp(np.longdouble(0), z)))
        u = log_sp * np.longdouble(power)
        top = u.max(-1, keepdims=True) if u.shape[-1] else np.zeros(u.shape[:-1] + (1,), u.dtype)
        e = np.exp(u - top)
        y = e / e.sum(-1, keepdims=True)
    bad = ~(np.abs(np.round(top * np.log2(np.e))) <= PAIR_EXP_LIMIT)   # NaN, +-inf, beyond
    return np.where(bad, np.nan, y)


# the ops whose outputs are ratios of positive terms (relative errors), not logs
RATIOS = ("softmax", "softplus_normalize")


def reference(op: str, x: np.ndarray, **params) -> np.ndarray:
    """op(x) in float64 (longdouble); params: softplus_normalize's scale and power."""
    if op == "softplus_normalize":
        return softplus_reference(x, **params)
    x, m, u = _stats(x)
    with np.errstate(all="ignore"):
        if op == "softmax":
            return np.exp(x - m) / (1.0 + u)
        if op == "log_softmax":
            return (x - m) - np.log1p(u)
        lse = np.where(np.isfinite(m), m + np.log1p(u), m)
        return lse[..., 0]


def half_ulp(ref: np.ndarray, dtype) -> np.ndarray:
    """Half the spacing of `dtype` at |ref| (its subnormal spacing below the normal range):
    what rounding a result to a narrower output dtype may add."""
    info = finfo(dtype)
    e = np.floor(np.log2(np.maximum(np.abs(ref).astype(np.float64), float(info.smallest_normal))))
    return 0.5 * 2.0 ** (e - info.nmant)


def check(op: str, x: np.ndarray, y: np.ndarray, rtol: float | None = None, **params) -> float:
    """Assert y matches the reference: within rtol (the compute dtype's by default) of it,
    plus half an ulp of y's dtype where y is narrower than the computation.  Returns the
    worst relative error seen (the rounding allowance taken off)."""
    ref = reference(op, x, **params)
    compute = compute_dtype(x.dtype, y.dtype)
    rtol = RTOL[compute] if rtol is None else rtol
    assert y.shape == ref.shape, (y.shape, ref.shape)
    narrow = y.dtype.itemsize < compute.itemsize
    got_all = y.astype(np.longdouble if compute == np.float64 else np.float64)
    nan_ref, nan_y = np.isnan(ref), np.isnan(got_all)
    assert np.array_equal(nan_ref, nan_y), f"NaN positions differ: ref {np.argwhere(nan_ref)[:5]}, got {np.argwhere(nan_y)[:5]}"
    ok = ~nan_ref
    ref, got = ref[ok], got_all[ok]
    if not ref.size:
        return 0.0
    with np.errstate(over="ignore"):
        ref_out = ref.astype(y.dtype)  # beyond the output's range the right answer is +-inf
    inf = np.isinf(ref_out.astype(np.float64))
    assert np.array_equal(ref_out[inf].astype(np.float64), got[inf].astype(np.float64)), "infinities differ"
    ref, got = ref[~inf], got[~inf]
    rounding = half_ulp(ref, y.dtype) if narrow else 0.0
    err = np.maximum(np.abs(got - ref) - rounding, 0.0)
    tiny = 4 * float(finfo(compute).smallest_subnormal)
    if op in RATIOS:
        big = ref > 1e-30
        worst = float(np.max(err[big] / ref[big])) if big.any() else 0.0
        assert worst <= rtol, f"max relative error {worst:.3g} > {rtol:g}"
        # tiny and subnormal outputs: close in absolute terms, and not flushed to zero
        assert np.all(err[~big] <= tiny + rtol * ref[~big]), "tiny outputs wrong"
        smallest_out = 4 * float(finfo(y.dtype).smallest_subnormal)
        assert not np.any((ref > max(tiny, smallest_out)) & (got == 0)), "subnormal outputs flushed to 0"
        return worst
    # log outputs: error relative to the magnitudes the computation goes through
    _, m, u = _stats(x)
    with np.errstate(all="ignore"):
        scale = np.abs(np.where(np.isfinite(m), m + np.log1p(u), 0.0))
    scale = np.broadcast_to(scale if op == "log_softmax" else scale[..., 0], y.shape)[ok][~inf]
    rel = err / (np.abs(ref) + scale + 1.0)
    worst = float(rel.max()) if rel.size else 0.0
    assert worst <= rtol, f"max relative error {worst:.3g} > {rtol:g}"
    return worst


OFFSETS = (0.0, 128.0, 1e3, 1e4, 1e5, 1e6)


def offset_rows(n: int, seed: int = 0) -> np.ndarray:
    """Rows base + offset and base - offset (small random base): x - lse must stay exact
    where x is near lse, however large both are."""
    base = np.random.default_rng(seed).standard_normal((2 * len(OFFSETS), n))
    offsets = np.repeat(np.array(OFFSETS), 2) * np.tile([1.0, -1.0], len(OFFSETS))
    return (base + offsets[:, None]).astype(np.float32)


def check_ulps(op: str, x: np.ndarray, y: np.ndarray, ulps: float = 4.0) -> float:
    """check(), and for the log ops an absolute error within `ulps` float32 ulps of
    max(|ref|, 1): check's measure (relative to |y| + |lse| + 1) lets an output near 0 lose
    ulps of a large lse.  Returns the worst error in those ulps."""
    check(op, x, y)
    ref = reference(op, x)
    finite = np.isfinite(ref)
    err = np.abs(y[finite].astype(np.float64) - ref[finite])
    unit = np.spacing(np.maximum(np.abs(ref[finite]), 1.0).astype(np.float32)).astype(np.float64)
    worst = float((err / unit).max()) if err.size else 0.0
    assert worst <= ulps, f"max error {worst:.3g} ulps of max(|y|, 1) > {ulps:g}"
    return worst


def near_zero_rows(n: int, seed: int = 0) -> np.ndarray:
    """Rows dominated by their max (>= 0): logsumexp and the max's log_softmax are
    log1p(tiny) away from max and 0, which a float32 sum of 1 + tiny rounds away.  The
    max sits first, last or in the middle, some entries are -inf."""
    rng = np.random.default_rng(seed)
    tops = [(0, 0.0), (n - 1, 5.0), (n // 2, 0.75), (n // 3, 0.0)]
    rows = np.empty((len(tops), n))
    for row, (at, top) in zip(rows, tops):
        row[:] = top - rng.uniform(12.0, 60.0, n)
        row[at] = top
    rows[3, 1::3] = -np.inf
    rows[3, n // 3] = 0.0
    return rows.astype(np.float32)


def check_relative(op: str, x: np.ndarray, y: np.ndarray, rtol: float = 1e-6) -> float:
    """check(), and every finite output within rtol of itself (and a few subnormals), also
    near 0, as SciPy's logsumexp (log1p around the max).  For rows whose outputs have no
    cancellation: any row for log_softmax, max >= 0 for logsumexp.  Returns the worst."""
    check(op, x, y)
    ref = reference(op, x)
    finite = np.isfinite(ref)
    err = np.abs(y[finite].astype(np.float64) - ref[finite])
    rel = err / (np.abs(ref[finite]) + 4 * SMALLEST_SUBNORMAL / rtol)
    worst = float(rel.max()) if rel.size else 0.0
    assert worst <= rtol, f"max relative error {worst:.3g} > {rtol:g} (near 0 too)"
    return worst


def special_rows(n: int) -> dict:
    """float32 rows of length n, by name: -inf masks, all -inf, +inf, NaN, huge values,
    values beyond the two-pass range, subnormal outputs, large offsets, constants, tiny."""
    rng = np.random.default_rng(1)
    base = (rng.standard_normal(n) * 4).astype(np.float32)
    rows = {}
    masked = base.copy()
    masked[::3] = -np.inf
    rows["some -inf"] = masked
    rows["all -inf"] = np.full(n, -np.inf, np.float32)
    for name, value in (("+inf", np.inf), ("nan", np.nan)):
        r = base.copy()
        r[n // 2] = value
        rows[name] = r
    rows["+inf and -inf"] = np.where(np.arange(n) % 2, np.inf, -np.inf).astype(np.float32)
    r = base.copy()
    r[n // 3], r[n - 1] = np.inf, np.nan
    rows["+inf and nan"] = r
    rows["huge"] = np.tile(np.float32([3e38, -3e38]), n // 2 + 1)[:n]
    rows["+-FLT_MAX"] = np.tile(np.float32([3.4028235e38, -3.4028235e38, 0]), n)[:n]
    sub = np.linspace(-103, -87, n).astype(np.float32)  # e^(x - max) is subnormal
    sub[0] = 0
    rows["subnormal outputs"] = sub
    rows["large offset"] = (base + np.float32(1e5)).astype(np.float32)
    rows["beyond pair range"] = (base * 1e6).astype(np.float32)
    rows["constant"] = np.full(n, 7.0, np.float32)
    rows["tiny"] = (base * 1e-30).astype(np.float32)
    return rows


def misaligned_rows(x: np.ndarray) -> np.ndarray:
    """x's values starting 4 bytes past a cache line, rows a few elements apart."""
    buf = np.empty(x.size + x.shape[0] * 3 + 64 // x.itemsize + 1, x.dtype)
    start = (-buf.ctypes.data % 64) // x.itemsize + 1
    out = np.lib.stride_tricks.as_strided(buf[start:], x.shape, ((x.shape[1] + 3) * x.itemsize, x.itemsize))
    out[...] = x
    return out


def masked_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The special rows, each under a random mask, plus rows with nothing kept, with only
    -inf kept, with only NaN and +inf masked, and kept elements alone at either end."""
    rng = np.random.default_rng(seed)
    rows = special_rows(n)
    x = np.stack(list(rows.values()) + [rng.standard_normal(n).astype(np.float32) * 4 for _ in range(5)])
    keep = rng.random(x.shape) < 0.6
    r = len(rows)
    keep[r] = False                                   # nothing kept
    x[r + 1, keep[r + 1]] = -np.inf                   # only -inf kept: NaN (JAX), or the fill
    x[r + 2, ~keep[r + 2]] = np.where(rng.random((~keep[r + 2]).sum()) < 0.5, np.nan, np.inf)
    keep[r + 3], keep[r + 3, 0] = False, True
    keep[r + 4], keep[r + 4, -1] = False, True
    return x, keep


def enabled(fn, *args, **kw):
    """fn(*args, **kw); skips the test where kernels for its dtypes are not enabled yet."""
    try:
        return fn(*args, **kw)
    except NotImplementedError as e:
        if "not enabled" in str(e):
            pytest.skip(f"kernels for these dtypes are not enabled yet: {e}")
        raise
