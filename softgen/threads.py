"""Row-parallel calls: a kernel's rows cut into chunks that the calling thread and a
persistent pool of worker threads take in turn.

The kernels are called through ctypes.CFUNCTYPE, which releases the GIL for the call, and
the workers call them from native code, so the chunks run at the same time.  The number of
threads is `threads=` of a call, else set_num_threads(n), else the environment variable
SOFTGEN_NUM_THREADS, else the cores this process may run on.  No oversubscription: a call
made on one of the pool's workers runs on one thread, and a caller that finds no idle
worker runs its chunks itself rather than queue behind other callers.
"""
from __future__ import annotations

import _thread
import ctypes
import operator
import os
import re
import sys
import threading
import warnings

from .backends.llvm.host import HOST
from .targets import Target
from .version import __version__

ENV = "SOFTGEN_NUM_THREADS"

# When splitting pays (benchmarks/threads.py --dispatch measures the costs): handing a job
# to a spinning worker costs the caller D ~ 2 us since one native call posts, helps and
# waits (two tiny kernel calls take 1.7 us inline, 2.1 us as two chunks on two threads, 4.3
# us before; 2-core x86 VM), and softgen's kernels run at s ~ 3-5 elements/ns in cache.  A
# call of E elements on t threads takes about E / (t s) + D against E / s, so splitting
# breaks even at E / t ~ D s ~ 10^4 elements; for the hand-off to stay under a tenth of a
# thread's share (the way to 1.8x on two threads) the share must be >~ 10 D ~ 20 us:
# MIN_ELEMENTS_PER_THREAD = 2^16 elements.  Measured with it lower (softmax float32 out=,
# 2 threads against 1, 15 interleaved rounds, median): 2048x64 1.47x, 512x256 1.32x,
# 1 x 2^17 (split) 1.29x, 1024x64 1.38x, 1 x 2^16 (split) 1.02x.  Below
# 2 * MIN_ELEMENTS_PER_THREAD a call stays on the calling thread, at the cost of one
# comparison.  A worker asleep (idle > ~1 ms) costs ~30 us more to wake, once; the caller
# does not wait for it (it takes the chunks itself).
MIN_ELEMENTS_PER_THREAD = 1 << 16
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


class _Local(threading.local):
    worker = False   # (a class attribute: a third of the cost of getattr with a default)


_local = _Local()


def in_worker() -> bool:
    """Whether this thread is one of the pool's workers (whose calls run on one thread)."""
    return _local.worker


# --- the native hand-off ---------------------------------------------------------------------
# Waking a sleeping thread costs 30-60 us on a VM (a futex wake is an inter-processor
# interrupt through the hypervisor; a lock ping-pong between two cores here: ~65 us), and
# a worker that needed the GIL to pick up work would wait on it behind the caller.  So
# workers spin in native code with the GIL released: a call's job (the kernel, its
# arguments, a counter of the next row) is posted to the workers' slots, and the caller and
# the workers take chunks of rows off the counter and call the kernel on them natively
# until none is left.  The caller claims idle workers (a list's pop, chained through their
# slots) and one native call (softgen_run) posts the job to them, runs the caller's part
# and waits for theirs.  A worker that goes to sleep marks its slot so; a post that finds
# the mark returns to Python first, which wakes the worker (softgen_join then helps and
# waits).  Chunks are guided (OpenMP's schedule(guided)): each takes a share of
# the rows left, 1 / (2 * threads), so the first are long (a kernel's row pipeline runs on
# many groups) and the last short (the threads finish together), down to MIN_CHUNK_ELEMENTS.  A worker returns to Python and sleeps on a
# lock only after SPINS idle rounds (~1 ms).  A worker that is slow to start (asleep, or its
# core busy with another process) takes no chunk, and one preempted holds up at most the
# chunk it is on: a call never waits on a wake-up.  Split rows (softgen.split) post one job
# per call too: a plan of steps (passes, merges) that every thread taking part runs in order.
# Measured without gain (softmax float32 on 2 threads, 4096x64 and 1024x1024, interleaved
# A/B in one process): home ranges (each thread first takes chunks of a fixed range of its
# own, so rows keep their core from call to call) 0.95-0.97x of the one counter (~1 us of
# it their Python); workers and caller pinned to distinct cores 1.00x; MIN_CHUNK_ELEMENTS
# 2^11 or 2^13 0.98-1.01x.  Two threads pinned to fixed halves with no hand-off reach
# ~1.9x (benchmarks/threads.py --ceiling); what a call loses below that is mostly its
# Python.  Posting, helping and waiting in one native call, with the job's memory kept per
# call shape (a split plan's too, its table rewritten natively), cut what threads=2 adds to
# a call's Python from 5.4-6.3 us to 1.8-2.0 us (a 64x64 call forced onto two threads
# against threads=1), and the hand-off (--dispatch: two tiny chunks on two threads) from
# 4.5 us to 2.1 us, against 1.7 us inline.  2 threads / 1 (medians of 8 runs of 9 rounds,
# both versions interleaved in one process; quartiles): 4096x64 out= 1.48x (1.29-1.52) ->
# 1.66x (1.51-1.71), allocating 1.44x (1.34-1.47) -> 1.58x (1.47-1.66), 1024x1024
# 1.74x (1.69-1.80) -> 1.81x (1.70-1.85), 1 x 2^20 1.58x (1.36-1.70) -> 1.76x (1.46-1.81).
# With another process busy on both cores every version ran slower on two threads than on
# one (1024x1024 more so with these changes, measured before the asleep mark: 0.28-0.86x
# against 0.49-0.86x; not explained).

