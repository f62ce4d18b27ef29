import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
# The tests must not depend on (or write to) the user's tuning wisdom: point it at a
# fresh path for the session; tests of the tuner set their own.
os.environ["SOFTGEN_WISDOM"] = os.path.join(tempfile.mkdtemp(prefix="softgen-tests-"), "wisdom.json")
# Nor on the user's kernel cache: a fresh one for the session, shared by its xdist workers
# (they inherit the variable), unless the caller names one (CI shares one across its runs).
os.environ.setdefault("SOFTGEN_CACHE_DIR", tempfile.mkdtemp(prefix="softgen-kernels-"))

# A C++ program that includes a kernel's C header, runs the kernel (row by row output) on
# ROWS x N values and prints the outputs.
CXX_MAIN = r"""
#include <cstdio>
#include "HEADER"
int main() {
    static float x[ROWS][N], y[ROWS][N];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < N; j++) x[r][j] = 0.75f * j - 3.0f * r;
    KERNEL(ROWS, N, &x[0][0], N, &y[0][0], N);
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < N; j++) std::printf("%.9g\n", y[r][j]);
    return 0;
}
"""


def _run(cmd: list) -> str:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    if res.returncode:
        pytest.fail(f"`{' '.join(map(str, cmd))}` failed ({res.returncode}):\n{res.stdout}{res.stderr}"[:4000])
    return res.stdout


@pytest.fixture
def cxx_caller(tmp_path):
    """call(header, objects, kernel) -> (x, y): CXX_MAIN built with g++ against the C header
    and linked with the kernel's objects, run; x its input, y what it printed."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")

    def call(header, objects, kernel: str):
        rows, n = 3, 37
        x = (0.75 * np.arange(n)[None] - 3.0 * np.arange(rows)[:, None]).astype(np.float32)
        main, exe = tmp_path / "main.cpp", tmp_path / "main"
        main.write_text(CXX_MAIN.replace("HEADER", str(header)))
        _run(["g++", "-O1", "-Wall", "-Werror", f"-DKERNEL={kernel}", f"-DROWS={rows}", f"-DN={n}", main,
              *objects, "-lm", "-o", exe])
        return x, np.array(_run([exe]).split(), np.float32).reshape(rows, n)
    return call

def pytest_terminal_summary(terminalreporter):
    """The matrix's worst error per op x algorithm x width, when it ran."""
    worst = getattr(sys.modules.get("test_matrix"), "WORST", None)
    if worst:
        terminalreporter.section("worst error vs float64 in the matrix (reference.check's measure)")
        for key, err in sorted(worst.items(), key=lambda kv: tuple(map(str, kv[0]))):
            op, algo, width, *dtypes = key
            terminalreporter.write_line(f"{op:>12} {algo:<22} {width:>2} lanes {''.join(dtypes) or 'float32':<18} {err:.3g}")
