"""Top-k gating at router shapes: softgen.topk_softmax against torch (topk + softmax) and
numpy (argpartition, take, sort of the k, softmax), both orders.  Single thread, float32,
elements/ns (of x), the median of `rounds` medians with the variants interleaved round by
round.

    taskset -c 1 python benchmarks/topk.py [--budget 0.3] [--rounds 3]

Shapes: 4096 tokens x 8, 64, 256 experts; k = 1, 2, 8 (up to the experts).
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

from softgen import bench
from softgen.timing import median_time

TOKENS = 4096
EXPERTS = (8, 64, 256)
KS = (1, 2, 8)
ORDERS = ("topk_then_softmax", "softmax_then_topk")


def variants(x: np.ndarray, k: int, order: str) -> dict:
    """{name: fn} for one case: softgen.bench's topk_softmax case (`softgen bench --op
    topk_softmax --k K --order O` times the same calls)."""
    fns = bench.bound_calls("topk_softmax", x, bench.Options(k=k, order=order), peers=("numpy", "torch"))
    fns["softgen"] = fns.pop("softgen:auto")
    return fns


def median_of_rounds(fns: dict, budget: float, rounds: int) -> dict:
    """{name: seconds}: the median of `rounds` medians, variants interleaved round by round."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_time(fn, budget / rounds))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=0.3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print("| shape | k | order | softgen | torch | numpy | softgen / torch |")
    print("|---|---|---|---|---|---|---|")
    for n in EXPERTS:
        x = (np.random.default_rng(0).standard_normal((TOKENS, n)) * 2).astype(np.float32)
        for k in (k for k in KS if k <= n):
            for order in ORDERS:
                fns = variants(x, k, order)
                rate = {name: x.size / t / 1e9 for name, t in median_of_rounds(fns, args.budget, args.rounds).items()}
                ratio = f"{rate['softgen'] / rate['torch']:.2f}" if "torch" in rate else "-"
                print(f"| {TOKENS}x{n} | {k} | {order} | {rate['softgen']:.2f} | {rate.get('torch', float('nan')):.2f} "
                      f"| {rate['numpy']:.3f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
