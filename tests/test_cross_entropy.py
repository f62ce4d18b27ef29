"""softgen.cross_entropy against a float64 reference (and torch's where installed): the
reductions, ignore_index, label smoothing, z-loss, the lse; its gradient; the chunked
accumulator against the one-shot call over chunk widths and orders; bad arguments."""
import numpy as np
import pytest

import softgen
from softgen.cross_entropy import CrossEntropyChunks, cross_entropy, cross_entropy_backward


def reference(x, labels, reduction="mean", ignore_index=-100, eps=0.0, z=0.0):
    """(loss, lse) in float64 (longdouble for float64 logits)."""
    x = x.astype(np.longdouble if x.dtype == np.float64 else np.float64)
    m = x.max(-1, keepdims=True)
    with np.errstate(all="ignore"):
        lse = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]
        keep = labels != ignore_index
        picked = np.take_along_axis(x, np.where(keep, labels, 0)[..., None], -1)[..., 0]
        smoothed = eps * x.mean(-1) if eps else 0.0   # (0 * -inf would be NaN)
        loss = np.where(keep, lse - (1 - eps) * picked - smoothed + z * lse * lse, 0)
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.sum() / keep.sum()
    return loss, lse


def data(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, shape[-1], shape[:-1])
    return x, labels


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps,z", [(0.0, 0.0), (0.1, 0.0), (0.2, 1e-4)])
def test_matches_the_reference(reduction, eps, z):
    x, labels = data((37, 1001))
    labels[[3, 8]] = -100
    x[5, ::3] = -np.inf
    loss, lse = cross_entropy(x, labels, reduction=reduction, label_smoothing=eps, z_loss=z, return_lse=True)
    want, want_lse = reference(x, labels, reduction, eps=eps, z=z)
    assert loss.dtype == np.float32 and lse.dtype == np.float32
    np.testing.assert_allclose(lse, want_lse, rtol=1e-6)
    np.testing.assert_allclose(loss, want, rtol=2e-6 if reduction != "sum" else 1e-5, atol=1e-6)


def test_float64_other_axis_and_torch():
    x, _ = data((6, 300, 4), dtype=np.float64)
    labels = np.random.default_rng(1).integers(0, 300, (6, 4))   # classes on axis 1, as torch's (N, C, d)
    x_last = np.moveaxis(x, 1, -1)
    got = cross_entropy(x, labels, axis=1, reduction="none", label_smoothing=0.05)
    want, _ = reference(x_last, labels, "none", eps=0.05)
    np.testing.assert_allclose(got, want.astype(np.float64), rtol=1e-14)
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(labels), reduction="none",
                                          label_smoothing=0.05)
    np.testing.assert_allclose(got, t.numpy(), rtol=1e-13)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradient_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    x, labels = data((20, 333))
    labels[4] = -100
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    loss = torch.nn.functional.cross_entropy(xt, torch.tensor(labels), reduction=reduction, label_smoothing=0.1)
    lse = torch.logsumexp(xt, 1)
    zl = 1e-3 * lse ** 2 * torch.tensor(labels != -100)
    loss = loss + (zl if reduction == "none" else zl.sum() / (19 if reduction == "mean" else 1))
    grad = np.linspace(0.5, 2.0, 20) if reduction == "none" else 1.0
    loss.backward(torch.tensor(grad) if reduction == "none" else None)
    got = cross_entropy_backward(x, labels, grad, reduction=reduction, label_smoothing=0.1, z_loss=1e-3)
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("widths", [(1000,), (1, 999), (64, 7, 500, 429), (333, 333, 334)])
def test_chunks_give_the_one_shot_result(dtype, widths):
    x, labels = data((50, 1000), seed=len(widths), dtype=dtype)
    labels[7] = -100
    x[9, 100:] = -np.inf
    acc = CrossEntropyChunks(labels, dtype=dtype, label_smoothing=0.1)
    starts = np.cumsum((0,) + widths[:-1])
    for start, width in reversed(list(zip(starts, widths))):   # any order
        acc.update(x[:, start:start + width], int(start))
    loss, lse = acc.result("none", z_loss=1e-4, return_lse=True)
    want, want_lse = cross_entropy(x, labels, reduction="none", label_smoothing=0.1, z_loss=1e-4, return_lse=True)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(lse, want_lse, rtol=rtol)
    np.testing.assert_allclose(loss, want, rtol=4 * rtol, atol=rtol)


def test_bad_arguments():
    x, labels = data((4, 10))
    with pytest.raises(IndexError, match="outside"):
        cross_entropy(x, np.array([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="labels must be integers"):
        cross_entropy(x, labels[:3])
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(x, labels, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(x, labels, label_smoothing=1.5)
    acc = CrossEntropyChunks(labels)
    with pytest.raises(ValueError, match="no chunk"):
        acc.result()
    with pytest.raises(ValueError, match="tokens=4"):
        acc.update(x[:3], 0)
    assert np.isnan(cross_entropy(x, np.full(4, -100)))   # nothing counted: the mean is NaN
    assert softgen.cross_entropy is cross_entropy
