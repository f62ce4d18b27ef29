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
import ctypes
import operator
import os
import sys
import threading
import warnings

import llvmlite.binding as llvm

from .targets import Target
from .version import __version__

ENV = "SOFTGEN_NUM_THREADS"

# When splitting pays (benchmarks/threads.py --dispatch measures the costs): handing a
# range to a spinning worker costs the caller D ~ 4-7 us (two ctypes calls, a lock, the
# slot's cache line moving between cores; 2-core x86 VM), and softgen's kernels run at
# s ~ 3-5 elements/ns in cache.  A call of E elements on t threads then takes about
# E / (t s) + D against E / s: for the overhead to stay near a tenth of a range, a range
# needs E / (t s) >~ 8 D ~ 40 us, i.e. 2^17 elements (1.8x on two threads).  Below
# 2 * MIN_ELEMENTS_PER_THREAD a call stays on the calling thread, at the cost of one
# comparison.  A worker asleep (idle > ~1 ms) costs ~50 us more to wake, once; the caller
# does not wait for it (it takes the range back).
MIN_ELEMENTS_PER_THREAD = 1 << 17
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
    """SOFTGEN_NUM_THREADS, else the cores available; a value that is not a positive
    integer is reported and ignored (an import does not fail on it)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            return check_threads(int(value), ENV)
        except ValueError:
            warnings.warn(f"{ENV}={value!r} is not a positive integer: ignored", RuntimeWarning, stacklevel=2)
    return available_cores()


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


# --- the native hand-off ---------------------------------------------------------------------
# Waking a sleeping thread costs 30-60 us on a VM (a futex wake is an inter-processor
# interrupt through the hypervisor; a lock ping-pong between two cores here: ~65 us), and
# a worker that needed the GIL to pick up a range would wait on it behind the caller.  So
# workers spin in native code with the GIL released: a range is posted to a worker's slot
# (state, function, the six arguments) and the worker calls the kernel itself; only after
# SPINS idle rounds (~1 ms) does it return to Python and sleep on a lock.  A worker that has
# not started its range when the caller finishes its own (asleep, or its core busy with
# another process) loses it: the caller takes it back and runs it, so a call never waits
# on a wake-up or a scheduler.

POSTED, DONE, TAKEN_BACK, RUNNING = 1, 2, 3, 4  # a slot's states (0: never posted)
SPINS = 1 << 15  # pause instructions: ~1 ms on x86 (a pause is 10-140 cycles)

_NATIVE_IR = """
define void @softgen_post(ptr %slot, i64 %fn, i64 %a0, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
  %p1 = getelementptr i64, ptr %slot, i64 1
  store i64 %fn, ptr %p1
  %p2 = getelementptr i64, ptr %slot, i64 2
  store i64 %a0, ptr %p2
  %p3 = getelementptr i64, ptr %slot, i64 3
  store i64 %a1, ptr %p3
  %p4 = getelementptr i64, ptr %slot, i64 4
  store i64 %a2, ptr %p4
  %p5 = getelementptr i64, ptr %slot, i64 5
  store i64 %a3, ptr %p5
  %p6 = getelementptr i64, ptr %slot, i64 6
  store i64 %a4, ptr %p6
  %p7 = getelementptr i64, ptr %slot, i64 7
  store i64 %a5, ptr %p7
  store atomic i64 1, ptr %slot release, align 8
  ret void
}

define void @softgen_spin(ptr %slot, i64 %spins) {
entry:
  br label %loop
loop:
  %left = phi i64 [ %spins, %entry ], [ %spins, %run ], [ %next, %idle ]
  %state = load atomic i64, ptr %slot acquire, align 8
  %posted = icmp eq i64 %state, 1
  br i1 %posted, label %take, label %idle
take:
  %taken = cmpxchg ptr %slot, i64 1, i64 4 acq_rel monotonic
  %ours = extractvalue { i64, i1 } %taken, 1
  br i1 %ours, label %run, label %idle
run:
  %p1 = getelementptr i64, ptr %slot, i64 1
  %fn = load i64, ptr %p1
  %p2 = getelementptr i64, ptr %slot, i64 2
  %a0 = load i64, ptr %p2
  %p3 = getelementptr i64, ptr %slot, i64 3
  %a1 = load i64, ptr %p3
  %p4 = getelementptr i64, ptr %slot, i64 4
  %a2 = load i64, ptr %p4
  %p5 = getelementptr i64, ptr %slot, i64 5
  %a3 = load i64, ptr %p5
  %p6 = getelementptr i64, ptr %slot, i64 6
  %a4 = load i64, ptr %p6
  %p7 = getelementptr i64, ptr %slot, i64 7
  %a5 = load i64, ptr %p7
  %f = inttoptr i64 %fn to ptr
  %x = inttoptr i64 %a2 to ptr
  %y = inttoptr i64 %a4 to ptr
  call void %f(i64 %a0, i64 %a1, ptr %x, i64 %a3, ptr %y, i64 %a5)
  store atomic i64 2, ptr %slot release, align 8
  br label %loop
idle:
  PAUSE
  %next = sub i64 %left, 1
  %more = icmp sgt i64 %next, 0
  br i1 %more, label %loop, label %out
out:
  ret void
}

