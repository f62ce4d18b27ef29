"""softgen.torch: softgen's ops as torch custom ops on CPU tensors: their values and
gradients against torch's own, the op registration (torch.library.opcheck), torch.compile."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'softgen[torch]'); "
                                              "softgen.torch is optional")
import softgen.torch as st  # noqa: E402  (after the skip)

OPS = {"softmax": torch.softmax, "log_softmax": torch.log_softmax, "logsumexp": torch.logsumexp}


def _x(shape=(5, 37), dtype=torch.float64, seed=0) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape) * 4).to(dtype)
    x[1, 3] = -torch.inf    # a masked entry
    return x


def test_the_module_imports_pytorch_not_itself():
    assert st.torch is torch and torch.ops.softgen.softmax.default is not None


@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_values_match_torch(op, dtype, dim):
    x = _x(dtype=dtype)
    y = getattr(torch.ops.softgen, op)(x, dim)
    expected = OPS[op](x, dim)
    assert y.dtype == dtype and y.shape == expected.shape and y.is_contiguous()
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(y, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_16_bit_tensors_keep_their_dtype(dtype):
    if dtype == torch.bfloat16:
        pytest.importorskip("ml_dtypes", reason="bfloat16 tensors go through ml_dtypes")
    x = _x(dtype=dtype)
    y = st.softmax(x, dim=-1)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), torch.softmax(x.float(), -1), rtol=1e-2, atol=1e-3)


def test_strided_input_is_read_in_place():
    x = _x((40, 9)).t()   # (9, 40), strides (1, 9)
    torch.testing.assert_close(st.log_softmax(x, dim=1), torch.log_softmax(x, 1))


@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("op", OPS)
def test_gradients_match_torch(op, dim):
    x = _x().requires_grad_()
    ours, theirs = getattr(st, op)(x, dim), OPS[op](x, dim)
    g = torch.randn_like(theirs)
    (grad_ours,) = torch.autograd.grad(ours, x, g)
    (grad_theirs,) = torch.autograd.grad(theirs, x, g)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-10, atol=1e-12)
    finite = _x((3, 6)).requires_grad_()     # gradcheck's finite differences need no -inf
    finite.data[1, 3] = 0.5
    assert torch.autograd.gradcheck(lambda t: getattr(st, op)(t, dim), (finite,))
    assert torch.autograd.gradgradcheck(lambda t: getattr(st, op)(t, dim), (finite,))


@pytest.mark.parametrize("op", OPS)
def test_the_registration_passes_opcheck(op):
    """Schema, fake tensor (same shape, strides, dtype as the op's result), autograd."""
    x = _x((3, 8), torch.float32)
    torch.library.opcheck(getattr(torch.ops.softgen, op), (x.t().requires_grad_(), 0))


@pytest.mark.parametrize("bad,error", [(torch.ones(3, 4, dtype=torch.int32), TypeError),
                                       (torch.ones(3, 4), ValueError)])
def test_bad_input_is_refused(bad, error):
    with pytest.raises(error):
        st.softmax(bad, dim=2 if error is ValueError else -1)


def _compiles_here() -> str | None:
    """Why torch.compile cannot work in this environment, or None."""
    try:
        torch.compile(lambda t: t * 2, backend="aot_eager", fullgraph=True)(torch.ones(2))
    except Exception as e:  # noqa: BLE001  (any failure of torch's own machinery)
        return f"torch.compile fails on a trivial function here: {type(e).__name__}: {e}"
    return None


def test_torch_compile_traces_the_op_and_its_gradient():
    """aot_eager: dynamo and AOT autograd trace through the fake and the gradient (inductor
    would add ~30 s of C++ compilation for nothing about softgen)."""
    reason = _compiles_here()
    if reason:
        pytest.skip(reason)

    def f(t):
        return torch.ops.softgen.softmax(t * 2, -1).sum(0) + 1

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    x = _x((4, 33), torch.float32).requires_grad_()
    y = compiled(x)
    torch.testing.assert_close(y, torch.softmax(x * 2, -1).sum(0) + 1)
    (grad,) = torch.autograd.grad(y.sum(), x)
    (expected,) = torch.autograd.grad((torch.softmax(x * 2, -1).sum(0) + 1).sum(), x)
    torch.testing.assert_close(grad, expected)
