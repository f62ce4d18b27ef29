"""Target strings -> triple, CPU, vector registers; kernels for each use the right registers;
unknown targets, CPUs and features are errors; host overrides from the environment."""
import re

import numpy as np
import pytest

import softgen
from softgen import targets
from softgen.targets import LANES, Target, host, known_cpus
from reference import check

# target string -> (arch, vector registers LLVM must use, register pattern in a kernel's asm)
TARGETS = {
    "x86-64-v2": ("x86_64", "xmm", r"%xmm\d+"),
    "x86-64-v3": ("x86_64", "ymm", r"%ymm\d+"),
    "x86-64-v4": ("x86_64", "zmm", r"%zmm\d+"),
    "x86_64:skylake-avx512": ("x86_64", "zmm", r"%zmm\d+"),
    "x86_64:znver4": ("x86_64", "zmm", r"%zmm\d+"),
    "x86_64:haswell": ("x86_64", "ymm", r"%ymm\d+"),
    "aarch64": ("aarch64", "neon", r"\bv\d+\.4s\b"),
    "aarch64:neoverse-v1": ("aarch64", "neon", r"\bv\d+\.4s\b"),
    "aarch64:apple-m1": ("aarch64", "neon", r"\bv\d+\.4s\b"),
    "riscv64": ("riscv64", "rvv", r"\bvf(add|mul|madd|macc)\.v[vf]\s+v\d+"),
}
WIDER = {"xmm": ("%ymm", "%zmm"), "ymm": ("%zmm",), "zmm": (), "neon": (), "rvv": ()}
HOST = host()
x86_host = pytest.mark.skipif(HOST.arch != "x86_64", reason="the override examples are x86 CPUs")


@pytest.mark.parametrize("spec", TARGETS)
def test_target_strings(spec):
    arch, registers, _ = TARGETS[spec]
    t = Target.parse(spec)
    assert (t.arch, t.vector_registers, t.vector_width) == (arch, registers, LANES[registers])
    assert t.triple.startswith(arch) and t.triple.endswith("linux-gnu")
    assert t.has_avx512 == (registers == "zmm")
    assert not t.is_host and str(t) == spec
    assert Target.parse(t) is t
    if ":" in spec:
        assert t.cpu == spec.partition(":")[2]


@pytest.mark.parametrize("spec", TARGETS)
def test_kernel_asm_uses_the_targets_registers(spec):
    """The explicit <W x float> code must land in full-width registers: AVX-512 CPUs
    that prefer 256-bit vectors (skylake-avx512, x86-64-v4) must still get zmm."""
    _, registers, pattern = TARGETS[spec]
    asm = softgen.generate("softmax", algorithm="two_pass", target=spec).asm
    assert len(re.findall(pattern, asm)) > 20, f"{spec}: few {registers} registers in the kernel"
    for wider in WIDER[registers]:
        assert wider not in asm, f"{spec}: {wider} registers used"
    if registers == "rvv":
        assert re.search(r"\bvle32\.v\b", asm) and re.search(r"\bvse32\.v\b", asm)


def test_host():
    t = Target.parse("host")
    assert t.is_host and t.name == "host" and t.cpu
    assert t.vector_registers in LANES
    assert softgen.compile("softmax", algorithm="online").target == t


def test_x86_baseline_and_a_cpu_without_vectors():
    assert Target.parse("x86_64").vector_registers == "xmm"   # SSE2 baseline
    u74 = Target.parse("riscv64:sifive-u74")                    # RV64GC, no V extension
    assert u74.vector_registers == "scalar"
    asm = softgen.generate("softmax", algorithm="online", target=u74).asm
    assert "vle32" not in asm and "fmadd.s" in asm


@pytest.mark.parametrize("spec", ["sparc", "x86", "aarch64:", "", "host:znver4", "x86-64-v5"])
def test_unknown_target_lists_what_is_accepted(spec):
    with pytest.raises(ValueError, match=r"unknown target .*accepted: host, x86-64-v2, .*riscv64"):
        Target.parse(spec)


