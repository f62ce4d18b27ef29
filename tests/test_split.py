"""Split rows (softgen.split, softgen.chunks): a call with fewer rows than threads cuts its
rows into chunks reduced apart and merged.  Every op x algorithm, at every vector width
this host runs and in every dtype, on special inputs (the guard's fallback rows among
them), tails, misaligned starts and chunk counts that do not divide the row: against the
float64 reference, as a single-thread call is.  Splitting is forced on small rows by
lowering the size threshold."""
import ctypes
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import softgen
from softgen import chunks, split, threads
from softgen.ir import Kind, Operand, VerifyError, verify
from reference import PAIRS, check, misaligned_rows as misaligned, special_rows
from widths import width_targets

WIDTHS = width_targets()


@pytest.fixture
def split_small(monkeypatch):
    """Split any call of 2 * 64 elements or more per row; record the task count of each
    step of the plans run (a pass's (row, chunk) tasks, a merge's one, a finish's row each)."""
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 64)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(threads, "SPLIT_CHUNKS_PER_THREAD", 1)
    monkeypatch.setattr(threads, "parallel_from", 2)
    calls = []
    run_steps = threads.run_steps

    def recording(job, count):
        field = lambda address, index: ctypes.c_int64.from_address(address + 8 * index).value   # noqa: E731
        first = field(job, threads.STEP_TABLE)
        calls.extend(field(first, s * threads.STEP_SLOTS + threads.STEP_TASKS) for s in range(field(job, threads.STEPS)))
        run_steps(job, count)
    monkeypatch.setattr(threads, "run_steps", recording)
    return calls


@pytest.mark.parametrize("lanes", sorted(WIDTHS))
@pytest.mark.parametrize("op,algo", PAIRS)
def test_split_rows_match_the_reference(split_small, op, algo, lanes):
    kernel = softgen.compile(op, algorithm=algo, target=WIDTHS[lanes])
    for n in (4099,):   # a tail, and chunks of unequal lengths
        rows = special_rows(n)
        for name, row in rows.items():
            x = misaligned(np.stack([row, rows["some -inf"]]))
            try:
                check(op, x, kernel(x, threads=5))
            except AssertionError as e:
                raise AssertionError(f"n={n}, row '{name}': {e}") from None
    assert split_small and max(split_small) == 6   # 2 rows x 3 chunks each


def ulps_apart(a: np.ndarray, b: np.ndarray) -> int:
    """The most ulps between same-position values of two 16-bit arrays (equal NaNs: 0)."""
    ia, ib = (v.view(np.int16).astype(np.int64) for v in (a, b))
    ia, ib = (np.where(v < 0, -0x8000 - v, v) for v in (ia, ib))   # monotone in the value
    both_nan = np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
    return int(np.max(np.where(both_nan, 0, np.abs(ia - ib))))


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
@pytest.mark.parametrize("op,algo", PAIRS)
def test_split_rows_in_each_dtype(split_small, op, algo, dtype):
    """float64 within the reference's tolerance; 16-bit outputs within an ulp of the
    single-thread call's (each rounds a float32 result once)."""
    try:
        kernel = softgen.compile(op, algorithm=algo, dtype=dtype)
    except NotImplementedError:
        pytest.skip("no such kernel (reload's 16-bit outputs)")
    x = (np.random.default_rng(3).standard_normal((3, 5000)) * 6).astype(dtype)
    x[1, ::7] = -np.inf
    y = kernel(x, threads=7)
    assert split_small
    if dtype == "float64":
        check(op, x, y)
    else:
        assert ulps_apart(y, kernel(x, threads=1)) <= 1


@pytest.mark.parametrize("n,count", [(1, 3), (63, 2), (64, 2), (1000, 3), (1000, 7), (4099, 5)])
def test_chunk_bounds_cover_the_row_on_line_starts(n, count):
    bounds = split.chunk_bounds(n, count)
    assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) <= count
    assert all(a == b for (_, a), (b, _) in zip(bounds, bounds[1:]))
    assert all(c0 % split.CHUNK_ALIGN == 0 and c1 > c0 for c0, c1 in bounds)