# a slot's states, as the native code spells them: 1 posted, 2 done, 3 taken back by the
# caller (never started), 4 running, 5 asleep (or about to be: waits to be woken); 0 never
# posted.  Its fields NEXT_WORKER: the slot of the next worker a call posts its job to (0:
# the last); WOKEN: 1 when the post found it asleep (the caller wakes it).  A caller waits
# only while its post is running (4): a worker done with it may be asleep before the caller
# looks.
ASLEEP, NEXT_WORKER, WOKEN = 5, 2, 3
SPINS = 1 << 15  # pause instructions: ~1 ms on x86 (a pause is 10-140 cycles)
# softgen_wait's spins on a worker still running before it returns to Python (which yields
# this core in case the worker is queued on it)
WAIT_SPINS = SPINS >> 4
MIN_CHUNK_ELEMENTS = 1 << 15  # ~10 us of work: the ~0.1 us a chunk costs is lost in it
# a job's fields (int64s); the row counter on a cache line of its own.  HELP: the native
# function every thread runs on the job (softgen_help for rows, softgen_tasks_K for tasks)
NEXT, FN, ROWS, N, X, X_STRIDE, X_ROW_BYTES, Y, Y_STRIDE, Y_ROW_BYTES, UNIT, MIN_ROWS, SHARE = 0, *range(8, 20)  # (in a row)
HELP, TASKS, TABLE = 20, 21, 22   # TASKS calls of FN, each with its arguments in a row of TABLE
STEPS, STEP_TABLE, STOPPED = 23, 24, 25   # a plan of STEPS steps at STEP_TABLE; where it stopped
JOB_FIELDS = 26
JOB_SLOTS = 32   # JOB_FIELDS in whole cache lines (a plan's steps follow its job's fields)
# a plan's step: a header of STEP_SLOTS int64s (its counters NEXT, the next task to claim,
# and DONE, the tasks done, on different cache lines), TASKS calls of FN through INVOKE
# (softgen_call_<arity>), their arguments rows of ARG_BYTES at ARGS; then, if FLAGS is not
# 0, the guard's flags of FLAG_ROWS rows (a compute value each, FLAG_BYTES wide,
# FLAG_STRIDE bytes apart) read: any set stops the plan
(STEP_NEXT, STEP_INVOKE, STEP_FN, STEP_TASKS, STEP_ARGS, STEP_ARG_BYTES, STEP_FLAGS, STEP_FLAG_ROWS, STEP_FLAG_STRIDE,
 STEP_FLAG_BYTES) = range(10)
STEP_DONE, STEP_SLOTS = 16, 24

# the job's fields softgen_help reads, as the LLVM values it names them
_JOB_VALUES = {"fn.i": FN, "rows": ROWS, "n": N, "x": X, "xs": X_STRIDE, "xb": X_ROW_BYTES, "y": Y, "ys": Y_STRIDE,
               "yb": Y_ROW_BYTES, "unit": UNIT, "min": MIN_ROWS, "share": SHARE}


def _loads(base: str, values: dict) -> str:
    """IR loading the int64 fields `values` ({LLVM name: field index}) of the record at %base."""
    return "".join(f"  %{name}.p = getelementptr i64, ptr %{base}, i64 {field}\n  %{name} = load i64, ptr %{name}.p\n"
                   for name, field in values.items())


_JOB_LOADS = _loads("job", _JOB_VALUES)

# a spin loop's idle step: a pause, then `loop` again until %left runs out, then the exit
_IDLE = """idle:
  PAUSE
  %next = sub i64 %left, 1
  %more = icmp sgt i64 %next, 0
  br i1 %more, label %loop, label %\\1
"""

