"""softgen next to every installed peer and the machine's ceilings, in one run.

    taskset -c 1 python benchmarks/peers.py [--op softmax] [--budget 1.0] [--rounds 3]
                    [--csv results.csv] [--png results.png] [--crossover] [--cases 0,1,5]

Cases: the six of softgen.bench.CASES (float32, last axis, single thread).  Columns:
softgen's four algorithms (each with the schedule the built-in rule gives it for the
shape, output preallocated), auto (out=: preallocated; alloc: a new output per call, as
the peers do), the peers (numpy, scipy, torch, onnxruntime, jax, numba: those installed),
and the ceilings from benchmarks/ceilings.c built with cc -O2 -march=native (without
AVX-512 where SOFTGEN_HOST_FEATURES takes it from softgen): the in-L1
exp pass (compute), the two-pass memory bound (at 2^24 floats or more: out of cache), and
`rw_at_size`, one pass that reads x and writes y through the cache at the case's own size
(what a kernel that touches each byte once could reach; reload's later passes hit L2).

Each number is elements/ns, the best of `rounds` medians (repeats alternate between
variants so that a noisy neighbour slows all of them, not one).  Peak memory is what
one call allocates as traced by tracemalloc (numpy, scipy, softgen; "-" for peers whose
allocator it cannot see).  --crossover adds a sweep of single rows of growing length:
two-pass against three-pass reload, and the row length where two-pass starts to win.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

import softgen
from softgen import bench
from softgen.api import same_page_offset

HERE = Path(__file__).resolve().parent


# --- ceilings ------------------------------------------------------------------------------

def build_ceilings(workdir: Path) -> Path | None:
    """The ceilings for the vector ISA softgen runs here: -march=native, without AVX-512
    where SOFTGEN_HOST_FEATURES takes it from softgen (an AVX2 machine's ceilings)."""
    exe = workdir / "ceilings"
    host = softgen.targets.host()
    narrow = ["-mno-avx512f"] if host.arch == "x86_64" and not host.has_avx512 else []
    cmd = [os.environ.get("CC", "cc"), "-O2", "-march=native", *narrow, str(HERE / "ceilings.c"), "-o", str(exe)]
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"(no ceilings: {' '.join(cmd)} failed: {e})", file=sys.stderr)
        return None
    return exe


def run_ceiling(exe: Path | None, *args) -> dict:
    if exe is None:
        return {}
    out = subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True, text=True).stdout
    return {k: float(v) for k, v in (field.split("=") for field in out.split())}


# --- measuring -----------------------------------------------------------------------------

def variants(op: str, rows: int, n: int, x: np.ndarray) -> dict:
    """{name: fn()} for softgen on this case (outputs preallocated except 'auto alloc'),
    placed relative to x as softgen places its own outputs (4K aliasing: aliasing.py)."""
    out = same_page_offset(x, (rows,) if op == "logsumexp" else (rows, n))
    entry = getattr(softgen, op)
    fns = {f"softgen:{algo}": lambda a=algo: entry(x, algorithm=a, out=out, threads=1)  # the built-in schedule
           for algo in softgen.ALGORITHMS if not (algo == "three_pass_reload" and op != "softmax")}
    fns["softgen:auto"] = lambda: entry(x, out=out, threads=1)
    fns["softgen:auto alloc"] = lambda: entry(x, threads=1)
    return fns


def peak_bytes(fn) -> int:
    """Bytes allocated (and traced) during one call, at the peak."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def best_of_rounds(fns: dict, budget: float, rounds: int) -> dict:
    """{name: seconds}: the best of `rounds` medians, variants interleaved round by round."""
    best = {name: math.inf for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], bench.median_time(fn, budget / rounds))
    return best


def round_times(fns: dict, budget: float, rounds: int) -> dict:
    """{name: [a median time per round]}, the variants interleaved round by round."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(bench.median_time(fn, budget / rounds))
    return times


def median_of_rounds(fns: dict, budget: float, rounds: int) -> dict:
    """{name: (the median of `rounds` medians, their spread (max - min) / median)}, the
    variants interleaved round by round."""
    times = round_times(fns, budget, rounds)
    return {name: (float(np.median(t)), (max(t) - min(t)) / float(np.median(t))) for name, t in times.items()}


