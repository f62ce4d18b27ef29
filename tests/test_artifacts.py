"""softgen.generate(): the artifacts, and kernels for other targets run for real: aarch64 and
riscv64 objects linked with cross compilers and run under qemu-user, an x86-64-v3 shared
library loaded here, all compared against float64."""
import ctypes
import dataclasses
import re
import shutil
import subprocess

import numpy as np
import pytest

import softgen
from softgen import algorithms, numerics
from softgen.lower import Schedule
from softgen.ir import Kind
from softgen.targets import host
from reference import BFLOAT16, PAIRS, check, special_rows

HOST = host()
ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "riscv64": 243}

BLOCK = numerics.REDUCTION_BLOCK
SENTINEL = 0x7FA5A5A5   # a NaN no kernel makes: y outside the rows must keep it
# Runs kernels on records read from stdin: int64 kernel index, rows, n, x's placement (offset
# in floats from a 64-byte aligned buffer, row stride, buffer size), y's placement, then x's
# buffer.  Writes back y's buffer, filled with SENTINEL before the call.
DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef void kernel_fn(int64_t rows, int64_t n, const float *x, int64_t xs, float *y, int64_t ys);
kernel_fn KERNELS;
static kernel_fn *const kernels[] = {KERNELS};
static float *buffer(size_t floats) { return aligned_alloc(64, (floats * 4 / 64 + 1) * 64); }
int main(void) {
    int64_t h[9];
    const uint32_t sentinel = SENTINEL;
    while (fread(h, sizeof h, 1, stdin) == 1) {
        size_t xn = (size_t)h[5], yn = (size_t)h[8];
        float *x = buffer(xn), *y = buffer(yn);
        if (!x || !y || fread(x, sizeof *x, xn, stdin) != xn) return 2;
        for (size_t i = 0; i < yn; i++) memcpy(y + i, &sentinel, sizeof sentinel);
        kernels[h[0]](h[1], h[2], x + h[3], h[4], y + h[6], h[7]);
        if (fwrite(y, sizeof *y, yn, stdout) != yn) return 2;
        free(x);
        free(y);
    }
    return 0;
}
"""
# arch -> (cross compiler, the qemu command lines to run the binary under)
CROSS = {
    "aarch64": ("aarch64-linux-gnu-gcc", [["qemu-aarch64"]]),
    "riscv64": ("riscv64-linux-gnu-gcc",   # V 1.0 at the narrowest and a wide vector length: code
                # must not assume one (256 too took CI 40 s more and found nothing these two do not)
                [["qemu-riscv64", "-cpu", f"rv64,v=true,vext_spec=v1.0,vlen={vlen}"] for vlen in (128, 512)]),
}
# (pair_sum="merge" is the host widths' only, in test_matrix: the cross targets run the
# other pair-sum form; online's per-element merges ride with the streaming stores)
SCHEDULES = [Schedule(), Schedule(pipeline=True, rows_per_group=4, interleave=2, unroll=2, block=48, nontemporal=True),
             Schedule(pair_sum="scan", online_block_max=False),
             Schedule(unroll=1, accumulators=1, rows_per_group=16, pipeline=True)]
# Schedule fields that change only programs with a pass op of this kind
ONLY_FOR = {"nontemporal": Kind.STORE, "pair_sum": Kind.ACC_PAIR, "online_block_max": Kind.ACC_ONLINE}
OFFSETS = (4, 20, 60, 0)   # bytes from a 64-byte aligned base
PADS = (3, 0, 17)          # row stride - row length, in elements


def takes(op, algo, schedule) -> bool:
    """Whether `schedule` gives op x algo other code than Schedule() does (or is Schedule())."""
    kinds = {o.kind for p in algorithms.build(op, algo).passes for o in p.ops}
    needs = [ONLY_FOR.get(name) for name in changed_fields(schedule)]
    return not needs or any(kind is None or kind in kinds for kind in needs)


def changed_fields(schedule) -> dict:
    return {f.name: getattr(schedule, f.name) for f in dataclasses.fields(Schedule)
            if getattr(schedule, f.name) != getattr(Schedule(), f.name)}


def inputs() -> list:
    """[rows, n] float32 cases: tails of every kind around the vector widths, long rows, no
    rows, empty rows, and the special rows of the API tests."""
    rng = np.random.default_rng(7)
    cases = [(rng.standard_normal((2, n)) * 4).astype(np.float32)
             for n in (1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 100, 1000, 5000)]
    cases += [np.zeros((0, 5), np.float32), np.zeros((2, 0), np.float32)]
    cases += [np.stack(list(special_rows(n).values())) for n in (2, 37, 300)]
    return cases


def check_all(op, cases, outputs):
    for x, y in zip(cases, outputs):
        try:
            check(op, x, y[:, 0] if op == "logsumexp" else y)
        except AssertionError as e:
            raise AssertionError(f"rows x n = {x.shape}: {e}") from None


def bumped(row: np.ndarray) -> np.ndarray:
    """x[1] = 30 and x[-1] = 50 over small values: two_pass once lost the later, larger
    block exponent."""
    row = row.copy()
    row[1], row[-1] = 30, 50
    return row


def long_rows(n: int, rng) -> dict:
    """Rows of n at scales 1, 30 and 300, the special values injected late (last block, tail)."""
    rows = {f"scale {s}": (rng.standard_normal(n) * s).astype(np.float32) for s in (1, 30, 300)}
    rows["x[1]=30, x[-1]=50"] = bumped(rows["scale 1"])
    for d in (0.82, 2.8):   # terms e^-d but one: plain sums of equal terms drift one way
        rows[f"x[0]={d}, 0 after"] = np.float32(d) * (np.arange(n) == 0).astype(np.float32)
    for name, at, value in (("-inf", slice(n // 3, None, 97), -np.inf), ("nan last", -1, np.nan),
                            ("+inf last", -1, np.inf), ("3e38 last", -1, 3e38)):
        rows[name] = rows["scale 30"].copy()
        rows[name][at] = value
    return rows


def cross_cases(full: bool) -> list:
    """(name, x) cases: tails around 4 and 8 lanes over 37 rows (groups of 16, 8, 4 and
    single rows), rows a few reduction blocks long, special rows; with `full` also rows of
    5 blocks and one of 2^20 (too slow under qemu for every schedule)."""
    rng = np.random.default_rng(11)
    scales = np.float32([1, 30, 300] * 13)[:37, None]
    cases = [(f"37 rows of {n}", (rng.standard_normal((37, n)) * scales).astype(np.float32))
             for n in (0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100)]
    cases.append(("no rows", np.zeros((0, 5), np.float32)))
    for n in (BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17) + ((5 * BLOCK + 3,) if full else ()):
        cases.append((f"long rows of {n}", long_rows(n, rng)))
    cases += [(f"special rows of {n}", special_rows(n)) for n in (2, 37, 300, 3 * BLOCK + 17)]
    if full:
        row = bumped(rng.standard_normal(2 ** 20).astype(np.float32))
        cases.append(("a row of 2^20", {"x[1]=30, x[-1]=50": row}))
    return cases


@dataclasses.dataclass
class Placed:
    """A case placed in the driver's buffers: x at an offset with padding (NaN) between rows,
    y at another offset and stride."""
    name: str
    x: np.ndarray
    row_names: list
    cols: int
    x_at: tuple   # (offset, row stride) in floats
    y_at: tuple

    def __str__(self):
        (xo, xs), (yo, ys) = self.x_at, self.y_at
        return (f"{self.name} (rows x n = {self.x.shape}; x at +{4 * xo} B, row stride {xs}; "
                f"y at +{4 * yo} B, row stride {ys})")

    def record(self, kernel: int) -> bytes:
        rows, n = self.x.shape
        (xo, xs), (yo, ys) = self.x_at, self.y_at
        image = np.full(xo + rows * xs, np.nan, np.float32)
        image[xo:].reshape(rows, xs)[:, :n] = self.x
        head = [kernel, rows, n, xo, xs, image.size, yo, ys, self.y_size]
        return np.int64(head).tobytes() + image.tobytes()

    @property
    def y_size(self) -> int:
        yo, ys = self.y_at
        return yo + self.x.shape[0] * ys + 16

    def rows_of(self, y_buffer: np.ndarray) -> np.ndarray:
        """y's rows; AssertionError if anything else in the buffer changed."""
        yo, ys = self.y_at
        at = yo + np.arange(self.x.shape[0])[:, None] * ys + np.arange(self.cols)
        outside = np.ones(y_buffer.size, bool)
        outside[at.ravel()] = False
        bad = np.flatnonzero(y_buffer.view(np.uint32)[outside] != SENTINEL)
        if bad.size:
            raise AssertionError(f"wrote outside its rows at buffer floats {np.flatnonzero(outside)[bad[:5]]}")
        return y_buffer[at]


