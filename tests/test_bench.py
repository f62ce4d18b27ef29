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
    results = bench.measure("softmax", (8, 100), peer_fns=bench.peers("softmax", ["numpy"]),
                            budget=0.001, preallocate=preallocate)
    names = [r.name for r in results]
    assert names == [f"softgen:{v}" for v in bench.SOFTGEN_VARIANTS] + ["numpy"]
    assert all(r.el_per_ns > 0 and r.seconds > 0 for r in results)


def test_measure_skips_pairs_that_do_not_exist():
    results = bench.measure("logsumexp", (4, 50), peer_fns={}, budget=0.001)
    assert "softgen:three_pass_reload" not in [r.name for r in results]
    assert len(results) == len(bench.SOFTGEN_VARIANTS) - 1


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
