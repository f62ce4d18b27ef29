"""Row-parallel calls (softgen.threads): results split over threads are bitwise those of
one thread (each row runs through the same kernel code), for every op, a few algorithms,
the dtypes, uneven row counts, strided inputs, out= and other axes; the thread settings
and their errors; no fan-out from a worker; concurrent callers.  Splitting is forced on
small arrays by lowering the size threshold."""
import ctypes
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import softgen
from softgen import scipy as sp
from softgen import threads
from softgen.lower import Schedule

SHAPES = [(1, 7), (2, 5000), (3, 100), (17, 1), (17, 5000), (1000, 7), (1000, 100)]
DTYPES = ["float32", "float64", "float16"]
KERNELS = [(op, "two_pass", dtype) for op in softgen.OPS for dtype in DTYPES]
KERNELS += [(op, "online", "float32") for op in softgen.OPS if "online" in softgen.ops.get(op).algorithms]


@pytest.fixture
def split_small(monkeypatch):
    """Split any call of two rows or more (threads=None too) by rows, never within rows
    (tests/test_split.py's subject); record each split's (rows, unit of rows, shortest chunk)."""
    monkeypatch.setattr(threads, "split_chunks", lambda rows, n, count: 1)
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 1)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(threads, "parallel_from", 2)
    monkeypatch.setattr(threads, "_num_threads", 3)
    splits = []
    run_row_job = threads.run_row_job

    def recording(fn, rows, n, x, y, unit, count):
        splits.append((rows, unit, threads.min_chunk_rows(n, unit)))
        run_row_job(fn, rows, n, x, y, unit, count)
    monkeypatch.setattr(threads, "run_row_job", recording)
    return splits


def data(shape, dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(dtype)


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(np.asarray(a).view(f"u{a.dtype.itemsize}"), np.asarray(b).view(f"u{b.dtype.itemsize}"))


@pytest.mark.parametrize("op,algorithm,dtype", KERNELS)
def test_split_rows_match_one_thread(split_small, op, algorithm, dtype):
    kernel = softgen.compile(op, algorithm=algorithm, dtype=dtype)
    for rows, n in SHAPES:
        x = data((rows, n), dtype)
        expected = kernel(x, threads=1)
        splits_before = len(split_small)
        assert_same_bits(kernel(x, threads=3), expected)
        assert_same_bits(kernel(x), expected)  # threads=None: the default (3 here)
        y_row_bytes = (1 if kernel.row_output else n) * kernel.out_dtype.itemsize
        unit = threads.row_unit(1, y_row_bytes)
        if rows > unit:  # more than one cache line of y: split
            assert len(split_small) == splits_before + 2
            total, chunk_unit, shortest = split_small[-1]
            assert total == rows and chunk_unit % unit == 0 and shortest % chunk_unit == 0


@pytest.mark.parametrize("op", softgen.OPS)
def test_row_groups_stay_whole(split_small, op):
    """With rows_per_group=16 every range but the last is whole groups: the same rows go
    through the grouped code as on one thread."""
    kernel = softgen.compile(op, algorithm="two_pass", schedule=Schedule(rows_per_group=16))
    for rows, n in [(17, 100), (50, 33), (1000, 64), (3, 100)]:
        x = data((rows, n), "float32", rows)
        expected = kernel(x, threads=1)
        assert_same_bits(kernel(x, threads=4), expected)
        if rows > 16:
            assert split_small[-1][1] % 16 == 0 and split_small[-1][2] % 16 == 0


@pytest.mark.parametrize("op", softgen.OPS)
def test_layouts_out_and_axes(split_small, op):
    kernel = softgen.compile(op, algorithm="two_pass")
    x = data((40, 2, 66), "float32")
    cases = [(x[:, 1, ::2], -1), (x[::3, 0], -1), (x[:, 0, :], 0), (x, (0, 2)), (x.transpose(2, 0, 1), 1)]
    for view, axis in cases:
        expected = kernel(view, axis, threads=1)
        assert_same_bits(kernel(view, axis, threads=3), expected)
        out = np.full(expected.shape + (2,), np.nan, np.float32)[..., 0]  # a strided out=
        assert kernel(view, axis, out=out, threads=3) is out
        assert_same_bits(out, expected)
    if op != "logsumexp":
        inplace = x[:, 0].copy()
        expected = kernel(inplace, threads=1)
        kernel(inplace, out=inplace, threads=3)
        assert_same_bits(inplace, expected)


def test_public_functions(split_small):
    x = data((64, 300), "float32")
    for fn in (softgen.softmax, softgen.log_softmax, softgen.logsumexp):
        assert_same_bits(fn(x, threads=2), fn(x, threads=1))
    assert_same_bits(softgen.softmax(x.T, axis=0, threads=2), softgen.softmax(x.T, axis=0, threads=1))
    assert_same_bits(softgen.softmax(x, dtype=np.float64, threads=2), softgen.softmax(x, dtype=np.float64, threads=1))
    assert_same_bits(softgen.logsumexp(x, keepdims=True, threads=2), softgen.logsumexp(x, keepdims=True, threads=1))
    for fn in (sp.softmax, sp.log_softmax, sp.logsumexp):
        assert_same_bits(fn(x, axis=1, threads=2), fn(x, axis=1, threads=1))
    w = np.abs(data((64, 300), "float32", 1))
    assert_same_bits(sp.logsumexp(x, axis=1, b=w, threads=2), sp.logsumexp(x, axis=1, b=w, threads=1))
    assert len(split_small) >= 6


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError),
                                       (True, TypeError)])