def place(cases, op: str) -> list:
    """Each case at its own x and y offsets (OFFSETS) and row stride paddings (PADS)."""
    cols_of = (lambda n: 1) if op == "logsumexp" else (lambda n: n)
    placed = []
    for i, (name, rows) in enumerate(cases):
        x = rows if isinstance(rows, np.ndarray) else np.stack(list(rows.values()))
        row_names = list(rows) if isinstance(rows, dict) else [f"row {r}" for r in range(x.shape[0])]
        n, cols = x.shape[1], cols_of(x.shape[1])
        x_at = (OFFSETS[i % 4] // 4, n + PADS[i % 3])
        y_at = (OFFSETS[(i + 2) % 4] // 4, cols + PADS[(i + 1) % 3])
        placed.append(Placed(name, x, row_names, cols, x_at, y_at))
    return placed


@pytest.fixture(scope="module", params=list(CROSS))
def cross(request, tmp_path_factory):
    """(arch, cc, qemu command lines, work dir) once the cross tools are known to work."""
    arch = request.param
    cc, runners = CROSS[arch]
    for tool in [cc] + [r[0] for r in runners]:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian: gcc-{arch}-linux-gnu, qemu-user)")
    work = tmp_path_factory.mktemp(arch)
    (work / "driver.c").write_text(DRIVER)
    (work / "empty.c").write_text("int main(void) { return 0; }\n")
    done = subprocess.run([cc, "-static", "empty.c", "-o", "empty"], cwd=work, capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"{cc} cannot link static programs (Debian: libc6-dev-*-cross): {done.stderr[-300:]}")
    return arch, cc, runners, work


def cross_kernels() -> list:
    """(op, algorithm, schedule) of every kernel the cross test runs: each op x algorithm
    with every schedule of SCHEDULES that changes its code."""
    return [(op, algo, s) for op, algo in PAIRS for s in SCHEDULES if takes(op, algo, s)]


@pytest.fixture(scope="module")
def cross_binary(cross):
    """The driver linked with every kernel of cross_kernels() as k0, k1, ...: (path, kernels)."""
    arch, cc, _, work = cross
    kernels = cross_kernels()
    names = [f"k{i}" for i in range(len(kernels))]
    for name, (op, algo, schedule) in zip(names, kernels):
        softgen.generate(op, algorithm=algo, target=arch, name=name, schedule=schedule).write(work / f"{name}.o")
    subprocess.run([cc, "-O1", "-static", f"-DKERNELS={','.join(names)}", f"-DSENTINEL={SENTINEL:#x}u",
                    "driver.c", *(f"{name}.o" for name in names), "-lm", "-o", "driver"],
                   cwd=work, check=True, capture_output=True)
    return work / "driver", kernels


def test_cross_kernels_run_under_qemu(cross, cross_binary):
    """Every op x algorithm x schedule it takes on every case of cross_cases (the full set for
    Schedule() only), placed at offsets and strides, in one driver run per qemu CPU (the
    first CPU; the others run the Schedule() kernels on the shorter set)."""
    _, _, runners, _ = cross
    exe, kernels = cross_binary
    placed = {(op, full): place(cross_cases(full), op) for op in softgen.OPS for full in (False, True)}
    jobs = [(k, p) for k, (op, _, schedule) in enumerate(kernels) for p in placed[op, schedule == Schedule()]]
    # the other qemu CPUs (riscv64's longer vectors): the default schedule's kernels only, on
    # the cases short of the 2^20 row and 5 blocks (the vector length changes how LLVM splits
    # the vectors, which every kernel's loops share, not which schedule runs; the long rows
    # under qemu for each kernel cost CI time)
    default_jobs = [(k, p) for k, (op, _, schedule) in enumerate(kernels) if schedule == Schedule()
                    for p in placed[op, False]]
    failures = []
    for i, runner in enumerate(runners):
        some = jobs if i == 0 else default_jobs
        stdin = b"".join(p.record(k) for k, p in some)
        done = subprocess.run(runner + [str(exe)], input=stdin, capture_output=True, timeout=600)
        failures += wrong_outputs(kernels, some, done, " ".join(runner))
    assert not failures, f"{len(failures)} wrong:\n" + "\n".join(failures[:40])


def wrong_outputs(kernels, jobs, done, runner: str) -> list:
    """A line per (kernel, case) whose output in the driver's run `done` is wrong."""
    out = np.frombuffer(done.stdout, np.float32)
    failures, at = [], 0
    for k, p in jobs:
        op, algo, schedule = kernels[k]
        fields = ", ".join(f"{a}={v!r}" for a, v in changed_fields(schedule).items())
        where = f"{runner}: {op} {algo} Schedule({fields}) {p}"
        if at + p.y_size > out.size:
            return failures + [f"{where}: the driver stopped: exit {done.returncode} {done.stderr[-300:]!r}"]
        try:
            check_rows(op, p, p.rows_of(out[at:at + p.y_size]))
        except AssertionError as e:
            failures.append(f"{where}: {e}")
        at += p.y_size
    if done.returncode:
        failures.append(f"{runner}: exit {done.returncode} {done.stderr[-300:]!r}")
    return failures


def check_rows(op, p, y):
    """check() the case, then (if wrong) its rows one by one to name the first wrong one."""
    y = y[:, 0] if op == "logsumexp" else y
    try:
        check(op, p.x, y)
    except AssertionError:
        for r, name in enumerate(p.row_names):
            try:
                check(op, p.x[r:r + 1], y[r:r + 1])
            except AssertionError as e:
                raise AssertionError(f"row {r} '{name}': {e}") from None
        raise


@pytest.mark.parametrize("field", list(ONLY_FOR))
def test_schedules_the_cross_test_skips_change_nothing(field):
    """takes() is right to skip: a schedule that changes only `field` (as SCHEDULES does)
    gives an op x algorithm without the op kind ONLY_FOR names the code Schedule() gives it."""
    value = next(changed_fields(s)[field] for s in SCHEDULES if field in changed_fields(s))
    schedule = Schedule(**{field: value})
    op, algo = next(pair for pair in PAIRS if not takes(*pair, schedule))
    assert (softgen.generate(op, algorithm=algo, target="aarch64", schedule=schedule).llvm_ir
            == softgen.generate(op, algorithm=algo, target="aarch64").llvm_ir)


def test_cross_object_is_pic(cross):
    """Position independent: it links into a shared library (text relocations would fail)."""
    arch, cc, _, work = cross
    obj = softgen.generate("softmax", algorithm="two_pass", target=arch).write(work / "pic.o")
    subprocess.run([cc, "-shared", "-Wl,-z,text", str(obj), "-lm", "-o", str(work / "pic.so")],
                   check=True, capture_output=True)


# --- x86-64-v3 on this machine ------------------------------------------------------------

needs_avx2 = pytest.mark.skipif(
    HOST.arch != "x86_64" or not {"avx2", "fma"} <= HOST.feature_set,
    reason="running x86-64-v3 code needs an x86-64 host with AVX2 and FMA")
ABI = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]