def test_split_runs_only_where_rows_are_fewer_than_threads(split_small, monkeypatch):
    x = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    kernel = softgen.compile("softmax", algorithm="two_pass")
    kernel(x, threads=3)
    assert not split_small                    # 3 rows on 3 threads: row-parallel
    kernel(x, threads=4)                      # 3 rows, 4 threads: 2 chunks each
    assert split_small == [6, 1, 6]           # two_pass: two passes of 6 (row, chunk) tasks, a merge between
    assert threads.split_chunks(1, 100, 8) == 1   # a thread needs MIN_ELEMENTS_PER_THREAD
    monkeypatch.setattr(threads, "SPLIT_CHUNKS_PER_THREAD", 4)
    assert threads.split_chunks(1, 1000, 2) == 8 and threads.split_chunks(3, 1000, 4) == 6   # 4 per thread
    assert threads.split_chunks(1, 300, 2) == 4   # chunks of MIN_CHUNK_ELEMENTS at least


def test_guard_fallback_rows_run_split(split_small):
    """A row beyond the two-pass range runs the fallback program, also split, next to rows
    that do not."""
    x = np.random.default_rng(1).standard_normal((3, 3000)).astype(np.float32)
    x[1] *= 1e7
    for op in ("softmax", "log_softmax", "logsumexp"):   # the ops with a guard
        before = len(split_small)
        check(op, x, softgen.compile(op, algorithm="two_pass")(x, threads=8))
        assert len(split_small) - before >= 3   # its passes, then the fallback's


@pytest.mark.parametrize("algo", ["three_pass_reload", "two_pass", "online"])
def test_elementwise_operands_split_with_their_rows(split_small, algo):
    """A mask (and the backward kernels' dy) is cut into the same chunks as x, misaligned,
    rows with nothing kept or NaN under the mask among them; ragged rows stay whole."""
    rng = np.random.default_rng(2)
    x = misaligned((rng.standard_normal((3, 4099)) * 5).astype(np.float32))
    keep = misaligned(rng.random(x.shape) < 0.5)
    keep[1] = False
    x[2, ~keep[2]] = np.nan
    kernel = softgen.compile("softmax", algorithm=algo, where=True)
    y = kernel(x, threads=5, operands=(keep.view(np.uint8),))
    assert split_small
    np.testing.assert_allclose(y, kernel(x, threads=1, operands=(keep.view(np.uint8),)), rtol=2e-6, atol=0)
    assert np.all(y[1] == 0) and np.all(y[~keep] == 0)
    if algo == "two_pass":
        dy = misaligned(rng.standard_normal(x.shape).astype(np.float32))
        backward = softgen.compile("softmax", algorithm="backward")
        error = np.abs(backward(y, threads=5, operands=(dy,)) - backward(y, threads=1, operands=(dy,)))
        assert np.all(error <= 1e-6 * y * (np.abs(dy) + np.abs(dy * y).sum(1, keepdims=True)))   # the sum's order
        before = len(split_small)
        softgen.softmax(x[:1], where=np.tri(1, 4099, 3000, dtype=bool), threads=5)   # ragged: one row, whole
        assert split_small[before:] in ([], [1])


def test_chunked_programs_print_and_verify():
    plan = chunks.chunked(softgen.algorithms.build("log_softmax", "two_pass"))
    first, second = plan.passes
    assert [o.name for o in first.operands] == ["s2_0", "s2_1", "s3_0"]   # (S, E) and the max
    assert all(o.output for o in first.operands) and "merge.state" in str(first)
    text = str(second)
    assert "state %" in text and "type=acc.pair" in text and "flag='flag'" in text
    assert [o.name for o in second.operands if o.output] == ["flag"]
    assert "merge.states" in str(plan.merges[0]) and plan.merges[1] is None
    assert plan.finish is None and plan.fallback.source.algorithm == "online"
    assert chunks.chunked(softgen.algorithms.build("logsumexp", "online")).finish.row_output


