"""The on-disk kernel cache (softgen/backends/llvm/cache.py): entries are found again in a
new process, checked before they are linked, written atomically, held to their size cap."""
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import softgen
from softgen import runtime
from softgen.backends.llvm import cache, compiler
from softgen.lower import Schedule

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty cache directory, and an empty in-process kernel table so compile() looks."""
    monkeypatch.setenv("SOFTGEN_CACHE_DIR", str(tmp_path / "kernels"))
    monkeypatch.delenv("SOFTGEN_CACHE", raising=False)
    monkeypatch.setattr(runtime, "_cache", {})
    return tmp_path / "kernels"


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + cache.SUFFIX))


def compile_small(schedule=Schedule(), dtype="float32"):
    return softgen.compile("softmax", algorithm="three_pass_reload", dtype=dtype, schedule=schedule)


def reference(x):
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_a_kernel_is_stored_then_linked_without_compiling(cache_dir, monkeypatch):
    x = np.random.default_rng(0).standard_normal((3, 301)).astype(np.float32)
    expected = compile_small()(x)
    assert len(entries(cache_dir)) == 1
    monkeypatch.setattr(runtime, "_cache", {})

    def no_compiling(*args):
        raise AssertionError("a cached kernel was lowered again")
    monkeypatch.setattr(compiler, "lower", no_compiling)
    assert np.array_equal(compile_small()(x), expected)


def test_what_decides_the_code_decides_the_entry(cache_dir):
    compile_small()
    compile_small(Schedule(unroll=2))
    compile_small(dtype="float64")
    assert len(entries(cache_dir)) == 3
    compile_small(Schedule(unroll=2))
    assert len(entries(cache_dir)) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "foreign key", "empty"])
def test_a_damaged_entry_is_rebuilt_not_linked(cache_dir, monkeypatch, damage):
    x = np.random.default_rng(1).standard_normal((2, 77)).astype(np.float32)
    compile_small()
    [path] = entries(cache_dir)
    data = path.read_bytes()
    damaged = {"truncate": data[:len(data) // 2], "flip a byte": data[:-9] + bytes([data[-9] ^ 1]) + data[-8:],
               "foreign key": data.replace(b'"triple"', b'"tripl3"'), "empty": b""}[damage]
    assert damaged != data and cache.load("nothing") is None
    path.write_bytes(damaged)
    monkeypatch.setattr(runtime, "_cache", {})
    np.testing.assert_allclose(compile_small()(x), reference(x), rtol=1e-5, atol=1e-7)
    assert path.read_bytes() == data   # rebuilt and stored again


def test_the_size_cap_evicts_the_least_recently_used(cache_dir, monkeypatch):
    for unroll in (1, 2, 4):
        compile_small(Schedule(unroll=unroll))
    paths = entries(cache_dir)
    by_age = sorted(paths, key=lambda p: p.stat().st_mtime)
    for age, path in enumerate(by_age):
        os.utime(path, (1000 + age, 1000 + age))
    # a cap the entries exceed by half the oldest one (whatever the kernels' sizes)
    total = sum(p.stat().st_size for p in paths)
    monkeypatch.setenv("SOFTGEN_CACHE_MAX_MB", str((total - by_age[0].stat().st_size / 2) / 2**20))
    assert cache.evict(cache.max_bytes()) == 1
    assert not by_age[0].exists() and by_age[1].exists() and by_age[2].exists()
    assert cache.info().entries == 2
    assert cache.clear() == 2 and cache.info().entries == 0


def test_the_cache_can_be_turned_off(cache_dir, monkeypatch):
    monkeypatch.setenv("SOFTGEN_CACHE", "0")
    compile_small()
    assert not entries(cache_dir) and not cache.info().enabled


def test_an_unwritable_cache_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SOFTGEN_CACHE_DIR", str(blocker / "kernels"))
    monkeypatch.setattr(runtime, "_cache", {})
    x = np.ones((1, 9), np.float32)
    np.testing.assert_allclose(compile_small()(x), np.full((1, 9), 1 / 9), rtol=1e-6)


def test_the_size_cap_must_be_a_number(monkeypatch):
    monkeypatch.setenv("SOFTGEN_CACHE_MAX_MB", "lots")
    with pytest.raises(ValueError, match="SOFTGEN_CACHE_MAX_MB"):
        cache.max_bytes()


PROCESS = textwrap.dedent("""
    import sys, numpy as np, softgen
    x = np.linspace(-30, 30, 2 * 1000, dtype=np.float32).reshape(2, 1000)
    k = softgen.compile("log_softmax", algorithm="two_pass")
    np.save(sys.argv[1], k(x))
""")


def run_process(cache_dir: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "SOFTGEN_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", PROCESS, str(out)], env=env)


def test_processes_share_the_cache(tmp_path):
    """Two processes building the same kernel at once, then a third reading it: each
    gets the same result, and one valid entry remains."""
    cache_dir = tmp_path / "kernels"
    procs = [run_process(cache_dir, tmp_path / f"y{i}.npy") for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert run_process(cache_dir, tmp_path / "y2.npy").wait(timeout=120) == 0
    ys = [np.load(tmp_path / f"y{i}.npy") for i in range(3)]
    assert np.array_equal(ys[0], ys[1]) and np.array_equal(ys[0], ys[2])
    assert len(entries(cache_dir)) == 1 and not list(cache_dir.glob(".tmp-*"))


def test_a_kernel_pickles_as_its_recipe(cache_dir):
    kernel = compile_small(Schedule(unroll=2), dtype="float64")
    clone = pickle.loads(pickle.dumps(kernel))
    x = np.random.default_rng(2).standard_normal((4, 50))
    assert (clone.op, clone.algorithm, clone.schedule, clone.dtype) == (kernel.op, kernel.algorithm,
                                                                         kernel.schedule, kernel.dtype)
    assert np.array_equal(clone(x), kernel(x))


def test_functions_and_kernels_travel_to_worker_processes(cache_dir):
    """multiprocessing pickles what it maps and its arguments: softgen's functions by name,
    kernels by recipe (the workers, started fresh, read the kernel from the cache)."""
    import multiprocessing
    xs = [np.random.default_rng(i).standard_normal((3, 40)).astype(np.float32) for i in range(3)]
    kernel = compile_small()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        ys = pool.map(softgen.softmax, xs)
        zs = pool.starmap(kernel.__call__, [(x,) for x in xs])
    for x, y, z in zip(xs, ys, zs):
        np.testing.assert_array_equal(y, softgen.softmax(x))
        np.testing.assert_array_equal(z, kernel(x))