@needs_avx2
@pytest.mark.parametrize("op,algo", PAIRS)
def test_x86_64_v3_shared_library_runs_here(tmp_path, op, algo):
    artifact = softgen.generate(op, algorithm=algo, target="x86-64-v3")
    assert "%zmm" not in artifact.asm and re.search(r"%ymm\d+", artifact.asm)
    lib = ctypes.CDLL(str(artifact.shared_library(tmp_path / f"lib{artifact.name}.so")))
    fn = getattr(lib, artifact.name)
    fn.argtypes, fn.restype = ABI, None
    cases = inputs()
    outputs = []
    for x in cases:
        y = np.full((x.shape[0], 1 if op == "logsumexp" else x.shape[1]), np.nan, np.float32)
        fn(x.shape[0], x.shape[1], x.ctypes.data, x.shape[1], y.ctypes.data, y.shape[1])
        outputs.append(y)
    check_all(op, cases, outputs)


# --- the Artifact -----------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["x86-64-v3", "aarch64:neoverse-v1", "riscv64"])
def test_object_is_a_relocatable_elf_for_the_target(target):
    artifact = softgen.generate("log_softmax", algorithm="online", target=target)
    obj = artifact.object
    assert obj[:4] == b"\x7fELF" and obj[4] == 2        # 64-bit
    e_type, e_machine = np.frombuffer(obj, np.uint16, 2, 16)
    assert e_type == 1 and e_machine == ELF_MACHINE[artifact.target.arch]
    assert artifact.name.encode() in obj


