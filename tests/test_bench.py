"""softgen.bench: the peers compute the same thing as softgen, timing and measuring work."""
import numpy as np
import pytest

import softgen
from softgen import bench
from reference import check


@pytest.mark.parametrize("op", softgen.OPS)
def test_every_installed_peer_computes_the_op(op):
    peers = bench.peers(op)
    assert "numpy" in peers
    x = (np.random.default_rng(0).standard_normal((5, 37)) * 4).astype(np.float32)
    for name, fn in peers.items():
        y = np.asarray(fn(x), dtype=np.float32)
        # peers accumulate in one float32 sum: hold them to float32 accuracy, not 1e-6
        check(op, x, y, rtol=1e-4)


def test_peers_can_be_selected_by_name():
    assert list(bench.peers("softmax", ["numpy"])) == ["numpy"]
    assert bench.peers("softmax", ["no-such-peer"]) == {}


def test_median_time_repeats_within_its_budget():
    calls = []
    t = bench.median_time(lambda: calls.append(1), budget=0.01, min_reps=5)
    assert t >= 0 and len(calls) >= 6  # warm-up + at least min_reps


@pytest.mark.parametrize("preallocate", [False, True])
def test_measure_reports_softgen_variants_and_peers(preallocate):
    results = bench.measure("softmax", (8, 100), peer_fns=bench.case_peers("softmax", names=["numpy"]),
                            budget=0.001, preallocate=preallocate)
    names = [r.name for r in results]
    assert names == [f"softgen:{v}" for v in bench.SOFTGEN_VARIANTS] + ["numpy"]
    assert all(r.el_per_ns > 0 and r.seconds > 0 for r in results)


def test_measure_skips_pairs_that_do_not_exist():
    results = bench.measure("logsumexp", (4, 50), peer_fns={}, budget=0.001)
    assert "softgen:three_pass_reload" not in [r.name for r in results]
    assert len(results) == len(bench.SOFTGEN_VARIANTS) - 1


# --- the cases of `softgen bench --op` beyond the plain ops ------------------------------------

Options = bench.Options
# (op, options, shape): a causal mask over fewer rows than n (one [rows, n] mask), and over
# a multiple of n (x as [rows / n, n, n] under one [n, n] mask)
FAMILY_CASES = [("softmax", Options(temperature=0.7), (6, 12)),
                ("log_softmax", Options(sink=True, temperature=2.0), (6, 12)),
                ("logsumexp", Options(where="causal", sink=True), (6, 12)),
                ("softmax", Options(where="random"), (6, 12)),
                ("log_softmax", Options(where="causal"), (12, 6)),
                ("softmax_backward", Options(), (6, 12)),
                ("log_softmax_backward", Options(), (6, 12)),
                ("cross_entropy", Options(), (6, 12)),
                ("topk_softmax", Options(), (6, 12)),
                ("topk_softmax", Options(k=3, order="softmax_then_topk", temperature=0.5), (6, 12))]


def case_id(value) -> str:
    if isinstance(value, Options):
        return value.describe() or "plain"
    return "x".join(map(str, value)) if isinstance(value, tuple) else value


def outputs(result) -> tuple:
    """A call's result as a tuple of float64 arrays (top-k gives weights and indices)."""
    parts = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    return tuple(np.asarray(part, np.float64) for part in parts)


@pytest.mark.parametrize("peer", ["numpy", "torch", "onnxruntime"])
@pytest.mark.parametrize("op,options,shape", FAMILY_CASES, ids=case_id)
def test_every_installed_peer_computes_the_case(op, options, peer, shape):
    """Each peer's call computes what softgen's does (peers sum in float32: within 1e-4)."""
    fns = bench.case_peers(op, options, [peer])
    if not fns:
        pytest.skip(f"{peer} is not installed")
    case = bench.case(op, options)
    x = (np.random.default_rng(0).standard_normal(shape) * 4).astype(np.float32)
    case.check(shape, options)
    inputs = case.inputs(x, options)
    want = outputs(case.softgen(options, "auto", inputs)(inputs))
    got = outputs(fns[peer](inputs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("phi", [None, 3.0])
def test_unified_max_with_a_given_or_learned_phi_computes_softmax(phi):
    options = Options(phi=phi)
    case = bench.case("softmax", options)
    assert case.variants("unified_max", options) == ("unified_max",)
    x = (np.random.default_rng(0).standard_normal((5, 37)) * 4).astype(np.float32)
    call = case.softgen(options, "unified_max", {"x": x})
    for _ in range(2):   # a learned phi: from the first call's maxima
        np.testing.assert_allclose(call({"x": x}), bench.numpy_softmax(x), rtol=1e-5, atol=1e-7)


def test_the_cases_refuse_what_they_do_not_take():
    with pytest.raises(ValueError, match="softmax takes no --k"):
        bench.case("softmax", Options(k=2))
    with pytest.raises(ValueError, match="cross_entropy takes no --temperature, --where"):
        bench.case("cross_entropy", Options(where="causal", temperature=2.0))
    with pytest.raises(ValueError, match="runs softgen's auto, not --algorithm two_pass"):
        bench.case("softmax_backward").variants("two_pass")
    with pytest.raises(ValueError, match="--phi is unified_max's"):
        bench.case("softmax").variants("all", Options(phi=1.0))
    with pytest.raises(ValueError, match="--k 9 is more than a row's 8 elements"):
        bench.case("topk_softmax").check((2, 8), Options(k=9))
    with pytest.raises(ValueError, match="rows 100 is not a multiple of n 3"):
        bench.case("softmax").check((100, 3), Options(where="causal"))


def test_measure_times_a_family_case():
    results = bench.measure("cross_entropy", (4, 30), peer_fns=bench.case_peers("cross_entropy", names=["numpy"]),
                            budget=0.001)
    assert [r.name for r in results] == ["softgen:auto", "numpy"] and all(r.el_per_ns > 0 for r in results)


@pytest.mark.parametrize("delta", [0, 16, 4032])
def test_same_page_offset_places_the_output(delta):
    x = np.ones((3, 100), np.float32)[:, 1:]
    y = softgen.api.same_page_offset(x, (5, 7), delta)
    assert y.shape == (5, 7) and y.dtype == np.float32 and y.flags.c_contiguous
    assert (y.ctypes.data - x.ctypes.data - delta) % softgen.api.PAGE == 0


def test_new_outputs_sit_half_a_page_from_the_input():
    """softgen's own outputs avoid 4K aliasing with x (api.OUTPUT_DELTA), any axis."""
    from softgen import api
    x = np.random.default_rng(0).standard_normal((64, 1000)).astype(np.float32)
    for y in (softgen.softmax(x), np.moveaxis(softgen.log_softmax(x.T, axis=0), 0, -1)):
        assert y.shape == x.shape
        assert (y.ctypes.data - x.ctypes.data - api.OUTPUT_DELTA) % api.PAGE == 0
    check("softmax", x, softgen.softmax(x))
