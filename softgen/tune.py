"""Choosing a kernel for a shape: the built-in rule, and the autotuner with its wisdom file.

`algorithm="auto"` asks `choose(op, rows, n, dtype=, out_dtype=)` for an (algorithm,
schedule) pair;
`resolve` is the whole rule the JIT follows (an explicit algorithm gets the built-in
schedule), and ahead-of-time output (generate, emit_c, the CLI) reaches it through the
schedule spelling "auto:ROWSxN".

Shapes fall into bands: the row length's power of two, and whether input plus output fit in
the last-level cache (beyond it the kernel should move as few bytes as possible and
stream its output past the cache), per dtype pair (x's, y's): float32 -> float32's bands
have no dtype in their key (the wisdom files written before dtypes hold float32's), the
others end in "/float64", "/bfloat16->float32", ....  `tune()` times candidate pairs on this machine per
band and saves the winners in a JSON "wisdom" file; `choose` prefers wisdom for the
host when there is some and falls back to the built-in rule otherwise.

Wisdom lives in $SOFTGEN_WISDOM, else in wisdom.json in the user's cache directory for
softgen (platformdirs: $XDG_CACHE_HOME/softgen or ~/.cache/softgen on Linux,
~/Library/Caches/softgen on macOS, %LOCALAPPDATA%\\softgen\\Cache on Windows).  A file
that does not parse, has another format version, or was tuned on another CPU is ignored
with a warning, never trusted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import platformdirs

from . import algorithms, numerics, ops, runtime
from .dtypes import check_dtype, compute_dtype, ir_dtype
from .ir import Kind, Type, nan_caught
from .lower import Schedule
from .targets import Caches, Target
from .timing import median_time

WISDOM_ENV = "SOFTGEN_WISDOM"
WISDOM_VERSION = 1
# The built-in rule's models (builtin_schedule and below; the machine's numbers come from
# the target, Machine.of):
SHORT_VECTORS = 8   # rows of at most 8 vectors (two rounds of the unroll-4 loop): the per-row
                    # work (lane merges, loop entry, tail) outweighs the sweep, so rows go
                    # a register's worth to a group, one vector per iteration
GROUP_BUFFERS = 4   # a pipelined group's x and y, for two groups at once (the exp stage reads
                    # x of the group the max stage read, the output stage y of the one the
                    # exp stage wrote): these must stay in L2 between the passes
LONG_GROUP = 4      # rows per group beyond that (rows no longer stay in L2 between passes
                    # whatever the group): 4 rows keep 4 loads from memory in flight per pass
# Kernels whose passes re-read the same rows of two inputs and do little per element (the
# backward kernels: y and dy, a multiply-add per element to the sum): one row at a time, so
# that the second pass finds both rows in L1; groups and pipelining have no exp to overlap
# and only push the rows out of it.  Measured (Zen 4, float32 softmax_backward, el/ns, one
# row against the forward rule's pipelined groups of 16): 256x1024 4.38 / 3.07, 1024x1024
# 3.84 / 2.97, 4096x64 6.31 / 4.81 (torch 3.96, 3.96, 6.22); log_softmax_backward, whose
# second pass has an exp: 4.15 / 4.26, 2.65 / 2.71, 4.47 / 3.80.
ONE_ROW_ALGORITHMS = ("backward",)
TEMPORARIES = 8     # vectors one element's exp keeps in flight beside a sweep's states and
                    # row constants: x, its rounded and biased value, k, t, the polynomial,
                    # 2^k, the product, and a compare's operand (x86's NaN test against 0)
# The tuner's default shapes: one per band that the six benchmark cases touch, and more.
DEFAULT_SHAPES = ((4096, 64), (2048, 256), (1024, 1024), (256, 4096), (64, 32768), (1, 1 << 20),
                  (16, 1 << 22))


class WisdomWarning(UserWarning):
    """A wisdom file was found but not used."""


@dataclass(frozen=True)
class Choice:
    algorithm: str
    schedule: Schedule = Schedule()

    def describe(self) -> str:
        changed = {f.name: getattr(self.schedule, f.name) for f in dataclasses.fields(Schedule)
                   if getattr(self.schedule, f.name) != f.default}
        return self.algorithm + "".join(f" {k}={v}" for k, v in changed.items())

    def to_json(self) -> dict:
        return {"algorithm": self.algorithm, "schedule": self.schedule.to_dict()}

    @classmethod
    def from_json(cls, data: dict) -> "Choice":
        if data["algorithm"] not in algorithms.ALGORITHMS:
            raise ValueError(f"unknown algorithm {data['algorithm']!r}")
        return cls(data["algorithm"], Schedule.from_dict(data["schedule"]))


# --- dtypes ---------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _dtype_pair(dtype, out_dtype) -> tuple[np.dtype, np.dtype]:
    """(x's, y's) numpy dtypes (TypeError for unsupported ones); out_dtype None: dtype."""
    x = ir_dtype(dtype)
    y = x if out_dtype is None else ir_dtype(out_dtype)
    return check_dtype(x), check_dtype(y)


def _dtypes(dtype, out_dtype):
    """_dtype_pair for any spelling, also unhashable ones."""
    try:
        return _dtype_pair(dtype, out_dtype)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
        return _dtype_pair.__wrapped__(dtype, out_dtype)


def reload_allowed(dtype="float32", out_dtype=None) -> bool:
    """Whether three_pass_reload computes this pair: not where y is narrower than what the
    kernel computes in (it would keep e^(x - m) in y rounded; algorithms.build refuses it)."""
    x, y = (ir_dtype(d) for d in _dtypes(dtype, out_dtype))
    return y.bits >= compute_dtype(x, y).bits


@dataclass(frozen=True)
class Machine:
    """What the built-in rule reads off a target: float32 lanes per vector, vector
    registers, whether ldexp is one instruction (AVX-512's vscalefps), whether x86's max
    keeps its NaN record in a vector register (no mask registers: lower.reductions.
    MaxNaNMask), and its caches."""
    lanes: int
    registers: int
    native_ldexp: bool
    nan_record: bool
    caches: Caches

    @classmethod
    def of(cls, target="host") -> "Machine":
        return _machine(target)


@lru_cache(maxsize=16)
def _machine(target) -> Machine:
    """Cached by the target as given ("host" is read once: SOFTGEN_HOST_* are read at startup)."""
    tgt = Target.parse(target)
    return Machine(tgt.vector_width, tgt.register_count, tgt.has_avx512,
                   tgt.arch == "x86_64" and not tgt.has_avx512, tgt.caches)


def dtype_thresholds(dtype="float32", out_dtype=None, target="host") -> tuple[int, int]:
    """(short row, group row) for a dtype pair on a target: a short row is SHORT_VECTORS
    vectors of the compute dtype; the group row is the longest row whose pipelined groups
    of a register's worth of rows keep GROUP_BUFFERS of x's bytes in L2 (AVX-512 with a
    1 MB L2: 4096 float32, float64 2048, 16-bit 8192)."""
    x, y = _dtypes(dtype, out_dtype)
    machine = Machine.of(target)
    compute = compute_dtype(ir_dtype(x), ir_dtype(y)).bits // 8
    group_bytes = machine.caches.l2 // (GROUP_BUFFERS * machine.lanes)
    return SHORT_VECTORS * machine.lanes * 4 // compute, group_bytes // x.itemsize


# --- bands ----------------------------------------------------------------------------------

def llc_bytes() -> int:
    """The host's last-level cache size (Linux sysfs, else its CPU's known size)."""
    return Target.parse("host").caches.llc


def in_cache(op: str, rows: int, n: int, dtype="float32", out_dtype=None) -> bool:
    x, y = _dtypes(dtype, out_dtype)
    out = rows if ops.get(op).row_output else rows * n
    return rows * n * x.itemsize + out * y.itemsize <= llc_bytes()


def band(op: str, rows: int, n: int, dtype="float32", out_dtype=None) -> str:
    """The wisdom key of a shape: op, row length rounded up to a power of two, residency,
    and the dtypes unless both are float32 ("/float64", "/bfloat16->float32")."""
    x, y = _dtypes(dtype, out_dtype)
    residency = "cache" if in_cache(op, rows, n, x, y) else "memory"
    dtypes = "" if x == y == np.float32 else f"/{x.name}" if x == y else f"/{x.name}->{y.name}"
    return f"{op}/n<=2^{max(n - 1, 0).bit_length()}/{residency}{dtypes}"


# --- the built-in rule ------------------------------------------------------------------------

def builtin(op: str, rows: int, n: int, dtype="float32", out_dtype=None, target="host") -> Choice:
    """In cache, the algorithm that evaluates exp the fewest times; out of cache (llc_bytes),
    two-pass (the least traffic).  logsumexp has no output pass, so two-pass is one pass
    with one exp per element against recompute's two passes; only short rows' groups
    favour recompute.  Reload only where y is as wide as the compute dtype
    (reload_allowed); the row lengths per dtype and target as dtype_thresholds says.
    log_softmax keeps recompute in cache even on rows beyond L2, where two-pass reads
    them once less (1.1-1.2x on rows of 2^16 to 2^20 of normal data): a row whose largest
    term is most of its sum (log S < pair_log_min, a confident top logit) fails two-pass's
    guard and runs its fallback too: 1.7x slower than recompute alone (8 x 2^17, one logit
    +25, measured with recompute as the fallback; online, the fallback now, also takes two
    passes more)."""
    spec = ops.get(op)
    x, y = _dtypes(dtype, out_dtype)
    short_row, _ = dtype_thresholds(x, y, target)
    if not in_cache(op, rows, n, x, y) or (spec.row_output and n > short_row):
        preferred = ["two_pass"]
    else:  # reload evaluates exp once per element where the op has it
        preferred = ["three_pass_reload"] if reload_allowed(x, y) else []
        preferred.append("three_pass_recompute")
    algorithm = next(a for a in preferred + list(spec.algorithms) if a in spec.algorithms)
    return Choice(algorithm, builtin_schedule(op, algorithm, rows, n, x, y, target))


def builtin_schedule(op: str, algorithm: str, rows: int, n: int, dtype="float32", out_dtype=None,
                     target="host") -> Schedule:
    """The schedule the built-in rule gives `algorithm` for this shape on `target`: in
    cache, rows in groups of a register's worth up to the group row (short rows' reductions
    vectorized across rows), of LONG_GROUP beyond (ONE_ROW_ALGORITHMS: one row at a time), the passes of consecutive groups
    pipelined (except logsumexp's long rows: one pass has nothing to overlap); outputs that
    do not fit in the cache streamed past it (except for reload).  Then fitted to the
    target's registers (fit_registers)."""
    row_output = ops.get(op).row_output
    short_row, group_row = dtype_thresholds(dtype, out_dtype, target)
    lanes = Machine.of(target).lanes
    if not in_cache(op, rows, n, dtype, out_dtype):
        # reload's output pass re-reads y, partly still cached: streaming stores do not pay
        schedule = Schedule(nontemporal=not row_output and algorithm != "three_pass_reload")
    elif algorithm in ONE_ROW_ALGORITHMS:
        schedule = Schedule()
    elif n <= short_row:
        schedule = Schedule(rows_per_group=lanes, unroll=1, pipeline=True, online_block_max=False)
    elif n <= group_row:
        schedule = Schedule(rows_per_group=lanes, pipeline=not row_output)
    else:
        schedule = Schedule(rows_per_group=LONG_GROUP, pipeline=True) if not row_output else Schedule()
    return fit_registers(op, algorithm, schedule, dtype, out_dtype, target)


def fit_registers(op: str, algorithm: str, schedule: Schedule, dtype="float32", out_dtype=None,
                  target="host") -> Schedule:
    """`schedule` fitted to the target's registers: a sweep keeps its loop-carried states
    (reduction states times accumulator sets) and its row constants in registers, and
    TEMPORARIES for the element it computes (sweep_vectors).  Pipelined where the stages
    side by side fit with one accumulator set; then as many sets (4, 2 or 1) as fit.  A
    spilled state costs a load and a store per vector: with AVX2's 16 registers, three
    stages of 4 sets spilled a quarter of their instructions.  Measured with AVX2 (Zen 4,
    SOFTGEN_HOST_FEATURES=-avx512f, interleaved runs, elements/ns): softmax at 1024x1024
    pipelined with 1 set (the rule's) 2.13, with 2 sets 2.00, with 4 (and 16 rows, the
    rule before) 1.80, not pipelined 2.16; at 64x32768 pipelined with 1 set 1.97, 2 sets
    1.93, not pipelined 1.61; two-pass logsumexp (a 2-vector state, no row constants) with
    4 sets (the rule's) 1.97, with 2 sets 1.94.  Where it errs: log_softmax at 1024x1024
    pipelined with 1 set ran at 1.84, not pipelined with 2 sets (the rule's: 4 + 5 + 8
    vectors do not fit) at 1.68."""
    x, y = (ir_dtype(d) for d in _dtypes(dtype, out_dtype))
    machine = Machine.of(target)
    needs = _needs(op, algorithm, x, y, machine)
    pipeline = schedule.pipeline and len(needs) > 1 and _sets_that_fit(needs, 1, machine) is not None
    if pipeline:
        sets = _sets_that_fit(needs, schedule.acc_sets, machine)
    else:
        sets = min(_sets_that_fit([need], schedule.acc_sets, machine) or 1 for need in needs)
    return dataclasses.replace(schedule, pipeline=pipeline,
                               accumulators=schedule.accumulators if sets == schedule.acc_sets else sets)


@lru_cache(maxsize=256)
def _needs(op: str, algorithm: str, x, y, machine: Machine) -> list[tuple[int, int]]:
    """sweep_vectors of the program (built once per op, algorithm, dtypes and machine: the
    rule runs on every new shape)."""
    return sweep_vectors(algorithms.build(op, algorithm, x, compute_dtype(x, y), y), machine)


def sweep_vectors(program, machine: Machine) -> list[tuple[int, int]]:
    """Per pass: (vectors of reduction state per accumulator set, row constants).  x86's
    max without mask registers keeps a NaN record beside it (unless a sum carries the NaN:
    acc.max nan_caught); row constants are the row
    values the pass's ops read and, for e^(x - c) in the fast form, exp_scaled's
    (numerics.ExpShift: lo and the scale, which AVX-512's ldexp takes in the polynomial's
    coefficients).  Constants shared by all rows are not counted: x86 instructions read
    them from memory where they do not fit, at little cost."""
    exp_vectors = numerics.row_vectors(numerics.float_format(program.compute), scaled_coeffs=machine.native_ldexp)
    out = []
    for p in program.passes:
        states = sum(len(numerics.accumulator(op).start)
                     + (machine.nan_record and op.kind is Kind.ACC_MAX and not nan_caught(op))
                     for op in p.reductions)
        values = {v for op in p.ops if op.kind not in _SHIFTED for v in op.args if v.type is Type.ROW}
        out.append((states, len(values) + (exp_vectors if any(op.kind in _SHIFTED for op in p.ops) else 0)))
    return out


_SHIFTED = (Kind.EXP, Kind.PAIR_SCALE)   # the ops exp_scaled computes from row constants


def _sets_that_fit(needs: list, limit: int, machine: Machine) -> int | None:
    """The most accumulator sets (4, 2, 1; at most `limit`) with which passes `needs`
    side by side fit in the registers with TEMPORARIES to spare; None if none does."""
    states = sum(s for s, _ in needs)
    rows = sum(r for _, r in needs)
    return next((a for a in (4, 2, 1) if a <= limit
                 and states * a + rows + TEMPORARIES <= machine.registers), None)


# --- wisdom -----------------------------------------------------------------------------------

def wisdom_path() -> Path:
    """$SOFTGEN_WISDOM, else user_wisdom_path()."""
    if os.environ.get(WISDOM_ENV):
        return Path(os.environ[WISDOM_ENV])
    return user_wisdom_path()


def user_wisdom_path() -> Path:
    """wisdom.json in the user's cache directory for softgen (see the top)."""
    return Path(platformdirs.user_cache_dir("softgen", appauthor=False)) / "wisdom.json"


def target_key(target: Target) -> str:
    """What wisdom is valid for: the CPU and its features (not the target's name)."""
    return f"{target.triple}/{target.cpu}/{','.join(sorted(target.feature_set))}"


def load_wisdom(path: Path, target: Target) -> dict:
    """{band: Choice} tuned for `target`; {} (with a WisdomWarning) for anything unusable."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != WISDOM_VERSION:
            raise ValueError(f"format version {data.get('version') if isinstance(data, dict) else None!r}, "
                             f"expected {WISDOM_VERSION}")
        entries = data.get("targets", {})
        if target_key(target) not in entries:
            if entries:
                warnings.warn(f"wisdom file {path} was tuned for another CPU "
                              f"({', '.join(entries)}); using the built-in rule", WisdomWarning, stacklevel=3)
            return {}
        return {key: Choice.from_json(entry["choice"]) for key, entry in entries[target_key(target)].items()}
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        warnings.warn(f"ignoring wisdom file {path}: {e}", WisdomWarning, stacklevel=3)
        return {}


def _read_raw(path: Path) -> dict:
    """The whole file for updating: other targets' entries are kept; a bad file is replaced."""
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("version") == WISDOM_VERSION and isinstance(data.get("targets"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"version": WISDOM_VERSION, "targets": {}}


def save_wisdom(path: Path, target: Target, results: dict) -> None:
    """Merge {band: (Choice, el_per_ns)} for `target` into the file (written atomically)."""
    data = _read_raw(path)
    entries = data["targets"].setdefault(target_key(target), {})
    for key, (choice, speed) in results.items():
        entries[key] = {"choice": choice.to_json(), "el_per_ns": round(speed, 4)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    refresh()


generation = 0  # bumped whenever choose() may answer differently


def refresh() -> None:
    """Re-read wisdom on the next choice: after another process tuned, or after
    $SOFTGEN_WISDOM changed (auto choices are cached per shape until then)."""
    global generation
    generation += 1
    _wisdom.cache_clear()


@lru_cache(maxsize=4)
def _wisdom(path: str, target) -> dict:
    """Cached by the target as given ("host" is parsed once, not per choice)."""
    return load_wisdom(Path(path), Target.parse(target))


def choose(op: str, rows: int, n: int, target="host", dtype="float32", out_dtype=None) -> Choice:
    """The kernel `algorithm="auto"` runs for a [rows, n] problem of `dtype` writing
    `out_dtype` (None: dtype) on this machine (or what wisdom tuned for `target` says; the
    bands use this machine's cache size).  Never three_pass_reload where y is narrower than
    the compute dtype, whatever wisdom says."""
    tuned = _wisdom(str(wisdom_path()), target).get(band(op, rows, n, dtype, out_dtype))
    if tuned is not None and (tuned.algorithm != "three_pass_reload" or reload_allowed(dtype, out_dtype)):
        return tuned
    return builtin(op, rows, n, dtype, out_dtype, target)


def resolve(op: str, algorithm: str, rows: int, n: int, target="host", dtype="float32",
            out_dtype=None) -> Choice:
    """The kernel the JIT runs for op on [rows, n] of these dtypes: for "auto", choose()'s;
    for an algorithm, that algorithm with the schedule the built-in rule gives it there."""
    if algorithm == "auto":
        return choose(op, rows, n, target, dtype, out_dtype)
    return Choice(algorithm, builtin_schedule(op, algorithm, rows, n, dtype, out_dtype, target))


AUTO = "auto:"  # schedule="auto:ROWSxN": what resolve() gives that shape


def auto_shape(spec: str) -> tuple[int, int]:
    """(rows, n) of an "auto:ROWSxN" schedule spelling; ValueError for anything else."""
    rows, x, n = spec.removeprefix(AUTO).lower().partition("x")
    if spec.startswith(AUTO) and x and rows.isdigit() and n.isdigit() and int(rows) and int(n):
        return int(rows), int(n)
    raise ValueError(f"schedule {spec!r} is neither a Schedule nor {AUTO}ROWSxN with positive sizes "
                     f"(e.g. {AUTO}1024x1024)")


def resolve_request(op: str, algorithm: str, schedule, target="host", dtype="float32",
                    out_dtype=None) -> tuple[str, Schedule | None]:
    """(algorithm, schedule) for ahead-of-time output asked for `algorithm` and `schedule`
    (None, a Schedule or "auto:ROWSxN": resolve()'s for those dtypes); algorithm "auto"
    needs an auto schedule."""
    if isinstance(schedule, str) and schedule.startswith(AUTO):
        choice = resolve(op, algorithm, *auto_shape(schedule), target, dtype, out_dtype)
        return choice.algorithm, choice.schedule
    if algorithm == "auto":
        raise ValueError(f"algorithm 'auto' picks a kernel for a shape: give schedule='{AUTO}ROWSxN'")
    return algorithm, schedule


# --- the tuner --------------------------------------------------------------------------------

def candidates(op: str, rows: int, n: int, dtype="float32", out_dtype=None) -> list[Choice]:
    """What tune() measures for one shape and dtype pair on this machine: the built-in
    rule's choice for each algorithm that computes `op` for those dtypes, and around it the
    schedule knobs that matter for this band (a small grid, not every combination):
    unroll and accumulator sets (fewer sets hold fewer vectors: lower.reductions), rows per
    group, pipelining."""
    spec = ops.get(op)
    algos = [a for a in spec.algorithms if a != "three_pass_reload" or reload_allowed(dtype, out_dtype)]
    cached = in_cache(op, rows, n, dtype, out_dtype)
    short_row, group_row = dtype_thresholds(dtype, out_dtype)
    shapes = [dict(unroll=u, accumulators=a) for u, a in ((2, 0), (4, 0), (4, 2), (4, 1))]
    if n <= short_row:
        shapes.insert(0, dict(unroll=1, accumulators=0))
    if n <= group_row and rows >= 16:
        shapes += [dict(s, rows_per_group=16) for s in shapes]
    if cached and rows > 1:  # pipelined, and the plain form of each row grouping
        shapes = [dict(s, pipeline=True) for s in shapes] + [s for s in shapes if s["unroll"] == 4 and not s["accumulators"]]
    stores = [False] if cached or spec.row_output else [False, True]
    out = []
    for algo in algos:
        out.append(Choice(algo, builtin_schedule(op, algo, rows, n, dtype, out_dtype)))
        for s in shapes:
            for nt in stores:
                extra = {"online_block_max": False} if algo == "online" and n <= short_row else {}
                out.append(Choice(algo, Schedule(nontemporal=nt, **s, **extra)))
    return list(dict.fromkeys(out))


class _Progress:
    """Tuning's progress on `stream`: a tqdm bar on a terminal; elsewhere (a log, a pipe),
    where a redrawn bar would be noise, one line per band tuned."""

    def __init__(self, total: int, stream, enabled: bool = True):
        self.stream = stream if enabled else None
        self.bar = None
        if enabled and stream.isatty():
            from tqdm import tqdm   # here: only tuning on a terminal needs it
            self.bar = tqdm(total=total, file=stream, unit="kernel", dynamic_ncols=True)

    def trying(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)

    def timed(self) -> None:
        if self.bar is not None:
            self.bar.update()

    def band_done(self, key: str, choice: Choice, speed: float) -> None:
        if self.stream is not None and self.bar is None:
            print(f"tuned {key}: {choice.describe()} ({speed:.3f} el/ns)", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tune(op: str | tuple = ops.SOFTMAX.name, shapes=DEFAULT_SHAPES, target="host", budget: float = 0.05,
         path: str | os.PathLike | None = None, progress: bool = True, stream=None,
         dtype="float32", out_dtype=None) -> dict:
    """Time every candidate on each shape and save the fastest per band as wisdom.

    op: one op or several; shapes: (rows, n) pairs (one measurement stands for its band;
    the first shape of a band wins it); budget: seconds of timing per candidate; dtype,
    out_dtype: x's and y's (None: dtype), the wisdom is theirs; progress: shown on `stream`
    (default stderr) as a bar on a terminal, else as one line per band tuned.
    Returns {band: (Choice, elements/ns)} for what was saved."""
    tgt = Target.parse(target)
    if not tgt.is_host:
        raise ValueError(f"tune() times kernels on this machine: target must be the host, not {tgt}")
    x_dtype, y_dtype = _dtypes(dtype, out_dtype)
    names = (op,) if isinstance(op, str) else tuple(op)
    for o in names:
        ops.get(o)  # ValueError for unknown ops
    shapes = [_check_shape(s) for s in shapes]
    work = {}
    for o in names:
        for rows, n in shapes:
            work.setdefault(band(o, rows, n, x_dtype, y_dtype), (o, rows, n))
    total = sum(len(candidates(o, r, n, x_dtype, y_dtype)) for o, r, n in work.values())
    report = _Progress(total, stream or sys.stderr, enabled=progress)
    results = {}
    for key, (o, rows, n) in work.items():
        results[key] = _fastest(o, rows, n, x_dtype, y_dtype, budget, report)
        report.band_done(key, *results[key])
    report.close()
    save_wisdom(Path(path) if path is not None else wisdom_path(), tgt, results)
    return results


def _fastest(op: str, rows: int, n: int, x_dtype, y_dtype, budget: float,
             report: _Progress) -> tuple[Choice, float]:
    """The fastest candidate on a (rows, n) array (the first of equals), and its speed in
    elements/ns."""
    x = (np.random.default_rng(0).standard_normal((rows, n)) * 4).astype(x_dtype)
    y = np.empty((rows, 1) if ops.get(op).row_output else (rows, n), y_dtype)
    calls = max(1, (1 << 18) // x.size)  # small shapes: time many calls, not Python

    def speed(choice: Choice) -> float:
        report.trying(f"{op} {rows}x{n} {choice.describe()}")
        kernel = runtime.compile(op, algorithm=choice.algorithm, dtype=x_dtype, out_dtype=y_dtype,
                                 schedule=choice.schedule)

        def run() -> None:
            for _ in range(calls):
                kernel.run_rows(x, y)
        seconds = median_time(run, budget)
        report.timed()
        return calls * x.size / seconds / 1e9

    return max(((choice, speed(choice)) for choice in candidates(op, rows, n, x_dtype, y_dtype)),
               key=lambda timed: timed[1])


def _check_shape(shape) -> tuple[int, int]:
    try:
        rows, n = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape {shape!r} is not a (rows, n) pair") from None
    if rows < 1 or n < 1:
        raise ValueError(f"shape {shape!r} needs rows >= 1 and n >= 1")
    return rows, n


class _CallableModule(types.ModuleType):
    """`softgen.tune(op, shapes=...)` calls tune.tune: the module doubles as the function
    (and keeps its names: softgen.tune.choose, softgen.tune.wisdom_path, ...)."""

    def __call__(self, *args, **kwargs):
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