_NATIVE_IR = """
define void @softgen_help(ptr %job) {
entry:
JOB_LOADS  %fn = inttoptr i64 %fn.i to ptr
  br label %next
next:
  %r0 = load atomic i64, ptr %job monotonic, align 8
  %left = icmp slt i64 %r0, %rows
  br i1 %left, label %size, label %out
size:
  %rest = sub i64 %rows, %r0
  %part = udiv i64 %rest, %share
  %part.up = add i64 %part, %unit
  %units = udiv i64 %part.up, %unit
  %guided = mul i64 %units, %unit
  %small = icmp slt i64 %guided, %min
  %want = select i1 %small, i64 %min, i64 %guided
  %r1.full = add i64 %r0, %want
  %short = icmp slt i64 %rows, %r1.full
  %r1 = select i1 %short, i64 %rows, i64 %r1.full
  %claim = cmpxchg ptr %job, i64 %r0, i64 %r1 monotonic monotonic
  %ours = extractvalue { i64, i1 } %claim, 1
  br i1 %ours, label %chunk, label %next
chunk:
  %count = sub i64 %r1, %r0
  %xo = mul i64 %r0, %xb
  %xa = add i64 %x, %xo
  %xp = inttoptr i64 %xa to ptr
  %yo = mul i64 %r0, %yb
  %ya = add i64 %y, %yo
  %yp = inttoptr i64 %ya to ptr
  call void %fn(i64 %count, i64 %n, ptr %xp, i64 %xs, ptr %yp, i64 %ys)
  br label %next
out:
  ret void
}

define void @softgen_spin(ptr %slot, i64 %spins) {
entry:
  br label %loop
loop:
  %left = phi i64 [ %spins, %entry ], [ %spins, %run ], [ %next, %idle ], [ %spins, %tired ], [ %spins, %mark ]
  %state = load atomic i64, ptr %slot acquire, align 8
  %posted = icmp eq i64 %state, 1
  br i1 %posted, label %take, label %idle
take:
  %taken = cmpxchg ptr %slot, i64 1, i64 4 acq_rel monotonic
  %ours = extractvalue { i64, i1 } %taken, 1
  br i1 %ours, label %run, label %idle
run:
  %p = getelementptr i64, ptr %slot, i64 1
  %job.i = load i64, ptr %p
  %job = inttoptr i64 %job.i to ptr
  %help.p = getelementptr i64, ptr %job, i64 HELP_FIELD
  %help.i = load i64, ptr %help.p
  %help = inttoptr i64 %help.i to ptr
  call void %help(ptr %job)
  store atomic i64 2, ptr %slot release, align 8
  br label %loop
IDLE_THEN tired
tired:
  %seen = load atomic i64, ptr %slot acquire, align 8
  %late = icmp eq i64 %seen, 1
  br i1 %late, label %loop, label %mark
mark:
  %marked = cmpxchg ptr %slot, i64 %seen, i64 5 acq_rel monotonic
  %asleep = extractvalue { i64, i1 } %marked, 1
  br i1 %asleep, label %out, label %loop
out:
  ret void
}

define i64 @softgen_run(ptr %job, i64 %head, i64 %spins) {
entry:
  %job.i = ptrtoint ptr %job to i64
  br label %post
post:
  %s = phi i64 [ %head, %entry ], [ %s.next, %posting ]
  %asleep = phi i1 [ false, %entry ], [ %asleep.next, %posting ]
  %more = icmp ne i64 %s, 0
  br i1 %more, label %posting, label %posted
posting:
  %slot = inttoptr i64 %s to ptr
  %job.p = getelementptr i64, ptr %slot, i64 1
  store i64 %job.i, ptr %job.p
  %was = atomicrmw xchg ptr %slot, i64 1 acq_rel
  %slept = icmp eq i64 %was, 5
  %woken.p = getelementptr i64, ptr %slot, i64 WOKEN
  %slept.i = zext i1 %slept to i64
  store i64 %slept.i, ptr %woken.p
  %asleep.next = or i1 %asleep, %slept
  %after.p = getelementptr i64, ptr %slot, i64 NEXT_WORKER
  %s.next = load i64, ptr %after.p
  br label %post
posted:
  br i1 %asleep, label %wake, label %join
wake:
  ret i64 -1
join:
  %running = call i64 @softgen_join(ptr %job, i64 %head, i64 %spins)
  ret i64 %running
}

define i64 @softgen_join(ptr %job, i64 %head, i64 %spins) {
  %help.p = getelementptr i64, ptr %job, i64 HELP_FIELD
  %help.i = load i64, ptr %help.p
  %help = inttoptr i64 %help.i to ptr
  call void %help(ptr %job)
  %running = call i64 @softgen_wait(i64 %head, i64 %spins)
  ret i64 %running
}

define i64 @softgen_wait(i64 %head, i64 %spins) {
entry:
  br label %worker
worker:
  %s = phi i64 [ %head, %entry ], [ %s.next, %finished ]
  %any = icmp ne i64 %s, 0
  %slot = inttoptr i64 %s to ptr
  br i1 %any, label %back, label %all
back:
  %back.r = cmpxchg ptr %slot, i64 1, i64 3 acq_rel acquire
  %not_started = extractvalue { i64, i1 } %back.r, 1
  br i1 %not_started, label %finished, label %loop
loop:
  %left = phi i64 [ %spins, %back ], [ %next, %idle ]
  %state = load atomic i64, ptr %slot acquire, align 8
  %done = icmp ne i64 %state, 4
  br i1 %done, label %finished, label %idle
IDLE_THEN running
finished:
  %after.p = getelementptr i64, ptr %slot, i64 NEXT_WORKER
  %s.next = load i64, ptr %after.p
  br label %worker
all:
  ret i64 0
running:
  ret i64 %s
}
"""