def test_bad_threads(bad, error):
    x = data((4, 8), "float32")
    kernel = softgen.compile("softmax", algorithm="two_pass")
    for call, name in [(lambda: softgen.softmax(x, threads=bad), "softmax"),
                       (lambda: softgen.logsumexp(x, keepdims=True, threads=bad), "logsumexp"),
                       (lambda: sp.logsumexp(x, threads=bad), "logsumexp"),
                       (lambda: kernel(x, threads=bad), "softmax"),
                       (lambda: softgen.set_num_threads(bad), "set_num_threads")]:
        with pytest.raises(error, match=rf"{name}\(\): threads must"):
            call()
    assert softgen.softmax(x, threads=np.int64(2)).shape == x.shape  # numpy integers are integers


def test_set_and_get_num_threads():
    before = softgen.get_num_threads()
    try:
        softgen.set_num_threads(5)
        assert softgen.get_num_threads() == 5
        info, = softgen.threadpool_info()
        assert info["num_threads"] == 5 and info["internal_api"] == "softgen" and info["user_api"] == "softgen"
        softgen.set_num_threads(1)
        assert threads.parallel_from == sys.maxsize  # one thread: no call splits
    finally:
        softgen.set_num_threads(before)


@pytest.mark.parametrize("value,expected", [("3", 3), ("", None), ("many", None), ("0", None)])
def test_environment_variable(value, expected):
    env = dict(os.environ, SOFTGEN_NUM_THREADS=value)
    code = "import softgen, softgen.threads as t; print(softgen.get_num_threads(), t.available_cores())"
    res = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    got, cores = map(int, res.stdout.split())
    assert got == (cores if expected is None else expected)
    assert ("SOFTGEN_NUM_THREADS" in res.stderr) == (value in ("many", "0"))


def test_default_is_the_available_cores():
    if "SOFTGEN_NUM_THREADS" not in os.environ:
        assert softgen.get_num_threads() == len(os.sched_getaffinity(0))


_ABI = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                        ctypes.c_void_p, ctypes.c_int64)


def test_calls_on_a_worker_run_on_one_thread(split_small, monkeypatch):
    """A chunk run on a worker (here a Python callback with the kernels' ABI) that calls
    softgen again does not split: the thread-local flag keeps workers from fanning out."""
    seen, ran = {}, {"caller": threading.Event(), "worker": threading.Event()}
    x = data((64, 100), "float32")

    def chunk(rows, n, x_address, x_stride, y_address, y_stride):
        # each thread takes one of the two chunks and holds it until the other has taken its own
        me, other = ("worker", "caller") if threads.in_worker() else ("caller", "worker")
        y = softgen.softmax(x, threads=4)
        seen[me] = (threads.thread_count(1000, 1000, 1, 4), split_on.get(me, 0),
                    np.array_equal(y, softgen.softmax(x, threads=1)))
        ran[me].set()
        ran[other].wait(10)

    split_on = {}
    run_row_job = threads.run_row_job

    def counting(*args):  # splits by the thread making them
        me = "worker" if threads.in_worker() else "caller"
        split_on[me] = split_on.get(me, 0) + 1
        run_row_job(*args)
    monkeypatch.setattr(threads, "run_row_job", counting)
    fn = _ABI(chunk)
    threads.run_rows(fn, 2, 1, 0, 1, 64, 0, 1, 64, 1, 2)  # two chunks of a row, on two threads
    assert seen["caller"] == (4, 2, True)  # the run_rows call and the caller's own softmax split
    assert seen["worker"] == (1, 0, True)


