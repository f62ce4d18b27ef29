"""Wall-clock timing of a call, shared by the tuner and the benchmarks."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], budget: float = 0.5, min_reps: int = 3,
                max_reps: int = 200) -> float:
    """Median wall time of fn() after one warm-up call, repeating for about `budget` seconds."""
    fn()
    times = []
    stop = time.perf_counter() + budget
    while len(times) < min_reps or (time.perf_counter() < stop and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
