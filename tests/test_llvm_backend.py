"""The LLVM backend: vector widths, schedules, the machine code itself, row bounds."""
import ctypes
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softgen
from softgen import algorithms
from softgen.backends.llvm import compile_program
from softgen.backends.llvm.host import HostFunctions
from softgen.lower import Schedule
from softgen.targets import Target, host
from reference import PAIRS, check, check_relative, check_ulps, near_zero_rows, offset_rows, special_rows
from widths import width_targets

ABI = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                       ctypes.c_void_p, ctypes.c_int64)
HOST = host()
WIDTHS = width_targets()


def run_compiled(compiled, x, row_output):
    fn = ABI(compiled.address)
    y = np.full((x.shape[0], 1 if row_output else x.shape[1]), np.nan, np.float32)
    fn(x.shape[0], x.shape[1], x.ctypes.data, x.shape[1], y.ctypes.data, y.shape[1])
    return y[:, 0] if row_output else y


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op,algo", PAIRS)
def test_each_vector_width(width, op, algo):
    target = WIDTHS[width]
    program = algorithms.build(op, algo)
    compiled = compile_program(program, target, jit=True)
    rng = np.random.default_rng(width)
    for n in [0, 1, width - 1, width, width + 1, 3 * width + 5, 1000]:
        x = (rng.standard_normal((3, n)) * 4).astype(np.float32)
        check(op, x, run_compiled(compiled, x, program.row_output))
    for n in [2, width + 1, 1000]:
        x = offset_rows(n, seed=n)
        check_ulps(op, x, run_compiled(compiled, x, program.row_output))
        x = near_zero_rows(n, seed=n)
        check_relative(op, x, run_compiled(compiled, x, program.row_output))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("pair_sum", ["running", "merge", "scan"])
def test_two_pass_larger_value_in_a_later_vector(width, pair_sum):
    """A large value early and one ~20 larger in a later vector: the running pair sum left
    S up to 2^32 against an older exponent, and the output's folded form then built 2^k
    beyond the float exponent range (-0.0 for the row's max at 4 and 8 lanes)."""
    kernel = softgen.compile("softmax", algorithm="two_pass", target=WIDTHS[width],
                             schedule=Schedule(pair_sum=pair_sum))
    for n in (5, 9, 12, 17, 24, 33, 40, 1000, 5000):
        for early, late in ((30, 50), (1, 33), (-40, -10), (60, 90)):
            x = np.zeros((1, n), np.float32)
            x[0, 1], x[0, -1] = early, late
            check("softmax", x, kernel(x))


def nan_rows(n: int, width: int) -> np.ndarray:
    """Rows of length n with a NaN at each of a vector's lanes (in the first vector and in
    the last full one), beside +inf, -inf, a larger value, or nothing but -inf; then rows
    without NaN of each kind."""
    rng = np.random.default_rng(n)
    rows = []
    for at in sorted({*range(min(width, n)), *range(max(0, n - width), n)}):
        for other in ("normal", "+inf", "-inf", "all -inf", "large"):
            row = np.full(n, -np.inf) if other == "all -inf" else rng.standard_normal(n) * 4
            j = (at + 1) % n
            row[j] = {"+inf": np.inf, "-inf": -np.inf, "large": 80.0}.get(other, row[j])
            row[at] = np.nan
            rows.append(row)
    clean = rng.standard_normal((3, n)) * 4
    clean[1, ::3], clean[2, n // 2] = -np.inf, np.inf
    return np.vstack([*rows, clean]).astype(np.float32)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op,algo,pipelined", [("softmax", "three_pass_reload", False),
                                               ("softmax", "three_pass_reload", True),
                                               ("softmax", "three_pass_recompute", False),
                                               ("log_softmax", "three_pass_recompute", True),
                                               ("logsumexp", "three_pass_recompute", False)])
