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
them is read off LLVM's own code for a probe (which registers a 16-float add lands in,
which instructions an fma or an integer shift becomes), so it follows the CPU and any
feature override exactly.  LLVM only *warns* (on stderr) about an unknown CPU or feature
and then ignores it; softgen checks the names against LLVM's own lists first (asked of a
fresh interpreter, so nothing in this process's stderr is touched) and raises ValueError.

A target runs in this process (JIT) when the host has every feature the target needs:
the x86-64 level's features, the features the string turns on, and those the probe's
code uses (AVX-512 registers, AVX, AVX2 integer vectors, FMA).
"""
from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
# Architectural vector registers of each class: x86 has 16 without AVX-512 (which adds
# 16-31 to every width), NEON and RVV 32 (RVV at LMUL 2: 16 register groups); scalar code
# keeps floats in x86's xmm or the FP registers (16 counted: the smaller of the two).
REGISTERS = {"zmm": 32, "ymm": 16, "xmm": 16, "neon": 32, "rvv": 16, "scalar": 16}
_REGISTER_PATTERNS = (("zmm", r"%zmm"), ("ymm", r"%ymm"), ("xmm", r"%xmm"),
                      ("neon", r"\bv\d+\.4s\b"), ("rvv", r"\bvle32\.v\b"))
_PROBE_IR = """
declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
define void @probe(ptr %p, ptr %q, ptr %r) {
  %v = load <16 x float>, ptr %p, align 4
  %w = fadd <16 x float> %v, %v
  store <16 x float> %w, ptr %p, align 4
  %f = call <16 x float> @llvm.fma.v16f32(<16 x float> %v, <16 x float> %w, <16 x float> %v)
  store <16 x float> %f, ptr %q, align 4
  %i = bitcast <16 x float> %f to <16 x i32>
  %s = shl <16 x i32> %i, <i32 23, i32 23, i32 23, i32 23, i32 23, i32 23, i32 23, i32 23,
                           i32 23, i32 23, i32 23, i32 23, i32 23, i32 23, i32 23, i32 23>
  store <16 x i32> %s, ptr %r, align 4
  ret void
}
define void @probe_half(ptr %p, ptr %q) {
  %v = load <8 x half>, ptr %p, align 2
  %w = fpext <8 x half> %v to <8 x float>
  %a = fadd <8 x float> %w, %w
  %t = fptrunc <8 x float> %a to <8 x half>
  store <8 x half> %t, ptr %q, align 2
  ret void
}
define double @probe_double(double %a, double %b) {
  %c = fadd double %a, %b
  ret double %c
}
"""
# What the probe's x86 assembly uses -> the host feature it needs to run.
_X86_NEEDS = (("avx512f", r"%zmm"), ("avx", r"%ymm"), ("avx2", r"\bvp\w+\s+[^\n]*%ymm"),
              ("f16c", r"\bvcvtp[hs]2p[sh]\b"),
              ("fma", r"\bvfn?m(add|sub)"), ("avx512vl", r"%[xy]mm(1[6-9]|2\d|3[01])\b"),
              ("egpr", r"%r(1[6-9]|2\d|3[01])[bwd]?\b"))   # APX's extra registers
# The x86-64 micro-architecture levels (psABI), in LLVM's feature names.
_X86_LEVEL_FEATURES = {
    "x86-64-v2": ("cx16", "popcnt", "sahf", "sse3", "sse4.1", "sse4.2", "ssse3"),
    "x86-64-v3": ("avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"),
    "x86-64-v4": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}
_FEATURE = re.compile(r"[+-][A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class Caches:
    """Data cache sizes in bytes one core sees: its L1 data cache, its L2, and the last
    level (shared)."""
    l1: int
    l2: int
    llc: int


# Cross targets' caches per LLVM CPU name, in their usual configuration (the vendors'
# documentation: L1 data and L2 per core, the L3 of a whole chip or CCD, which one core can
# fill); other CPUs get their arch's default.
KNOWN_CACHES = {
    "znver3": Caches(32 << 10, 512 << 10, 32 << 20),
    "znver4": Caches(32 << 10, 1 << 20, 32 << 20),
    "znver5": Caches(48 << 10, 1 << 20, 32 << 20),
    "haswell": Caches(32 << 10, 256 << 10, 8 << 20),
    "skylake": Caches(32 << 10, 256 << 10, 8 << 20),
    "skylake-avx512": Caches(32 << 10, 1 << 20, 32 << 20),
    "icelake-server": Caches(48 << 10, 1280 << 10, 48 << 20),
    "sapphirerapids": Caches(48 << 10, 2 << 20, 105 << 20),
    "neoverse-n1": Caches(64 << 10, 1 << 20, 32 << 20),
    "neoverse-v1": Caches(64 << 10, 1 << 20, 32 << 20),
    "neoverse-v2": Caches(64 << 10, 2 << 20, 64 << 20),
    "apple-m1": Caches(128 << 10, 12 << 20, 12 << 20),
    "sifive-x280": Caches(32 << 10, 256 << 10, 2 << 20),
}
DEFAULT_CACHES = {"x86_64": Caches(32 << 10, 1 << 20, 32 << 20),
                  "aarch64": Caches(64 << 10, 1 << 20, 32 << 20),
                  "riscv64": Caches(32 << 10, 512 << 10, 4 << 20)}
_SYSFS_CACHES = "/sys/devices/system/cpu/cpu0/cache"


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
        _check_features(self.arch, self.features, self.name)
        _check_cpu(self.arch, self.cpu, self.name)
        _probe_asm(self.triple, self.cpu, self.features, self.name)

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
        asm = _probe_asm(self.triple, self.cpu, self.features, self.name)
        return next((cls for cls, pattern in _REGISTER_PATTERNS if re.search(pattern, asm)), "scalar")

    @property
    def vector_width(self) -> int:
        """float32 lanes per vector in generated kernels."""
        return LANES[self.vector_registers]

    @property
    def register_count(self) -> int:
        """Vector registers the kernels' values can live in (REGISTERS)."""
        return REGISTERS[self.vector_registers]

    @property
    def has_fma(self) -> bool:
        """Whether a fused multiply-add is one instruction (not a libm call or two ops)."""
        asm = _probe_asm(self.triple, self.cpu, self.features, self.name)
        return self.arch != "x86_64" or re.search(r"\bvfn?m(add|sub)", asm) is not None

    @property
    def caches(self) -> Caches:
        """This machine's caches (Linux sysfs) for the host, else KNOWN_CACHES' or the arch's
        DEFAULT_CACHES; any level sysfs lacks is the default's."""
        known = KNOWN_CACHES.get(self.cpu, DEFAULT_CACHES[self.arch])
        return _host_caches(known) if self.is_host else known

    @property
    def has_avx512(self) -> bool:
        return self.vector_registers == "zmm"

    @property
    def converts_half(self) -> bool:
        """Whether float16 <-> float32 vector conversions are instructions here (F16C, NEON,
        Zvfhmin), not calls into a runtime library (which a JIT or a C file may lack)."""
        asm = _probe_asm(self.triple, self.cpu, self.features, self.name)
        return "__extendhfsf2" not in asm and "__truncsfhf2" not in asm

    @property
    def abiname(self) -> str:
        return _abiname(self.arch)

    @property
    def needed_host_features(self) -> frozenset[str]:
        """The host features this target's code may use (see the module doc)."""
        if self.arch != "x86_64":
            return frozenset()
        levels = _X86_LEVELS[:_X86_LEVELS.index(self.cpu) + 1] if self.cpu in _X86_LEVELS else ()
        asm = _probe_asm(self.triple, self.cpu, self.features, self.name)
        return frozenset([f for level in levels for f in _X86_LEVEL_FEATURES[level]]
                         + [f for f, pattern in _X86_NEEDS if re.search(pattern, asm)]) | self.feature_set

    @property
    def runs_here(self) -> bool:
        """Whether this machine can run the target's code (JIT it in this process)."""
        return self.triple == llvm.get_process_triple() and not self.missing_host_features

    @property
    def missing_host_features(self) -> frozenset[str]:
        """Needed features this CPU lacks (none known where LLVM cannot read its features)."""
        have = _host_feature_map()
        return frozenset(f for f in self.needed_host_features if have and not have.get(f))

    def check_runs_here(self) -> None:
        """ValueError, naming what is missing, unless this machine can run the target."""
        if self.runs_here:
            return
        if self.triple != llvm.get_process_triple():
            raise ValueError(f"target {self.name!r} ({self.arch}) cannot run on this "
                             f"{llvm.get_process_triple().split('-')[0]} machine; "
                             f"use softgen.generate() to build code for it")
        raise ValueError(f"target {self.name!r} (CPU {self.cpu}) needs "
                         f"{', '.join(sorted(self.missing_host_features))}, which this CPU "
                         f"({llvm.get_host_cpu_name()}) lacks; it would die on an illegal "
                         f"instruction. Use a narrower target (x86-64-v2, x86-64-v3, ...) "
                         f"or softgen.generate() to build code for another machine")

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