def test_write_by_suffix(tmp_path):
    artifact = softgen.generate("logsumexp", algorithm="two_pass", target="aarch64", name="lse")
    assert artifact.write(tmp_path / "k.s").read_text() == artifact.asm
    assert re.search(r"^lse:", artifact.asm, re.M) and ".globl\tlse" in artifact.asm
    assert artifact.write(tmp_path / "k.ll").read_text() == artifact.llvm_ir
    assert 'define void @lse(' in artifact.llvm_ir and "aarch64" in artifact.llvm_ir
    assert artifact.write(tmp_path / "k.o").read_bytes() == artifact.object
    header = artifact.write(tmp_path / "k.h").read_text()
    assert artifact.c_declaration in header and "#include <stdint.h>" in header
    with pytest.raises(ValueError, match=r"suffix.*\.s, \.ll, \.o, \.so, \.h"):
        artifact.write(tmp_path / "k.txt")
    with pytest.raises(ValueError, match="cannot be linked here"):
        artifact.write(tmp_path / "k.so")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no system C compiler (cc)")
def test_host_shared_library_matches_the_jit(tmp_path):
    x = (np.random.default_rng(3).standard_normal((4, 123)) * 4).astype(np.float32)
    artifact = softgen.generate("softmax", algorithm="two_pass", target="host", name="my_softmax")
    fn = ctypes.CDLL(str(artifact.write(tmp_path / "libk.so"))).my_softmax
    fn.argtypes, fn.restype = ABI, None
    y = np.empty_like(x)
    fn(4, 123, x.ctypes.data, 123, y.ctypes.data, 123)
    np.testing.assert_array_equal(y, softgen.compile("softmax", algorithm="two_pass")(x))


