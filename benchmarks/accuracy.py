"""Worst error of every op x algorithm x dtype against float64 (longdouble for float64
data): all row lengths 0..130, a few long rows, random normal*4 data with special rows
mixed in, and softmax at n = 2^24 (float32 and float64).  The test suite holds each pair
to the same measure (tests/reference.py); this prints the numbers for the README.

Columns: float32 and float64, the relative error (reference.check's measure) in ulps of
the compute dtype; 16-bit outputs, the largest |y - ref| in ulps of the output dtype at
ref (0.5 is correct rounding of the exact result).

    python benchmarks/accuracy.py [--quick] [--family]

--family: the family around the three ops (temperature, sinks, masks, unified max,
softplus-l1, top-k weights, cross-entropy, the backward kernels), each against its own
formula in float64 (longdouble for float64 data) on the same rows, in ulps of the compute
dtype: relative error for probabilities, error over (|ref| + 1) for logs, and for the
backward kernels error over the terms' magnitudes (what rounding y and dy alone allows).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

import softgen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import BFLOAT16, check, finfo, half_ulp, reference, softplus_reference  # noqa: E402  (the tests' reference)

PAIRS = [(op, algo) for op in softgen.OPS for algo in softgen.ALGORITHMS
         if not (algo == "three_pass_reload" and op != "softmax")]
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FORMS = {"float32": (F32, F32), "float64": (F64, F64), "float16": (F16, F16), "bfloat16": (BFLOAT16, BFLOAT16),
         "bf16->f32": (BFLOAT16, F32)}


def rows_for(rng, n: int, dtype) -> np.ndarray:
    x = rng.standard_normal((4, n)) * 4
    if n:
        x[1, n // 2] = -np.inf
        x[2, :] = -np.inf
        x[3, -1] = 30.0
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def error(op: str, x: np.ndarray, y: np.ndarray) -> float:
    """In ulps: of the output dtype for 16-bit outputs, else of the compute dtype."""
    if y.dtype.itemsize == 2:
        ref = reference(op, x)
        ok = np.isfinite(ref)
        return float(np.max(np.abs(y[ok].astype(np.float64) - ref[ok]) / (2 * half_ulp(ref[ok], y.dtype)),
                            initial=0.0))
    return check(op, x, y) / float(finfo(y.dtype).eps)


def worst_of(op: str, algo: str, form, rng, quick: bool) -> tuple[float, str]:
    x_dtype, y_dtype = form
    fn = getattr(softgen, op)
    kw = {} if x_dtype == y_dtype else {"dtype": y_dtype}
    worst = 0.0
    for n in list(range(0, 131, 7 if quick else 1)) + [1000, 4097, 1 << 16]:
        x = rows_for(rng, n, x_dtype)
        worst = max(worst, error(op, x, fn(x, algorithm=algo, **kw)))
    long = ""
    if op == "softmax" and x_dtype.itemsize >= 4 and not quick:
        x = (rng.standard_normal((1, 1 << 24)) * 4).astype(x_dtype)
        w24 = error(op, x, fn(x, algorithm=algo))
        worst, long = max(worst, w24), f"{w24:.2f}"
    return worst, long


# --- the family ---------------------------------------------------------------------------

def _wide(x: np.ndarray) -> np.ndarray:
    return x.astype(np.longdouble if x.dtype == np.float64 else np.float64)


def _ulps(got, ref, scale, eps: float) -> float:
    """max |got - ref| / scale in ulps (eps), over finite references; inf if NaN positions
    or infinities differ."""
    got, ref = _wide(np.asarray(got)), np.asarray(ref)
    if not np.array_equal(np.isnan(got), np.isnan(ref)):
        return np.inf
    ok = np.isfinite(ref)
    if not np.array_equal(got[~ok & ~np.isnan(ref)], ref[~ok & ~np.isnan(ref)]):
        return np.inf
    err = np.abs(got[ok] - ref[ok]) / np.broadcast_to(scale, ref.shape)[ok]
    return float(np.max(err, initial=0.0)) / eps


def _ratio(got, ref, eps):
    """Probabilities: relative error where the reference is above 1e-30."""
    return _ulps(got, ref, np.where(np.abs(ref) > 1e-30, np.abs(ref), np.inf), eps)


def _log(got, ref, eps):
    return _ulps(got, ref, np.abs(ref) + 1.0, eps)


def _masked_ref(op, x, keep):
    """op under a mask, JAX's way: masked entries 0 / -inf, rows with nothing kept too."""
    ref = reference(op, np.where(keep, x, -np.inf).astype(x.dtype))
    empty = ~keep.any(-1)
    fill = 0.0 if op == "softmax" else -np.inf
    if op == "logsumexp":
        return np.where(empty, fill, ref)
    return np.where(keep & ~empty[:, None], ref, fill)


