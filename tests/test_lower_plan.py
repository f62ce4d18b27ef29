"""The per-pass lowering plan (softgen.lower.plan) on the algorithms' programs."""
import pytest

from softgen import algorithms, ops
from softgen.ir import Kind, Pass
from softgen.lower.plan import PAIR_SUMS, needed_ops, plan_pass

FLAGS = dict(fast_exp=True, online_block_max=True, pair_sum="running")
PROGRAMS = [(op, a) for op in algorithms.OPS for a in ops.get(op).algorithms]
EXP_OPS = [op for op in algorithms.OPS if ops.get(op).term is ops.Term.EXP]


def ops_of(p, kind):
    return [op for op in p.ops if op.kind is kind]


def producers(program):
    """Value -> the row op (or pass op) that makes it, over the whole program."""
    steps = [s for s in program.steps if not isinstance(s, Pass)]
    return {r: op for op in steps + [o for p in program.passes for o in p.ops] for r in op.results}


def passes(only=None):
    """(program, pass) of every algorithm, only those with an op of kind `only` if given."""
    for op, a in PROGRAMS:
        program = algorithms.build(op, a)
        for i, p in enumerate(program.passes):
            if only is None or ops_of(p, only):
                yield pytest.param(program, p, id=f"{op}-{a}-pass{i}")


@pytest.mark.parametrize("program, p", list(passes(Kind.EXP)))
def test_exp_takes_the_fast_form_with_the_row_max_as_shift(program, p):
    plan = plan_pass(p, **FLAGS)
    shifts = list(dict.fromkeys(op.args[1] for op in ops_of(p, Kind.EXP)))
    assert plan.exp_shifts == shifts and plan.has_fast_form
    made_by = producers(program)
    # c is the row max m: merge.max's result, or merge.online's (m, d) first component
    assert all(made_by[c].kind in (Kind.MERGE_MAX, Kind.MERGE_ONLINE) and made_by[c].results[0] is c
               for c in plan.exp_shifts)


@pytest.mark.parametrize("program, p", list(passes()))
def test_without_fast_exp_no_op_takes_the_fast_form(program, p):
    plan = plan_pass(p, **{**FLAGS, "fast_exp": False})
    assert plan.exp_shifts == [] and plan.fused == {} and not plan.has_fast_form


def test_two_pass_output_fuses_exp_pair_into_pair_scale():
    out = algorithms.build("softmax", "two_pass").passes[-1]
    (pair,), (scale,) = ops_of(out, Kind.EXP_PAIR), ops_of(out, Kind.PAIR_SCALE)
    plan = plan_pass(out, **FLAGS)
    assert plan.fused == {pair: scale} and plan.has_fast_form and plan.exp_shifts == []


@pytest.mark.parametrize("op", EXP_OPS)
@pytest.mark.parametrize("block_max", [True, False])
def test_online_reduction_is_lowered_per_block(op, block_max):
    first = algorithms.build(op, "online").passes[0]
    (acc,), (load,) = ops_of(first, Kind.ACC_ONLINE), ops_of(first, Kind.LOAD_X)
    plan = plan_pass(first, **{**FLAGS, "online_block_max": block_max})
    if block_max:
        assert plan.block_max == [acc] and plan.keys[acc] is load.results[0]
        assert plan.scan_ops == [load, acc]  # the pre-scan loads and maxes, nothing else
    else:
        assert plan.block_max == [] and plan.scan_ops == []


@pytest.mark.parametrize("op", EXP_OPS)
@pytest.mark.parametrize("pair_sum", PAIR_SUMS)
def test_pair_sum_modes(op, pair_sum):
    first = algorithms.build(op, "two_pass").passes[0]
    (load,), (pair,), (acc,) = (ops_of(first, k) for k in (Kind.LOAD_X, Kind.EXP_PAIR, Kind.ACC_PAIR))
    plan = plan_pass(first, **{**FLAGS, "pair_sum": pair_sum})
    expected = {  # (block_max, skipped, summed, running)
        "merge": ([], set(), {pair}, []),
        "scan": ([acc], {pair}, set(), []),
        "running": ([], set(), {pair}, [acc]),
    }[pair_sum]
    assert (plan.block_max, plan.skipped, plan.summed, plan.running) == expected
    if pair_sum != "merge":
        assert plan.keys[acc] is load.results[0]  # the exponent comes from x, before the exp_pair
    if pair_sum == "scan":
        assert plan.scan_ops == [load, acc]


@pytest.mark.parametrize("pair_sum", PAIR_SUMS)
def test_softplus_pairs_are_summed_by_merges(pair_sum):
    """The block and running forms key on an exp_pair's x; softplus_pow's pairs (no such
    key: v is not e^x) are merged per element in every mode, and nothing is fused."""
    program = algorithms.build("softplus_normalize", "two_pass")
    for p in program.passes:
        plan = plan_pass(p, **{**FLAGS, "pair_sum": pair_sum})
        assert (plan.block_max, plan.skipped, plan.summed, plan.running, plan.fused) == ([], set(), set(), [], {})


def test_needed_ops_are_the_dependencies_in_pass_order():
    p = algorithms.build("softmax", "online").passes[-1]  # y = e^(x - m) * r
    (load,), (exp,), (mul,), (store,) = (ops_of(p, k) for k in (Kind.LOAD_X, Kind.EXP, Kind.MUL, Kind.STORE))
    assert needed_ops(p, [mul.results[0]]) == [load, exp, mul]
    assert needed_ops(p, [load.results[0]]) == [load]
    assert store not in needed_ops(p, [mul.results[0]])


def test_unknown_pair_sum_is_a_value_error():
    p = algorithms.build("softmax", "two_pass").passes[0]
    with pytest.raises(ValueError, match="pair_sum"):
        plan_pass(p, **{**FLAGS, "pair_sum": "fast"})