def test_header_links_from_cxx(tmp_path, cxx_caller):
    """The .h declares the kernel extern "C": a C++ program includes it and links the object."""
    artifact = softgen.generate("softmax", algorithm="two_pass", target="host", name="k_cxx")
    header, obj = artifact.write(tmp_path / "k_cxx.h"), artifact.write(tmp_path / "k_cxx.o")
    x, y = cxx_caller(header, [obj], artifact.name)
    check("softmax", x, y)


@pytest.mark.parametrize("op,algo", PAIRS)
def test_generate_for_the_host_is_the_jits_code(op, algo):
    """One code path: the JIT and generate() optimize the same module the same way."""
    assert (softgen.generate(op, algorithm=algo, target="host").llvm_ir
            == softgen.compile(op, algorithm=algo).llvm_ir)


def test_generate_takes_a_schedule():
    """generate(schedule=) compiles what compile(schedule=) runs; Schedule() is the default."""
    schedule = Schedule(rows_per_group=4, pipeline=True)
    artifact = softgen.generate("softmax", algorithm="three_pass_recompute", target="host", schedule=schedule)
    assert artifact.schedule == schedule
    assert artifact.llvm_ir == softgen.compile("softmax", algorithm="three_pass_recompute", schedule=schedule).llvm_ir
    default = softgen.generate("softmax", algorithm="three_pass_recompute", target="host")
    assert default.schedule == Schedule() and default.llvm_ir != artifact.llvm_ir


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(op="softmax", algorithm="online", target="aarch64", name="1st"), ValueError, "not a C identifier"),
    (dict(op="softmax", algorithm="online", target="aarch64", name="a-b"), ValueError, "not a C identifier"),
    (dict(op="softmax", algorithm="online", target="aarch64", name=3), TypeError, "name must be a string"),
    (dict(op="softmax", algorithm="online", target="aarch64", dtype="complex64"), TypeError, "unsupported dtype"),
    (dict(op="softmin", algorithm="online", target="aarch64"), ValueError, "unknown op"),
    (dict(op="softmax", algorithm="fast", target="aarch64"), ValueError, "unknown algorithm"),
    (dict(op="logsumexp", algorithm="three_pass_reload", target="aarch64"), NotImplementedError, "recompute"),
    (dict(op="softmax", algorithm="online", target="mips"), ValueError, "unknown target"),
    (dict(op="softmax", algorithm="online", target="aarch64", schedule="fast"), TypeError, "schedule must be"),
])
def test_bad_arguments(kwargs, err, match):
    op = kwargs.pop("op")
    with pytest.raises(err, match=match):
        softgen.generate(op, **kwargs)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no system C compiler (cc)")
@pytest.mark.parametrize("op, algorithm, shape", [("softmax", "auto", (64, 100)), ("log_softmax", "online", (3, 5000))])
def test_auto_schedule_shared_library_is_the_jits_kernel(tmp_path, op, algorithm, shape):
    """generate(schedule="auto:ROWSxN"): the kernel softgen.<op> runs on that shape, as a .so."""
    x = (np.random.default_rng(4).standard_normal(shape) * 4).astype(np.float32)
    artifact = softgen.generate(op, algorithm=algorithm, target="host", name="k",
                                schedule=f"auto:{shape[0]}x{shape[1]}")
    assert artifact.schedule != Schedule()   # the shape's own schedule, not the default
    fn = ctypes.CDLL(str(artifact.write(tmp_path / "libk.so"))).k
    fn.argtypes, fn.restype = ABI, None
    y = np.empty_like(x)
    fn(shape[0], shape[1], x.ctypes.data, shape[1], y.ctypes.data, shape[1])
    np.testing.assert_array_equal(y, getattr(softgen, op)(x, algorithm=algorithm))
    check(op, x, y)


def test_generate_takes_a_schedule_from_json():
    schedule = Schedule.from_json('{"rows": 4, "pipeline": true}')   # rows: rows_per_group's old name
    artifact = softgen.generate("softmax", algorithm="three_pass_recompute", target="x86-64-v3", schedule=schedule)
    assert artifact.schedule == Schedule(rows_per_group=4, pipeline=True)