# a plan's table made from its template: table[i] = offset[i] + bases[base[i]] (the bases:
# the table's own address, x, y, the call's operands), every counter back to its start
_PATCH_IR = """
define void @softgen_patch(ptr %table, ptr %offset, ptr %base, i64 %count, ptr %bases) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i.next, %slot ]
  %more = icmp slt i64 %i, %count
  br i1 %more, label %slot, label %out
slot:
  %o.p = getelementptr i64, ptr %offset, i64 %i
  %o = load i64, ptr %o.p
  %b.p = getelementptr i64, ptr %base, i64 %i
  %b = load i64, ptr %b.p
  %v.p = getelementptr i64, ptr %bases, i64 %b
  %v = load i64, ptr %v.p
  %sum = add i64 %o, %v
  %t.p = getelementptr i64, ptr %table, i64 %i
  store i64 %sum, ptr %t.p
  %i.next = add i64 %i, 1
  br label %loop
out:
  ret void
}
"""


# a task job's helper for kernels of `arity` arguments (softgen's ABI: rows, n, then pairs
# of a pointer and a stride): the threads take the next task off the counter until none is
# left
_TASKS_IR = """
define void @softgen_tasks_ARITY(ptr %job) {
entry:
TASK_LOADS  %fn = inttoptr i64 %fn.i to ptr
  %table = inttoptr i64 %table.i to ptr
  br label %next
next:
  %i = atomicrmw add ptr %job, i64 1 monotonic
  %more = icmp slt i64 %i, %count
  br i1 %more, label %task, label %out
task:
  %first = mul i64 %i, ARITY
  %args = getelementptr i64, ptr %table, i64 %first
ARG_LOADS  call void %fn(CALL_ARGS)
  br label %next
out:
  ret void
}
"""


# a plan's runner: every thread taking part (the caller, and each worker however late) runs
# the steps in order: it claims the step's tasks until none is left, counts those it ran
# in DONE (release: their stores seen by whoever reads DONE), then waits for all to be
# done before the next step.  A late thread finds every task claimed and passes through,
# so no thread waits for another to wake.  After a step with flags, every thread reads the
# same flags: if any is set (its sign ignored) they all stop, storing the step in STOPPED.
_STEPS_IR = """
define void @softgen_steps(ptr %job) {
entry:
PLAN_LOADS  %table = inttoptr i64 %table.i to ptr
  br label %step
step:
  %s = phi i64 [ 0, %entry ], [ %s.next, %passed ]
  %more = icmp slt i64 %s, %count
  br i1 %more, label %open, label %out
open:
  %h.o = mul i64 %s, SLOTS
  %h = getelementptr i64, ptr %table, i64 %h.o
HEADER_LOADS  %next.p = getelementptr i64, ptr %h, i64 NEXT
  %done.p = getelementptr i64, ptr %h, i64 DONE
  br label %claim
claim:
  %i = atomicrmw add ptr %next.p, i64 1 monotonic
  %mine = icmp slt i64 %i, %tasks
  br i1 %mine, label %task, label %wait
task:
  %a.o = mul i64 %i, %arg_bytes
  %a.i = add i64 %args.i, %a.o
  %a = inttoptr i64 %a.i to ptr
  call void %invoke(ptr %fn, ptr %a)
  %ignored = atomicrmw add ptr %done.p, i64 1 release
  br label %claim
wait:
  %done = load atomic i64, ptr %done.p acquire, align 8
  %all = icmp eq i64 %done, %tasks
  br i1 %all, label %check, label %pause
pause:
  PAUSE
  br label %wait
check:
  %unflagged = icmp eq i64 %flags, 0
  %wide = icmp eq i64 %flag_bytes, 8
  br i1 %unflagged, label %passed, label %row
row:
  %r = phi i64 [ 0, %check ], [ %r.next, %clear ]
  %rows.left = icmp slt i64 %r, %flag_rows
  br i1 %rows.left, label %look, label %passed
look:
  %f.o = mul i64 %r, %flag_stride
  %f.i = add i64 %flags, %f.o
  %f = inttoptr i64 %f.i to ptr
  br i1 %wide, label %look64, label %look32
look64:
  %v64 = load i64, ptr %f
  %m64 = shl i64 %v64, 1
  br label %seen
look32:
  %v32 = load i32, ptr %f
  %m32.narrow = shl i32 %v32, 1
  %m32 = zext i32 %m32.narrow to i64
  br label %seen
seen:
  %m = phi i64 [ %m64, %look64 ], [ %m32, %look32 ]
  %zero = icmp eq i64 %m, 0
  %r.next = add i64 %r, 1
  br i1 %zero, label %clear, label %stop
clear:
  br label %row
stop:
  %stopped.p = getelementptr i64, ptr %job, i64 STOPPED_FIELD
  store i64 %s, ptr %stopped.p
  ret void
passed:
  %s.next = add i64 %s, 1
  br label %step
out:
  ret void
}
"""

