"""Masked softmax side by side in one run: softgen's where= (a causal mask, which runs as
ragged rows, and a random mask, read as bytes) against the same call without a mask, the
materialized way (np.where(mask, x, -inf), then softmax) and PyTorch's masked_fill +
softmax.  Single thread, float32, elements/ns (of x): per variant the median of `rounds`
interleaved round medians, with the spread (max - min) / median.

    taskset -c 1 python benchmarks/masks.py [--budget 0.6] [--rounds 5]

Shapes: one [n, n] score matrix, and batched [B, n, n] scores with one [n, n] causal mask
broadcast over the batch (analysed once per call).
"""
from __future__ import annotations

import argparse

import numpy as np

import softgen
from softgen import bench

SHAPES = ((1, 1024), (8, 512), (32, 128))


def variants(x: np.ndarray, torch) -> dict:
    n = x.shape[-1]
    y = np.empty_like(x)
    causal = np.tri(n, dtype=bool)
    random = np.random.default_rng(1).random(x.shape) < 0.5
    out = {
        "unmasked": lambda: softgen.softmax(x, out=y, threads=1),
        "causal": lambda: softgen.softmax(x, where=causal, out=y, threads=1),
        "random mask": lambda: softgen.softmax(x, where=random, out=y, threads=1),
        "np.where + softgen": lambda: softgen.softmax(np.where(causal, x, np.float32(-np.inf)), out=y, threads=1),
    }
    if torch is not None:
        xt, keep = torch.from_numpy(x), torch.from_numpy(causal)
        out["torch masked_fill"] = lambda: torch.softmax(xt.masked_fill(~keep, float("-inf")), -1)
    return out


def interleaved(fns: dict, budget: float, rounds: int) -> dict:
    """{name: (median of the round medians, spread)}, the variants interleaved round by round."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(bench.median_time(fn, budget / rounds))
    return {name: (float(np.median(t)), (max(t) - min(t)) / float(np.median(t))) for name, t in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=0.6)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    print("shape            variant: elements/ns (spread)")
    for batch, n in SHAPES:
        x = (np.random.default_rng(0).standard_normal((batch, n, n)) * 3).astype(np.float32)
        results = interleaved(variants(x, torch), args.budget, args.rounds)
        cells = "  ".join(f"{name} {x.size / t / 1e9:.2f} ({spread:.0%})" for name, (t, spread) in results.items())
        print(f"{batch}x{n}x{n:<8d} {cells}")


if __name__ == "__main__":
    main()