def family_arguments(description: str, argv, rounds: int):
    """(--budget and --rounds parsed, torch on one thread or None): the family benchmarks' setup."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--budget", type=float, default=0.6)
    p.add_argument("--rounds", type=int, default=rounds)
    args = p.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    return args, torch


TRACED = ("softgen", "numpy", "scipy")


def run_case(op: str, rows: int, n: int, peers: dict, ceilings: Path | None, budget: float,
             rounds: int) -> list[dict]:
    x = (np.random.default_rng(0).standard_normal((rows, n)) * 4).astype(np.float32)
    fns = variants(op, rows, n, x)
    fns.update({name: (lambda f=f: f(x)) for name, f in peers.items()})
    seconds = best_of_rounds(fns, budget, rounds)
    result = []
    for name, fn in fns.items():
        traced = name.split(":")[0] in TRACED
        result.append({"op": op, "rows": rows, "n": n, "name": name,
                       "el_per_ns": x.size / seconds[name] / 1e9, "seconds": seconds[name],
                       "peak_bytes": peak_bytes(fn) if traced else None})
    memory = run_ceiling(ceilings, "memory", max(rows * n, 1 << 24), 3)
    at_size = run_ceiling(ceilings, "memory", rows * n, 5)
    compute = run_ceiling(ceilings, "exp", 4096, 20000)
    rw = at_size.get("rw_GBps")
    for name, value in (("ceiling:two_pass_memory_bound", memory.get("two_pass_bound")),
                        ("ceiling:rw_at_size", rw / 8 if rw is not None else None),
                        ("ceiling:exp_pass_in_L1", compute.get("exp_pass"))):
        if value is not None:
            result.append({"op": op, "rows": rows, "n": n, "name": name, "el_per_ns": value,
                           "seconds": None, "peak_bytes": None})
    return result


def crossover(op: str, budget: float, rounds: int, log2_sizes=range(10, 27, 2)) -> list[dict]:
    """Single rows of growing length: two-pass vs three-pass reload (each with its built-in
    schedule for that size), as in the seed paper's figure."""
    algos = ("two_pass", "three_pass_reload") if op == "softmax" else ("two_pass", "three_pass_recompute")
    out = []
    for k in log2_sizes:
        n = 1 << k
        x = (np.random.default_rng(k).standard_normal((1, n)) * 4).astype(np.float32)
        y = np.empty((1,) if op == "logsumexp" else (1, n), np.float32)
        entry = getattr(softgen, op)
        fns = {a: (lambda a=a: entry(x, algorithm=a, out=y, threads=1)) for a in algos}
        seconds = best_of_rounds(fns, budget, rounds)
        speeds = {a: n / s / 1e9 for a, s in seconds.items()}
        out.append({"n": n, **speeds, "ratio": speeds[algos[0]] / speeds[algos[1]]})
        print(f"  n=2^{k:<3} {algos[0]} {speeds[algos[0]]:6.2f}  {algos[1]} {speeds[algos[1]]:6.2f}"
              f"  ratio {out[-1]['ratio']:5.2f}", flush=True)
    return out


def crossover_length(sweep: list[dict]) -> int | None:
    """The shortest row from which two-pass wins at every longer length measured."""
    winning = None
    for point in reversed(sweep):
        if point["ratio"] <= 1.0:
            break
        winning = point["n"]
    return winning


# --- output --------------------------------------------------------------------------------

def print_table(results: list[dict], cases) -> None:
    names = list(dict.fromkeys(r["name"] for r in results))
    print()
    print("case".ljust(12) + "".join(_short(n).rjust(12) for n in names) + "   (elements/ns, one thread)")
    for rows, n in cases:
        by_name = {r["name"]: r for r in results if (r["rows"], r["n"]) == (rows, n)}
        line = f"{rows}x{n}".ljust(12)
        for name in names:
            line += f"{by_name[name]['el_per_ns']:12.2f}" if name in by_name else " " * 12
        print(line)
    print()
    print("peak memory per call (MB traced; output size in brackets):")
    for rows, n in cases:
        peaks = [f"{_short(r['name'])} {r['peak_bytes'] / 2**20:.1f}" for r in results
                 if (r["rows"], r["n"]) == (rows, n) and r["peak_bytes"] is not None]
        print(f"  {rows}x{n} [{rows * n * 4 / 2**20:.1f}]: " + ", ".join(peaks))


def _short(name: str) -> str:
    return (name.replace("softgen:", "").replace("three_pass_", "3p_").replace("ceiling:", "")
            .replace("two_pass_memory_bound", "roofline").replace("exp_pass_in_L1", "exp_ceil")
            .replace("onnxruntime", "ort"))


def write_csv(path: str, results: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)


def write_png(path: str, results: list[dict], op: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no PNG: matplotlib is not installed; pip install 'softgen[bench]')", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(9, 5.5))
    names = [n for n in dict.fromkeys(r["name"] for r in results) if not n.startswith("ceiling:")]
    for name in names:
        pts = sorted((r["n"], r["el_per_ns"]) for r in results if r["name"] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                lw=2.2 if name.startswith("softgen") else 1.0, label=_short(name),
                ls="-" if name.startswith("softgen") else "--")
    for name, color in (("ceiling:exp_pass_in_L1", "gray"), ("ceiling:two_pass_memory_bound", "black")):
        values = [r["el_per_ns"] for r in results if r["name"] == name]
        if values:
            ax.axhline(max(values), color=color, ls=":", label=f"{_short(name)} {max(values):.2f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("row length n (elements)")
    ax.set_ylabel("elements / ns (one thread)")
    ax.set_title(f"{op}, float32: softgen vs peers")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=softgen.OPS, default="softmax")
    p.add_argument("--budget", type=float, default=1.0, help="seconds of timing per variant and case")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per case (best kept)")
    p.add_argument("--cases", help="indices into the six cases, e.g. 0,5 (default: all)")
    p.add_argument("--csv", help="write every measurement here")
    p.add_argument("--png", help="plot elements/ns against row length here (needs matplotlib)")
    p.add_argument("--crossover", action="store_true", help="also sweep single rows: two-pass vs reload")
    args = p.parse_args(argv)
    cases = bench.CASES if not args.cases else [bench.CASES[int(i)] for i in args.cases.split(",")]
    peers = bench.peers(args.op)
    print(f"{args.op}: softgen {softgen.__version__} on {softgen.Target.parse('host').cpu}; "
          f"peers: {', '.join(peers) or 'none'}; CPU affinity {sorted(os.sched_getaffinity(0))}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ceilings = build_ceilings(Path(tmp))
        for rows, n in cases:
            print(f"  {rows}x{n} ...", flush=True)
            results += run_case(args.op, rows, n, peers, ceilings, args.budget, args.rounds)
    print_table(results, cases)
    if args.crossover:
        print(f"\ncrossover sweep (single rows):")
        sweep = crossover(args.op, args.budget / 2, args.rounds)
        length = crossover_length(sweep)
        print(f"two-pass wins from n = {length} on" if length else "two-pass never wins in this sweep")
    if args.csv:
        write_csv(args.csv, results)
        print(f"wrote {args.csv}")
    if args.png:
        write_png(args.png, results, args.op)
    return 0


if __name__ == "__main__":
    sys.exit(main())