def test_operand_and_state_verification():
    program = chunks.chunked(softgen.algorithms.build("softmax", "online")).passes[0]
    for operands, match in [((Operand("x", True),), "identifier of its own"),
                            ((Operand("a_stride", True),), "identifier of its own"),
                            ((), "needs an output operand")]:
        bad = softgen.ir.Program(program.op, program.algorithm, program.steps, False, operands=operands)
        with pytest.raises(VerifyError, match=match):
            verify(bad)
    stores = [s for s in program.steps if getattr(s, "kind", None) is Kind.STORE_OPERAND]
    twice = softgen.ir.Program(program.op, program.algorithm, program.steps + stores[:1], False,
                               operands=program.operands)
    with pytest.raises(VerifyError, match="stored exactly once"):
        verify(twice)
    merge = chunks.chunked(softgen.algorithms.build("softmax", "online")).merges[0]
    state = next(s for s in merge.steps if s.kind is Kind.STATE)
    state.attrs["type"] = softgen.ir.Type.ROW
    with pytest.raises(VerifyError, match="needs an accumulator type=acc"):
        verify(merge)


HOST = softgen.targets.host()
# the scalar ISA and the widest this CPU runs (tests/test_c_backend.py runs every ISA's lowering)
C_ISAS = ["scalar"] + [isa for isa in ("avx512", "avx2", "sse2")
                       if HOST.arch == "x86_64" and softgen.backends.c.ISAS[isa].host_features <= HOST.feature_set][:1]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
@pytest.mark.parametrize("isa", C_ISAS)
@pytest.mark.parametrize("op,algo", [("log_softmax", "two_pass"), ("softmax", "three_pass_reload"),
                                     ("logsumexp", "online")])
def test_c_chunk_entry_points_run_the_split(tmp_path, op, algo, isa):
    """emit_c(chunks=True) compiled by gcc with warnings as errors; its entry points,
    called as the header says (by the split runtime), give the reference's results."""
    name = f"c_{op}_{algo}"
    src = softgen.emit_c(op, algorithm=algo, isa=isa, name=name, chunks=True)
    h, c = src.write(tmp_path)
    lib = tmp_path / f"{name}.so"
    cmd = ["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", *src.flags, str(c),
           "-o", str(lib), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[:3000]
    library = ctypes.CDLL(str(lib))
    program = softgen.algorithms.build(op, algo)
    runner = split.SplitKernel(program, softgen.Target.parse("host"), softgen.lower.Schedule(), lambda plan, p:
                               ctypes.cast(library[f"{name}_{plan.entry_name(p)}"], ctypes.c_void_p).value)
    assert f"{name}_pass0" in h.read_text() and "merges chunk c's states" in h.read_text()
    rows = special_rows(1000)
    x = misaligned(np.stack(list(rows.values())))
    y = np.empty(x.shape[0] if program.row_output else x.shape, np.float32)
    runner.run(x.shape[0], x.shape[1], x.ctypes.data, x.strides[0] // 4, 4, y.ctypes.data,
               1 if program.row_output else y.strides[0] // 4, 4, chunks=3, threads=2)
    for i, row_name in enumerate(rows):
        try:
            check(op, x[i:i + 1], y[i:i + 1])
        except AssertionError as e:
            raise AssertionError(f"row '{row_name}': {e}") from None


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to link a shared library")
@pytest.mark.parametrize("op,algo", [("log_softmax", "two_pass"), ("softmax", "online")])
def test_generated_chunk_entry_points_run_the_split(tmp_path, op, algo):
    """generate(chunks=True): the entry points in one object (here a shared library for the
    host), driven as the header says by the split runtime, with a temperature."""
    artifact = softgen.generate(op, algorithm=algo, target="host", name="g", chunks=True, temperature=True)
    assert "void g_pass0(" in artifact.c_declaration and "void g_merge0(" in artifact.c_declaration
    library = ctypes.CDLL(str(artifact.shared_library(tmp_path / "g.so")))
    program = softgen.algorithms.build(op, algo, variant=softgen.algorithms.Variant(temperature=True))
    runner = split.SplitKernel(program, HOST, softgen.lower.Schedule(), lambda plan, p:
                               ctypes.cast(library[f"g_{plan.entry_name(p)}"], ctypes.c_void_p).value)
    x = misaligned(np.stack(list(special_rows(3000).values())))
    inv = np.float32([0.5])
    y = np.empty(x.shape, np.float32)
    runner.run(x.shape[0], x.shape[1], x.ctypes.data, x.strides[0] // 4, 4, y.ctypes.data, y.strides[0] // 4, 4,
               chunks=5, threads=2, operands=((inv.ctypes.data, 0, 4),))
    check(op, (x * inv[0]).astype(np.float32), y)


def split_run(kernel, x, y, chunks, count, operands=()):
    """kernel's split plan run directly on x into y (2-D, or 1-D: one value per row)."""
    y_stride = y.strides[0] // y.itemsize if y.ndim == 2 else 1
    kernel._split.run(x.shape[0], x.shape[1], x.ctypes.data, x.strides[0] // x.itemsize, x.itemsize,
                      y.ctypes.data, y_stride, y.itemsize, chunks, count, operands)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op,plan,fallback", [("softmax", [6, 1, 6], [2, 1, 2]),
                                              ("log_softmax", [6, 1, 6], [2, 1, 2]),
                                              ("logsumexp", [6, 1, 3], [2, 1, 1])])