# the header's fields softgen_steps reads, as the LLVM values it names them
_STEP_VALUES = {"tasks": STEP_TASKS, "invoke.i": STEP_INVOKE, "fn.i": STEP_FN, "args.i": STEP_ARGS,
                "arg_bytes": STEP_ARG_BYTES, "flags": STEP_FLAGS, "flag_rows": STEP_FLAG_ROWS,
                "flag_stride": STEP_FLAG_STRIDE, "flag_bytes": STEP_FLAG_BYTES}


def _steps_ir(pause: str) -> str:
    """softgen_steps, `pause` its spin-wait hint."""
    loads = _loads("h", _STEP_VALUES) + "  %invoke = inttoptr i64 %invoke.i to ptr\n  %fn = inttoptr i64 %fn.i to ptr\n"
    text = _STEPS_IR.replace("HEADER_LOADS", loads).replace("PAUSE", pause)
    text = text.replace("PLAN_LOADS", _loads("job", {"count": STEPS, "table.i": STEP_TABLE}))
    return _fill(text, {"STOPPED_FIELD": STOPPED, "SLOTS": STEP_SLOTS, "NEXT": STEP_NEXT, "DONE": STEP_DONE})


def _fill(text: str, fields: dict) -> str:
    """text with each of the fields' names replaced by its value."""
    return re.sub("|".join(fields), lambda m: str(fields[m.group(0)]), text)


def _arguments(arity: int) -> tuple[str, str]:
    """(the loads of a kernel call's `arity` arguments from the int64s at %args, the call's
    argument list): the pointers (the third argument and every second one after it) as
    pointers."""
    loads, args = [], []
    for k in range(arity):
        loads.append(f"  %a{k}.p = getelementptr i64, ptr %args, i64 {k}\n  %a{k} = load i64, ptr %a{k}.p\n")
        if k >= 2 and k % 2 == 0:
            loads.append(f"  %p{k} = inttoptr i64 %a{k} to ptr\n")
            args.append(f"ptr %p{k}")
        else:
            args.append(f"i64 %a{k}")
    return "".join(loads), ", ".join(args)


def _tasks_ir(arity: int) -> str:
    """softgen_tasks_<arity>: each task's arguments loaded from its row of the table."""
    loads, args = _arguments(arity)
    text = _TASKS_IR.replace("ARG_LOADS", loads).replace("CALL_ARGS", args)
    text = text.replace("TASK_LOADS", _loads("job", {"fn.i": FN, "count": TASKS, "table.i": TABLE}))
    return _fill(text, {"ARITY": arity})


def _call_ir(arity: int) -> str:
    """softgen_call_<arity>(fn, args): fn called with the `arity` int64s at args (a plan's
    step calls its kernel through it, whatever the kernel's arity)."""
    loads, args = _arguments(arity)
    return (f"define void @softgen_call_{arity}(ptr %fn, ptr %args) {{\n{loads}"
            f"  call void %fn({args})\n  ret void\n}}\n")


# a spin-wait hint where the architecture has one (lets the other hyperthread run)
_PAUSE = {"x86_64": ("call void @llvm.x86.sse2.pause()", "declare void @llvm.x86.sse2.pause()"),
          "aarch64": ("call void @llvm.aarch64.hint(i32 1)", "declare void @llvm.aarch64.hint(i32)")}