def test_kernels_release_the_gil():
    """Kernels and the pool's native functions are called through CFUNCTYPE (which drops the
    GIL for the call), not PYFUNCTYPE (which keeps it)."""
    kernel = softgen.compile("softmax", algorithm="two_pass")
    native = threads._Native()
    for fn in (kernel._fn, native.spin, native.run, native.wait, native.patch):
        assert not type(fn)._flags_ & ctypes._FUNCFLAG_PYTHONAPI


def test_concurrent_callers(split_small):
    arrays = [data((200 + 7 * i, 50 + i), "float32", i) for i in range(8)]
    expected = [softgen.softmax(a, threads=1) for a in arrays]

    def check(i):
        for _ in range(20):
            j = (i + _) % len(arrays)
            if not np.array_equal(softgen.softmax(arrays[j], threads=2), expected[j]):
                return False
        return True
    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(check, range(4)))


def test_chunks_and_units():
    assert threads.min_chunk_rows(1024, 16) == 32           # 2^15 elements
    assert threads.min_chunk_rows(3000, 4) == 12            # 10 rows, in whole units
    assert threads.min_chunk_rows(1 << 20, 4) == 4          # one unit at least
    assert threads.min_chunk_rows(0, 1) == threads.MIN_CHUNK_ELEMENTS
    assert threads.row_unit(1, 4) == 16          # one float per row: 16 rows fill a cache line
    assert threads.row_unit(1, 28) == 16         # 7 floats: 16 rows are 7 lines
    assert threads.row_unit(4, 4096) == 4        # long rows: whole row groups
    assert threads.row_unit(16, 8) == 16
    assert threads.thread_count(1000, 100, 1, 1) == 1
    assert threads.thread_count(3, threads.MIN_ELEMENTS_PER_THREAD, 1, 8) == 3
    assert threads.thread_count(2, threads.MIN_ELEMENTS_PER_THREAD - 1, 1, 8) == 1  # too small to split


@pytest.mark.parametrize("rows,unit,min_rows,count", [(101, 1, 3, 2), (96, 16, 16, 2), (50, 4, 8, 3), (9, 1, 1, 3)])
def test_row_job_runs_every_row_once(monkeypatch, rows, unit, min_rows, count):
    """A row job's chunks cover every row exactly once, each starting on a whole unit, with
    the caller and a worker taking chunks (the caller's first holds on until a worker has
    taken one; the kernel is a callback recording its rows: x's address is its first row's,
    at a byte per row)."""
    chunks, worker_ran = [], threading.Event()

    def chunk(count_, n, x_address, x_stride, y_address, y_stride):
        chunks.append((x_address - base, count_))
        if threads.in_worker():
            worker_ran.set()
        elif x_address == base:
            worker_ran.wait(10)
    base = 1 << 20   # (never read: the kernel is the callback)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", min_rows)   # rows of one element
    threads.run_row_job(_ABI(chunk), rows, 1, (base, 1, 1), (base, 1, 1), unit, count)
    assert sorted(r for r0, k in chunks for r in range(r0, r0 + k)) == list(range(rows))
    assert all(r0 % unit == 0 for r0, _ in chunks) and worker_ran.is_set()


def test_a_row_job_is_kept_and_reused_with_new_addresses(split_small):
    """The job of a call shape is kept: the next call of that shape, on other arrays, takes
    it (writing only x, y and the counter) and still gives one thread's results."""
    kernel = softgen.compile("softmax", algorithm="two_pass")
    threads._row_jobs.clear()
    for seed in range(3):
        x = data((300, 100), "float32", seed)
        assert_same_bits(kernel(x, threads=2), kernel(x, threads=1))
        assert_same_bits(kernel(x, out=np.empty_like(x), threads=2), kernel(x, threads=1))
    assert [len(free) for _, free in threads._row_jobs.values()] == [1]