# --- other dtypes on the cross targets ----------------------------------------------------
# Like DRIVER, in bytes: the record gives x's and y's offsets and buffer sizes in bytes, row
# strides in elements; y's buffer is filled with 0xA5 bytes before the call.
BYTE_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef void kernel_fn(int64_t rows, int64_t n, const void *x, int64_t xs, void *y, int64_t ys);
kernel_fn KERNELS;
static kernel_fn *const kernels[] = {KERNELS};
int main(void) {
    int64_t h[9];
    while (fread(h, sizeof h, 1, stdin) == 1) {
        size_t xn = (size_t)h[5], yn = (size_t)h[8];
        char *x = aligned_alloc(64, (xn / 64 + 1) * 64), *y = aligned_alloc(64, (yn / 64 + 1) * 64);
        if (!x || !y || fread(x, 1, xn, stdin) != xn) return 2;
        memset(y, 0xA5, yn);
        kernels[h[0]](h[1], h[2], x + h[3], h[4], y + h[6], h[7]);
        if (fwrite(y, 1, yn, stdout) != yn) return 2;
        free(x);
        free(y);
    }
    return 0;
}
"""
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
# (bfloat16 -> float32 is the host's: bfloat16 -> bfloat16 runs both of its recipes here)
CROSS_DTYPES = [(F64, F64), (F16, F16), (BFLOAT16, BFLOAT16)]


def dtype_cases(dtype) -> list:
    """[rows, n] cases in `dtype`: tails around every vector width, a few blocks, specials."""
    rng = np.random.default_rng(5)
    cases = [rng.standard_normal((3, n)) * np.array([[1.0], [30.0], [300.0]])
             for n in (1, 3, 5, 8, 9, 16, 17, 33, 3 * BLOCK + 17)]
    cases += [np.stack(list(special_rows(n).values())).astype(np.float64) for n in (2, 37)]
    with np.errstate(over="ignore"):
        return [c.astype(dtype) for c in cases]


def dtype_record(k: int, x: np.ndarray, y_dtype, cols: int, i: int) -> tuple[bytes, tuple]:
    """The driver record of kernel k on x, x and y at offsets and strides that vary with i;
    (record, (y offset, y row stride, y buffer bytes))."""
    rows, n = x.shape
    xo, xs = OFFSETS[i % 4], n + PADS[i % 3]
    yo, ys = OFFSETS[(i + 1) % 4], cols + PADS[(i + 2) % 3]
    image = np.zeros(xo // x.itemsize + rows * xs, x.dtype)
    image[xo // x.itemsize:].reshape(rows, xs)[:, :n] = x
    y_bytes = yo + (rows * ys + 16) * y_dtype.itemsize
    head = [k, rows, n, xo - xo % x.itemsize, xs, image.nbytes, yo - yo % y_dtype.itemsize, ys, y_bytes]
    return np.int64(head).tobytes() + image.tobytes(), (head[6], ys, y_bytes)


def test_cross_dtypes_run_under_qemu(cross):
    """float64, float16, bfloat16 and mixed kernels (each op x algorithm the dtypes allow) on
    each cross target, x and y at odd offsets and strides, against the reference."""
    arch, cc, runners, work = cross
    kernels = [(op, algo, dt) for dt in CROSS_DTYPES for op, algo in PAIRS
               if not (algo == "three_pass_reload" and dt[1].itemsize < 4)]
    names = [f"d{i}" for i in range(len(kernels))]
    for name, (op, algo, (xd, yd)) in zip(names, kernels):
        softgen.generate(op, algorithm=algo, target=arch, name=name, dtype=xd.name,
                         out_dtype=yd.name).write(work / f"{name}.o")
    (work / "bytes.c").write_text(BYTE_DRIVER)
    subprocess.run([cc, "-O1", "-static", f"-DKERNELS={','.join(names)}", "bytes.c",
                    *(f"{name}.o" for name in names), "-lm", "-o", "bytes"], cwd=work, check=True, capture_output=True)
    jobs, stdin = [], []
    for k, (op, algo, (xd, yd)) in enumerate(kernels):
        for i, x in enumerate(dtype_cases(xd)):
            record, y_at = dtype_record(k, x, yd, 1 if op == "logsumexp" else x.shape[1], i + k)
            jobs.append((k, x, y_at))
            stdin.append(record)
    for runner in runners[:1]:   # one vector length: the f32 test covers the others
        done = subprocess.run(runner + [str(work / "bytes")], input=b"".join(stdin), capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr[-300:]
        out, at, failures = done.stdout, 0, []
        for k, x, (yo, ys, y_bytes) in jobs:
            op, algo, (xd, yd) = kernels[k]
            buf = np.frombuffer(out[at:at + y_bytes], np.uint8)
            at += y_bytes
            cols = 1 if op == "logsumexp" else x.shape[1]
            rows = np.frombuffer(buf[yo:yo + x.shape[0] * ys * yd.itemsize].tobytes(), yd).reshape(x.shape[0], ys)
            inside = np.zeros(y_bytes, bool)
            for r in range(x.shape[0]):
                inside[yo + r * ys * yd.itemsize: yo + (r * ys + cols) * yd.itemsize] = True
            try:
                assert np.all(buf[~inside] == 0xA5), "wrote outside its rows"
                check(op, x, rows[:, 0] if op == "logsumexp" else rows[:, :cols])
            except AssertionError as e:
                failures.append(f"{' '.join(runner)}: {op} {algo} {xd}->{yd} {x.shape}: {e}")
        assert not failures, f"{len(failures)} wrong:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("op", softgen.OPS)
def test_row_ranges_from_threads_are_the_whole_call(tmp_path, op):
    """What the headers promise a caller with its own threads: calls on row ranges (pointers
    offset by r0 rows), made from several threads at once, write what one call writes."""
    import threading
    artifact = softgen.generate(op, algorithm="two_pass", target="host", schedule=Schedule(rows_per_group=16))
    artifact.write(tmp_path / "k.h")
    assert "Rows are independent" in (tmp_path / "k.h").read_text()
    lib = ctypes.CDLL(str(artifact.shared_library(tmp_path / f"lib{artifact.name}.so")))
    fn = getattr(lib, artifact.name)
    fn.argtypes, fn.restype = ABI, None
    x = np.random.default_rng(4).standard_normal((101, 37)).astype(np.float32)
    cols = 1 if op == "logsumexp" else x.shape[1]
    whole, ranged = (np.full((x.shape[0], cols), np.nan, np.float32) for _ in range(2))
    fn(x.shape[0], x.shape[1], x.ctypes.data, x.shape[1], whole.ctypes.data, cols)
    bounds = [0, 16, 48, 49, 101]

    def run(r0, r1):
        fn(r1 - r0, x.shape[1], x.ctypes.data + r0 * x.strides[0], x.shape[1],
           ranged.ctypes.data + r0 * ranged.strides[0], cols)
    threads = [threading.Thread(target=run, args=pair) for pair in zip(bounds, bounds[1:])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(ranged, whole)


# --- kernels with operands (the family), cross-compiled and run under qemu --------------------

# Runs kernels with m operands after y: records of int64 kernel index, operand count m, rows,
# n, y's size, then each operand's size in bytes and its stride; then x (rows * n floats),
# the operands' bytes.
VARIANT_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
typedef const void *in;
typedef void fn0(int64_t, int64_t, const float *, int64_t, float *, int64_t);
typedef void fn1(int64_t, int64_t, const float *, int64_t, float *, int64_t, in, int64_t);
typedef void fn2(int64_t, int64_t, const float *, int64_t, float *, int64_t, in, int64_t, in, int64_t);
typedef void fn3(int64_t, int64_t, const float *, int64_t, float *, int64_t, in, int64_t, in, int64_t, in, int64_t);
void KERNELS;
static void (*const kernels[])(void) = {POINTERS};
static void *read_bytes(size_t count) {
    char *p = malloc(count + 4);
    return p && fread(p, 1, count, stdin) == count ? p : NULL;
}
int main(void) {
    int64_t h[5], sizes[6];
    while (fread(h, sizeof h, 1, stdin) == 1) {
        int64_t m = h[1], rows = h[2], n = h[3], s[3] = {0, 0, 0};
        if (m > 3 || fread(sizes, sizeof *sizes, (size_t)(2 * m), stdin) != (size_t)(2 * m)) return 2;
        float *x = read_bytes((size_t)(rows * n) * sizeof *x), *y = malloc((size_t)h[4] * sizeof *y + 4);
        void *o[3] = {0, 0, 0};
        for (int64_t i = 0; i < m; i++) {
            o[i] = read_bytes((size_t)sizes[2 * i]);
            s[i] = sizes[2 * i + 1];
        }
        int64_t ys = h[4] == rows ? 1 : n;
        void (*k)(void) = kernels[h[0]];
        if (m == 0) ((fn0 *)k)(rows, n, x, n, y, ys);
        if (m == 1) ((fn1 *)k)(rows, n, x, n, y, ys, o[0], s[0]);
        if (m == 2) ((fn2 *)k)(rows, n, x, n, y, ys, o[0], s[0], o[1], s[1]);
        if (m == 3) ((fn3 *)k)(rows, n, x, n, y, ys, o[0], s[0], o[1], s[1], o[2], s[2]);
        if (fwrite(y, sizeof *y, (size_t)h[4], stdout) != (size_t)h[4]) return 2;
        free(x); free(y); free(o[0]); free(o[1]); free(o[2]);
    }
    return 0;
}
"""
# (op, algorithm, variant options): each operand the family adds, and the backward kernels
VARIANTS = [("softmax", "two_pass", dict(temperature=True, sink=True)),
            ("log_softmax", "online", dict(temperature=True, sink=True)),
            ("logsumexp", "three_pass_recompute", dict(temperature=True)), ("softmax", "three_pass_reload", dict(sink=True)),
            ("softmax", "unified_max", dict(temperature=True)), ("log_softmax", "unified_max", dict(sink=True)),
            ("logsumexp", "unified_max", {}), ("softmax", "backward", {}), ("log_softmax", "backward", {}),
            ("softmax", "two_pass", dict(where=True, empty_rows="zero")), ("log_softmax", "three_pass_recompute",
                                                                            dict(where=True, temperature=True)),
            ("softmax", "three_pass_reload", dict(length=True)), ("logsumexp", "online", dict(length=True))]


