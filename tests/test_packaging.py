"""softgen as a user gets it: the wheel built from this tree, installed into a fresh venv,
emits C through the API and the console script (its templates are package data)."""
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "*.so", "*.o")


def _run(cmd, cwd, env=None, timeout=120):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the tree (an in-tree build would leave build/ behind).  Without
    the `wheel` package the build needs pip's isolated environment, fetched from the index."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORED)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)]
    if _importable("wheel"):
        cmd.append("--no-build-isolation")
    done = _run(cmd, tmp)
    wheels = list((tmp / "dist").glob("softgen-*.whl"))
    if done.returncode or not wheels:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip()[-300:]}")
    return wheels[0]


def _importable(name: str) -> bool:
    return _run([sys.executable, "-c", f"import {name}"], ROOT).returncode == 0


def _clean_env() -> dict:
    """No PYTHONPATH: the installed copy, not this tree, must be the one imported."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packaging")
    wheel = _build_wheel(tmp)
    # system site packages: llvmlite, numpy and jinja2 without a download
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    done = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp)
    assert done.returncode == 0, done.stderr
    outside = tmp / "elsewhere"
    outside.mkdir()
    return python, outside


def test_wheel_emits_c_from_the_api(installed):
    python, outside = installed
    script = ("import softgen, sys; s = softgen.emit_c('softmax', algorithm='two_pass', isa='scalar', name='k'); "
              "print(softgen.__file__); s.write(sys.argv[1])")
    done = _run([str(python), "-c", script, str(outside / "api")], outside, _clean_env())
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(python.parent.parent), done.stdout  # the wheel's copy
    source = (outside / "api" / "k.c").read_text()
    assert "void k(" in source
    if shutil.which("gcc"):
        built = _run(["gcc", "-O2", "-c", "k.c", "-o", "k.o"], outside / "api")
        assert built.returncode == 0, built.stderr


def test_wheel_console_script_emits_c(installed):
    python, outside = installed
    script = python.parent / "softgen"
    done = _run([str(script), "emit-c", "--op", "log_softmax", "--algorithm", "online", "--name", "cli_k",
                 "-o", str(outside / "cli")], outside, _clean_env())
    assert done.returncode == 0, done.stderr
    assert "void cli_k(" in (outside / "cli" / "cli_k.c").read_text()
    assert (outside / "cli" / "cli_k.h").exists()
