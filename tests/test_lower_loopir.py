"""The loop IR: every op x algorithm x schedule lowers to a verified, printable kernel at
every width; the verifier rejects malformed kernels; the LLVM renderer refuses what it
cannot render in one place; the lowering holds no backend's types."""
import ast
import dataclasses
import itertools
from pathlib import Path

import pytest

import softgen
from softgen import algorithms, ops
from softgen.backends.llvm import render
from softgen.ir import DType
from softgen.lower import Schedule
from softgen.lower.capabilities import Capabilities
from softgen.lower.kernel import lower
from softgen.lower.loopir import (I64, Builder, Const, Instr, Kernel, Val, VerifyError, bool_ty, float_ty,
                                  i64, verify, walk)
from softgen.targets import Target

SCHEDULES = {
    "default": Schedule(),
    "groups": Schedule(rows_per_group=4, interleave=2, unroll=2, accumulators=1),
    "pipelined": Schedule(rows_per_group=4, pipeline=True),
    "streaming": Schedule(nontemporal=True, prefetch=256),
    "scan": Schedule(pair_sum="scan", online_block_max=False, fast_exp=False),
    "merge": Schedule(pair_sum="merge", unroll=1),
}
# capabilities of 16, 8 and 4 float32 lanes (x86: NaN-ignoring max, a fence after streaming
# stores; vscalefps and mask registers only at 16) and a target with neither (aarch64-like)
CAPS = {
    "x86-16": Capabilities(512, frozenset({(32, 16)}), True, True),
    "x86-8": Capabilities(256, frozenset(), True, True, mask_registers=False),
    "x86-4": Capabilities(128, frozenset(), True, True, mask_registers=False),
    "neon": Capabilities(128, frozenset(), False, False),
}
PROGRAMS = [(spec.name, algo) for spec in ops.REGISTRY.values() for algo in spec.algorithms]


@pytest.mark.parametrize("caps", CAPS, ids=str)
@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
@pytest.mark.parametrize("op,algorithm", PROGRAMS, ids=lambda v: str(v))
def test_every_program_lowers_to_a_verified_kernel(op, algorithm, schedule, caps):
    kernel = lower(algorithms.build(op, algorithm), CAPS[caps], SCHEDULES[schedule])
    text = str(kernel)
    lanes = CAPS[caps].vector_bits // 32
    assert text.startswith(f"kernel softgen_{op}_{algorithm}(rows: i64, n: i64, x: ptr")
    assert f"{lanes} lanes" in text and "loop vec:" in text and "if tail" in text
    instrs = [s for s in walk(kernel.body) if isinstance(s, Instr)]
    used = {s.op for s in instrs}
    assert ("ldexp" in used) <= (caps == "x86-16")          # native only where the target has it
    streaming = [s for s in instrs if s.op == "store" and s.attrs.get("nontemporal")]
    assert bool(streaming) <= SCHEDULES[schedule].nontemporal
    assert ("fence" in used) == (bool(streaming) and CAPS[caps].streaming_fence)
    # x86's max keeps its NaN record as a mask only where masks have registers of their own
    mask_ors = [s for s in instrs if s.op == "or" and s.result.ty.kind == "bool" and s.result.ty.lanes > 1]
    assert not mask_ors or CAPS[caps].mask_registers


def test_mask_registers_are_avx512s():
    assert Capabilities.of(Target.parse("x86-64-v4")).mask_registers
    assert not Capabilities.of(Target.parse("x86-64-v3")).mask_registers


HALF = frozenset({(DType.F16, DType.F32), (DType.F32, DType.F16)})


@pytest.mark.parametrize("caps", CAPS, ids=str)
@pytest.mark.parametrize("dtypes", [(DType.F64, DType.F64), (DType.F16, DType.F16), (DType.BF16, DType.BF16),
                                    (DType.BF16, DType.F32), (DType.F32, DType.F64)], ids=lambda d: f"{d[0].short}-{d[1].short}")