class _Native:
    """The pool's functions JIT-compiled for the host (HOST): softgen_run, _join, _wait,
    _spin and _patch, as ctypes functions (CFUNCTYPE: the GIL is released while they run);
    the jobs' helpers softgen_help, _steps and _tasks_K as addresses (a job names its own)."""

    NAMES = ("softgen_help", "softgen_steps", "softgen_spin", "softgen_run", "softgen_join", "softgen_wait",
             "softgen_patch")

    def __init__(self):
        address = HOST.addresses("softgen_threads", _native_ir, self.NAMES)
        i64, p = ctypes.c_int64, ctypes.c_void_p
        self.help, self.steps = address["softgen_help"], address["softgen_steps"]
        self.spin = ctypes.CFUNCTYPE(None, p, i64)(address["softgen_spin"])
        self.run = ctypes.CFUNCTYPE(i64, p, i64, i64)(address["softgen_run"])
        self.join = ctypes.CFUNCTYPE(i64, p, i64, i64)(address["softgen_join"])
        self.wait = ctypes.CFUNCTYPE(i64, i64, i64)(address["softgen_wait"])
        self.patch = ctypes.CFUNCTYPE(None, i64, i64, i64, i64, p)(address["softgen_patch"])

    @staticmethod
    def _address(name: str, ir) -> int:
        """The address of function `name` of the IR text ir() (compiled on first use)."""
        return HOST.addresses(name, ir, (name,))[name]

    def tasks(self, arity: int) -> int:
        """softgen_tasks_<arity>'s address."""
        return self._address(f"softgen_tasks_{arity}", lambda: _tasks_ir(arity))

    def call(self, arity: int) -> int:
        """softgen_call_<arity>'s address (a plan's steps call kernels of `arity` arguments through it)."""
        return self._address(f"softgen_call_{arity}", lambda: _call_ir(arity))


def _native_ir() -> str:
    """The pool's own functions as IR text, with the host's spin-wait hint."""
    call, declaration = _PAUSE.get(Target.parse("host").arch, ("", ""))
    text = re.sub(r"IDLE_THEN (\w+)\n", _IDLE, _NATIVE_IR.replace("JOB_LOADS", _JOB_LOADS))
    text = _fill(text, {"HELP_FIELD": HELP, "NEXT_WORKER": NEXT_WORKER, "WOKEN": WOKEN})
    return text.replace("PAUSE", call) + _steps_ir(call) + _PATCH_IR + declaration


def first_line(memory) -> int:
    """The index of a ctypes int64 array's first element on a cache line."""
    return -ctypes.addressof(memory) % CACHE_LINE // 8


