"""How the output's place relative to the input (mod 4 KB) changes softgen's speed.

A load that follows a store whose address has the same low 12 bits waits on it (4K
aliasing).  Rows of a 4 KB multiple keep every row's element i at the same low bits, so
only y - x (mod 4 KB) decides: when y sits a little after x, the loads of x that run ahead
of the stores to y hit that.  Usage:

    taskset -c 1 python benchmarks/aliasing.py [--shape 1024x1024] [--budget 0.3]
"""
import argparse

import numpy as np

import softgen
from softgen.api import same_page_offset
from softgen.bench import median_time

DELTAS = (0, 16, 64, 128, 256, 512, 1024, 2048, 4032)  # bytes; softgen allocates at 2048


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1024x1024")
    ap.add_argument("--budget", type=float, default=0.3)
    args = ap.parse_args()
    rows, n = map(int, args.shape.split("x"))
    x = (np.random.default_rng(0).standard_normal((rows, n)) * 4).astype(np.float32)
    print(f"softmax {rows}x{n}, elements/ns by y - x (mod 4 KB), best of 2 medians")
    print("variant".ljust(20) + "".join(f"{d:>7}" for d in DELTAS))
    for algorithm in ("auto", "three_pass_reload", "two_pass"):
        speeds = []
        for delta in DELTAS:
            y = same_page_offset(x, x.shape, delta)
            t = min(median_time(lambda: softgen.softmax(x, algorithm=algorithm, out=y, threads=1), args.budget)
                    for _ in range(2))
            speeds.append(x.size / t / 1e9)
        print(algorithm.ljust(20) + "".join(f"{s:7.2f}" for s in speeds))


if __name__ == "__main__":
    main()