@pytest.mark.parametrize("half", [False, True], ids=["recipes", "native half"])
def test_casts_are_instructions_or_recipes(caps, dtypes, half):
    """float64 computes at half the lanes; loads and stores keep x's and y's element types;
    a 16-bit float is converted by one instruction where the target has it, else it travels
    as 16-bit integer lanes through numerics' recipes (bfloat16 always)."""
    x, y = dtypes
    compute = DType.F64 if DType.F64 in dtypes else DType.F32
    caps = dataclasses.replace(CAPS[caps], native_casts=CAPS[caps].native_casts | (HALF if half else frozenset()))
    kernel = lower(algorithms.build("softmax", "two_pass", x, compute, y), caps, Schedule())
    lanes = caps.vector_bits // compute.bits
    instrs = [s for s in walk(kernel.body) if isinstance(s, Instr)]
    types = {s.op: set() for s in instrs}
    for s in instrs:
        types[s.op].add(str(s.result.ty) if s.result else str(s.args[-1].ty))   # a store's value
    assert f"{lanes} lanes" in str(kernel)
    in_memory = {d: (f"i16" if d is DType.BF16 or (d is DType.F16 and not half) else f"f{d.bits}")
                 for d in dtypes}
    assert f"<{lanes} x {in_memory[x]}>" in types["load"]
    assert f"<{lanes} x {in_memory[y]}>" in types["store"]
    recipes = any(in_memory[d] == "i16" for d in dtypes)
    assert ("zext" in types) == (in_memory[x] == "i16") and ("trunc" in types) == (in_memory[y] == "i16")
    assert ("lshr" in types) == (recipes and in_memory[y] == "i16")
    natively = (x.bits != compute.bits and in_memory[x] != "i16") or (y.bits != compute.bits and in_memory[y] != "i16")
    assert ("convert" in types) == natively


def test_float64_results_are_not_narrowed_to_16_bits():
    program = algorithms.build("softmax", "online", DType.F64, DType.F64, DType.BF16)
    with pytest.raises(NotImplementedError, match="storing float64 results as bfloat16 would round twice"):
        lower(program, CAPS["x86-8"], Schedule())


def test_the_printout_names_the_schedule_shape():
    kernel = lower(algorithms.build("softmax", "three_pass_recompute"), CAPS["x86-8"],
                   Schedule(rows_per_group=4, pipeline=True, unroll=2))
    text = str(kernel)
    assert "8 lanes, 4 rows per group, pipelined" in text
    for part in ("loop pipeline:", "if steady", "if folded", "if shifted", "loop chunk:", "loop vec:",
                 "if tail", "loop row:"):
        assert part in text, part
    blocked = str(lower(algorithms.build("softmax", "online"), CAPS["x86-8"], Schedule()))
    assert "if short" in blocked and "loop block:" in blocked and "if block.fast" in blocked
    pairs = str(lower(algorithms.build("softmax", "two_pass"), CAPS["x86-8"], Schedule()))
    assert "do block.again:" in pairs and "if guard" in pairs


def _kernel(*statements) -> Kernel:
    k = Kernel("k", [Val(0, I64, "n")])
    k.body.extend(statements)
    return k


def test_verify_rejects_values_used_outside_their_block():
    k = Kernel("k", [Val(0, I64, "n")])
    b = Builder(k)
    inner = []
    b.if_then(Const(bool_ty(), 1), lambda: inner.append(b.emit("add", k.params[0], i64(1), ty=I64)), "then")
    b.emit("add", inner[0], i64(1), ty=I64)
    with pytest.raises(VerifyError, match="used where it is not defined"):
        verify(k)


def test_verify_rejects_undeclared_vars_and_non_bool_conditions():
    b = Builder(_kernel())
    v = b.var(I64, i64(0))
    verify(b.kernel)
    other = Builder(_kernel())
    other.read(v)
    with pytest.raises(VerifyError, match="not a declared var"):
        verify(other.kernel)
    looped = Builder(_kernel())
    looped.loop_while(lambda: looped.emit("add", i64(1), i64(2), ty=I64), lambda: None, "bad")
    with pytest.raises(VerifyError, match="condition of bad"):
        verify(looped.kernel)


def test_the_llvm_renderer_refuses_what_it_cannot_render():
    b = Builder(_kernel())
    b.emit("transpose", b.kernel.params[0], ty=I64)
    with pytest.raises(NotImplementedError, match="no rendering for loop-IR op 'transpose'"):
        render(b.kernel, Target.parse("x86-64"))
    b = Builder(_kernel())
    f = Const(float_ty(32, 8), 1.0)
    b.emit("ldexp", f, f, ty=float_ty(32, 8))
    with pytest.raises(NotImplementedError, match="no native ldexp"):
        render(b.kernel, Target.parse("x86-64-v3"))


def test_kernels_and_artifacts_show_their_loop_ir():
    k = softgen.compile("logsumexp", algorithm="online")
    assert k.loop_ir.startswith("kernel softgen_logsumexp_online(")
    art = softgen.generate("softmax", algorithm="two_pass", target="aarch64")
    assert "4 lanes" in art.loop_ir and "ldexp" not in art.loop_ir


def test_the_lowering_holds_no_backend_types():
    """lower/ imports nothing from backends or llvmlite, and spells no element size."""
    for path in Path(softgen.__file__).parent.joinpath("lower").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "backends" not in (node.module or "") and "llvmlite" not in (node.module or ""), path
            if isinstance(node, ast.Import):
                assert not any("llvmlite" in a.name for a in node.names), path
        assert "// 4" not in path.read_text() and "float32" not in path.read_text().replace("float32 lanes", ""), path
