"""Building the emitted C in the tests: the ISAs this host runs, the compiler's strict
flags, and commands run that fail the test (with their output) or skip it where a tool is
missing."""
import shutil
import subprocess

import pytest

import softgen
from softgen.backends.c import ISAS

HOST = softgen.Target.parse("host")


def _runs_here(isa: str) -> bool:
    if isa == "scalar":
        return True
    return HOST.arch == "x86_64" and bool(ISAS[isa].host_features) and \
        ISAS[isa].host_features <= HOST.feature_set


HOST_ISAS = [isa for isa in ISAS if _runs_here(isa)]


def need(*tools: str):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: .ci/run installs it)")


def strict_flags(isa: str) -> list[str]:
    return ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", *(["-pedantic"] if isa == "scalar" else []),
            *ISAS[isa].flags]


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if res.returncode:
        pytest.fail(f"`{' '.join(map(str, cmd))}` failed ({res.returncode}):\n{res.stdout}{res.stderr}"[:6000])
    return res
