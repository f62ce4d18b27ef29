"""Worst error of every op x algorithm x dtype against float64 (longdouble for float64
data): all row lengths 0..130, a few long rows, random normal*4 data with special rows
mixed in, and softmax at n = 2^24 (float32 and float64).  The test suite holds each pair
to the same measure (tests/reference.py); this prints the numbers for the README.

Columns: float32 and float64, the relative error (reference.check's measure) in ulps of
the compute dtype; 16-bit outputs, the largest |y - ref| in ulps of the output dtype at
ref (0.5 is correct rounding of the exact result).

    python benchmarks/accuracy.py [--quick]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

import softgen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import BFLOAT16, check, finfo, half_ulp, reference  # noqa: E402  (the tests' reference)

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer row lengths, no 2^24 rows")
    args = p.parse_args(argv)
    rng = np.random.default_rng(7)
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