def _aligned_int64s(count: int) -> tuple[object, int]:
    """(owner, address): `count` zeroed int64s starting on a cache line (keep owner alive)."""
    memory = (ctypes.c_int64 * (count + CACHE_LINE // 8))()
    return memory, ctypes.addressof(memory) + 8 * first_line(memory)


class _Worker:
    """A worker thread and its slot (state, job, the next worker's slot of a call, whether
    that call found it asleep) on a cache line of its own."""

    def __init__(self, pool: "_Pool", index: int):
        self._memory, self.slot = _aligned_int64s(CACHE_LINE // 8)
        self.state = ctypes.c_int64.from_address(self.slot)
        self.next = ctypes.c_int64.from_address(self.slot + 8 * NEXT_WORKER)
        self.woken = ctypes.c_int64.from_address(self.slot + 8 * WOKEN)
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        threading.Thread(target=pool.work, args=(self,), name=f"softgen-{index}", daemon=True).start()


class _Pool:
    """Workers started on first need and kept; the idle ones listed, so a caller posts a job
    only to workers that no other call is using."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.started = 0

    def claim(self, wanted: int, size: int) -> tuple[list, int]:
        """Up to `wanted` idle workers, growing the pool to `size` workers, chained through
        their slots for softgen_run to post a job to: (the workers, the chain's first slot;
        0: none).  The list is taken from and given back to without the lock (a list's pop
        and extend are atomic)."""
        if len(self.idle) < wanted and self.started < size:
            self.grow(wanted, size)
        claimed, head = [], 0
        for _ in range(wanted):
            try:
                worker = self.idle.pop()   # the last listed were the last to finish: the likeliest to be spinning still
            except IndexError:
                break
            worker.next.value = head
            head = worker.slot
            claimed.append(worker)
        return claimed, head

    def grow(self, wanted: int, size: int) -> None:
        with self.lock:
            while len(self.idle) < wanted and self.started < size:
                self.idle.append(_Worker(self, self.started))
                self.started += 1

    @staticmethod
    def wake(workers: list) -> None:
        """The workers a post found asleep woken (to spin, where they find it)."""
        for worker in workers:
            if worker.woken.value:
                worker.woken.value = 0
                worker.wake.release()

    def release(self, workers: list) -> None:
        self.idle.extend(workers)

    @staticmethod
    def work(worker: _Worker) -> None:
        _local.worker = True
        while True:
            # runs the jobs posted while it spins; returns once it has marked its slot asleep,
            # after which the next post wakes it
            native_functions().spin(worker.slot, SPINS)
            worker.wake.acquire()


_native = None


def native_functions() -> _Native:
    """The pool's native functions (compiled on first use, once per process: HOST; a race
    wraps the same functions twice)."""
    global _native
    if _native is None:
        _native = _Native()
    return _native


_pool = _Pool()


def _reset_after_fork() -> None:
    """A forked child has none of the parent's threads: start a pool of its own."""
    global _pool
    _pool = _Pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def thread_count(rows: int, n: int, unit: int, threads: int | None) -> int:
    """How many threads a call over [rows, n] takes: `threads` (None: the default) capped so
    each has MIN_ELEMENTS_PER_THREAD elements and a whole `unit` of rows; one on a worker
    thread."""
    wanted = _num_threads if threads is None else threads
    if wanted < 2 or in_worker():
        return 1
    return max(1, min(wanted, rows * n // MIN_ELEMENTS_PER_THREAD, -(-rows // unit)))


# chunks of split rows per thread.  More would let the others take the rest of a thread slow
# to start, but each chunk costs a task and a merge: 1 x 2^20 softmax float32 on 2 threads
# ran 1.69x one thread's speed with one chunk per thread, 1.68x with two, 1.62x with four
# (benchmarks/threads.py's case, out= given; the split plan as one job)
SPLIT_CHUNKS_PER_THREAD = 1


def split_chunks(rows: int, n: int, threads: int | None) -> int:
    """Chunks per row for a call with fewer rows than threads (softgen.split): on the threads
    that get MIN_ELEMENTS_PER_THREAD each, SPLIT_CHUNKS_PER_THREAD chunks per thread of
    MIN_CHUNK_ELEMENTS or more; 1: no split."""
    wanted = _num_threads if threads is None else threads
    if wanted < 2 or rows >= wanted or in_worker():
        return 1
    count = min(wanted, rows * n // MIN_ELEMENTS_PER_THREAD)
    if count < 2:
        return 1
    return max(1, min(-(-count * SPLIT_CHUNKS_PER_THREAD // rows), n // MIN_CHUNK_ELEMENTS))


def row_unit(rows_per_group: int, y_row_bytes: int) -> int:
    """Rows per unit of splitting: whole groups of the kernel's rows (so each row goes
    through the same code as on one thread: the results are bitwise those of one thread),
    and where y's rows are shorter than a cache line, whole lines of them (no line written
    by two threads when y is line-aligned; a longer row shares at most one line with the
    next chunk, a small part of a chunk).  Both are powers of 2: the larger is a multiple
    of the other."""
    if y_row_bytes >= CACHE_LINE or y_row_bytes <= 0:
        return rows_per_group
    return max(rows_per_group, CACHE_LINE // (y_row_bytes & -y_row_bytes))


def min_chunk_rows(n: int, unit: int) -> int:
    """The shortest chunk: MIN_CHUNK_ELEMENTS, in whole units of rows."""
    return -(-max(1, MIN_CHUNK_ELEMENTS // max(n, 1)) // unit) * unit


def run_rows(fn, rows: int, n: int, x: int, x_stride: int, x_itemsize: int, y: int, y_stride: int,
             y_itemsize: int, unit: int, threads: int | None) -> None:
    """fn(rows, n, x, x_stride, y, y_stride) (a kernel's C ABI: addresses, strides in
    elements) over chunks of the rows on up to `threads` threads (None: the default).
    Chunks start on whole units of rows."""
    count = thread_count(rows, n, unit, threads)
    if count < 2:
        fn(rows, n, x, x_stride, y, y_stride)
        return
    run_row_job(fn, rows, n, (x, x_stride, x_itemsize), (y, y_stride, y_itemsize), unit, count)


def run_row_job(fn, rows: int, n: int, x: tuple, y: tuple, unit: int, count: int) -> None:
    """fn over [rows, n] (x and y as (address, row stride in elements, itemsize)) as a job
    on this thread and up to count - 1 idle workers, in chunks of whole units of rows.  The
    job's memory is kept per (fn, shape, unit, count), one for each caller at a time, so a
    call writes only x, y and the row counter: 0.15-0.25 us, against 1.4-1.8 us for a new
    job's memory and its fields written as one slice."""
    (xa, xs, xi), (ya, ys, yi) = x, y
    key = (id(fn), rows, n, xs, xi, ys, yi, unit, count)
    kept = _row_jobs.get(key)
    if kept is None:
        if len(_row_jobs) >= MAX_ROW_JOBS:
            _row_jobs.clear()
        kept = _row_jobs[key] = (fn, [])
    free = kept[1]
    kept_job = free.pop() if free else _row_job(fn, rows, n, xs, xs * xi, ys, ys * yi, unit, count)
    memory, at, job = kept_job
    memory[at + NEXT], memory[at + X], memory[at + Y] = 0, xa, ya
    _run_posted(job, count)
    free.append(kept_job)


# the row jobs kept: key -> (fn, kept alive while its id is in the key; the free jobs).  A
# program cycling through more shapes makes them again.
_row_jobs: dict = {}
MAX_ROW_JOBS = 64


def _row_job(fn, rows: int, n: int, xs: int, xb: int, ys: int, yb: int, unit: int, count: int) -> tuple:
    """A row job with every field but x and y written: (its memory, a ctypes int64 array;
    the index of its first field; its address)."""
    memory, job = _aligned_int64s(JOB_FIELDS)
    at = first_line(memory)
    memory[at + FN:at + SHARE + 1] = (_address_of(fn), rows, n, 0, xs, xb, 0, ys, yb, unit, min_chunk_rows(n, unit),
                                      2 * count)
    memory[at + HELP] = native_functions().help
    return memory, at, job


def _address_of(fn) -> int:
    """A ctypes function's address (half the cost of ctypes.cast(fn, c_void_p).value)."""
    return ctypes.c_void_p.from_buffer(fn).value


def run_row_tasks(fn, rows: int, n: int, x: tuple, y: tuple, operands: tuple, unit: int,
                  threads: int | None) -> None:
    """fn over [rows, n] with row operands (a kernel's C ABI; x, y and each operand as
    (address, row stride in elements, itemsize)) in equal chunks of whole units of rows,
    one task each, on up to `threads` threads."""
    count = thread_count(rows, n, unit, threads)
    step = -(-rows // count // unit) * unit
    tasks = []
    for r0 in range(0, rows, step):
        task = [min(step, rows - r0), n]
        for address, stride, itemsize in (x, y, *operands):
            task += [address + r0 * stride * itemsize, stride]
        tasks.append(task)
    run_tasks(fn, tasks, count)


def run_tasks(fn, tasks: list, threads: int) -> None:
    """fn(*task) (a kernel's C ABI: integers and addresses) for each task, on up to
    `threads` threads, each taking the next task in turn."""
    if threads < 2 or len(tasks) < 2 or in_worker():
        for task in tasks:
            fn(*task)
        return
    arity = len(tasks[0])
    table = (ctypes.c_int64 * (arity * len(tasks)))(*(a for task in tasks for a in task))
    memory, job = _aligned_int64s(JOB_FIELDS)
    at = first_line(memory)
    memory[at + FN], memory[at + HELP] = _address_of(fn), native_functions().tasks(arity)
    memory[at + TASKS:at + TABLE + 1] = len(tasks), ctypes.addressof(table)
    _run_posted(job, min(threads, len(tasks)))


def run_steps(job: int, threads: int) -> None:
    """A plan's job at address `job` (its fields HELP: softgen_steps, STEPS, STEP_TABLE,
    STOPPED: STEPS; its steps laid out by the caller, softgen.split) on this thread and up
    to threads - 1 idle workers.  A guard's flag that stops it leaves the step in STOPPED."""
    _run_posted(job, 1 if in_worker() else threads)


def _run_posted(job: int, threads: int) -> None:
    """The job posted to up to threads - 1 idle workers and its helper run on it here, in
    one native call (softgen_run) that returns once every worker is done with it (or at
    once when it found a worker asleep, for Python to wake it; then softgen_join)."""
    native = native_functions()
    if threads < 2:
        native.run(job, 0, 0)
        return
    pool = _pool
    workers, head = pool.claim(threads - 1, max(_num_threads, threads) - 1)
    running = native.run(job, head, WAIT_SPINS)
    if running < 0:   # some were asleep: woken before this thread starts on the job
        pool.wake(workers)
        running = native.join(job, head, WAIT_SPINS)
    while running:
        os.sched_yield()
        running = native.wait(running, WAIT_SPINS)
    pool.release(workers)