def _check_features(arch: str, features: str, name: str) -> None:
    """LLVM aborts the process on a feature without a +/- sign and ignores an unknown one:
    check the syntax, then the names against LLVM's list."""
    names = []
    for feature in filter(None, features.split(",")):
        if not _FEATURE.fullmatch(feature):
            raise ValueError(f"bad LLVM feature {feature!r} in target {name!r}: expected a "
                             f"comma-separated list like '+avx2,+fma,-avx512f'")
        names.append(feature[1:])
    # names in the host's own feature map are LLVM's: no need to ask for its list then
    names = [f for f in names if arch != _host_arch() or f not in _host_feature_map()]
    known = _llvm_help(arch)[1] if names else frozenset()
    unknown = [f for f in names if known and f not in known]
    if unknown:
        close = [c for f in unknown for c in difflib.get_close_matches(f, known, n=2)]
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"target {name!r}: LLVM {llvm_version()} does not know a feature in "
                         f"{features!r}: {', '.join(unknown)}{hint}")


def _check_cpu(arch: str, cpu: str, name: str) -> None:
    """The CPU is one LLVM knows (the defaults and the host's own name need no look-up)."""
    if cpu in (_GENERIC[arch][0], *_X86_LEVELS) or cpu == llvm.get_host_cpu_name():
        return
    cpus = known_cpus(arch)
    if cpus and cpu not in cpus:
        raise ValueError(_unknown_cpu_message(arch, cpu, name))


