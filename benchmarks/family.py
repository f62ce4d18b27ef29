"""The family around softmax, side by side in one run: softgen's fused variant against the
best way with numpy and with PyTorch (and ONNX Runtime's Softmax on x / T where it
applies).  Single thread, float32, elements/ns (of x), the best of `rounds` medians with
the variants interleaved.

    taskset -c 1 python benchmarks/family.py [--budget 0.6] [--rounds 3]

cases: temperature (softmax(x / T)); sink (softmax over the row and one more logit, its
output dropped); unified_max against softgen's own auto choice; softmax_backward; cross-
entropy (loss from logits and labels, mean).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import softgen

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import best_of_rounds, family_arguments  # noqa: E402  (the same interleaved timing as peers.py)

SHAPES = ((1024, 1024), (64, 32768))


def numpy_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def cases(x: np.ndarray, torch) -> dict:
    """{case: {variant: fn}}."""
    rows = x.shape[0]
    y = np.empty_like(x)
    sink = np.zeros(rows, np.float32)
    labels = np.random.default_rng(1).integers(0, x.shape[1], rows)
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    s = softgen.softmax(x)
    out = {
        "temperature": {"softgen": lambda: softgen.softmax(x, temperature=0.7, out=y, threads=1),
                        "numpy": lambda: numpy_softmax(x / np.float32(0.7))},
        "sink": {"softgen": lambda: softgen.softmax(x, sink=sink, out=y, threads=1),
                 "numpy": lambda: numpy_softmax(np.concatenate([x, sink[:, None]], 1))[:, :-1]},
        "unified_max": {"softgen unified_max": lambda: softgen.softmax(x, algorithm="unified_max", phi=8.0,
                                                                        out=y, threads=1),
                        "softgen auto": lambda: softgen.softmax(x, out=y, threads=1)},
        "softmax_backward": {"softgen": lambda: softgen.softmax_backward(s, dy, threads=1),
                             "numpy": lambda: s * (dy - (dy * s).sum(-1, keepdims=True))},
        "cross_entropy": {"softgen": lambda: softgen.cross_entropy(x, labels, threads=1),
                          "numpy": lambda: np.mean(np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1))
                                                   + x.max(-1) - x[np.arange(rows), labels])},
    }
    if torch is not None:
        xt, sinkt, dyt, st = (torch.from_numpy(a) for a in (x, sink, dy, s))
        lt = torch.from_numpy(labels)
        out["temperature"]["torch"] = lambda: torch.softmax(xt / 0.7, -1)
        out["sink"]["torch"] = lambda: torch.softmax(torch.cat([xt, sinkt[:, None]], 1), -1)[:, :-1]
        out["unified_max"]["torch"] = lambda: torch.softmax(xt, -1)
        out["softmax_backward"]["torch"] = lambda: torch._softmax_backward_data(dyt, st, -1, torch.float32)
        out["cross_entropy"]["torch"] = lambda: torch.nn.functional.cross_entropy(xt, lt)
    return out


def main(argv=None) -> None:
    args, torch = family_arguments(__doc__.split("\n\n")[0], argv, rounds=3)
    print("case              shape        " + "variant: elements/ns")
    for rows, n in SHAPES:
        x = (np.random.default_rng(0).standard_normal((rows, n)) * 3).astype(np.float32)
        for case, fns in cases(x, torch).items():
            seconds = best_of_rounds(fns, args.budget, args.rounds)
            cells = "  ".join(f"{name} {x.size / t / 1e9:.2f}" for name, t in seconds.items())
            print(f"{case:17s} {rows}x{n:<8d} {cells}")


if __name__ == "__main__":
    main()
