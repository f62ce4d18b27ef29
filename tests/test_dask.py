"""softgen.dask: the ops on dask arrays chunked along any axis (the reduced one included),
against float64 references and the single-machine results, and on a real LocalCluster with
an array larger than a worker's memory limit."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install softgen[dask])")

import softgen  # noqa: E402
import softgen.dask as sd  # noqa: E402
from reference import check  # noqa: E402

OPS = {"softmax": sd.softmax, "log_softmax": sd.log_softmax, "logsumexp": sd.logsumexp}


def rows(dtype, n=1000, seed=0) -> np.ndarray:
    """7 rows: random at three scales, one with -inf over a whole chunk, one all -inf, one
    with +inf, one with NaN."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((7, n)) * np.array([[1.0], [30.0], [300.0], [1], [1], [1], [1]])
    x[3, :n // 2] = -np.inf
    x[4] = -np.inf
    x[5, n // 3] = np.inf
    x[6, n - 2] = np.nan
    with np.errstate(over="ignore"):
        return x.astype(dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("chunks", [(2, 137), (3, 1000), (7, 333)], ids=["both", "rows", "row chunks"])
def test_chunked_along_any_axis_matches_float64(op, dtype, chunks):
    x = rows(dtype)
    y = OPS[op](da.from_array(x, chunks=chunks)).compute()
    assert y.dtype == x.dtype
    rtol = 1e-13 if dtype == np.float64 else None   # the total's rounding (module doc)
    check(op, x, y, rtol=rtol)


@pytest.mark.parametrize("op", OPS)
def test_the_reduced_axis_may_be_any(op):
    x = np.random.default_rng(1).standard_normal((50, 3, 40)).astype(np.float32)
    y = OPS[op](da.from_array(x, chunks=(16, 2, 40)), axis=0).compute()
    expected = getattr(softgen, op)(x, axis=0)
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-7)
    if op == "logsumexp":
        kept = sd.logsumexp(da.from_array(x, chunks=(16, 2, 40)), axis=0, keepdims=True).compute()
        np.testing.assert_array_equal(kept[0], y)


def test_one_chunk_per_row_is_softgens_own_call():
    x = rows(np.float32)
    np.testing.assert_array_equal(sd.softmax(da.from_array(x, chunks=(3, -1))).compute(), softgen.softmax(x))


@pytest.mark.parametrize("axis, err", [((0, 1), TypeError), (None, TypeError), (2, ValueError)])
def test_bad_axes(axis, err):
    with pytest.raises(err, match="softgen.dask.softmax"):
        sd.softmax(da.zeros((2, 3), chunks=1), axis=axis)


def test_on_a_local_cluster_past_a_workers_memory():
    """2 worker processes of 400 MB each (of which a worker with softgen loaded uses ~130 MB)
    on a 448 MB array, chunked along its rows."""
    distributed = pytest.importorskip("distributed")
    shape, chunks = (14, 2 ** 23), (2, 2 ** 21)
    x = da.random.default_rng(3).standard_normal(shape, chunks=chunks, dtype=np.float32) * 20
    assert x.nbytes > 400e6
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="400MB",
                                  processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        labels = np.random.default_rng(4).integers(0, shape[1], shape[0])
        lse, sums, head, loss = client.compute([sd.logsumexp(x), sd.softmax(x).sum(axis=-1, dtype=np.float64),
                                                sd.log_softmax(x)[:, :1000],
                                                sd.cross_entropy(x, labels, reduction="none")], sync=True)
        local = x.compute(scheduler="threads")
    np.testing.assert_allclose(loss, softgen.cross_entropy(local, labels, reduction="none"), rtol=1e-6)
    np.testing.assert_allclose(lse, softgen.logsumexp(local), rtol=1e-6)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    np.testing.assert_allclose(head, softgen.log_softmax(local)[:, :1000], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("chunks", [(16, 1200), (64, 5000), (5, 777)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_chunked_along_any_axis(chunks, reduction):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 5000)) * 3).astype(np.float32)
    x[7, ::2] = -np.inf
    labels = rng.integers(0, 5000, 64)
    labels[[3, 9]] = -100
    got = sd.cross_entropy(da.from_array(x, chunks=chunks), da.from_array(labels, chunks=chunks[0]),
                           reduction=reduction, label_smoothing=0.05, z_loss=1e-4).compute()
    want = softgen.cross_entropy(x, labels, reduction=reduction, label_smoothing=0.05, z_loss=1e-4)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6)
    with pytest.raises(ValueError, match="labels must be integers"):
        sd.cross_entropy(da.from_array(x, chunks=chunks), labels[:5])
