"""How each reduction accumulates inside a block: its lanes' state, one element's step,
the merge of two sets, and what the block hands to the outer fold.

The default is the numerics Accumulator itself; the others are lowerings the plan or the
target picks (lower.plan; x86's NaN-ignoring max)."""
from __future__ import annotations

from .. import numerics
from .loopir import Const

# PairRunning sums a block again when one of its exponents exceeds the block's by more:
# below it terms stay under 2^33 and a row's sum under 2^64, which ldexp_generic (it
# scales by 2^(d + 64) first) and the lane merges need.
RUNNING_SLACK = 32.0


class Inner:
    """How one reduction accumulates inside a block: its lanes' state until the fold.
    The default is the numerics Accumulator itself (identity, element + merge)."""

    def __init__(self, acc: numerics.Accumulator):
        self.acc = acc

    def types(self, vm):
        return [vm.ty for _ in self.acc.identity]

    def identity(self, vm):
        return [vm.const(c) for c in self.acc.identities(vm.float_format)[0]]

    def step(self, vm, old, *args):
        return self.acc.step(vm, old, *args)

    def merge(self, vm, a, b):
        return self.acc.merge(vm, a, b)

    def finish(self, emitter, row, state):
        return state


class BlockSum(Inner):
    """block_max reductions: the block's terms (see block_term) summed by the accumulator
    numerics.BLOCK_SUMS names."""

    def __init__(self, acc, op):
        super().__init__(numerics.ACCUMULATORS[numerics.BLOCK_SUMS[op.results[0].type]])
        self.op = op

    def finish(self, emitter, row, state):
        return emitter.block_state(self.op, row, state)


class MaxIgnoringNaN:
    """For lane merges of values whose NaNs are dealt with elsewhere: x86 maxps."""

    @staticmethod
    def merge(m, a, b):
        return (m.select(m.lt(a[0], b[0]), b[0], a[0]),)


MAX_IGNORING_NAN = MaxIgnoringNaN()


class MaxSkippingNaN(Inner):
    """acc.max nan_caught: x86's maxps alone (a NaN x leaves the lane as it was); the
    program's sum carries the NaN instead of a record kept here (a compare and a blend per
    vector less where lanes have no mask registers)."""

    def step(self, vm, old, x):
        return MAX_IGNORING_NAN.merge(vm, old, (x,))

    def merge(self, vm, a, b):
        return MAX_IGNORING_NAN.merge(vm, a, b)


class MaxNaNMask(Inner):
    """acc.max as a NaN-ignoring max plus a lane record of NaNs seen, made NaN at the end:
    x86's maxps is one instruction where the NaN-propagating maximum takes three.  The
    record is a mask where lane masks have registers of their own (the OR runs outside the
    vector float pipes), else a vector that turns NaN where x was (a compare and a blend:
    no mask carried through the loop, see Capabilities.mask_registers)."""

    def __init__(self, acc, in_mask: bool):
        super().__init__(acc)
        self.in_mask = in_mask

    def types(self, vm):
        return [vm.ty, vm.mask_ty if self.in_mask else vm.ty]

    def identity(self, vm):
        return [vm.const(float("-inf")), Const(vm.mask_ty, 0) if self.in_mask else vm.const(0.0)]

    def step(self, vm, old, x):
        m, record = old
        return vm.select(vm.lt(m, x), x, m), self.join(vm, record, vm.isnan(x) if self.in_mask else x)

    def merge(self, vm, a, b):
        return vm.select(vm.lt(a[0], b[0]), b[0], a[0]), self.join(vm, a[1], b[1])

    def join(self, vm, record, other):
        """The record with other's NaN lanes: other is a mask (in_mask), else values that
        are NaN where a NaN was seen (x itself, or another record)."""
        return vm.mask_or(record, other) if self.in_mask else vm.select(vm.isnan(other), other, record)

    def finish(self, emitter, row, state):
        vm = emitter.vm
        nan = state[1] if self.in_mask else vm.isnan(state[1])
        return (vm.select(nan, vm.const(float("nan")), state[0]),)


class PairRunning(Inner):
    """acc.pair as a plain sum of p * 2^(k - e) (one ldexp and one add per element instead of
    a merge's max, two ldexps and add), plus the largest k seen.  e is per row and block: the
    largest k of earlier blocks (-inf at first); a block whose largest k exceeds e by more
    than RUNNING_SLACK is summed again with that k as e.  Terms far below e vanish, which is
    right: e is an exponent the row really has.  A NaN makes the sum NaN, and finish makes
    the exponent NaN then, for the two-pass guard."""

    def __init__(self, acc, op):
        super().__init__(acc)
        self.op = op

    def identity(self, vm):
        return [vm.const(0.0), vm.const(float("-inf"))]

    def step(self, vm, old, term_and_k):
        term, k = term_and_k
        return vm.add(old[0], term), vm.select(vm.lt(old[1], k), k, old[1])

    def merge(self, vm, a, b):
        return vm.add(a[0], b[0]), vm.select(vm.lt(a[1], b[1]), b[1], a[1])

    def finish(self, emitter, row, state):
        """(S, E) with E the largest exponent seen, as a merge would leave it: S may reach
        2^RUNNING_SLACK against the running e, and pair_scale's fast forms assume no
        element exceeds 2^(E + 1)."""
        vm = emitter.vm
        s, k_max, e = state[0], state[1], row.shifts[self.op]
        top = vm.select(vm.lt(e, k_max), k_max, e)
        s = vm.ldexp(s, vm.sub(e, top))
        return s, vm.select(vm.isnan(s), vm.const(float("nan")), top)