def variant_operands(kernel, x: np.ndarray) -> list:
    """Values for the kernel's operands: 1 / T per row, a sink per row, phi per row (some far
    from the rows' max), dy for a backward kernel, a mask (a row with nothing kept), row
    lengths from 0 to past n."""
    rows, n = x.shape
    rng = np.random.default_rng(3)
    mask = rng.random(x.shape) < 0.5
    mask[0] = False
    values = {"inv_temperature": rng.uniform(0.3, 3.0, rows), "sink": rng.standard_normal(rows) * 4,
              "phi": np.where(np.arange(rows) % 5 == 0, 300.0, rng.uniform(0.0, 12.0, rows)),
              "dy": rng.standard_normal(x.shape), "where": mask.view(np.uint8), "length": rng.integers(0, n + 2, rows)}
    return [values[o.name] if o.boolean or o.integer else values[o.name].astype(np.float32) for o in kernel.operands]


def operand_record(a: np.ndarray, rows: int) -> list:
    """An operand's size in bytes and its stride (elementwise: a row; per row: 1)."""
    return [a.nbytes, a.shape[1] if a.ndim == 2 else int(a.size == rows)]


def test_cross_variants_run_under_qemu(cross):
    """The temperature, sink, unified_max, backward, mask and ragged-row kernels for the
    cross target, run under qemu on every tail around the vector widths, as the host's JIT
    computes them."""
    arch, cc, runners, work = cross
    names = [f"v{i}" for i in range(len(VARIANTS))]
    for name, (op, algo, options) in zip(names, VARIANTS):
        softgen.generate(op, algorithm=algo, target=arch, name=name, **options).write(work / f"{name}.o")
    (work / "variants.c").write_text(VARIANT_DRIVER)
    subprocess.run([cc, "-O1", "-static", f"-DKERNELS={','.join(f'{n}(void)' for n in names)}",
                    f"-DPOINTERS={','.join(names)}", "variants.c", *(f"{n}.o" for n in names), "-lm", "-o", "variants"],
                   cwd=work, check=True, capture_output=True)
    rng = np.random.default_rng(5)
    jobs, stdin = [], b""
    for k, (op, algo, options) in enumerate(VARIANTS):
        jit = softgen.compile(op, algorithm=algo, **options)
        for n in (1, 3, 5, 8, 9, 17, 33, 100, 1000):
            x = (rng.standard_normal((7, n)) * 5).astype(np.float32)
            if algo == "backward":
                x = getattr(softgen, op)(x)
            operands = variant_operands(jit, x)
            want = jit(x, operands=tuple(operands))
            head = [k, len(operands), 7, n, want.size] + [v for o in operands for v in operand_record(o, 7)]
            stdin += np.array(head, np.int64).tobytes() + x.tobytes() + b"".join(o.tobytes() for o in operands)
            jobs.append((f"{op} {algo} {options} n={n}", want))
    for runner in runners:
        done = subprocess.run(runner + [str(work / "variants")], input=stdin, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr[-500:]
        out, at = np.frombuffer(done.stdout, np.float32), 0
        for what, want in jobs:
            got = out[at:at + want.size].reshape(want.shape)
            at += want.size
            np.testing.assert_allclose(got, want, rtol=4e-6, atol=1e-6, err_msg=f"{' '.join(runner)}: {what}")