define i64 @softgen_finish(ptr %slot, i64 %spins) {
entry:
  %back = cmpxchg ptr %slot, i64 1, i64 3 acq_rel acquire
  %not_started = extractvalue { i64, i1 } %back, 1
  br i1 %not_started, label %taken_back, label %loop
taken_back:
  ret i64 3
loop:
  %left = phi i64 [ %spins, %entry ], [ %next, %idle ]
  %state = load atomic i64, ptr %slot acquire, align 8
  %done = icmp eq i64 %state, 2
  br i1 %done, label %finished, label %idle
idle:
  PAUSE
  %next = sub i64 %left, 1
  %more = icmp sgt i64 %next, 0
  br i1 %more, label %loop, label %running
finished:
  ret i64 2
running:
  ret i64 4
}
"""

# a spin-wait hint where the architecture has one (lets the other hyperthread run)
_PAUSE = {"x86_64": ("call void @llvm.x86.sse2.pause()", "declare void @llvm.x86.sse2.pause()"),
          "aarch64": ("call void @llvm.aarch64.hint(i32 1)", "declare void @llvm.aarch64.hint(i32)")}


class _Native:
    """softgen_post / softgen_spin / softgen_finish JIT-compiled for the host, as ctypes
    functions (CFUNCTYPE: the GIL is released while they run)."""

    def __init__(self):
        target = Target.parse("host")
        call, declaration = _PAUSE.get(target.arch, ("", ""))
        text = _NATIVE_IR.replace("PAUSE", call) + declaration
        self._lljit = llvm.create_lljit_compiler(target.create_target_machine(jit=True))
        names = ("softgen_post", "softgen_spin", "softgen_finish")
        builder = llvm.JITLibraryBuilder().add_ir(text)
        for name in names:
            builder.export_symbol(name)
        self._library = builder.link(self._lljit, "softgen_threads")
        i64, p = ctypes.c_int64, ctypes.c_void_p
        self.post = ctypes.CFUNCTYPE(None, p, *(i64,) * 7)(self._library["softgen_post"])
        self.spin = ctypes.CFUNCTYPE(None, p, i64)(self._library["softgen_spin"])
        self.finish = ctypes.CFUNCTYPE(i64, p, i64)(self._library["softgen_finish"])


class _Worker:
    """A worker thread and its slot: state, then the function and its six arguments, on
    a cache line of its own."""

    def __init__(self, pool: "_Pool", index: int):
        self._memory = (ctypes.c_int64 * 16)()
        self.slot = (-ctypes.addressof(self._memory) % CACHE_LINE + ctypes.addressof(self._memory))
        self.state = ctypes.c_int64.from_address(self.slot)
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.sleeping = False
        threading.Thread(target=pool.work, args=(self,), name=f"softgen-{index}", daemon=True).start()


class _Pool:
    """Workers started on first need and kept; the idle ones listed, so a caller hands a
    range only to a worker that will start on it at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.started = 0
        self.native = None

    def claim(self, wanted: int, size: int) -> list[_Worker]:
        """Up to `wanted` idle workers, growing the pool to `size` workers."""
        with self.lock:
            if self.native is None:
                self.native = _Native()
            while len(self.idle) < wanted and self.started < size:
                self.idle.append(_Worker(self, self.started))
                self.started += 1
            # the last listed were the last to finish: the likeliest to be spinning still
            claimed = self.idle[len(self.idle) - min(wanted, len(self.idle)):]
            del self.idle[len(self.idle) - len(claimed):]
            return claimed

    def post(self, worker: _Worker, fn_address: int, args: tuple) -> None:
        self.native.post(worker.slot, fn_address, *args)
        with self.lock:
            if worker.sleeping:
                worker.sleeping = False
                worker.wake.release()

    def finish(self, worker: _Worker, fn, args: tuple) -> None:
        """The range posted to worker done: by the worker if it has started it (waiting,
        and yielding this core now and then in case the worker is queued on it), else
        here."""
        state = self.native.finish(worker.slot, SPINS >> 4)
        while state == RUNNING:
            os.sched_yield()
            state = self.native.finish(worker.slot, SPINS >> 4)
        if state == TAKEN_BACK:
            fn(*args)
        with self.lock:
            self.idle.append(worker)

    def work(self, worker: _Worker) -> None:
        _local.worker = True
        while True:
            self.native.spin(worker.slot, SPINS)  # runs the ranges posted while it spins
            with self.lock:
                if worker.state.value == POSTED:  # posted as the spinning ended
                    continue
                worker.sleeping = True
            worker.wake.acquire()


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
    and where y's rows are shorter than a cache line, whole lines of them (no line written
    by two threads when y is line-aligned; a longer row shares at most one line with the
    next range, a small part of a range).  Both are powers of 2: the larger is a multiple
    of the other."""
    if y_row_bytes >= CACHE_LINE or y_row_bytes <= 0:
        return rows_per_group
    return max(rows_per_group, CACHE_LINE // (y_row_bytes & -y_row_bytes))


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
    """fn(*args) for each of `calls` (fn a ctypes function of the kernels' C ABI): the first
    on this thread, the others on idle workers (on this thread too when the pool has none
    idle), returning when all are done."""
    pool = _pool
    workers = pool.claim(len(calls) - 1, max(_num_threads, len(calls)) - 1)
    fn_address = ctypes.cast(fn, ctypes.c_void_p).value
    for worker, args in zip(workers, calls[1:]):
        pool.post(worker, fn_address, args)
    for args in calls[:1] + calls[1 + len(workers):]:
        fn(*args)
    for worker, args in zip(workers, calls[1:]):
        pool.finish(worker, fn, args)