def test_callers_of_one_shape_on_several_threads(split_small):
    """Python threads calling one kernel on one shape at once each take a job of their own."""
    arrays = [data((256, 60), "float32", i) for i in range(4)]
    expected = [softgen.softmax(a, threads=1) for a in arrays]
    start = threading.Barrier(4)

    def check(i):
        start.wait()
        return all(np.array_equal(softgen.softmax(arrays[(i + k) % 4], threads=2), expected[(i + k) % 4])
                   for k in range(50))
    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(check, range(4)))


def _asleep(pool):
    """The pool's one worker, once asleep (idle for SPINS pauses)."""
    (worker,), _ = pool.claim(1, 1)
    pool.release([worker])
    for _ in range(1000):
        if worker.state.value == threads.ASLEEP:
            return worker
        threading.Event().wait(0.01)
    raise AssertionError("the worker did not go to sleep")


def _two_chunks(patience=2.0):
    """Which threads ran a row job of two one-row chunks ('caller' / 'worker'), the caller
    waiting up to `patience` seconds on its first chunk for a worker to take the other."""
    ran, worker_ran = [], threading.Event()

    def chunk(rows, n, x_address, x_stride, y_address, y_stride):
        if threads.in_worker():
            ran.append("worker")
            worker_ran.set()
        else:
            ran.append("caller")
            if x_address == base:
                worker_ran.wait(patience)
    base = 1 << 20   # (never read: the kernel is the callback)
    threads.run_row_job(_ABI(chunk), 2, 1, (base, 1, 1), (base, 1, 1), 1, 2)
    return sorted(ran)


def test_a_sleeping_worker_is_woken_and_runs_its_chunk(monkeypatch):
    """A post that finds its worker asleep has the caller wake it (softgen_run returns to
    Python first), and the worker takes its chunk; again after it has slept once more."""
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(threads, "_pool", threads._Pool())
    for _ in range(2):
        worker = _asleep(threads._pool)
        # the woken worker runs a chunk; which thread takes the first is a race (a worker
        # woken fast takes both while the caller is still in Python)
        ran = _two_chunks()
        assert len(ran) == 2 and "worker" in ran
        assert threads._pool.idle == [worker] and worker.woken.value == 0


def test_a_worker_falling_asleep_as_it_is_posted_runs_the_job(monkeypatch):
    """A worker's slot goes from idle to asleep in one atomic step, and a post exchanges it:
    a post either finds it spinning (and it takes the job) or asleep (and the caller wakes
    it), never missed in between.  Here jobs are posted 0-2 ms apart, around the end of the
    worker's spins (~1 ms); the caller holds its first row until the worker has taken the
    second (a missed post: 10 s, then the caller's)."""
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(threads, "_pool", threads._Pool())
    ran, base = [], 1 << 20

    def chunk(rows, n, x_address, x_stride, y_address, y_stride):
        ran.append(threads.in_worker())
        waited = 0
        while x_address == base and not threads.in_worker() and len(ran) < 2 and waited < 10:
            threading.Event().wait(0.0001)
            waited += 0.0001
    fn = _ABI(chunk)
    for k in range(40):
        threading.Event().wait(0.0005 * (k % 5))
        ran.clear()
        threads.run_row_job(fn, 2, 1, (base, 1, 1), (base, 1, 1), 1, 2)
        # the worker ran a chunk (a missed post: the caller runs both); it may take both
        # when it starts before the caller claims its first
        assert len(ran) == 2 and True in ran, k


def test_the_caller_waits_for_a_slow_worker(monkeypatch):
    """A worker still on its chunk after softgen_wait's spins: the caller yields and waits
    again (from Python) until it is done; every row runs once."""
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(threads, "WAIT_SPINS", 1)
    started, rows = threading.Event(), []

    def chunk(count, n, x_address, x_stride, y_address, y_stride):
        if threads.in_worker():
            started.set()
            threading.Event().wait(0.05)   # long after the caller's chunks are done
        else:
            started.wait(2)
        rows.extend(range(x_address - base, x_address - base + count))
    base = 1 << 20
    threads.run_row_job(_ABI(chunk), 8, 1, (base, 1, 1), (base, 1, 1), 1, 2)
    assert started.is_set() and sorted(rows) == list(range(8))
