"""Row-parallel calls: a kernel's rows split into contiguous ranges, run on a persistent
pool of worker threads with the calling thread doing one range itself.

The kernels are called through ctypes.CFUNCTYPE, which releases the GIL for the call, so
the ranges run at the same time.  The number of threads is `threads=` of a call, else
set_num_threads(n), else the environment variable SOFTGEN_NUM_THREADS, else the cores this
process may run on.  No oversubscription: a call made on one of the pool's workers runs on
one thread, and a caller that finds no idle worker runs the range it would have handed
over itself rather than queue behind other callers.
"""
from __future__ import annotations

import _thread
import operator
import os
import queue
import sys
import threading

from .version import __version__

ENV = "SOFTGEN_NUM_THREADS"

# Model of when splitting pays: handing a range to a sleeping worker costs about
# DISPATCH_SECONDS (queue put, futex wake, the worker's first touch of its rows; measured
# ~10-30 us on a 2-core x86 VM, benchmarks/threads.py --dispatch), and softgen's kernels
# run at 1-4 elements/ns in cache.  A range is worth a thread when its work is several
# times that cost: MIN_ELEMENTS_PER_THREAD elements (~64-256 us of work at those speeds).
# Smaller calls stay on the calling thread and pay only one integer comparison.
MIN_ELEMENTS_PER_THREAD = 1 << 18
CACHE_LINE = 64


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_threads(threads, who: str) -> int:
    """threads= as given, checked: a positive integer (ValueError or TypeError naming `who`)."""
    try:
        if isinstance(threads, bool):
            raise TypeError
        threads = operator.index(threads)
    except TypeError:
        raise TypeError(f"{who}(): threads must be a positive integer or None, not {type(threads).__name__}") from None
    if threads < 1:
        raise ValueError(f"{who}(): threads must be at least 1, got {threads}")
    return threads


def _from_environment() -> int:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return available_cores()
    try:
        return check_threads(int(value), ENV)
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: expected a positive integer") from None


_num_threads = _from_environment()
# The size from which a call with threads=None splits (sys.maxsize: never, on one thread);
# read on every call, so kept precomputed.
parallel_from = MIN_ELEMENTS_PER_THREAD * 2 if _num_threads > 1 else sys.maxsize


def set_num_threads(n: int) -> None:
    """The number of threads calls use by default (threads=None); 1 turns splitting off."""
    global _num_threads, parallel_from
    _num_threads = check_threads(n, "set_num_threads")
    parallel_from = MIN_ELEMENTS_PER_THREAD * 2 if _num_threads > 1 else sys.maxsize


def get_num_threads() -> int:
    return _num_threads


def threadpool_info() -> list[dict]:
    """softgen's pool as threadpoolctl describes a library's (one entry)."""
    return [{"user_api": "softgen", "internal_api": "softgen", "prefix": "softgen", "filepath": __file__,
             "version": __version__, "num_threads": _num_threads, "workers_started": _pool.started,
             "min_elements_per_thread": MIN_ELEMENTS_PER_THREAD}]


_local = threading.local()


def in_worker() -> bool:
    """Whether this thread is one of the pool's workers (whose calls run on one thread)."""
    return getattr(_local, "worker", False)


class _Pool:
    """Worker threads started on first need and kept; `idle` counts those free to take a
    range, so a caller hands a worker a range only when one will start on it at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tasks = queue.SimpleQueue()
        self.idle = 0
        self.started = 0

    def claim(self, wanted: int, size: int) -> int:
        """Reserve up to `wanted` idle workers, growing the pool to `size` workers."""
        with self.lock:
            for _ in range(min(wanted - self.idle, size - self.started)):
                threading.Thread(target=self._work, name=f"softgen-{self.started}", daemon=True).start()
                self.started += 1
                self.idle += 1
            claimed = min(wanted, self.idle)
            self.idle -= claimed
            return claimed

    def submit(self, fn, args: tuple, done, errors: list) -> None:
        self.tasks.put((fn, args, done, errors))

    def _work(self) -> None:
        _local.worker = True
        while True:
            fn, args, done, errors = self.tasks.get()
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                errors.append(e)
            with self.lock:
                self.idle += 1
            done.release()


_pool = _Pool()


def _reset_after_fork() -> None:
    """A forked child has none of the parent's threads: start a pool of its own."""
    global _pool
    _pool = _Pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def thread_count(rows: int, n: int, unit: int, threads: int | None) -> int:
    """How many threads a call over [rows, n] takes: `threads` (None: the default) capped so
    each has MIN_ELEMENTS_PER_THREAD elements and a range of whole `unit`s of rows; one
    on a worker thread."""
    wanted = _num_threads if threads is None else threads
    if wanted < 2 or in_worker():
        return 1
    return max(1, min(wanted, rows * n // MIN_ELEMENTS_PER_THREAD, -(-rows // unit)))


def row_unit(rows_per_group: int, y_row_bytes: int) -> int:
    """Rows per unit of splitting: whole groups of the kernel's rows (so each row goes
    through the same code as on one thread: the results are bitwise those of one thread),
    and whole cache lines of y where rows are shorter than a line (no line written by two
    threads when y is line-aligned).  Both are powers of 2: the larger is a multiple of the other."""
    lines = CACHE_LINE // (y_row_bytes & -y_row_bytes) if y_row_bytes and y_row_bytes % CACHE_LINE else 1
    return max(rows_per_group, lines)


def ranges(rows: int, unit: int, count: int) -> list[tuple[int, int]]:
    """`count` contiguous (start, stop) row ranges covering rows, each a whole number of
    units but the last, as even as that allows."""
    units = -(-rows // unit)
    bounds = [min(rows, (units * i // count) * unit) for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(count) if bounds[i] < bounds[i + 1]]


def run_rows(fn, rows: int, n: int, x: int, x_stride: int, x_itemsize: int, y: int, y_stride: int,
             y_itemsize: int, unit: int, threads: int | None) -> None:
    """fn(rows, n, x, x_stride, y, y_stride) (a kernel's C ABI: addresses, strides in
    elements) over ranges of the rows on up to `threads` threads (None: the default)."""
    count = thread_count(rows, n, unit, threads)
    if count < 2:
        fn(rows, n, x, x_stride, y, y_stride)
        return
    calls = [(stop - start, n, x + start * x_stride * x_itemsize, x_stride, y + start * y_stride * y_itemsize,
              y_stride) for start, stop in ranges(rows, unit, count)]
    run_calls(fn, calls)


def run_calls(fn, calls: list[tuple]) -> None:
    """fn(*args) for each of `calls`: the first on this thread, the others on idle workers
    (on this thread too when the pool has none idle), returning when all are done."""
    pool = _pool
    helpers = pool.claim(len(calls) - 1, max(_num_threads, len(calls)) - 1)
    handed, errors = [], []
    for args in calls[1:1 + helpers]:
        done = _thread.allocate_lock()
        done.acquire()
        pool.submit(fn, args, done, errors)
        handed.append(done)
    for args in calls[:1] + calls[1 + helpers:]:
        fn(*args)
    for done in handed:
        done.acquire()
    if errors:
        raise errors[0]
