"""The family around softmax, side by side in one run: softgen's fused call against the best
way with numpy, PyTorch and ONNX Runtime, as `softgen bench --op` times them (softgen.bench's
cases: the same calls).  Single thread, float32, elements/ns (of x), the best of `rounds`
medians with the variants interleaved.

    taskset -c 1 python benchmarks/family.py [--budget 0.6] [--rounds 3]

cases: temperature (softmax(x / T)); sink (softmax over the row and one more logit, its
output dropped); unified_max against softgen's own auto choice; softmax_backward; cross-
entropy (loss from logits and labels, mean).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from softgen import bench
from softgen.bench import Options

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import best_of_rounds, family_arguments  # noqa: E402  (the same interleaved timing as peers.py)

SHAPES = ((1024, 1024), (64, 32768))
PEERS = ("numpy", "torch", "onnxruntime")
# case: (op, its options, softgen's variants), as `softgen bench --op OP [options]` runs them
CASES = {"temperature": ("softmax", Options(temperature=0.7), ("auto",)),
         "sink": ("softmax", Options(sink=True), ("auto",)),
         "unified_max": ("softmax", Options(phi=8.0), ("unified_max", "auto")),
         "softmax_backward": ("softmax_backward", Options(), ("auto",)),
         "cross_entropy": ("cross_entropy", Options(), ("auto",))}


def cases(x: np.ndarray) -> dict:
    """{case: {variant: fn}}; softgen writes into one output per case where its entry takes one."""
    return {case: bench.bound_calls(op, x, options, variants, PEERS, preallocate=True)
            for case, (op, options, variants) in CASES.items()}


def main(argv=None) -> None:
    args, _ = family_arguments(__doc__.split("\n\n")[0], argv, rounds=3)   # (torch on one thread)
    print("case              shape        " + "variant: elements/ns")
    for rows, n in SHAPES:
        x = (np.random.default_rng(0).standard_normal((rows, n)) * 3).astype(np.float32)
        for case, fns in cases(x).items():
            seconds = best_of_rounds(fns, args.budget, args.rounds)
            cells = "  ".join(f"{name} {x.size / t / 1e9:.2f}" for name, t in seconds.items())
            print(f"{case:17s} {rows}x{n:<8d} {cells}")


if __name__ == "__main__":
    main()
