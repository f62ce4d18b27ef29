"""softgen.generate(): the artifacts, and kernels for other targets run for real: aarch64 and
riscv64 objects linked with cross compilers and run under qemu-user, an x86-64-v3 shared
library loaded here, all compared against float64."""
import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

import softgen
from softgen.backends.llvm import Schedule
from softgen.targets import host
from reference import check
from test_api import PAIRS, special_rows

HOST = host()
ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "riscv64": 243}

# Runs the kernel on records read from stdin (int64 rows, n, y_cols, then rows*n floats) and
# writes rows*y_cols floats per record; exits 3 if the kernel wrote past its output.
DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
void KERNEL(int64_t rows, int64_t n, const float *x, int64_t xs, float *y, int64_t ys);
enum { GUARD = 16 };
int main(void) {
    int64_t h[3];
    while (fread(h, sizeof h, 1, stdin) == 1) {
        size_t in = (size_t)(h[0] * h[1]), out = (size_t)(h[0] * h[2]);
        float *x = malloc((in + 1) * sizeof *x), *y = malloc((out + GUARD) * sizeof *y);
        if (!x || !y || fread(x, sizeof *x, in, stdin) != in) return 2;
        for (int i = 0; i < GUARD; i++) y[out + i] = 1234.5f;
        KERNEL(h[0], h[1], x, h[1], y, h[2]);
        for (int i = 0; i < GUARD; i++) if (y[out + i] != 1234.5f) return 3;
        fwrite(y, sizeof *y, out, stdout);
        free(x);
        free(y);
    }
    return 0;
}
"""
# arch -> (cross compiler, the qemu command lines to run each binary under)
CROSS = {
    "aarch64": ("aarch64-linux-gnu-gcc", [["qemu-aarch64"]]),
    "riscv64": ("riscv64-linux-gnu-gcc",   # V 1.0 at two vector lengths: code must not assume one
                [["qemu-riscv64", "-cpu", f"rv64,v=true,vext_spec=v1.0,vlen={vlen}"] for vlen in (128, 256)]),
}


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


def encode(op, cases) -> bytes:
    out_cols = [1 if op == "logsumexp" else x.shape[1] for x in cases]
    return b"".join(np.int64([x.shape[0], x.shape[1], c]).tobytes() + x.tobytes()
                    for x, c in zip(cases, out_cols))


def decode(op, cases, data: bytes) -> list:
    outputs, at = [], 0
    for x in cases:
        cols = 1 if op == "logsumexp" else x.shape[1]
        size = x.shape[0] * cols
        outputs.append(np.frombuffer(data, np.float32, size, at).reshape(x.shape[0], cols))
        at += 4 * size
    assert at == len(data), "driver output has the wrong length"
    return outputs


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


@pytest.mark.parametrize("op,algo", PAIRS)
def test_cross_kernel_runs_under_qemu(cross, op, algo):
    arch, cc, runners, work = cross
    artifact = softgen.generate(op, algorithm=algo, target=arch, name=f"k_{op}_{algo}")
    obj = artifact.write(work / f"{artifact.name}.o")
    exe = work / artifact.name
    subprocess.run([cc, "-O1", "-static", f"-DKERNEL={artifact.name}", "driver.c", obj.name, "-lm",
                    "-o", exe.name], cwd=work, check=True, capture_output=True)
    cases = inputs()
    for runner in runners:
        done = subprocess.run(runner + [str(exe)], input=encode(op, cases), capture_output=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(runner)}: exit {done.returncode} {done.stderr[-500:]!r}"
        check_all(op, cases, decode(op, cases, done.stdout))


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


@pytest.mark.parametrize("op,algo", PAIRS)
def test_generate_for_the_host_is_the_jits_code(op, algo):
    """One code path: the JIT and generate() optimize the same module the same way."""
    assert (softgen.generate(op, algorithm=algo, target="host").llvm_ir
            == softgen.compile(op, algorithm=algo).llvm_ir)


def test_generate_takes_a_schedule():
    """generate(schedule=) compiles what compile(schedule=) runs; Schedule() is the default."""
    schedule = Schedule(rows=4, pipeline=True)
    artifact = softgen.generate("softmax", algorithm="three_pass_recompute", target="host", schedule=schedule)
    assert artifact.schedule == schedule
    assert artifact.llvm_ir == softgen.compile("softmax", algorithm="three_pass_recompute", schedule=schedule).llvm_ir
    default = softgen.generate("softmax", algorithm="three_pass_recompute", target="host")
    assert default.schedule == Schedule() and default.llvm_ir != artifact.llvm_ir


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(op="softmax", algorithm="online", target="aarch64", name="1st"), ValueError, "not a C identifier"),
    (dict(op="softmax", algorithm="online", target="aarch64", name="a-b"), ValueError, "not a C identifier"),
    (dict(op="softmax", algorithm="online", target="aarch64", name=3), TypeError, "name must be a string"),
    (dict(op="softmax", algorithm="online", target="aarch64", dtype="float64"), TypeError, "unsupported dtype"),
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
