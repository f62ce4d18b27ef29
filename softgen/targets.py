"""Targets: which CPU the LLVM backend generates code for, and how wide its vectors are.

Accepted strings:
  host                this machine; SOFTGEN_HOST_CPU (an LLVM CPU name) and
                      SOFTGEN_HOST_FEATURES (an LLVM feature string such as
                      "+avx2,+fma,-avx512f") override detection where it misreports
  x86-64-v2|v3|v4     the x86-64 levels (v2: SSE4.2, v3: AVX2+FMA, v4: AVX-512)
  x86_64[:<cpu>]      x86-64 (baseline SSE2) or a named CPU: skylake-avx512, znver4, ...
  aarch64[:<cpu>]     64-bit Arm with NEON (generic) or a named CPU: neoverse-v1, apple-m1, ...
  riscv64[:<cpu>]     RV64GC with the V extension (generic) or a named CPU: sifive-x280, ...

No CPU table lives here: LLVM knows every CPU's features.  What softgen needs from
them, the vector registers, is read off LLVM's own code for a probe (which registers
a 16-float add lands in), so it follows the CPU and any feature override exactly.
LLVM only *warns* (on stderr) about an unknown CPU or feature and then ignores it;
softgen catches those warnings and raises ValueError instead.
"""
from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import llvmlite.binding as llvm

_TRIPLES = {
    "x86_64": "x86_64-unknown-linux-gnu",
    "aarch64": "aarch64-unknown-linux-gnu",
    "riscv64": "riscv64-unknown-linux-gnu",
}
_ALIASES = {"x86-64": "x86_64", "amd64": "x86_64", "arm64": "aarch64"}
_X86_LEVELS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")   # LLVM knows these as CPU names
# (cpu, features) of the plain arch strings; a named CPU brings its own features
_GENERIC = {
    "x86_64": ("x86-64", ""),
    "aarch64": ("generic", "+neon"),
    "riscv64": ("generic-rv64", "+m,+a,+f,+d,+c,+v"),
}
ACCEPTED = ("host", *_X86_LEVELS, "x86_64[:<cpu>]", "aarch64[:<cpu>]", "riscv64[:<cpu>]")

# Vector register classes, as found in the probe's assembly, and the float32 lanes the
# codegen uses with each.  RVV: LLVM maps fixed-length vectors onto RVV registers for any
# VLEN >= 128 (the minimum V guarantees); 8 lanes is LMUL 2 there.  "scalar": no vector
# unit, LLVM splits the vectors into scalar ops (4 lanes keeps that code small).
LANES = {"zmm": 16, "ymm": 8, "xmm": 4, "neon": 4, "rvv": 8, "scalar": 4}
_REGISTER_PATTERNS = (("zmm", r"%zmm"), ("ymm", r"%ymm"), ("xmm", r"%xmm"),
                      ("neon", r"\bv\d+\.4s\b"), ("rvv", r"\bvle32\.v\b"))
_PROBE_IR = """
define void @probe(ptr %p) {
  %v = load <16 x float>, ptr %p, align 4
  %w = fadd <16 x float> %v, %v
  store <16 x float> %w, ptr %p, align 4
  ret void
}
"""
_FEATURE = re.compile(r"[+-][A-Za-z0-9_.\-]+")


@lru_cache(maxsize=None)
def initialize_llvm() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def llvm_version() -> str:
    return ".".join(map(str, llvm.llvm_version_info))


@dataclass(frozen=True)
class Target:
    """A code generation target.  Constructing one checks it with LLVM (ValueError if
    LLVM does not know the CPU or a feature)."""
    name: str          # the string it was parsed from
    triple: str
    cpu: str           # LLVM CPU name
    features: str      # LLVM feature string on top of the CPU's own, e.g. "+neon"
    is_host: bool = False

    def __post_init__(self):
        _check_features(self.features, self.name)
        _vector_registers(self.triple, self.cpu, self.features, self.name)

    @property
    def arch(self) -> str:
        return self.triple.split("-")[0]

    @property
    def feature_set(self) -> frozenset[str]:
        """The features the feature string turns on (the CPU's own are not listed)."""
        return frozenset(f[1:] for f in self.features.split(",") if f.startswith("+"))

    @property
    def vector_registers(self) -> str:
        """The vector register class LLVM uses for this target: one of LANES."""
        return _vector_registers(self.triple, self.cpu, self.features, self.name)

    @property
    def vector_width(self) -> int:
        """float32 lanes per vector in generated kernels."""
        return LANES[self.vector_registers]

    @property
    def has_avx512(self) -> bool:
        return self.vector_registers == "zmm"

    @property
    def abiname(self) -> str:
        return _abiname(self.arch)

    @classmethod
    def parse(cls, spec: "str | Target") -> "Target":
        if isinstance(spec, Target):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"target must be a string or Target, not {type(spec).__name__}")
        return _parse(spec.strip())

    def create_target_machine(self, *, jit: bool = False):
        return _target_machine(self.triple, self.cpu, self.features, self.abiname, jit)

    def __str__(self) -> str:
        return self.name


def _abiname(arch: str) -> str:
    return "lp64d" if arch == "riscv64" else ""   # what Debian's riscv64 toolchain uses


