"""The emitted C kernel next to the JIT kernel, elements/ns: the same algorithm and schedule
(what auto picks for the shape), for each ISA and compiler.

    taskset -c 1 python benchmarks/c_vs_jit.py [--isa avx512 avx2] [--cc gcc clang]
                                               [--ops softmax] [--cases 0,1,2,3,4,5]

Cases: the six of softgen.bench.CASES (single thread).  The JIT runs for the ISA's x86-64
level (avx2: x86-64-v3, avx512: x86-64-v4); C is built with `cc -O2` and the ISA's flags.
C renders one row at a time (no vectors of rows), so where auto groups rows the C kernel
runs the same schedule with rows of one.  Median of alternating runs; C/JIT is the C
kernel's speed relative to the JIT's (1.00 = same).
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
from softgen import ops, tune
from softgen.bench import CASES

LEVELS = {"avx2": "x86-64-v3", "avx512": "x86-64-v4"}


def median_seconds(fns, budget: float, least: int = 5) -> list[float]:
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


def build_c(op: str, choice: tune.Choice, isa: str, cc: str, workdir: Path):
    src = softgen.emit_c(op, algorithm=choice.algorithm, isa=isa, schedule=choice.schedule,
                         name=f"k_{op}_{choice.algorithm}_{isa}_{cc}_{abs(hash(choice.schedule))}")
    _, c_file = src.write(workdir)
    lib = workdir / f"{src.name}.so"
    subprocess.run([cc, "-O2", "-std=c99", *src.flags, "-shared", "-fPIC", "-o", str(lib), str(c_file), "-lm"],
                   check=True)
    fn = getattr(ctypes.CDLL(str(lib)), src.name)
    fn.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                   ctypes.c_int64]
    fn.restype = None
    return fn


def one_case(op: str, shape, isa: str, compilers, workdir: Path, budget: float) -> str:
    rows, n = shape
    target = softgen.Target.parse(LEVELS[isa])
    choice = tune.choose(op, rows, n, LEVELS[isa])
    jit = softgen.compile(op, algorithm=choice.algorithm, target=target, schedule=choice.schedule)
    x = (np.random.default_rng(0).standard_normal(shape) * 4).astype(np.float32)
    y = np.empty(ops.get(op).output_shape(rows, n), np.float32).reshape(rows, -1)
    ys = y.shape[1]
    c_fns = [build_c(op, choice, isa, cc, workdir) for cc in compilers]
    calls = [lambda fn=fn: fn(rows, n, x.ctypes.data, n, y.ctypes.data, ys) for fn in c_fns]
    *t_c, t_jit = median_seconds(calls + [lambda: jit.run_rows(x, y)], budget)
    cells = " ".join(f"{x.size / t / 1e9:7.2f} {t_jit / t:6.2f}" for t in t_c)
    return f"{op:<12} {isa:<7} {f'{rows}x{n}':>12} {choice.algorithm:<21} {x.size / t_jit / 1e9:7.2f} {cells}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", nargs="+", default=[i for i in LEVELS if softgen.Target.parse(LEVELS[i]).runs_here],
                    choices=list(LEVELS))
    ap.add_argument("--cc", nargs="+", default=["gcc", "clang"])
    ap.add_argument("--ops", nargs="+", default=["softmax"], choices=softgen.OPS)
    ap.add_argument("--cases", default=",".join(map(str, range(len(CASES)))))
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per case (default: %(default)s)")
    args = ap.parse_args()
    print(f"C (-O2) vs JIT on {softgen.Target.parse('host').cpu}, elements/ns, median; schedule: auto's")
    print(f"{'op':<12} {'isa':<7} {'shape':>12} {'algorithm':<21} {'JIT':>7} "
          + " ".join(f"{cc:>7} {'C/JIT':>6}" for cc in args.cc))
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops:
            for isa in args.isa:
                for k in map(int, args.cases.split(",")):
                    print(one_case(op, CASES[k], isa, args.cc, Path(tmp), args.budget), flush=True)


if __name__ == "__main__":
    main()