def _topk_ref(x, k):
    z = _wide(x)
    order = np.argsort(-z, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(z, order, -1)
    e = np.exp(top - top[:, :1])
    return e / e.sum(-1, keepdims=True)


def family_cases(x: np.ndarray, rng) -> dict:
    """{name: (got, error in ulps)} of each family member on the rows x (no NaN or +inf:
    those rows' semantics are each op's own and tested apart)."""
    eps = float(finfo(x.dtype).eps)
    rows, n = x.shape
    t = rng.uniform(0.3, 3.0, rows).astype(x.dtype)
    keep = rng.random(x.shape) < 0.7
    causal = np.tri(rows, n, dtype=bool)
    sink = x.dtype.type(1.5)
    sunk = np.concatenate([x, np.full((rows, 1), sink, x.dtype)], -1)
    labels = rng.integers(0, max(n, 1), rows)
    dy = rng.standard_normal(x.shape).astype(x.dtype)
    y = softgen.softmax(x)
    ly = softgen.log_softmax(x)
    s, ls = _wide(y) * _wide(dy), _wide(dy).sum(-1, keepdims=True)
    dots, magnitude = s.sum(-1, keepdims=True), np.abs(s).sum(-1, keepdims=True)
    with np.errstate(all="ignore"):
        cases = {
            "softmax temperature (per row)": _ratio(softgen.softmax(x, temperature=t),
                                                    reference("softmax", _wide(x) / _wide(t)[:, None]), eps),
            "log_softmax temperature 0.7": _log(softgen.log_softmax(x, temperature=0.7),
                                                reference("log_softmax", _wide(x) / np.float64(0.7)), eps),
            "softmax sink": _ratio(softgen.softmax(x, sink=sink), reference("softmax", sunk)[:, :-1], eps),
            "log_softmax sink": _log(softgen.log_softmax(x, sink=sink), reference("log_softmax", sunk)[:, :-1], eps),
            "softmax where (random)": _ratio(softgen.softmax(x, where=keep), _masked_ref("softmax", x, keep), eps),
            "softmax where (causal)": _ratio(softgen.softmax(x, where=causal), _masked_ref("softmax", x, causal), eps),
            "log_softmax where (random)": _log(softgen.log_softmax(x, where=keep),
                                               _masked_ref("log_softmax", x, keep), eps),
            "logsumexp where (causal)": _log(softgen.logsumexp(x, where=causal),
                                             _masked_ref("logsumexp", x, causal), eps),
            "softmax unified_max (phi 0)": _ratio(softgen.softmax(x, algorithm="unified_max", phi=0.0),
                                                  reference("softmax", x), eps),
            "softplus_normalize scale 2.5": _ratio(softgen.softplus_normalize(x, scale=2.5),
                                                   softplus_reference(x, scale=2.5), eps),
            "softplus_normalize power 2": _ratio(softgen.softplus_normalize(x, power=2.0),
                                                 softplus_reference(x, power=2.0), eps),
            "cross_entropy (none)": _log(softgen.cross_entropy(x, labels, reduction="none"),
                                         reference("logsumexp", x) - _wide(x)[np.arange(rows), labels], eps)
            if n else 0.0,
            "softmax_backward": _ulps(softgen.softmax_backward(y, dy), _wide(y) * (_wide(dy) - dots),
                                      np.abs(_wide(y)) * (np.abs(_wide(dy)) + magnitude) + 1e-300, eps),
            "log_softmax_backward": _ulps(softgen.log_softmax_backward(ly, dy), _wide(dy) - np.exp(_wide(ly)) * ls,
                                          np.abs(_wide(dy)) + np.exp(_wide(ly)) * np.abs(_wide(dy)).sum(
                                              -1, keepdims=True) + 1e-300, eps),
        }
        if n >= 4:
            w, _ = softgen.topk_softmax(x, 4)
            cases["topk_softmax k=4 weights"] = _ratio(w, _topk_ref(x, 4), eps)
    return cases


def family(rng, quick: bool) -> None:
    worst: dict = {}
    for dtype in (F32, F64):
        for n in list(range(0, 131, 7 if quick else 1)) + [1000, 4097]:
            x = np.concatenate([rows_for(rng, n, dtype), (rng.standard_normal((12, n)) * 4).astype(dtype)])
            for name, err in family_cases(x, rng).items():
                worst[name, dtype.name] = max(worst.get((name, dtype.name), 0.0), err)
    print("| member | float32 | float64 |\n|---|---|---|")
    for name in dict.fromkeys(k for k, _ in worst):
        print(f"| {name} | {worst[name, 'float32']:.2f} | {worst[name, 'float64']:.2f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer row lengths, no 2^24 rows")
    p.add_argument("--family", action="store_true", help="the family's members, not the three ops")
    args = p.parse_args(argv)
    rng = np.random.default_rng(7)
    if args.family:
        return family(rng, args.quick)
    print("| op | algorithm | " + " | ".join(FORMS) + " |")
    print("|---|---|" + "---|" * len(FORMS))
    for op, algo in PAIRS:
        cells = []
        for label, form in FORMS.items():
            try:
                worst, long = worst_of(op, algo, form, rng, args.quick)
                cells.append(f"{worst:.2f}" + (f" ({long} at 2^24)" if long else ""))
            except NotImplementedError:
                cells.append("refused")
        print(f"| {op} | {algo} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
