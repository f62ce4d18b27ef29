"""Targets: which CPU the LLVM backend generates code for, and its vector width.

Accepted strings: host, x86-64-v2, x86-64-v3, x86-64-v4, x86_64:<cpu>, aarch64,
aarch64:<cpu>, riscv64, riscv64:<cpu>.  Host detection can be overridden with
SOFTGEN_HOST_CPU and SOFTGEN_HOST_FEATURES (an LLVM feature string such as
"+avx2,+fma,-avx512f") where detection misreports.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import llvmlite.binding as llvm

# x86-64 micro-architecture levels as LLVM CPU names (they carry the feature sets).
_X86_LEVELS = {"x86-64-v2": "x86-64-v2", "x86-64-v3": "x86-64-v3", "x86-64-v4": "x86-64-v4"}
_TRIPLES = {
    "x86_64": "x86_64-unknown-linux-gnu",
    "aarch64": "aarch64-unknown-linux-gnu",
    "riscv64": "riscv64-unknown-linux-gnu",
}
ACCEPTED = ("host", "x86-64-v2", "x86-64-v3", "x86-64-v4", "x86_64:<cpu>",
            "aarch64", "aarch64:<cpu>", "riscv64", "riscv64:<cpu>")


@lru_cache(maxsize=None)
def initialize_llvm() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@dataclass(frozen=True)
class Target:
    name: str          # the string it was parsed from, normalized
    triple: str
    cpu: str
    features: str      # LLVM feature string, e.g. "+avx2,+fma"
    is_host: bool = False

    @property
    def arch(self) -> str:
        return self.triple.split("-")[0]

    @property
    def feature_set(self) -> frozenset[str]:
        return frozenset(f[1:] for f in self.features.split(",") if f.startswith("+"))

    @property
    def vector_width(self) -> int:
        """float32 lanes per vector register."""
        if self.arch == "x86_64":
            if "avx512f" in self.feature_set:
                return 16
            return 8 if "avx2" in self.feature_set or "avx" in self.feature_set else 4
        if self.arch == "riscv64":
            return 8  # fixed-length vectors over RVV; LLVM legalizes to LMUL>1 as needed
        return 4      # NEON

    @property
    def has_avx512(self) -> bool:
        return self.arch == "x86_64" and "avx512f" in self.feature_set

    @property
    def abiname(self) -> str:
        return "lp64d" if self.arch == "riscv64" else ""

    @classmethod
    def parse(cls, spec: "str | Target") -> "Target":
        if isinstance(spec, Target):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"target must be a string or Target, not {type(spec).__name__}")
        return _parse(spec.strip())

    def create_target_machine(self, *, jit: bool = False):
        initialize_llvm()
        target = llvm.Target.from_triple(self.triple)
        return target.create_target_machine(
            cpu=self.cpu, features=self.features, opt=3, reloc="pic" if not jit else "default",
            codemodel="jitdefault" if jit else "default", jit=jit, abiname=self.abiname)

    def __str__(self) -> str:
        return self.name


_CPU_FEATURES = {
    # x86-64 levels and common CPUs: the features that decide vector width
    "x86-64-v2": "+sse4.2,+popcnt,+ssse3",
    "x86-64-v3": "+avx,+avx2,+fma,+bmi,+bmi2,+f16c,+sse4.2",
    "x86-64-v4": "+avx,+avx2,+fma,+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl,+sse4.2",
}
_X86_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "icelake-server", "icelake-client",
                    "tigerlake", "sapphirerapids", "graniterapids", "emeraldrapids", "znver4", "znver5",
                    "cannonlake", "rocketlake", "x86-64-v4")
_X86_AVX2_CPUS = ("haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake",
                  "znver1", "znver2", "znver3", "x86-64-v3")


def _x86_cpu_features(cpu: str) -> str:
    if cpu in _X86_AVX512_CPUS:
        return _CPU_FEATURES["x86-64-v4"]
    if cpu in _X86_AVX2_CPUS:
        return _CPU_FEATURES["x86-64-v3"]
    return ""


@lru_cache(maxsize=None)
def host() -> Target:
    initialize_llvm()
    cpu = os.environ.get("SOFTGEN_HOST_CPU") or llvm.get_host_cpu_name()
    features = os.environ.get("SOFTGEN_HOST_FEATURES")
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    triple = llvm.get_process_triple()
    return Target("host", triple, cpu, features, is_host=True)


def _parse(spec: str) -> Target:
    if spec == "host":
        return host()
    if spec in _X86_LEVELS:
        return Target(spec, _TRIPLES["x86_64"], _X86_LEVELS[spec], _CPU_FEATURES[spec])
    arch, _, cpu = spec.partition(":")
    arch = {"x86-64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    if arch not in _TRIPLES or (":" in spec and not cpu):
        raise ValueError(f"unknown target {spec!r}; accepted: {', '.join(ACCEPTED)}")
    if arch == "x86_64":
        cpu = cpu or "x86-64"
        return Target(spec, _TRIPLES[arch], cpu, _x86_cpu_features(cpu))
    if arch == "aarch64":
        return Target(spec, _TRIPLES[arch], cpu or "generic", "+neon")
    return Target(spec, _TRIPLES[arch], cpu or "generic-rv64", "+m,+a,+f,+d,+c,+v")