def test_a_guard_stops_the_job_and_its_rows_fall_back(split_small, op, plan, fallback, dtype):
    """A row beyond two_pass's exponent range flags (its flags 4 or 8 bytes wide): the job
    stops after the step writing them, that row runs the fallback's plan (online: two
    passes, a merge between), the others are done; within tolerance of one thread, and bitwise what
    the same chunks give on one thread."""
    x = misaligned((np.random.default_rng(4).standard_normal((3, 3000)) * 4).astype(dtype))
    x[1] *= 1e7
    kernel = softgen.compile(op, algorithm="two_pass", dtype=dtype)
    y = kernel(x, threads=4)   # 3 rows on 4 threads: 2 chunks each
    assert split_small == plan + fallback
    check(op, x, y)
    np.testing.assert_allclose(y, kernel(x, threads=1), rtol=1e-5 if dtype == "float32" else 1e-13)
    alone = np.empty_like(y)
    split_run(kernel, x, alone, 2, 1)
    assert np.array_equal(y, alone)


def test_unified_max_rows_far_from_phi_fall_back(split_small):
    """unified_max's rows whose max is far from their phi take the exact fallback, split
    too; the others keep e^(x - phi)."""
    x = misaligned((np.random.default_rng(5).standard_normal((3, 3000)) * 3).astype(np.float32))
    phi = np.float32([2.0, 300.0, -200.0])
    y = softgen.softmax(x, algorithm="unified_max", phi=phi, threads=4)
    assert len(split_small) > 3   # the plan, then the fallback's
    check("softmax", x, y)
    np.testing.assert_allclose(y, softgen.softmax(x, algorithm="unified_max", phi=phi, threads=1), rtol=2e-6)


def test_a_job_completes_without_its_worker(split_small, monkeypatch):
    """The caller runs every step itself when the pool's worker is busy with another call;
    a worker started for the call (a new pool) comes late, finding steps done: bitwise what
    the same chunks give on one thread."""
    kernel = softgen.compile("softmax", algorithm="two_pass")
    x = misaligned((np.random.default_rng(6).standard_normal((1, 5000)) * 4).astype(np.float32))
    x[0, :2000] *= 1e7   # and a guard's stop, in the first chunk's rows
    expected, y = np.empty_like(x), np.empty_like(x)
    split_run(kernel, x, expected, 3, 1)
    busy, _ = threads._pool.claim(64, max(1, threads._pool.started))   # every idle worker, as another call would
    try:
        split_run(kernel, x, y, 3, 2)
        assert np.array_equal(y, expected)
    finally:
        with threads._pool.lock:
            threads._pool.idle += busy
    for _ in range(3):
        monkeypatch.setattr(threads, "_pool", threads._Pool())
        y[...] = np.nan
        split_run(kernel, x, y, 3, 2)
        assert np.array_equal(y, expected)


