"""JIT-compile every softmax algorithm for this CPU (with the schedule softgen picks for
the shape, and "auto"), check it against float64, and print its speed next to numpy
(elements/ns, single thread, median of repeats)."""
import statistics
import time

import numpy as np

import softgen


def median_time(fn, budget=0.3):
    fn()
    times, end = [], time.perf_counter() + budget
    while len(times) < 5 or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main():
    rng = np.random.default_rng(0)
    rows, n = 1024, 1024
    x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
    x64 = x.astype(np.float64)
    ref = np.exp(x64 - x64.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    y = np.empty_like(x)
    t_np = median_time(lambda: numpy_softmax(x))
    print(f"softmax of {rows}x{n} float32 on {softgen.Target.parse('host').cpu} "
          f"({softgen.Target.parse('host').vector_width} lanes)")
    print(f"{'numpy':>22}: {x.size / t_np / 1e9:6.2f} elements/ns")
    for algorithm in ("auto", *softgen.ALGORITHMS):
        softgen.softmax(x, algorithm=algorithm, out=y)  # compiles on the first call
        big = ref > 1e-30
        err = np.max(np.abs(y - ref)[big] / ref[big])
        t = median_time(lambda: softgen.softmax(x, algorithm=algorithm, out=y))
        print(f"{algorithm:>22}: {x.size / t / 1e9:6.2f} elements/ns  "
              f"({t_np / t:4.1f}x numpy, max rel. error {err:.1e})")


if __name__ == "__main__":
    main()