def test_unknown_cpu_names_close_cpus_and_where_all_are_listed():
    with pytest.raises(ValueError, match=r"unknown CPU 'neoverse-v9'.*did you mean neoverse-v\d"
                                         r".*knows \d+ aarch64 CPUs: `softgen info --target aarch64 --cpus`"):
        Target.parse("aarch64:neoverse-v9")
    with pytest.raises(ValueError, match=r"unknown CPU 'apple-m1' for x86_64.*--target x86_64 --cpus") as e:
        Target.parse("x86_64:apple-m1")   # a real CPU, of another arch
    assert len(str(e.value)) < 300     # not every CPU LLVM knows


def test_known_cpus_come_from_llvm():
    assert {"znver4", "skylake-avx512", "x86-64-v3"} <= set(known_cpus("x86_64"))
    assert {"neoverse-v1", "apple-m1"} <= set(known_cpus("aarch64"))
    assert {"generic-rv64", "sifive-x280"} <= set(known_cpus("riscv64"))


def test_a_target_llvm_would_silently_change_is_an_error():
    with pytest.raises(ValueError, match="ABI"):   # no D extension: LLVM would drop lp64d
        Target.parse("riscv64:generic-rv64")


def test_bad_target_types():
    with pytest.raises(TypeError, match="target must be a string"):
        Target.parse(64)
    with pytest.raises(TypeError, match="target must be a string"):
        softgen.generate("softmax", algorithm="online", target=None)


# --- host overrides ---------------------------------------------------------------------

@x86_host
def test_host_cpu_override_takes_that_cpus_features(monkeypatch):
    monkeypatch.setenv("SOFTGEN_HOST_CPU", "haswell")
    monkeypatch.delenv("SOFTGEN_HOST_FEATURES", raising=False)
    t = host()
    assert (t.cpu, t.features, t.is_host, t.vector_registers) == ("haswell", "", True, "ymm")


@x86_host
def test_host_feature_override(monkeypatch):
    monkeypatch.delenv("SOFTGEN_HOST_CPU", raising=False)
    monkeypatch.setenv("SOFTGEN_HOST_FEATURES", "+sse4.2,-avx,-avx2,-fma,-avx512f")
    t = host()
    assert t.cpu == HOST.cpu and t.vector_registers == "xmm" and t.vector_width == 4
    kernel = softgen.compile("log_softmax", algorithm="two_pass")   # JIT for the overridden host
    assert kernel.target == t and "%ymm" not in kernel.asm and "%zmm" not in kernel.asm
    x = (np.random.default_rng(0).standard_normal((3, 37)) * 4).astype(np.float32)
    check("log_softmax", x, kernel(x))


@x86_host
@pytest.mark.parametrize("cpu,features,match", [
    ("not-a-cpu", None, r"unknown CPU 'not-a-cpu'.*SOFTGEN_HOST_CPU"),
    ("", "avx2", r"bad LLVM feature 'avx2'"),        # LLVM would abort on a feature without +/-
    ("", "+avx2,fma", r"bad LLVM feature 'fma'"),
    ("", "+not-a-feature", r"does not know a feature.*not-a-feature"),
])
def test_bad_host_overrides(monkeypatch, cpu, features, match):
    monkeypatch.setenv("SOFTGEN_HOST_CPU", cpu)
    if features is None:
        monkeypatch.delenv("SOFTGEN_HOST_FEATURES", raising=False)
    else:
        monkeypatch.setenv("SOFTGEN_HOST_FEATURES", features)
    with pytest.raises(ValueError, match=match):
        host()


# --- targets this machine runs -------------------------------------------------------

X86_LEVEL_NEEDS = {"x86-64-v2": "sse4.2", "x86-64-v3": "avx2", "x86-64-v4": "avx512f"}


@x86_host
@pytest.mark.parametrize("level", X86_LEVEL_NEEDS)
def test_compile_for_an_x86_level(level):
    """compile() JITs any target this CPU runs, and refuses the others by name."""
    t = Target.parse(level)
    runs = X86_LEVEL_NEEDS[level] in HOST.feature_set or X86_LEVEL_NEEDS[level] in _real_features()
    assert t.runs_here == runs
    if not runs:
        with pytest.raises(ValueError, match=rf"needs .*{X86_LEVEL_NEEDS[level]}.*lacks"):
            softgen.compile("softmax", algorithm="online", target=level)
        return
    kernel = softgen.compile("softmax", algorithm="two_pass", target=level)
    assert kernel.target == t and kernel.target.vector_width == t.vector_width
    for wider in WIDER[t.vector_registers]:
        assert wider not in kernel.asm
    x = (np.random.default_rng(5).standard_normal((3, 1000)) * 30).astype(np.float32)
    check("softmax", x, kernel(x))


