"""softgen at 1 and 2 threads (or --threads) next to ONNX Runtime and PyTorch at the same
thread counts, and the cost of handing a range to a worker.

    taskset -c 0,1 python benchmarks/threads.py [--op softmax] [--budget 0.2] [--rounds 5]
                   [--threads 1,2] [--dispatch] [--ceiling]

Cases: in cache 1024x1024 and 4096x64, out of cache 16 x 2^22, and 1 x 2^20 (one row:
softgen splits it into chunks of columns, softgen.split).  Every variant allocates
its output, as a user's call does.  Variants are interleaved in short slices (`budget`
seconds each, a median of calls), round after round; the table gives the median over
rounds in elements/ns, ± half the spread over rounds (max - min) in % of the median.
--ceiling: the machine's bound for two threads in the in-cache cases instead: the 1-thread
kernel on all rows on one core, against two threads pinned to two cores calling it on
fixed halves at the same time (no hand-off, no wait for each other).
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import threading
import time

import numpy as np

import softgen
from softgen import bench, threads
from softgen.timing import median_time

CASES = ((1024, 1024), (4096, 64), (16, 1 << 22), (1, 1 << 20))


def variants(op: str, counts) -> dict:
    """{(library, threads): fn(x)} for softgen and the installed peers."""
    entry = getattr(softgen, op)
    fns = {("softgen", k): (lambda x, k=k: entry(x, threads=k)) for k in counts}
    try:
        fns.update({("ort", k): bench._onnxruntime(op, k) for k in counts})
    except ImportError:
        pass
    try:
        import torch
        fn = bench._peer_function(op, "torch")
        for k in counts:
            fns[("torch", k)] = lambda x, k=k: _torch_call(torch, fn, x, k)
    except ImportError:
        pass
    return fns


def _torch_call(torch, fn, x, k: int):
    if torch.get_num_threads() != k:  # set once per slice: the variants run slice by slice
        torch.set_num_threads(k)
    return fn(torch.from_numpy(x), dim=-1)


def run_case(fns: dict, x: np.ndarray, budget: float, rounds: int) -> dict:
    """{variant: [elements/ns per round]}, the variants interleaved round by round."""
    speeds = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            speeds[name].append(x.size / median_time(lambda: fn(x), budget) / 1e9)
    return speeds


def dispatch_cost(reps: int = 2000) -> dict:
    """Microseconds: two tiny kernel calls inline, the same as a job of two one-row chunks
    on two threads (a spinning worker), and both after this thread slept 5 ms (the worker
    asleep too: the caller wakes it and runs both chunks; a thread that wakes up runs cold
    at first)."""
    kernel = softgen.compile("softmax", algorithm="two_pass")
    x = np.zeros((2, 16), np.float32)
    y = np.empty_like(x)
    xa, ya = x.ctypes.data, y.ctypes.data

    def timed(fn, pause=0.0):
        times = []
        for _ in range(reps if not pause else reps // 10):
            if pause:
                time.sleep(pause)
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6
    on_pool = lambda: threads.run_row_job(kernel._fn, 2, 16, (xa, 16, 4), (ya, 16, 4), 1, 2)  # noqa: E731
    inline = lambda: (kernel._fn(1, 16, xa, 16, ya, 16), kernel._fn(1, 16, xa + 64, 16, ya + 64, 16))  # noqa: E731
    on_pool()
    return {"inline": timed(inline), "pool": timed(on_pool),
            "inline after 5 ms asleep": timed(inline, 0.005), "pool after 5 ms asleep": timed(on_pool, 0.005)}


def ceiling(op: str, x: np.ndarray, budget: float, rounds: int) -> dict:
    """{threads: [elements/ns per round]}: x's kernel (as softgen's auto picks it) on all
    rows pinned to one core (1), and on fixed halves by two threads pinned to two cores at
    once, each timing its own calls (2: from the slower half)."""
    rows, n = x.shape
    kernel = softgen.api.kernel_for_shape(op, rows, n)
    y = np.empty_like(x)
    at = [(r0, x[r0:].ctypes.data, y[r0:].ctypes.data) for r0 in (0, rows // 2)]
    halves = [functools.partial(kernel._fn, r1 - r0, n, xa, n, ya, n) for (r0, xa, ya), r1 in zip(at, (rows // 2, rows))]
    cores = sorted(os.sched_getaffinity(0))[:2]
    assert len(cores) == 2, "--ceiling needs two cores"

    def timed(fn, core: int, times: list, start: threading.Barrier) -> None:
        os.sched_setaffinity(0, {core})
        start.wait()
        times.append(median_time(fn, budget))

    def run(fns) -> float:
        times, start = [], threading.Barrier(len(fns))
        workers = [threading.Thread(target=timed, args=(fn, core, times, start)) for fn, core in zip(fns, cores)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return x.size / max(times) / 1e9
    whole = functools.partial(kernel._fn, rows, n, x.ctypes.data, n, y.ctypes.data, n)
    speeds = {1: [], 2: []}
    for _ in range(rounds):
        speeds[1].append(run([whole]))
        speeds[2].append(run(halves))
    return speeds


def print_table(results: dict, counts) -> None:
    names = list(dict.fromkeys(lib for lib, _ in next(iter(results.values()))))
    header = "case".ljust(12) + "".join(f"{lib} {k}t".rjust(16) for lib in names for k in counts)
    print("\n" + header + "   (elements/ns: median over rounds, spread %)")
    for case, speeds in results.items():
        line = case.ljust(12)
        for lib in names:
            for k in counts:
                values = speeds.get((lib, k))
                if values:
                    mid = statistics.median(values)
                    line += f"{mid:9.2f} ±{(max(values) - min(values)) / mid * 50:4.0f}%".rjust(16)
                else:
                    line += " " * 16
        print(line)
    first, last = counts[0], counts[-1]
    for case, speeds in results.items():
        ratios = {lib: statistics.median(speeds[(lib, last)]) / statistics.median(speeds[(lib, first)])
                  for lib in names if (lib, last) in speeds}
        print(f"  {case}: {last} threads / {first}: " + ", ".join(f"{lib} {r:.2f}x" for lib, r in ratios.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=softgen.OPS, default="softmax")
    p.add_argument("--budget", type=float, default=0.2, help="seconds per variant per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    p.add_argument("--dispatch", action="store_true", help="also measure the cost of a hand-off")
    p.add_argument("--ceiling", action="store_true", help="measure two pinned threads on fixed halves instead")
    args = p.parse_args(argv)
    counts = [int(k) for k in args.threads.split(",")]
    print(f"{args.op}: softgen {softgen.__version__} on {softgen.Target.parse('host').cpu}, CPU affinity "
          f"{sorted(os.sched_getaffinity(0))}; splitting from {threads.parallel_from} elements", flush=True)
    if args.dispatch:
        print("hand-off cost (us): " + ", ".join(f"{k} {v:.1f}" for k, v in dispatch_cost().items()), flush=True)
    fns = {} if args.ceiling else variants(args.op, counts)
    results = {}
    for rows, n in CASES[:2] if args.ceiling else CASES:
        x = (np.random.default_rng(0).standard_normal((rows, n)) * 4).astype(np.float32)
        print(f"  {rows}x{n} ...", flush=True)
        if args.ceiling:
            results[f"{rows}x{n}"] = {("halves", k): v for k, v in ceiling(args.op, x, args.budget, args.rounds).items()}
        else:
            results[f"{rows}x{n}"] = run_case(fns, x, args.budget, args.rounds)
    print_table(results, [1, 2] if args.ceiling else counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