def test_a_nan_anywhere_makes_its_row_nan(width, op, algo, pipelined):
    """The three-pass max skips NaN where the sum carries it (acc.max nan_caught: x86's
    maxps, no NaN record): every output of a row with a NaN in any lane is still NaN, next
    to +inf, -inf or a larger value, in a row of -inf, pipelined or not; rows without NaN
    as usual."""
    schedule = Schedule(rows_per_group=width, pipeline=True) if pipelined else Schedule()
    kernel = softgen.compile(op, algorithm=algo, target=WIDTHS[width], schedule=schedule)
    for n in (1, 3, width + 3, 4 * width + 1, 1000):
        x = nan_rows(n, width)
        y = kernel(x)
        has_nan = np.isnan(x).any(axis=1)
        assert np.isnan(y[has_nan]).all(), f"n={n}: rows with a NaN gave {y[has_nan][~np.isnan(y[has_nan])][:5]}"
        check(op, x[~has_nan], y[~has_nan])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("algo", softgen.ALGORITHMS)
def test_streaming_stores_at_every_output_offset(width, algo):
    """Streaming stores start at the first 64-byte aligned element of y; the plain-store
    head before it holds up to 15 elements, more than one vector of 4 or 8 lanes."""
    kernel = softgen.compile("softmax", algorithm=algo, target=WIDTHS[width],
                             schedule=Schedule(nontemporal=True))
    rng = np.random.default_rng(width)
    x = (rng.standard_normal((2, 3001)) * 4).astype(np.float32)
    for shift in range(16):
        raw = np.full(2 * 3001 + 32, 7.0, np.float32)
        start = (-raw.ctypes.data // 4) % 16 + shift
        y = raw[start:start + 2 * 3001].reshape(2, 3001)
        kernel.run_rows(x, y)
        check("softmax", x, y)
        assert np.all(raw[:start] == 7.0) and np.all(raw[start + 2 * 3001:] == 7.0)


@pytest.mark.parametrize("unroll", [1, 2, 3, 8])
@pytest.mark.parametrize("block", [16, 48, 4096])
@pytest.mark.parametrize("op,algo", [("softmax", a) for a in softgen.ALGORITHMS])
def test_schedules(unroll, block, op, algo):
    """Unroll factors and block sizes (many blocks, partial blocks) keep results right."""
    kernel = softgen.compile(op, algorithm=algo, schedule=Schedule(unroll=unroll, block=block))
    rng = np.random.default_rng(unroll * block)
    for n in [0, 5, 16, 47, 48, 49, 200, 1001]:
        x = (rng.standard_normal((2, n)) * 4).astype(np.float32)
        x[:, ::7] = -np.inf
        check(op, x, kernel(x))


def equal_term_rows(n: int) -> np.ndarray:
    """Rows whose sum terms are all equal (but one): the max's e^(x - m) with n - 1 equal
    smaller ones, and constant rows (two_pass sums e^x's mantissas).  Plain float sums of
    equal terms round the same way at every addition."""
    x = np.zeros((80, n), np.float32)
    x[:40, 0] = np.linspace(0.05, 3, 40, dtype=np.float32)
    x[40:] = np.linspace(-3, 3, 40, dtype=np.float32)[:, None]
    return x


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("schedule", [Schedule(), Schedule(unroll=1, accumulators=1)], ids=["default", "acc1"])
def test_sums_of_equal_terms(width, schedule):
    """A lane sums at most numerics.SUM_CHAIN terms per block at every vector width and
    accumulator count (2048 / 4 lanes / 4 sets drifted 1.9e-6, one set 7.5e-6)."""
    target = WIDTHS[width]
    x = equal_term_rows(2 * 2048 + 5)
    for algo in ("three_pass_recompute", "two_pass", "online"):   # reload sums as recompute does
        compiled = compile_program(algorithms.build("softmax", algo), target, schedule, jit=True)
        try:
            check("softmax", x, run_compiled(compiled, x, False))
        except AssertionError as e:
            raise AssertionError(f"{algo}: {e}") from None


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("block", [16, 2048])
@pytest.mark.parametrize("op", [op for op in softgen.OPS if "online" in softgen.ops.get(op).algorithms])
def test_online_on_rising_rows(width, block, op):
    """Each time the row's max passed the outer state's, its sum was rescaled by an inexact
    e^(old - new): a ramp of 2^17 in blocks of 16 drifted 3.7e-5 (softmax), 2.8e-6 in the
    8-lane default's blocks of 256 with one accumulator set."""
    kernel = softgen.compile(op, algorithm="online", target=WIDTHS[width],
                             schedule=Schedule(block=block, unroll=1, online_block_max=block > 16))
    ramps = np.stack([np.linspace(-3, 3, 131075), np.linspace(-300, 300, 131075),
                      np.sort(np.random.default_rng(3).standard_normal(131075) * 4)]).astype(np.float32)
    check(op, ramps, kernel(ramps))


LOG_SCHEDULES = [Schedule(online_block_max=False), Schedule(block=48), Schedule(rows_per_group=16, block=48),
                 Schedule(pair_sum="merge"), Schedule(pair_sum="scan", block=48), Schedule(fast_exp=False)]


@pytest.mark.parametrize("schedule", LOG_SCHEDULES, ids=lambda s: f"obm{int(s.online_block_max)}-b{s.block}-rows{s.rows_per_group}-{s.pair_sum}-fast{int(s.fast_exp)}")
@pytest.mark.parametrize("op,algo", [p for p in PAIRS if p[0] != "softmax"])
def test_log_ops_accuracy_across_schedules(schedule, op, algo):
    """Every lowering of the sums (per element, per block, pair merges, scans) keeps outputs
    near 0 relatively accurate (the max's terms counted apart, also in lanes and blocks
    without the row's max) and x - lse exact near lse in rows around +-1e6."""
    kernel = softgen.compile(op, algorithm=algo, schedule=schedule)
    for n in [2, 37, 200, 1001]:
        x = near_zero_rows(n, seed=n)
        check_relative(op, x, kernel(x))
        x = offset_rows(n, seed=n)
        check_ulps(op, x, kernel(x))


PIPELINES = [Schedule(pipeline=True), Schedule(pipeline=True, rows_per_group=16, unroll=1),
             Schedule(pipeline=True, rows_per_group=4, interleave=2, unroll=2, block=48),
             Schedule(pipeline=True, rows_per_group=2, online_block_max=False)]


def mixed_rows(rng, rows: int, n: int) -> np.ndarray:
    """Random rows with test_api's special rows on every third one, so that row groups in
    every pipeline position meet them (all -inf, NaN, +inf, and a max beyond the folded and
    the shifted forms' ranges: "large offset", "beyond pair range")."""
    x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
    specials = list(special_rows(n).values())
    for k, i in enumerate(range(0, rows, 3)):
        x[i] = specials[k % len(specials)]
    return x


@pytest.mark.parametrize("schedule", PIPELINES, ids=lambda s: f"rows{s.rows_per_group}-il{s.interleave}-u{s.unroll}-obm{int(s.online_block_max)}")
@pytest.mark.parametrize("op,algo", PAIRS)
def test_pipelined_schedules(schedule, op, algo):
    """Passes of consecutive row groups in one sweep: any row count (ramp up, steady state,
    ramp down, leftover rows), rows that leave the fused form, in place."""
    kernel = softgen.compile(op, algorithm=algo, schedule=schedule)
    # two_pass has a guard (softplus_normalize's too: its stored terms' range), online's
    # per-block max scan needs a sweep of its own, and online logsumexp is a single pass
    pipelined = algo in ("three_pass_reload", "three_pass_recompute") or (
        algo == "online" and op != "logsumexp" and not schedule.online_block_max)
    assert ("fused.folded" in kernel.llvm_ir) == pipelined
    rng = np.random.default_rng(schedule.rows_per_group)
    for rows, n in [(1, 33), (2, 16), (3, 100), (17, 5), (40, 64), (37, 200), (9, 3000)]:
        x = mixed_rows(rng, rows, n)
        with np.errstate(all="ignore"):
            check(op, x, kernel(x))
            if op != "logsumexp":
                y = x.copy()
                kernel(y, out=y)
                check(op, x, y)


@pytest.mark.parametrize("op,algo", PAIRS)
def test_machine_code_has_no_libm_exp_and_uses_the_widest_registers(op, algo):
    asm = softgen.compile(op, algorithm=algo).asm
    calls = re.findall(r"\bcall\w*\s+(\S+)", asm)
    assert not [c for c in calls if "exp" in c], f"libm exp called: {calls}"
    if HOST.has_avx512:
        assert re.search(r"%zmm\d+", asm), "AVX-512 host but no zmm register used"


@pytest.mark.parametrize("target", ["aarch64", "riscv64", "x86_64", "x86-64-v3", "x86-64-v4"])
def test_streaming_stores_claim_no_more_than_vector_alignment(target):
    """Streaming stores go a vector at a time from an aligned start: an alignment claim past
    the vector's size is false for most of them (undefined behaviour LLVM may act on)."""
    tgt = Target.parse(target)
    ir_text = compile_program(algorithms.build("softmax", "three_pass_recompute"), tgt,
                              Schedule(nontemporal=True)).llvm_ir
    claims = re.findall(r"store <(\d+) x float> .*, align (\d+), !nontemporal", ir_text)
    assert claims and all(int(align) <= 4 * int(lanes) for lanes, align in claims), claims


def test_schedule_rejects_nonsense():
    with pytest.raises(ValueError):
        Schedule(unroll=0)


GUARD_PAGE_SCRIPT = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    import softgen
    from softgen.lower import Schedule
    PAGE = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def guarded(n):
        # n floats that end exactly where an inaccessible page begins
        mm = mmap.mmap(-1, 2 * PAGE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        assert libc.mprotect(base + PAGE, PAGE, 0) == 0
        arr = np.frombuffer(mm, np.float32, count=PAGE // 4)
        return mm, arr[PAGE // 4 - n:]

    keep = []
    for op in softgen.OPS:
        for algo in softgen.ops.get(op).algorithms:
            k = softgen.compile(op, algorithm=algo)
            for n in list(range(1, 40)) + [100, 257]:
                mx, x = guarded(n); my, y = guarded(n)
                keep += [mx, my]
                x[:] = np.linspace(-5, 5, n, dtype=np.float32)
                k.run_rows(x.reshape(1, n), y.reshape(1, n))
            # several rows, pipelined: the last row ends at the page
            k = softgen.compile(op, algorithm=algo, schedule=Schedule(pipeline=True, rows_per_group=4))
            for n in (1, 13, 31, 100):
                out = 1 if op == "logsumexp" else n
                mx, x = guarded(7 * n); my, y = guarded(7 * out)
                keep += [mx, my]
                x[:] = np.linspace(-5, 5, 7 * n, dtype=np.float32)
                k.run_rows(x.reshape(7, n), y.reshape(7, out))
    print("ok")
""")


def test_never_touches_memory_past_the_row(tmp_path):
    """Rows that end at a PROT_NONE page: any read or write past the row is a SIGSEGV."""
    script = tmp_path / "guard.py"
    script.write_text(GUARD_PAGE_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.returncode, res.stderr[-2000:])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("rows_per_group", [4, 16])
@pytest.mark.parametrize("op", softgen.OPS)
def test_guard_fallback_rows_inside_a_group(width, rows_per_group, op):
    """two_pass's guard sends a group with a row beyond the pair range to its fallback, which
    runs the group's rows one at a time: every row of such groups (the first, the last, a
    middle one, several, all), at every width, tails included."""
    kernel = softgen.compile(op, algorithm="two_pass", target=WIDTHS[width],
                             schedule=Schedule(rows_per_group=rows_per_group))
    rng = np.random.default_rng(rows_per_group)
    for n in (1, 7, 100, 1000):
        beyond = special_rows(n)["beyond pair range"]
        x = (rng.standard_normal((3 * rows_per_group + 3, n)) * 30).astype(np.float32)
        for r in (0, rows_per_group - 1, rows_per_group + 1, rows_per_group + 2, *range(2 * rows_per_group,
                                                                                      3 * rows_per_group)):
            x[r] = beyond * (1 + r % 3)
        x[-1] = beyond
        with np.errstate(all="ignore"):
            check(op, x, kernel(x))


def test_host_functions_compile_a_library_once():
    """The runtime's native helpers: IR text compiled on a library's first use only, its
    functions callable at the addresses given (the same ones every time)."""
    host, built = HostFunctions(), []

    def ir():
        built.append(1)
        return "define i64 @twice(i64 %a) {\n  %b = shl i64 %a, 1\n  ret i64 %b\n}\n"
    first = host.addresses("twice_lib", ir, ("twice",))
    assert host.addresses("twice_lib", ir, ("twice",)) == first and built == [1]
    assert ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(first["twice"])(21) == 42
