"""Masked softmax side by side in one run: softgen's where= (a causal mask, which runs as
ragged rows, and a random mask, read as bytes) against the same call without a mask, the
materialized way (np.where(mask, x, -inf), then softmax) and PyTorch's masked_fill +
softmax.  Single thread, float32, elements/ns (of x): per variant the median of `rounds`
interleaved round medians, with the spread (max - min) / median; and the causal call's
speed over the unmasked one's, round by round (median, quartiles).

    taskset -c 1 python benchmarks/masks.py [--budget 0.6] [--rounds 5]

Shapes: one [n, n] score matrix, and batched [B, n, n] scores with one [n, n] causal mask
broadcast over the batch (analysed once per call).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import softgen

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import family_arguments, round_times  # noqa: E402  (peers.py's interleaved timing)

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


def main(argv=None) -> None:
    args, torch = family_arguments(__doc__.split("\n\n")[0], argv, rounds=5)
    print("shape            variant: elements/ns (spread)")
    for batch, n in SHAPES:
        x = (np.random.default_rng(0).standard_normal((batch, n, n)) * 3).astype(np.float32)
        times = round_times(variants(x, torch), args.budget, args.rounds)
        cells = "  ".join(f"{name} {x.size / np.median(t) / 1e9:.2f} ({(max(t) - min(t)) / np.median(t):.0%})"
                          for name, t in times.items())
        # the same round's pair: this VM's speed changes between rounds, not within one
        ratio = np.array(times["unmasked"]) / np.array(times["causal"])
        q1, q3 = np.quantile(ratio, [0.25, 0.75])
        print(f"{batch}x{n}x{n:<8d} {cells}  | causal / unmasked speed {np.median(ratio):.2f} ({q1:.2f}-{q3:.2f})")


if __name__ == "__main__":
    main()