def _real_features():
    from softgen import targets
    return {f for f, on in targets._host_feature_map().items() if on}


@pytest.fixture
def avx2_only_cpu(monkeypatch):
    """This machine as if it were an AVX2 CPU (what a Zen 3 reports)."""
    from softgen import targets
    features = {f: on and not f.startswith("avx512") for f, on in targets._host_feature_map().items()}
    monkeypatch.setattr(targets, "_host_feature_map", lambda: features)
    targets._host.cache_clear()
    yield
    targets._host.cache_clear()


@x86_host
def test_targets_the_cpu_lacks_are_refused(avx2_only_cpu, monkeypatch):
    for spec in ("x86-64-v4", "x86_64:znver4", "x86_64:skylake-avx512"):
        with pytest.raises(ValueError, match=r"needs avx512.*lacks.*illegal instruction"):
            softgen.compile("softmax", algorithm="online", target=spec)
    assert Target.parse("x86-64-v3").runs_here
    monkeypatch.setenv("SOFTGEN_HOST_CPU", "znver4")   # on a Zen 3 this used to die on SIGILL
    monkeypatch.delenv("SOFTGEN_HOST_FEATURES", raising=False)
    with pytest.raises(ValueError, match=r"needs avx512f.*SOFTGEN_HOST_CPU"):
        host()
    monkeypatch.setenv("SOFTGEN_HOST_CPU", "")
    monkeypatch.setenv("SOFTGEN_HOST_FEATURES", "+avx512f")
    with pytest.raises(ValueError, match=r"needs avx512f.*SOFTGEN_HOST_FEATURES"):
        host()


def test_other_architectures_are_refused_for_jit():
    other = "riscv64" if HOST.arch != "riscv64" else "aarch64"
    with pytest.raises(ValueError, match=r"cannot run on this .* machine.*generate"):
        softgen.compile("softmax", algorithm="online", target=other)


def test_targets_are_checked_without_touching_stderr(capfd):
    """Another thread's log lines on fd 2 neither break a target check nor get lost:
    names are checked against LLVM's lists, not by capturing LLVM's warnings."""
    import os
    import threading
    from softgen import targets

    stop = threading.Event()

    def log():
        while not stop.is_set():
            os.write(2, b"INFO:server:request handled\n")
    thread = threading.Thread(target=log)
    thread.start()
    try:
        targets._probe_asm.cache_clear()
        assert Target.parse("x86_64:goldmont").vector_registers == "xmm"
        with pytest.raises(ValueError, match=r"unknown CPU 'goldmnot'.*did you mean goldmont"):
            Target.parse("x86_64:goldmnot")
        with pytest.raises(ValueError, match=r"does not know a feature.*avx513f.*did you mean avx512f"):
            Target("t", "x86_64-unknown-linux-gnu", "x86-64", "+avx513f")
    finally:
        stop.set()
        thread.join()
    assert "INFO:server:request handled" in capfd.readouterr().err


def test_registers_fma_and_caches_of_targets():
    """What the built-in rule reads off a target: registers, FMA, caches (sysfs for the
    host, else the CPU's known sizes or the arch's defaults)."""
    v4, v3, v1 = (Target.parse(t) for t in ("x86-64-v4", "x86_64:znver3", "x86_64"))
    assert (v4.register_count, v3.register_count, v1.register_count) == (32, 16, 16)
    assert v4.has_fma and v3.has_fma and not v1.has_fma
    assert v3.caches == targets.KNOWN_CACHES["znver3"] == targets.Caches(32 << 10, 512 << 10, 32 << 20)
    assert Target.parse("riscv64").caches == targets.DEFAULT_CACHES["riscv64"]
    assert Target.parse("aarch64:neoverse-v1").register_count == 32
    host = Target.parse("host").caches
    assert 0 < host.l1 <= host.l2 <= host.llc
