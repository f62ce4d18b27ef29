"""The emitted C kernel (built with gcc -O2) next to the JIT kernel, elements/ns.

    taskset -c 1 python benchmarks/c_vs_jit.py [--isa avx512] [--ops softmax] [--cc gcc]

Shapes: 1024 x 1024 (in cache) and one 2^24 row (out of cache); single thread, median
of repeated runs (C and JIT alternating).  C/JIT is the C kernel's speed relative to the JIT's (1.00 = same).
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import softgen
from softgen import algorithms
from softgen.backends.c import ISAS

SHAPES = ((1024, 1024), (1, 1 << 24))


def median_seconds(fns, budget: float = 2.0, least: int = 7) -> list[float]:
    """Median time of each function; runs alternate, so drift (clock, neighbours) hits all."""
    for fn in fns:
        fn()
    times, end = [[] for _ in fns], time.perf_counter() + budget
    while len(times[0]) < least or time.perf_counter() < end:
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def build_c(op: str, algorithm: str, isa: str, cc: str, workdir: Path):
    src = softgen.emit_c(op, algorithm=algorithm, isa=isa)
    _, c_file = src.write(workdir)
    lib = workdir / f"{src.name}.so"
    subprocess.run([cc, "-O2", "-std=c99", *src.flags, "-shared", "-fPIC", "-o", str(lib), str(c_file), "-lm"],
                   check=True)
    fn = getattr(ctypes.CDLL(str(lib)), src.name)
    fn.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                   ctypes.c_int64]
    fn.restype = None
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default="avx512", choices=[i for i in ISAS if i != "neon"])
    ap.add_argument("--ops", nargs="+", default=["softmax"], choices=softgen.OPS)
    ap.add_argument("--cc", default="gcc")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    inputs = {shape: (rng.standard_normal(shape) * 4).astype(np.float32) for shape in SHAPES}
    print(f"{args.isa} C ({args.cc} -O2) vs JIT on {softgen.Target.parse('host').cpu}, elements/ns, median")
    print(f"{'op':<12} {'algorithm':<22} {'shape':>12} {'C':>7} {'JIT':>7} {'C/JIT':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops:
            for algorithm in softgen.ALGORITHMS:
                try:
                    algorithms.build(op, algorithm)
                except NotImplementedError:
                    continue
                c_fn = build_c(op, algorithm, args.isa, args.cc, Path(tmp))
                jit = softgen.compile(op, algorithm=algorithm)
                for shape, x in inputs.items():
                    rows, n = shape
                    y = np.empty((rows, 1) if op == "logsumexp" else shape, np.float32)
                    ys = y.shape[1]
                    t_c, t_jit = median_seconds([lambda: c_fn(rows, n, x.ctypes.data, n, y.ctypes.data, ys),
                                                 lambda: jit.run_rows(x, y)])
                    print(f"{op:<12} {algorithm:<22} {f'{rows}x{n}':>12} {x.size / t_c / 1e9:7.2f} "
                          f"{x.size / t_jit / 1e9:7.2f} {t_jit / t_c:6.2f}")


if __name__ == "__main__":
    main()
