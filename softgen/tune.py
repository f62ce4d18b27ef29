"""Choosing a kernel for a shape: the built-in rule, and the autotuner with its wisdom file.

`algorithm="auto"` asks `choose(op, rows, n)` for an (algorithm, schedule) pair;
`resolve` is the whole rule the JIT follows (an explicit algorithm gets the built-in
schedule), and ahead-of-time output (generate, emit_c, the CLI) reaches it through the
schedule spelling "auto:ROWSxN".

Shapes fall into bands: the row length's power of two, and whether input plus output fit in
the last-level cache (beyond it the kernel should move as few bytes as possible and
stream its output past the cache).  `tune()` times candidate pairs on this machine per
band and saves the winners in a JSON "wisdom" file; `choose` prefers wisdom for the
host when there is some and falls back to the built-in rule otherwise.

Wisdom lives in $SOFTGEN_WISDOM, else $XDG_CACHE_HOME/softgen/wisdom.json, else
~/.cache/softgen/wisdom.json.  A file that does not parse, has another format version,
or was tuned on another CPU is ignored with a warning, never trusted.
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

from . import algorithms, ops, runtime
from .lower import Schedule
from .targets import Target
from .timing import median_time

WISDOM_ENV = "SOFTGEN_WISDOM"
WISDOM_VERSION = 1
DEFAULT_LLC_BYTES = 32 << 20
SHORT_ROW = 128   # rows up to this long: many rows per group (the reductions dominate)
GROUP_ROW = 4096  # rows up to this long: row groups still pay
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


# --- bands ----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def llc_bytes() -> int:
    """The host's last-level cache size (Linux sysfs), or 32 MB if unknown."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
            size = int(text.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
        except (OSError, ValueError):
            continue
        best = max(best, size)
    return best or DEFAULT_LLC_BYTES


def in_cache(op: str, rows: int, n: int) -> bool:
    out = rows if ops.get(op).row_output else rows * n
    return (rows * n + out) * 4 <= llc_bytes()


def band(op: str, rows: int, n: int) -> str:
    """The wisdom key of a shape: op, row length rounded up to a power of two, residency."""
    return f"{op}/n<=2^{max(n - 1, 0).bit_length()}/{'cache' if in_cache(op, rows, n) else 'memory'}"


# --- the built-in rule ------------------------------------------------------------------------

def builtin(op: str, rows: int, n: int) -> Choice:
    """Measured on AMD Zen 4 (README, Performance): in cache, the algorithm that evaluates exp
    the fewest times; out of cache, two-pass (the least traffic).  logsumexp has no output
    pass, so two-pass is one pass with one exp per element against recompute's two passes
    (5.5 vs 4.8 elements/ns at 1024x1024); only short rows' groups favour recompute."""
    spec = ops.get(op)
    if not in_cache(op, rows, n) or (spec.row_output and n > SHORT_ROW):
        algorithm = "two_pass"
    else:  # reload evaluates exp once per element where the op has it
        reload = "three_pass_reload" in spec.algorithms
        algorithm = "three_pass_reload" if reload else "three_pass_recompute"
    return Choice(algorithm, builtin_schedule(op, algorithm, rows, n))


def builtin_schedule(op: str, algorithm: str, rows: int, n: int) -> Schedule:
    """The schedule the built-in rule gives `algorithm` for this shape: in cache, the passes
    of consecutive row groups pipelined (except logsumexp's long rows, where it did not pay),
    rows in groups of 16 up to GROUP_ROW (short rows' reductions vectorized across rows), of 4
    beyond; outputs that do not fit in the cache streamed past it (except for reload)."""
    row_output = ops.get(op).row_output
    if not in_cache(op, rows, n):
        # reload's output pass re-reads y, partly still cached: streaming stores do not pay
        return Schedule(nontemporal=not row_output and algorithm != "three_pass_reload")
    if n <= SHORT_ROW:
        return Schedule(rows_per_group=16, unroll=1, pipeline=True, online_block_max=False)
    pipeline = not row_output
    if n <= GROUP_ROW:
        return Schedule(rows_per_group=16, pipeline=pipeline)
    # long rows: groups of 4 keep more of the first pass's loads from memory in flight
    return Schedule(rows_per_group=4, pipeline=True) if pipeline else Schedule()


# --- wisdom -----------------------------------------------------------------------------------

def wisdom_path() -> Path:
    if os.environ.get(WISDOM_ENV):
        return Path(os.environ[WISDOM_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "softgen" / "wisdom.json"


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


def choose(op: str, rows: int, n: int, target="host") -> Choice:
    """The kernel `algorithm="auto"` runs for a [rows, n] problem on this machine (or what
    wisdom tuned for `target` says; the bands use this machine's cache size)."""
    tuned = _wisdom(str(wisdom_path()), target).get(band(op, rows, n))
    return tuned if tuned is not None else builtin(op, rows, n)


def resolve(op: str, algorithm: str, rows: int, n: int, target="host") -> Choice:
    """The kernel the JIT runs for op on [rows, n]: for "auto", choose()'s; for an
    algorithm, that algorithm with the schedule the built-in rule gives it there."""
    if algorithm == "auto":
        return choose(op, rows, n, target)
    return Choice(algorithm, builtin_schedule(op, algorithm, rows, n))


AUTO = "auto:"  # schedule="auto:ROWSxN": what resolve() gives that shape


def auto_shape(spec: str) -> tuple[int, int]:
    """(rows, n) of an "auto:ROWSxN" schedule spelling; ValueError for anything else."""
    rows, x, n = spec.removeprefix(AUTO).lower().partition("x")
    if spec.startswith(AUTO) and x and rows.isdigit() and n.isdigit() and int(rows) and int(n):
        return int(rows), int(n)
    raise ValueError(f"schedule {spec!r} is neither a Schedule nor {AUTO}ROWSxN with positive sizes "
                     f"(e.g. {AUTO}1024x1024)")


def resolve_request(op: str, algorithm: str, schedule, target="host") -> tuple[str, Schedule | None]:
    """(algorithm, schedule) for ahead-of-time output asked for `algorithm` and `schedule`
    (None, a Schedule or "auto:ROWSxN"); algorithm "auto" needs an auto schedule."""
    if isinstance(schedule, str) and schedule.startswith(AUTO):
        choice = resolve(op, algorithm, *auto_shape(schedule), target)
        return choice.algorithm, choice.schedule
    if algorithm == "auto":
        raise ValueError(f"algorithm 'auto' picks a kernel for a shape: give schedule='{AUTO}ROWSxN'")
    return algorithm, schedule


# --- the tuner --------------------------------------------------------------------------------

def candidates(op: str, rows: int, n: int) -> list[Choice]:
    """What tune() measures for one shape: each algorithm that exists for `op`, with the
    schedule knobs that matter for this band (a small grid, not every combination)."""
    spec = ops.get(op)
    algos = list(spec.algorithms)
    cached = in_cache(op, rows, n)
    shapes = [dict(unroll=u, accumulators=a) for u, a in ((2, 0), (4, 0), (4, 1))]
    if n <= SHORT_ROW:
        shapes.insert(0, dict(unroll=1, accumulators=0))
    if n <= GROUP_ROW and rows >= 16:
        shapes += [dict(s, rows_per_group=16) for s in shapes]
    if cached and rows > 1:  # pipelined, and the plain form of each row grouping
        shapes = [dict(s, pipeline=True) for s in shapes] + [s for s in shapes if s["unroll"] == 4 and not s["accumulators"]]
    stores = [False] if cached or spec.row_output else [False, True]
    out = []
    for algo in algos:
        for s in shapes:
            for nt in stores:
                extra = {"online_block_max": False} if algo == "online" and n <= SHORT_ROW else {}
                out.append(Choice(algo, Schedule(nontemporal=nt, **s, **extra)))
    return out


def _progress(done: int, total: int, label: str, stream) -> None:
    width = 30
    filled = width * done // max(total, 1)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:60]:<60}")
    stream.flush()


def tune(op: str | tuple = ops.SOFTMAX.name, shapes=DEFAULT_SHAPES, target="host", budget: float = 0.05,
         path: str | os.PathLike | None = None, progress: bool = True, stream=None) -> dict:
    """Time every candidate on each shape and save the fastest per band as wisdom.

    op: one op or several; shapes: (rows, n) pairs (one measurement stands for its band;
    the first shape of a band wins it); budget: seconds of timing per candidate.
    Returns {band: (Choice, elements/ns)} for what was saved."""
    tgt = Target.parse(target)
    if not tgt.is_host:
        raise ValueError(f"tune() times kernels on this machine: target must be the host, not {tgt}")
    names = (op,) if isinstance(op, str) else tuple(op)
    for o in names:
        ops.get(o)  # ValueError for unknown ops
    shapes = [_check_shape(s) for s in shapes]
    work = {}
    for o in names:
        for rows, n in shapes:
            work.setdefault(band(o, rows, n), (o, rows, n))
    total = sum(len(candidates(o, r, n)) for o, r, n in work.values())
    stream = stream or sys.stderr
    done, results = 0, {}
    for key, (o, rows, n) in work.items():
        x = (np.random.default_rng(0).standard_normal((rows, n)) * 4).astype(np.float32)
        y = np.empty((rows, 1) if ops.get(o).row_output else (rows, n), np.float32)
        calls = max(1, (1 << 18) // x.size)  # small shapes: time many calls, not Python
        best = None
        for choice in candidates(o, rows, n):
            if progress:
                _progress(done, total, f"{o} {rows}x{n} {choice.describe()}", stream)
            kernel = runtime.compile(o, algorithm=choice.algorithm, schedule=choice.schedule)
            seconds = median_time(lambda: [kernel.run_rows(x, y) for _ in range(calls)], budget)
            speed = calls * x.size / seconds / 1e9
            if best is None or speed > best[1]:
                best = (choice, speed)
            done += 1
        results[key] = best
    if progress:
        _progress(done, total, "done", stream)
        stream.write("\n")
    save_wisdom(Path(path) if path is not None else wisdom_path(), tgt, results)
    return results


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
