"""The op registry: what each softmax-family op computes, in one place.

Every algorithm reduces a row to its max m and the sum s of e^(x - m) (or that sum's
excess over 1, whose log1p keeps small results accurate); the op decides what the sum
is used as (its normalizer) and what is stored (its output rule).  An op's term says what
is summed: e^x, or softplus(scale * x)^power (softplus_normalize, two-pass pairs only), whose
parameters are part of the op (OpSpec.with_params: one kernel per value).  Callers ask an
OpSpec instead of comparing op names.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace


class Output(enum.Enum):
    ROW = "row"        # y[n]: one value per element of the row
    VALUE = "value"    # y[row]: one value per row


class Normalizer(enum.Enum):
    SUM = "sum"        # 1 / s, s = sum e^(x - m)
    LOG_SUM = "log"    # log s, as log1p of the sum's excess over 1


class Term(enum.Enum):
    """What is summed and normalized per element."""
    EXP = "e^(x - m)"
    SOFTPLUS_POW = "softplus(scale * x)^power"   # an exponent pair per element (ir softplus_pow)


class Rule(enum.Enum):
    SCALE = "y = e^(x - m) / s"
    SHIFT = "y = x - m - log s"
    VALUE = "y = m + log s"


ALL_ALGORITHMS = ("three_pass_reload", "three_pass_recompute", "two_pass", "online")


@dataclass(frozen=True)
class OpSpec:
    """One op.  `algorithms`: those that compute it (three_pass_reload keeps e^(x - m) in
    the output row for its third pass, so only an op that outputs e^(x - m) / s has it);
    `peers`: the same op's function in other libraries (library -> dotted name, ONNX: the
    operator), for softgen.bench."""
    name: str
    output: Output
    normalizer: Normalizer
    rule: Rule
    algorithms: tuple[str, ...]
    peers: dict = field(default_factory=dict, compare=False)
    term: Term = Term.EXP
    # kernel parameters as ((name, value), ...), their defaults in the registry: each value
    # is baked into the program (one kernel per value), so a spec with its values is the op
    params: tuple = ()

    def __str__(self) -> str:
        return self.name   # error messages and wisdom keys name the op

    @property
    def param(self) -> dict:
        return dict(self.params)

    def with_params(self, **values) -> "OpSpec":
        """This op with some parameters set (ValueError for unknown names and values that are
        not finite floats)."""
        unknown = set(values) - set(self.param)
        if unknown:
            known = ", ".join(self.param) or "none"
            raise ValueError(f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; it has {known}")
        for name, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{self.name}: {name} must be a finite number, not {v!r}")
        return replace(self, params=tuple((k, float(values.get(k, v))) for k, v in self.params))

    @property
    def row_output(self) -> bool:
        """True where the kernel stores one value per row (Program.row_output)."""
        return self.output is Output.VALUE

    def output_shape(self, rows: int, n: int) -> tuple[int, ...]:
        return (rows,) if self.row_output else (rows, n)

    def check_algorithm(self, algorithm: str) -> None:
        """NotImplementedError (with the reason) where `algorithm` does not compute this op."""
        if algorithm not in ALL_ALGORITHMS or algorithm in self.algorithms:
            return
        if self.term is not Term.EXP:
            why = f"{self.name} sums {self.term.value} as exponent pairs, which {algorithm} does not"
        else:
            what = "one value per row" if self.row_output else f"it outputs {self.rule.value}"
            why = f"{algorithm} {_NEEDS[algorithm]}, but {self.name} never outputs e^(x-m) ({what})"
        raise NotImplementedError(f"{self.name} x {algorithm}: {why}; use one of {', '.join(self.algorithms)}")


# why an algorithm is missing from an op's list
_NEEDS = {"three_pass_reload": "keeps e^(x-m) in the output row for a third pass"}

SOFTMAX = OpSpec("softmax", Output.ROW, Normalizer.SUM, Rule.SCALE, ALL_ALGORITHMS,
                 {"scipy": "scipy.special.softmax", "torch": "torch.softmax",
                  "jax": "jax.nn.softmax", "onnx": "Softmax"})
LOG_SOFTMAX = OpSpec("log_softmax", Output.ROW, Normalizer.LOG_SUM, Rule.SHIFT, ALL_ALGORITHMS[1:],
                     {"scipy": "scipy.special.log_softmax", "torch": "torch.log_softmax",
                      "jax": "jax.nn.log_softmax", "onnx": "LogSoftmax"})
LOGSUMEXP = OpSpec("logsumexp", Output.VALUE, Normalizer.LOG_SUM, Rule.VALUE, ALL_ALGORITHMS[1:],
                   {"scipy": "scipy.special.logsumexp", "torch": "torch.logsumexp",
                    "jax": "jax.scipy.special.logsumexp", "onnx": "ReduceLogSumExp"})

# y = v / sum v, v = softplus(scale * x)^power: two-pass only (pairs summed, no max pass:
# the pairs' exponents keep huge and tiny v in range); its fallback gives NaN rows
SOFTPLUS_NORMALIZE = OpSpec("softplus_normalize", Output.ROW, Normalizer.SUM, Rule.SCALE, ("two_pass",),
                            {"torch": "torch.nn.functional.softplus"}, Term.SOFTPLUS_POW,
                            (("scale", 1.0), ("power", 1.0)))

REGISTRY = {spec.name: spec for spec in (SOFTMAX, LOG_SOFTMAX, LOGSUMEXP, SOFTPLUS_NORMALIZE)}
NAMES = tuple(REGISTRY)


def get(op) -> OpSpec:
    """The spec of `op` (a name or an OpSpec); ValueError naming the known ops otherwise."""
    if isinstance(op, OpSpec):
        return op
    spec = REGISTRY.get(op) if isinstance(op, str) else None
    if spec is None:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(NAMES)}")
    return spec
