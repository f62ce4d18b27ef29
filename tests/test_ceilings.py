"""benchmarks/ceilings.c: each vector path builds with its documented line (no -lm), runs on
a tiny size, and prints positive numbers and an exp accurate to a few ulp."""
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from softgen.targets import host

SOURCE = Path(__file__).resolve().parent.parent / "benchmarks" / "ceilings.c"
HOST = host()
X86 = HOST.arch == "x86_64"
# name: (compiler and flags, runner, lanes it must pick (None: any), runs here)
VARIANTS = {
    "native": (["cc", "-march=native"], [], None, True),
    "avx512": (["cc", "-mavx512f"], [], 16, X86 and "avx512f" in HOST.feature_set),
    "avx2": (["cc", "-mavx2", "-mfma", "-mno-avx512f"], [], 8, X86 and {"avx2", "fma"} <= HOST.feature_set),
    "plain x86-64": (["cc", "-march=x86-64"], [], 1, X86),
    "neon": (["aarch64-linux-gnu-gcc", "-static"], ["qemu-aarch64"], 4, True),
}


def run(cmd) -> str:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, f"`{' '.join(map(str, cmd))}` failed ({res.returncode}):\n{res.stderr[-2000:]}"
    return res.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_builds_and_measures(tmp_path, variant):
    cc, runner, lanes, runs_here = VARIANTS[variant]
    if not runs_here:
        pytest.skip(f"this host cannot run the {variant} build")
    missing = [t for t in (cc[0], *runner) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    exe = tmp_path / "ceilings"
    run([*cc, "-O2", "-Wall", "-Wextra", "-Werror", SOURCE, "-o", exe])
    for args, keys in ((["exp", 1024, 20], {"exp_pass", "exp_err"}),
                       (["memory", 1 << 16, 2], {"read_GBps", "rw_GBps", "rw_stream_GBps", "two_pass_bound"})):
        out = dict(field.split("=") for field in run([*runner, exe, *args]).split())
        values = {k: float(v) for k, v in out.items()}
        assert keys | {"n", "lanes"} <= values.keys(), out
        assert lanes is None or values["lanes"] == lanes, f"{variant} took the {values['lanes']:g}-lane path"
        assert all(math.isfinite(v) and v > 0 for v in values.values()), out
        assert values.get("exp_err", 0) < 4e-7, f"{variant}: exp relative error {values['exp_err']:g}"
