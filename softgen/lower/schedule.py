"""The schedule: how a kernel's loops are shaped, apart from what it computes (the
algorithm).  Backend-neutral: every backend and the tuner read the same object.  Its
JSON form (to_json / from_json: an object of knob names, missing ones at their defaults)
is what wisdom files and `softgen --schedule` hold."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .. import numerics
from .plan import PAIR_SUMS


# knobs under the names earlier versions wrote (wisdom files): old -> new
OLD_NAMES = {"rows": "rows_per_group"}


@dataclass(frozen=True)
class Schedule:
    """Code-shape parameters of one kernel (the autotuner searches over these)."""
    unroll: int = 4          # vectors per main-loop iteration and row
    accumulators: int = 0    # accumulator sets per row (0: one per unrolled vector), at most unroll:
                             # unrolled vector u updates set u % accumulators
    rows_per_group: int = 1  # a power of 2, capped at the vector width:
                             # row math and lane merges are vectorized across the group
    interleave: int = 1      # rows of a group each pass handles side by side (divides rows_per_group)
    block: int = numerics.REDUCTION_BLOCK  # shortened to numerics.SUM_CHAIN additions per lane
    nontemporal: bool = False  # streaming (cache-bypassing) stores in the output pass
    prefetch: int = 0        # software prefetch distance in bytes for loads of x (0: none)
    fast_exp: bool = True    # exp(x, c) without the TwoSum where c allows (module doc)
    # online reductions as a per-block max scan (the block is then in L1) + plain sums of
    # e^(x - block max), instead of a merge (with an exp) per element
    online_block_max: bool = True
    # pair reductions: "merge" (per element: max, two ldexp), "scan" (like online_block_max;
    # out of cache the scan's reads and the sums' compute stop overlapping), "running" (a
    # plain sum against the largest exponent of earlier blocks, see _PairRunning)
    pair_sum: str = "running"
    # software-pipeline the passes across row groups (see _KernelEmitter.emit_pipelined)
    pipeline: bool = False

    def __post_init__(self):
        for name in ("unroll", "rows_per_group", "interleave", "block"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Schedule.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.accumulators <= self.unroll:
            raise ValueError(f"Schedule.accumulators ({self.accumulators}) must be at most unroll "
                             f"({self.unroll}) (0: one set per unrolled vector)")
        if self.rows_per_group & (self.rows_per_group - 1) or self.rows_per_group % self.interleave:
            raise ValueError(f"Schedule.rows_per_group ({self.rows_per_group}) must be a power of 2 and a multiple "
                             f"of interleave ({self.interleave})")
        if self.pair_sum not in PAIR_SUMS:
            raise ValueError(f"Schedule.pair_sum must be one of {', '.join(PAIR_SUMS)}, not {self.pair_sum!r}")
        if self.prefetch < 0:
            raise ValueError("Schedule.prefetch is a distance in bytes, >= 0")

    @property
    def acc_sets(self) -> int:
        return self.accumulators or self.unroll

    def to_dict(self) -> dict:
        """Every knob by name, JSON-ready (all of them: a changed default does not change
        what a stored schedule means)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> Schedule:
        """The Schedule of {knob: value}; missing knobs take their defaults.  ValueError for
        an unknown knob or a value of another JSON type than the knob's (1 is not true)."""
        if not isinstance(data, dict):
            raise ValueError(f"a schedule is an object of knobs, not {type(data).__name__}")
        data = {OLD_NAMES.get(key, key): value for key, value in data.items()}
        fields = {f.name: type(f.default) for f in dataclasses.fields(cls)}
        unknown = [key for key in data if key not in fields]
        if unknown:
            raise ValueError(f"unknown schedule knob(s) {', '.join(map(repr, unknown))}; "
                             f"the knobs are {', '.join(fields)}")
        for key, value in data.items():
            if type(value) is not fields[key]:
                raise ValueError(f"Schedule.{key} must be {fields[key].__name__}, not {value!r}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"a schedule in JSON, e.g. {{\"unroll\": 2}}, not {text!r} ({e})") from None
        return cls.from_dict(data)
