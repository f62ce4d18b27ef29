"""The op registry: every op builds for what it declares, and nothing else names ops."""
import re
from pathlib import Path

import pytest

from softgen import algorithms, ops
from softgen.ir import Kind, Op
from softgen.ops import Output


def _stores(program) -> tuple[int, int]:
    """(element stores, row stores) of a program."""
    row = sum(isinstance(s, Op) and s.kind is Kind.STORE_ROW for s in program.steps)
    elem = sum(op.kind is Kind.STORE for p in program.passes for op in p.ops)
    return elem, row


@pytest.mark.parametrize("spec", ops.REGISTRY.values(), ids=ops.NAMES)
def test_every_declared_algorithm_builds_with_the_specs_output(spec):
    assert spec.algorithms and set(spec.algorithms) <= set(algorithms.ALGORITHMS)
    for algorithm in spec.algorithms:
        program = algorithms.build(spec.name, algorithm)  # verified
        assert program.op == spec.name and program.row_output == spec.row_output
        elem, row = _stores(program)
        assert (row == 1 and not elem) if spec.output is Output.VALUE else (elem and not row)


@pytest.mark.parametrize("spec", ops.REGISTRY.values(), ids=ops.NAMES)
def test_undeclared_algorithms_say_why(spec):
    for algorithm in set(algorithms.ALGORITHMS) - set(spec.algorithms):
        with pytest.raises(NotImplementedError, match=f"{spec.name} x {algorithm}: .*use one of"):
            algorithms.build(spec.name, algorithm)


def test_a_spec_is_accepted_where_a_name_is():
    assert str(algorithms.build(ops.LOGSUMEXP, "online")) == str(algorithms.build("logsumexp", "online"))


@pytest.mark.parametrize("bad", ["softmin", "", None, 3])
def test_unknown_ops_list_the_known_ones(bad):
    with pytest.raises(ValueError, match=f"unknown op {re.escape(repr(bad))}; expected one of "
                                         + re.escape(", ".join(ops.NAMES))):
        ops.get(bad)


def test_output_shapes():
    assert ops.SOFTMAX.output_shape(3, 5) == (3, 5)
    assert ops.LOGSUMEXP.output_shape(3, 5) == (3,)


def test_no_op_name_comparisons_outside_the_registry():
    """Callers ask an OpSpec: no `op == "softmax"`, no dicts keyed by op names."""
    names = "|".join(ops.NAMES)
    pattern = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=|:)|_entry\(["']""")
    package = Path(ops.__file__).parent
    found = [f"{path.relative_to(package)}:{i}: {line.strip()}"
             for path in sorted(package.rglob("*.py")) if path.name != "ops.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)


def test_op_parameters_are_part_of_the_op():
    spec = ops.SOFTPLUS_NORMALIZE.with_params(power=2)
    assert spec.param == {"scale": 1.0, "power": 2.0} and spec != ops.SOFTPLUS_NORMALIZE
    assert hash(spec) == hash(ops.SOFTPLUS_NORMALIZE.with_params(power=2.0)) and str(spec) == "softplus_normalize"
    assert "power=2.0" in str(algorithms.build(spec, "two_pass"))
    with pytest.raises(ValueError, match="unknown parameter"):
        ops.SOFTMAX.with_params(power=2.0)
    with pytest.raises(ValueError, match="finite number"):
        ops.SOFTPLUS_NORMALIZE.with_params(scale=float("inf"))