def _target_machine(triple: str, cpu: str, features: str, abiname: str, jit: bool = False):
    initialize_llvm()
    return llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="default" if jit else "pic",
        codemodel="jitdefault" if jit else "default", jit=jit, abiname=abiname)


def _check_features(features: str, name: str) -> None:
    """LLVM aborts the process on a feature without a +/- sign: check the syntax first."""
    for feature in filter(None, features.split(",")):
        if not _FEATURE.fullmatch(feature):
            raise ValueError(f"bad LLVM feature {feature!r} in target {name!r}: expected a "
                             f"comma-separated list like '+avx2,+fma,-avx512f'")


@lru_cache(maxsize=None)
def _vector_registers(triple: str, cpu: str, features: str, name: str) -> str:
    """Compile the probe for this target and see which vector registers LLVM used.
    What LLVM warns about on the way (unknown CPU or feature, an ABI the CPU cannot do)
    is an error here rather than a silently different target."""
    arch = triple.split("-")[0]
    with _stderr_captured() as warnings:  # LLVM warns when the target machine is made
        tm = _target_machine(triple, cpu, features, _abiname(arch))
    _raise_for_warnings(warnings, arch, cpu, features, name)  # before codegen: it may abort
    with _stderr_captured() as warnings:
        module = llvm.parse_assembly(_PROBE_IR)
        module.triple = triple
        module.data_layout = str(tm.target_data)
        asm = tm.emit_assembly(module)
    _raise_for_warnings(warnings, arch, cpu, features, name)
    return next((cls for cls, pattern in _REGISTER_PATTERNS if re.search(pattern, asm)), "scalar")


def _raise_for_warnings(warnings: list[str], arch: str, cpu: str, features: str, name: str):
    message = " ".join("".join(warnings).split())
    if "not a recognized processor" in message:
        raise ValueError(_unknown_cpu_message(arch, cpu, name))
    if "not a recognized feature" in message:
        raise ValueError(f"target {name!r}: LLVM {llvm_version()} does not know a feature in "
                         f"{features!r} ({message})")
    if message:
        raise ValueError(f"target {name!r}: LLVM rejects it: {message}")


_stderr_lock = threading.Lock()


@contextmanager
def _stderr_captured():
    """Capture what native code writes to file descriptor 2 (LLVM's warnings)."""
    captured: list[str] = []
    with _stderr_lock, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode(errors="replace"))


@lru_cache(maxsize=None)
def known_cpus(arch: str) -> tuple[str, ...]:
    """LLVM's CPU names for an arch.  LLVM prints its list for the CPU name "help" only
    once per process, so ask a fresh interpreter."""
    code = ("import sys, llvmlite.binding as l; l.initialize_all_targets(); "
            "l.Target.from_triple(sys.argv[1]).create_target_machine(cpu='help')")
    try:
        out = subprocess.run([sys.executable, "-c", code, _TRIPLES[arch]], capture_output=True,
                             text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return ()
    cpus_part = out.partition("Available CPUs for this target:")[2].partition("Available features")[0]
    return tuple(m.group(1) for m in re.finditer(r"^\s+(\S+)\s+- ", cpus_part, re.M))


def _unknown_cpu_message(arch: str, cpu: str, name: str) -> str:
    cpus = known_cpus(arch)
    close = difflib.get_close_matches(cpu, cpus, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    listing = f"; LLVM {llvm_version()} knows: {', '.join(cpus)}" if cpus else ""
    return f"unknown CPU {cpu!r} for {arch} in target {name!r}{hint}{listing}"


def host() -> Target:
    """This machine, with SOFTGEN_HOST_CPU / SOFTGEN_HOST_FEATURES applied.  Overriding
    only the CPU gives that CPU's own features (the detection was what was wrong)."""
    return _host(os.environ.get("SOFTGEN_HOST_CPU", "").strip(),
                 os.environ.get("SOFTGEN_HOST_FEATURES"))


@lru_cache(maxsize=None)
def _host(cpu_override: str, features_override: str | None) -> Target:
    initialize_llvm()
    cpu = cpu_override or llvm.get_host_cpu_name()
    if features_override is not None:
        features = features_override.strip()
    elif cpu_override:
        features = ""
    else:
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:   # LLVM cannot read this CPU's features: use the CPU name's
            features = ""
    try:
        return Target("host", llvm.get_process_triple(), cpu, features, is_host=True)
    except ValueError as e:
        if cpu_override or features_override is not None:
            raise ValueError(f"{e} (set by SOFTGEN_HOST_CPU / SOFTGEN_HOST_FEATURES)") from None
        raise


def _parse(spec: str) -> Target:
    if spec == "host":
        return host()
    if spec in _X86_LEVELS:
        return Target(spec, _TRIPLES["x86_64"], spec, "")
    arch, colon, cpu = spec.partition(":")
    arch = _ALIASES.get(arch, arch)
    if arch not in _TRIPLES or (colon and not cpu):
        raise ValueError(f"unknown target {spec!r}; accepted: {', '.join(ACCEPTED)}")
    generic_cpu, generic_features = _GENERIC[arch]
    return Target(spec, _TRIPLES[arch], cpu or generic_cpu, "" if cpu else generic_features)