@lru_cache(maxsize=None)
def _probe_asm(triple: str, cpu: str, features: str, name: str) -> str:
    """The probe compiled for this target: what its registers and instructions show."""
    arch = triple.split("-")[0]
    tm = _target_machine(triple, cpu, features, "")   # no ABI yet: LLVM would warn
    module = llvm.parse_assembly(_PROBE_IR)
    module.triple = triple
    module.data_layout = str(tm.target_data)
    asm = tm.emit_assembly(module)
    if arch == "riscv64" and "fadd.d" not in asm:
        raise ValueError(f"target {name!r}: CPU {cpu} has no D extension (double-precision "
                         f"floats), which the {_abiname(arch)} ABI that Linux toolchains use needs")
    return asm


@lru_cache(maxsize=None)
def _llvm_help(arch: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """LLVM's CPU and feature names for an arch.  LLVM prints them (to stderr) for the CPU
    name "help", once per process, so ask a fresh interpreter; () when that fails."""
    code = ("import sys, llvmlite.binding as l; l.initialize_all_targets(); "
            "l.Target.from_triple(sys.argv[1]).create_target_machine(cpu='help')")
    try:
        out = subprocess.run([sys.executable, "-c", code, _TRIPLES[arch]], capture_output=True,
                             text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return (), frozenset()
    cpus_part, _, features_part = out.partition("Available CPUs for this target:")[2].partition(
        "Available features")
    entries = re.compile(r"^\s+(\S+)\s+- ", re.M)
    return (tuple(m.group(1) for m in entries.finditer(cpus_part)),
            frozenset(m.group(1) for m in entries.finditer(features_part)))


def known_cpus(arch: str) -> tuple[str, ...]:
    """LLVM's CPU names for an arch."""
    return _llvm_help(arch)[0]


@lru_cache(maxsize=None)
def _host_feature_map() -> dict:
    """LLVM's feature name -> whether this CPU has it (LLVM reads CPUID), whatever
    SOFTGEN_HOST_* say; empty where LLVM cannot read them."""
    initialize_llvm()
    try:
        return dict(llvm.get_host_cpu_features())
    except RuntimeError:
        return {}


def _host_arch() -> str:
    return llvm.get_process_triple().split("-")[0]


def _unknown_cpu_message(arch: str, cpu: str, name: str) -> str:
    """The close names and where to find all of them: LLVM knows over a hundred per arch,
    too many for an error message."""
    cpus = known_cpus(arch)
    close = difflib.get_close_matches(cpu, cpus, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    listing = (f"; LLVM {llvm_version()} knows {len(cpus)} {arch} CPUs: "
               f"`softgen info --target {arch} --cpus` lists them") if cpus else ""
    return f"unknown CPU {cpu!r} for {arch} in target {name!r}{hint}{listing}"


@lru_cache(maxsize=None)
def _host_caches(default: Caches) -> Caches:
    """cpu0's data caches from sysfs: the L1 data cache, L2, and the largest level."""
    sizes = {}
    for index in Path(_SYSFS_CACHES).glob("index*"):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            size = int(text.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
        except (OSError, ValueError):
            continue
        if kind != "Instruction":
            sizes[level] = max(size, sizes.get(level, 0))
    return Caches(sizes.get(1, default.l1), sizes.get(2, default.l2),
                  max(sizes.values(), default=default.llc) if sizes else default.llc)


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
        target = Target("host", llvm.get_process_triple(), cpu, features, is_host=True)
        target.check_runs_here()
        return target
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