@pytest.mark.parametrize("op,algo", [("softmax", "online"), ("softmax", "three_pass_reload"),
                                     ("log_softmax", "two_pass"), ("logsumexp", "online")])
def test_several_rows_with_a_mask_split(split_small, op, algo):
    """3 rows on 4 threads, each in 2 chunks, under a mask (where=: bytes cut with x's
    chunks), misaligned: against the float64 reference of the kept elements."""
    rng = np.random.default_rng(7)
    x = misaligned((rng.standard_normal((3, 4099)) * 5).astype(np.float32))
    keep = misaligned(rng.random(x.shape) < 0.7)
    y = getattr(softgen, op)(x, algorithm=algo, where=keep, threads=4)
    assert split_small[0] == 6
    check(op, np.where(keep, x, -np.inf).astype(np.float32), y)


def test_softmax_backward_splits_with_dy(split_small):
    """softmax_backward's dy (an elementwise operand, its own row stride) cut into x's
    chunks: 3 rows on 4 threads against the float64 gradient y * (dy - sum(dy * y))."""
    rng = np.random.default_rng(8)
    y = softgen.softmax((rng.standard_normal((3, 4099)) * 3).astype(np.float32), threads=1)
    y, dy = misaligned(y), misaligned(rng.standard_normal(y.shape).astype(np.float32))
    grad = softgen.compile("softmax", algorithm="backward")(y, threads=4, operands=(dy,))
    assert split_small
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    expected = y64 * (dy64 - (dy64 * y64).sum(1, keepdims=True))
    assert np.all(np.abs(grad - expected) <= 1e-6 * y64 * (np.abs(dy64) + np.abs(dy64 * y64).sum(1, keepdims=True)))


def test_a_plan_job_is_kept_and_reused_with_new_addresses(split_small):
    """A call's job memory goes back to its plan; the next call of the shape, on other
    arrays (and other operands), takes it with its table patched to them: bitwise what a
    new plan gives.  A job a guard stopped is not kept."""
    kernel = softgen.compile("softmax", algorithm="two_pass", where=True)
    rng = np.random.default_rng(7)
    arrays = [(misaligned((rng.standard_normal((2, 3000)) * 4).astype(np.float32)), rng.random((2, 3000)) < 0.7)
              for _ in range(3)]
    arrays[2][0][1, :1500] *= 1e7   # a guard's stop

    def run(x, keep):
        y = np.full_like(x, np.nan)
        split_run(kernel, x, y, 3, 2, ((keep.ctypes.data, 3000, 1),))
        return y
    kernel._split._plans.clear()
    fresh = []
    for x, keep in arrays:
        fresh.append(run(x, keep))
        kernel._split._plans.clear()
    assert np.array_equal(run(*arrays[0]), fresh[0], equal_nan=True)
    (_, plan), = kernel._split._plans.values()
    kept = list(plan.free)
    assert len(kept) == 1
    assert np.array_equal(run(*arrays[1]), fresh[1], equal_nan=True)
    assert plan.free == kept   # the same memory again
    assert np.array_equal(run(*arrays[2]), fresh[2], equal_nan=True)
    assert plan.free == []     # the stopped job's memory (holding the states the fallback read) is not kept
    assert np.array_equal(run(*arrays[1]), fresh[1], equal_nan=True)


def test_split_callers_of_one_shape_on_several_threads(split_small):
    """Python threads splitting rows of one shape at once each take a job of their own."""
    kernel = softgen.compile("log_softmax", algorithm="online")
    arrays = [(np.random.default_rng(i).standard_normal((1, 5000)) * 4).astype(np.float32) for i in range(4)]
    expected = [kernel(a, threads=2) for a in arrays]
    start = threading.Barrier(4)

    def check(i):
        start.wait()
        return all(np.array_equal(kernel(arrays[(i + k) % 4], threads=2), expected[(i + k) % 4]) for k in range(50))
    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(check, range(4)))
    assert sum(len(plan.free) for _, plan in kernel._split._plans.values()) >= 1
