"""Backend-independent lowering decisions for one pass (the formulas are in numerics.py).

Backends translate ops, they do not re-invent algorithms: which ops of a pass take a
cheaper form is decided here once, from the Pass and a few schedule flags, and each
backend only spells the chosen forms.

  exp(x, c)       the "fast" form: exp_scaled with row constants exp_diff_shift(c), no
                  x - c TwoSum; exact while |c| <= numerics.EXP_SHIFT_LIMIT, so a backend
                  also keeps the exp_diff form and picks per row (fast_exp).
  exp_pair -> pair_scale
                  an exp_pair whose only user is a pair_scale is fused into it: one
                  exp_scaled with 1/S and 2^-E in row constants (fast_exp).
  acc.online      per block: a max pre-scan of its argument, then sums of e^(x - block max)
                  (the max's terms counted apart, numerics.BLOCK_SUMS) folded once per
                  block (online_block_max).
  acc.pair        of an exp_pair used only by it (pair_sum):
                  "merge"   per element: max of exponents, two ldexp;
                  "scan"    per block like acc.online, the scan over the exp_pair's x;
                  "running" a plain sum against a running block exponent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import Kind, Op, Pass

PAIR_SUMS = ("merge", "scan", "running")


@dataclass
class PassPlan:
    """How the ops of one pass are lowered."""
    pass_: Pass
    exp_shifts: list = field(default_factory=list)  # row values c of fast-form exp(x, c) ops
    fused: dict = field(default_factory=dict)       # exp_pair op -> its pair_scale op
    block_max: list = field(default_factory=list)   # reductions lowered per block (acc op)
    keys: dict = field(default_factory=dict)        # block_max / running acc op -> value scanned for the max
    skipped: set = field(default_factory=set)       # exp_pair ops whose only user is block_max
    summed: set = field(default_factory=set)        # exp_pair ops whose only user is acc.pair (not block_max)
    running: list = field(default_factory=list)     # acc.pair ops summed against a running exponent

    @property
    def has_fast_form(self) -> bool:
        return bool(self.exp_shifts or self.fused)

    @property
    def scan_ops(self) -> list[Op]:
        """The ops of the block-max pre-scan: the block_max reductions and the ops their
        keys depend on, in pass order."""
        need = set(needed_ops(self.pass_, [self.keys[op] for op in self.block_max])) | set(self.block_max)
        return [op for op in self.pass_.ops if op in need]


def needed_ops(p: Pass, wanted) -> list[Op]:
    """The ops of p that the values `wanted` depend on, in pass order."""
    need = set(wanted)
    ops = []
    for op in reversed(p.ops):
        if any(r in need for r in op.results):
            ops.append(op)
            need |= set(op.args)
    return ops[::-1]


def plan_pass(p: Pass, *, fast_exp: bool, online_block_max: bool, pair_sum: str) -> PassPlan:
    if pair_sum not in PAIR_SUMS:
        raise ValueError(f"pair_sum must be one of {', '.join(PAIR_SUMS)}, not {pair_sum!r}")
    plan = PassPlan(p)
    producer = {r: op for op in p.ops for r in op.results}
    uses: dict = {}
    for op in p.ops:
        for a in op.args:
            uses.setdefault(a, []).append(op)
    for op in p.ops:
        if op.kind is Kind.EXP and fast_exp and op.args[1] not in plan.exp_shifts:
            plan.exp_shifts.append(op.args[1])
        if op.kind is Kind.EXP_PAIR and fast_exp:
            users = {u for r in op.results for u in uses.get(r, [])}
            if len(users) == 1 and next(iter(users)).kind is Kind.PAIR_SCALE:
                plan.fused[op] = next(iter(users))
        if online_block_max and op.kind is Kind.ACC_ONLINE:
            plan.block_max.append(op)
            plan.keys[op] = op.args[0]
        if op.kind is Kind.ACC_PAIR:
            _plan_pair(plan, op, producer.get(op.args[0]), len(uses[op.args[0]]) == 1, pair_sum)
    return plan


def _plan_pair(plan: PassPlan, op: Op, src: Op | None, only_use: bool, pair_sum: str):
    """acc.pair `op` of the value made by `src` (None: a row value)."""
    if src is None or src.kind is not Kind.EXP_PAIR:
        return
    if pair_sum == "scan":
        if only_use:
            plan.block_max.append(op)
            plan.keys[op] = src.args[0]
            plan.skipped.add(src)
        return
    if only_use:
        plan.summed.add(src)
    if pair_sum == "running":
        plan.running.append(op)
        plan.keys[op] = src.args[0]
