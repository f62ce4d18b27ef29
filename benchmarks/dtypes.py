"""softgen per dtype, side by side in one run: float32, float64, float16 and bfloat16 (and
bfloat16 in, float32 out) against numpy, SciPy, ONNX Runtime (its float64 and float16
kernels) and PyTorch's bfloat16 where installed.  Elements/ns, single thread, output
preallocated for softgen; the best of `rounds` medians, variants interleaved.

    taskset -c 1 python benchmarks/dtypes.py [--op softmax] [--budget 0.6] [--rounds 3]

16-bit storage moves half the bytes of float32: out of cache its kernels should approach
twice float32's elements/ns; in cache they pay for the conversions.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

import softgen
from softgen import bench

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import best_of_rounds  # noqa: E402  (the same interleaved timing as peers.py)

CASES = ((4096, 64), (1024, 1024), (1, 1 << 20), (16, 1 << 22))
BF16 = np.dtype(ml_dtypes.bfloat16)
# (label, x's dtype, y's dtype)
FORMS = (("float32", np.float32, np.float32), ("float64", np.float64, np.float64),
         ("float16", np.float16, np.float16), ("bfloat16", BF16, BF16), ("bf16->f32", BF16, np.float32))


def softgen_call(op: str, x: np.ndarray, y_dtype):
    spec = softgen.ops.get(op)
    y = np.empty(spec.output_shape(*x.shape), y_dtype)
    fn = getattr(softgen, op)
    if np.dtype(y_dtype) == x.dtype:
        return lambda: fn(x, out=y, threads=1)  # one thread, as the peers
    return lambda: fn(x, out=y, dtype=np.dtype(y_dtype), threads=1)


def peer_calls(op: str, x: np.ndarray, label: str, peers: dict) -> dict:
    """The peers that take this dtype natively (no conversion timed)."""
    out = {}
    for name, fn in peers.items():
        if name == "torch" and label == "bfloat16":
            import torch
            t = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
            out[name] = (lambda t=t: torch.softmax(t, -1)) if op == "softmax" else None
        elif name in ("numpy", "scipy", "onnxruntime") and x.dtype != BF16 and label != "bf16->f32":
            out[name] = lambda fn=fn: fn(x)
    return {k: v for k, v in out.items() if v is not None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", default="softmax", choices=softgen.OPS)
    p.add_argument("--budget", type=float, default=0.6)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    bench.one_thread_environment()
    peers = bench.peers(args.op)
    rng = np.random.default_rng(0)
    print(f"{args.op}: elements/ns (single thread); softgen auto with out=")
    for rows, n in CASES:
        base = rng.standard_normal((rows, n)) * 4
        fns = {}
        for label, xd, yd in FORMS:
            x = base.astype(xd)
            fns[f"softgen {label}"] = softgen_call(args.op, x, yd)
            for name, fn in peer_calls(args.op, x, label, peers).items():
                fns[f"{name} {label}"] = fn
        times = best_of_rounds(fns, args.budget * len(fns) / 4, args.rounds)
        f32 = rows * n / times["softgen float32"] / 1e9
        print(f"\n{rows}x{n}")
        for name, seconds in times.items():
            rate = rows * n / seconds / 1e9
            print(f"  {name:28s} {rate:6.2f}   x{rate / f32:4.2f} of softgen float32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
