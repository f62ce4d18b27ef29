"""Worst error of every op x algorithm against float64: all row lengths 0..130, a few
long rows, random normal*4 data, and softmax at n = 2^24.  The test suite holds each
pair to 1e-6 with the same measure (tests/reference.py); this prints the numbers.

    python benchmarks/accuracy.py
"""
import sys
from pathlib import Path

import numpy as np

import softgen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import check  # noqa: E402  (the tests' float64 reference and error measure)

PAIRS = [(op, algo) for op in softgen.OPS for algo in softgen.ALGORITHMS
         if not (algo == "three_pass_reload" and op != "softmax")]


def main():
    rng = np.random.default_rng(7)
    print(f"{'op':12s} {'algorithm':22s} {'worst':>9s} {'at 2^24':>9s}")
    for op, algo in PAIRS:
        fn = getattr(softgen, op)
        worst = 0.0
        for n in list(range(131)) + [1000, 4097, 1 << 16]:
            x = (rng.standard_normal((3, n)) * 4).astype(np.float32)
            worst = max(worst, check(op, x, fn(x, algorithm=algo)))
        long = ""
        if op == "softmax":
            x = (rng.standard_normal((1, 1 << 24)) * 4).astype(np.float32)
            w24 = check(op, x, fn(x, algorithm=algo))
            worst, long = max(worst, w24), f"{w24:9.2e}"
        print(f"{op:12s} {algo:22s} {worst:9.2e} {long:>9s}", flush=True)


if __name__ == "__main__":
    main()
