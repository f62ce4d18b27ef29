"""softgen as a user gets it: the sdist and wheel built from this tree (no network: the build
uses this interpreter's setuptools), their contents, and the wheel installed into a fresh venv
running the README's example, the console script and examples/embed_c from outside the repo."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import softgen

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                 ".hypothesis", "*.so", "*.o")
TEMPLATES = sorted(p.name for p in (ROOT / "softgen" / "templates").glob("*.j2"))


def _run(cmd, cwd, env=None, timeout=120):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _clean_env() -> dict:
    """No PYTHONPATH: the installed copy, not this tree, must be the one imported."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """{"sdist": path, "wheel": path}: `python -m build` of a copy of the tree (an in-tree
    build would leave build/ and egg-info behind), the wheel built from the sdist."""
    pytest.importorskip("build", reason="the `build` package is not installed (pip install build)")
    tmp = tmp_path_factory.mktemp("packaging")
    shutil.copytree(ROOT, tmp / "src", ignore=IGNORED)
    done = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", tmp / "src"], tmp)
    if done.returncode and "Missing dependencies" in done.stdout + done.stderr:
        pytest.skip(f"cannot build without the network here: {(done.stdout + done.stderr).strip()[-300:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = {"sdist": list((tmp / "dist").glob("softgen-*.tar.gz")), "wheel": list((tmp / "dist").glob("softgen-*.whl"))}
    assert all(len(paths) == 1 for paths in found.values()), found
    return {kind: paths[0] for kind, paths in found.items()}


def test_the_wheel_holds_templates_the_typing_marker_and_the_license(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        info = f"softgen-{softgen.__version__}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
    assert {f"softgen/templates/{t}" for t in TEMPLATES} <= names
    assert {"softgen/py.typed", f"{info}/licenses/LICENSE", "softgen/backends/c/__init__.py"} <= names
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)
    assert f"\nVersion: {softgen.__version__}\n" in metadata      # read from softgen/version.py
    assert "\nLicense-Expression: MIT\n" in metadata and "Classifier: Typing :: Typed" in metadata
    assert "Project-URL: Issues, https://github.com/softgen/softgen/issues" in metadata


def test_the_sdist_holds_the_whole_project(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    tracked = _run(["git", "ls-files"], ROOT).stdout.split()
    if not tracked:   # not a git checkout: what is on disk
        tracked = [str(p.relative_to(ROOT)) for d in ("softgen", "tests", "examples", "benchmarks")
                   for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    missing = [path for path in tracked if path not in names and not path.startswith(".git")]
    assert not missing, f"left out of the sdist: {missing}"
    assert {"README.md", "LICENSE", "pyproject.toml", "softgen/py.typed", "tests/test_packaging.py",
            "examples/quickstart.py", "examples/embed_c/Makefile"} <= names
    assert not any(re.search(r"(__pycache__|\.pyc$|\.so$|\.o$)", name) for name in names)


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory):
    """(python, a directory outside the repo): the wheel in a fresh venv that sees this
    interpreter's packages (numpy, llvmlite, jinja2, ... and pip: no download)."""
    tmp = tmp_path_factory.mktemp("venv")
    try:
        venv.EnvBuilder(system_site_packages=True, with_pip=False).create(tmp / "venv")
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot create a venv here: {e}")
    python = tmp / "venv" / "bin" / "python"
    done = _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", dist["wheel"]], tmp, _clean_env())
    assert done.returncode == 0, done.stderr
    outside = tmp / "elsewhere"
    outside.mkdir()
    return python, outside


def _readme_example() -> str:
    """The README's first Python block (its "Use" section)."""
    return re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)


def test_the_installed_wheel_runs_the_readme_example(installed):
    python, outside = installed
    script = _readme_example() + "\nprint('FILE', softgen.__file__)\n"
    done = _run([python, "-c", script], outside, _clean_env())
    assert done.returncode == 0, done.stderr
    where = Path(done.stdout.rpartition("FILE ")[2].strip())
    assert where.is_relative_to(python.parent.parent), where   # the wheel's copy, not this tree


def test_the_installed_command_line_emits_c(installed):
    python, outside = installed
    done = _run([python.parent / "softgen", "emit-c", "--op", "log_softmax", "--algorithm", "online",
                 "--name", "cli_k", "-o", outside / "cli"], outside, _clean_env())
    assert done.returncode == 0, done.stderr
    assert "void cli_k(" in (outside / "cli" / "cli_k.c").read_text()
    assert (outside / "cli" / "cli_k.h").exists()
    done = _run([python, "-m", "softgen", "--version"], outside, _clean_env())
    assert done.returncode == 0 and done.stdout == f"softgen {softgen.__version__}\n", done.stderr


@pytest.mark.skipif(not (shutil.which("make") and shutil.which("cc")), reason="needs make and a C compiler (cc)")
def test_the_installed_wheel_builds_the_embed_c_example(installed):
    """examples/embed_c (emit a kernel, compile a C program with it, run it) with the venv's softgen."""
    python, outside = installed
    example = outside / "embed_c"
    shutil.copytree(ROOT / "examples" / "embed_c", example, ignore=IGNORED)
    done = _run(["make", "-C", example, "run", f"PYTHON={python}", "BUILD=build"], outside, _clean_env())
    assert done.returncode == 0, done.stdout + done.stderr


def test_importing_softgen_loads_no_jinja2():
    """jinja2 is the C backend's: `import softgen` for the JIT alone does not load it."""
    script = "import sys, softgen; print(sorted(m for m in sys.modules if m.startswith(('jinja2', 'tqdm'))))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = _run([sys.executable, "-c", script], ROOT, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
