"""softplus_normalize (y = softplus(scale * x)^power / sum) against numpy and PyTorch, single
thread, elements/ns: softgen (auto, with out=) per dtype next to numpy's one-ufunc softplus
(logaddexp(0, z), then the power and the division in place), numpy's textbook form
(max(z, 0) + log1p(exp(-|z|))) and torch.nn.functional.softplus then the same normalization.
The best of `rounds` medians, variants interleaved.

    taskset -c 1 python benchmarks/softplus.py [--scale 1] [--power 1] [--budget 0.4] [--rounds 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import softgen
from softgen import bench, ops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import best_of_rounds  # noqa: E402  (the same interleaved timing as peers.py)

CASES = ((4096, 64), (1024, 1024), (1, 1 << 20), (16, 1 << 22))
DTYPES = (np.float32, np.float64)


def textbook(scale: float, power: float):
    """numpy's softplus spelled out: max(z, 0) + log1p(exp(-|z|)), temporaries reused."""
    def run(x):
        z = x * scale
        v = np.negative(np.abs(z))
        np.exp(v, out=v)
        np.log1p(v, out=v)
        v += np.maximum(z, 0, out=z)
        if power != 1.0:
            v **= power
        v /= v.sum(-1, keepdims=True)
        return v
    return run


def calls(x: np.ndarray, scale: float, power: float, peers: dict) -> dict:
    label = x.dtype.name
    y = np.empty_like(x)
    fns = {f"softgen {label}": lambda: softgen.softplus_normalize(x, out=y, scale=scale, power=power, threads=1)}
    for name, fn in peers.items():
        fns[f"{name} {label}"] = lambda fn=fn: fn(x)
    fns[f"numpy textbook {label}"] = lambda fn=textbook(scale, power): fn(x)
    return fns


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--power", type=float, default=1.0)
    p.add_argument("--budget", type=float, default=0.4)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    bench.one_thread_environment()
    spec = ops.SOFTPLUS_NORMALIZE.with_params(scale=args.scale, power=args.power)
    peers = bench.peers(spec, names=("numpy", "torch"))
    rng = np.random.default_rng(0)
    print(f"softplus_normalize scale={args.scale} power={args.power}: elements/ns (single thread)")
    for rows, n in CASES:
        base = rng.standard_normal((rows, n)) * 4
        fns = {}
        for dtype in DTYPES:
            fns.update(calls(base.astype(dtype), args.scale, args.power, peers))
        times = best_of_rounds(fns, args.budget * len(fns) / 4, args.rounds)
        print(f"\n{rows}x{n}")
        for name, seconds in times.items():
            print(f"  {name:28s} {rows * n / seconds / 1e9:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
