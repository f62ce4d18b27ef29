"""The peers' own tests of softmax, log_softmax and logsumexp, adapted to call softgen:
SciPy's scipy/special/tests/test_logsumexp.py (1.17.1: TestLogSumExp, TestSoftmax,
TestLogSoftmax) against softgen.scipy; JAX's tests/nn_test.py softmax cases and
tests/lax_scipy_test.py logsumexp cases; PyTorch's test/test_nn.py softmax value cases and
test/test_reductions.py logsumexp cases against softgen's own functions.  Each test names
the peer's test it adapts; what cannot apply is skipped with the reason (complex input,
where= masks, gradients, GPU-only sizes).  SciPy serves as the reference where a peer's
test compares with it."""
import itertools
import math

import ml_dtypes
import numpy as np
import pytest
from reference import reference

import softgen
from softgen import scipy as sp

inf, nan = np.inf, np.nan
COMPLEX = "complex input is out of scope (softgen raises TypeError)"
WHERE = "where= masks belong to another issue"
GRAD = "gradients: softgen has no autodiff"


def assert_close(actual, desired, rtol=None, atol=0.0):
    """SciPy's xp_assert_close for numpy: same dtype and shape (0-d results are numpy
    scalars, as SciPy's are), values within rtol (default: 4 sqrt(eps) of the dtype)."""
    desired = np.asarray(desired)
    assert np.ndim(actual) == desired.ndim and np.shape(actual) == desired.shape
    assert np.result_type(actual) == desired.dtype, (np.result_type(actual), desired.dtype)
    if np.ndim(actual) == 0:
        assert isinstance(actual, np.generic), type(actual)
    rtol = 4 * np.finfo(desired.dtype).eps ** 0.5 if rtol is None else rtol
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, equal_nan=True)


def assert_equal(actual, desired):
    """SciPy's xp_assert_equal: same dtype, shape and values (NaNs where desired has them)."""
    assert_close(actual, desired, rtol=0)


# --- SciPy: scipy/special/tests/test_logsumexp.py --------------------------------------

def test_wrap_radians():
    pytest.skip(f"_wrap_radians wraps complex phases: {COMPLEX}")


class TestLogSumExp:
    def test_logsumexp(self):
        assert_equal(sp.logsumexp(np.asarray([])), np.asarray(-inf))
        a = np.arange(200., dtype=np.float64)
        assert_close(sp.logsumexp(a), np.log(np.sum(np.exp(a))))
        assert_close(sp.logsumexp(np.asarray([1000., 1000.])), np.asarray(1000.0 + math.log(2.0)))
        n = 1000
        assert_close(sp.logsumexp(np.full((n,), 10000)), np.asarray(10000.0 + math.log(n)))
        x = np.asarray([1e-40] * 1000000)
        logx = np.log(x)
        X, logX = np.stack([x, x]), np.stack([logx, logx])
        assert_close(np.exp(sp.logsumexp(logX)), np.sum(X))
        assert_close(np.exp(sp.logsumexp(logX, axis=0)), np.sum(X, axis=0))
        assert_close(np.exp(sp.logsumexp(logX, axis=1)), np.sum(X, axis=1))
        inf_, nan_ = np.asarray([inf]), np.asarray([nan])
        assert_equal(sp.logsumexp(inf_), inf_[0])
        assert_equal(sp.logsumexp(-inf_), -inf_[0])
        assert_equal(sp.logsumexp(nan_), nan_[0])
        assert_equal(sp.logsumexp(np.asarray([-inf, -inf])), -inf_[0])
        a = np.asarray([[1e10, 1e-10], [-1e10, -np.inf]])
        ref = np.asarray([1e10, -1e10])
        assert_close(sp.logsumexp(a, axis=-1), ref)
        assert_close(sp.logsumexp(a, axis=-1, keepdims=True), np.expand_dims(ref, axis=-1))
        assert_close(sp.logsumexp(a, axis=(-1, -2)), np.asarray(1e10))

    def test_logsumexp_b(self):
        a = np.arange(200., dtype=np.float64)
        b = np.arange(200., 0., -1.)
        assert_close(sp.logsumexp(a, b=b), np.log(np.sum(b * np.exp(a))))
        assert_close(sp.logsumexp(np.asarray([1000, 1000]), b=np.asarray([1.2, 1.2])),
                     np.asarray(1000 + math.log(2 * 1.2)))
        x = np.asarray([1e-40] * 100000)
        b = np.linspace(1, 1000, 100000)
        logx = np.log(x)
        X, logX, B = np.stack((x, x)), np.stack((logx, logx)), np.stack((b, b))
        assert_close(np.exp(sp.logsumexp(logX, b=B)), np.sum(B * X))
        assert_close(np.exp(sp.logsumexp(logX, b=B, axis=0)), np.sum(B * X, axis=0))
        assert_close(np.exp(sp.logsumexp(logX, b=B, axis=1)), np.sum(B * X, axis=1))

    def test_logsumexp_sign(self):
        r, s = sp.logsumexp(np.asarray([1, 1, 1]), b=np.asarray([1, -1, -1]), return_sign=True)
        assert_close(r, np.asarray(1.))
        assert_equal(s, np.asarray(-1.))

    def test_logsumexp_sign_zero(self):
        r, s = sp.logsumexp(np.asarray([1, 1]), b=np.asarray([1, -1]), return_sign=True)
        assert not np.isfinite(r) and not np.isnan(r) and r < 0
        assert s == 0

    def test_logsumexp_sign_shape(self):
        a = np.ones((1, 2, 3, 4))
        b = np.ones_like(a)
        r, s = sp.logsumexp(a, axis=2, b=b, return_sign=True)
        assert r.shape == s.shape == (1, 2, 4)
        r, s = sp.logsumexp(a, axis=(1, 3), b=b, return_sign=True)
        assert r.shape == s.shape == (1, 3)

    def test_logsumexp_complex_sign(self):
        with pytest.raises(TypeError, match="complex input"):
            sp.logsumexp(np.asarray([1 + 1j, 2 - 1j, -2 + 3j]), return_sign=True)
        pytest.skip(COMPLEX)

    def test_logsumexp_shape(self):
        a = np.ones((1, 2, 3, 4))
        b = np.ones_like(a)
        assert sp.logsumexp(a, axis=2, b=b).shape == (1, 2, 4)
        assert sp.logsumexp(a, axis=(1, 3), b=b).shape == (1, 3)

    def test_logsumexp_b_zero(self):
        assert_close(sp.logsumexp(np.asarray([1, 10000]), b=np.asarray([1, 0])), np.asarray(1.))

    def test_logsumexp_b_shape(self):
        sp.logsumexp(np.zeros((4, 1, 2, 1)), b=np.ones((3, 1, 5)))

    @pytest.mark.parametrize('arg', (1, [1, 2, 3]))
    def test_xp_invalid_input(self, arg):
        assert sp.logsumexp(arg) == sp.logsumexp(np.asarray(np.atleast_1d(arg)))

    def test_array_like(self):
        assert_close(sp.logsumexp([1000, 1000]), np.asarray(1000.0 + math.log(2.0)))

    @pytest.mark.parametrize('dtype', ['float32', 'float64', 'int32', 'int64', 'complex64', 'complex128'])
    def test_dtypes_a(self, dtype):
        if dtype.startswith("complex"):
            pytest.skip(COMPLEX)
        a = np.asarray([1000., 1000.], dtype=dtype)
        desired_dtype = np.float64 if dtype.startswith("int") else dtype
        assert_close(sp.logsumexp(a), np.asarray(1000.0 + math.log(2.0), dtype=desired_dtype))

    @pytest.mark.parametrize('dtype_a', ['float32', 'float64', 'int32', 'int64', 'complex64', 'complex128'])
    @pytest.mark.parametrize('dtype_b', ['float32', 'float64', 'int32', 'int64', 'complex64', 'complex128'])
    def test_dtypes_ab(self, dtype_a, dtype_b):
        if "complex" in dtype_a + dtype_b:
            pytest.skip(COMPLEX)
        a = np.asarray([2, 1], dtype=dtype_a)
        b = np.asarray([1, -1], dtype=dtype_b)
        desired_dtype = np.result_type(dtype_a, dtype_b)
        desired_dtype = np.float64 if desired_dtype.kind in "iu" else desired_dtype
        assert_close(sp.logsumexp(a, b=b), np.asarray(math.log(math.exp(2) - math.exp(1)), dtype=desired_dtype))

    def test_gh18295(self):
        a = np.asarray([0.0, -40.0])
        assert_close(sp.logsumexp(a), np.logaddexp(a[0], a[1]))

    @pytest.mark.parametrize('dtype', ['complex64', 'complex128'])
    def test_gh21610(self, dtype):
        pytest.skip(COMPLEX)

    def test_gh21709_small_imaginary(self):
        pytest.skip(COMPLEX)

    @pytest.mark.parametrize('x,y', itertools.product([-inf, inf], repeat=2))
    def test_gh22601_infinite_elements(self, x, y):
        # the real cases of SciPy's 18 x 18 (the other 320 are complex infinities)
        with np.errstate(all="ignore"):
            ref = np.log(np.sum(np.exp(np.asarray([x, y]))))
        assert_equal(sp.logsumexp(np.asarray([x, y])), ref)

    def test_gh22601_complex_infinite_elements(self):
        pytest.skip(f"320 cases of complex infinities: {COMPLEX}")

    def test_no_writeback(self):
        a = np.asarray([5., 4.])
        b = np.asarray([3., 2.])
        sp.logsumexp(a)
        sp.logsumexp(a, b=b)
        assert_equal(a, np.asarray([5., 4.]))
        assert_equal(b, np.asarray([3., 2.]))

    @pytest.mark.parametrize("x_raw", [1.0, 1.0j, []])
    def test_device(self, x_raw):
        # numpy has one device; what is left to check is that results are numpy's
        if isinstance(x_raw, complex):
            pytest.skip(COMPLEX)
        x = np.asarray(x_raw)
        assert isinstance(sp.logsumexp(x), np.generic) and isinstance(sp.logsumexp(x, b=x), np.generic)

    def test_gh22903(self):
        a = np.asarray([3.06409428, 0.37251854, 3.87471931])
        b = np.asarray([1.88190708, 2.84174795, -0.85016884])
        assert_close(sp.logsumexp(a, b=b), sp.logsumexp(a, b=b, return_sign=True)[0])
        b = np.asarray([1.88190708, 2.84174795, -3.85016884])
        assert_close(sp.logsumexp(a, b=b), np.asarray(nan))

    @pytest.mark.parametrize("a, b, sign_ref", [([inf], None, 1.), ([inf], [-1.], -1.)])
    def test_gh23548(self, a, b, sign_ref):
        val, sign = sp.logsumexp(np.asarray(a), b=None if b is None else np.asarray(b), return_sign=True)
        assert np.isinf(val)
        assert_equal(sign, np.asarray(sign_ref))


class TestSoftmax:
    def test_softmax_fixtures(self):
        assert_close(sp.softmax(np.asarray([1000., 0., 0., 0.])), np.asarray([1., 0., 0., 0.]), rtol=1e-13)
        assert_close(sp.softmax(np.asarray([1., 1.])), np.asarray([.5, .5]), rtol=1e-13)
        assert_close(sp.softmax(np.asarray([0., 1.])), np.asarray([1., np.e]) / (1 + np.e), rtol=1e-13)
        x = np.arange(4, dtype=np.float64)
        expected = np.asarray([0.03205860328008499, 0.08714431874203256, 0.23688281808991013,
                               0.6439142598879722])  # mpmath, 200 digits
        assert_close(sp.softmax(x), expected, rtol=1e-13)
        assert_close(sp.softmax(x + 100), expected, rtol=1e-13)
        assert_close(sp.softmax(np.reshape(x, (2, 2))), np.reshape(expected, (2, 2)), rtol=1e-13)

    def test_softmax_multi_axes(self):
        assert_close(sp.softmax(np.asarray([[1000., 0.], [1000., 0.]]), axis=0),
                     np.asarray([[.5, .5], [.5, .5]]), rtol=1e-13)
        assert_close(sp.softmax(np.asarray([[1000., 0.], [1000., 0.]]), axis=1),
                     np.asarray([[1., 0.], [1., 0.]]), rtol=1e-13)
        x = np.asarray([[-25., 0., 25., 50.], [1., 325., 749., 750.]])
        expected = np.asarray([[2.678636961770877e-33, 1.9287498479371314e-22, 1.3887943864771144e-11,
                                0.999999999986112],
                               [0.0, 1.9444526359919372e-185, 0.2689414213699951, 0.7310585786300048]])
        assert_close(sp.softmax(x, axis=1), expected, rtol=1e-13)
        assert_close(sp.softmax(x.T, axis=0), expected.T, rtol=1e-13)
        assert_close(sp.softmax(np.reshape(x, (2, 2, 2)), axis=(1, 2)), np.reshape(expected, (2, 2, 2)), rtol=1e-13)

    def test_softmax_int_array(self):
        assert_close(sp.softmax(np.asarray([1000, 0, 0, 0])), np.asarray([1., 0., 0., 0.]), rtol=1e-13)

    def test_softmax_scalar(self):
        assert_close(sp.softmax(1000), np.asarray(1.), rtol=1e-13)

    def test_softmax_array_like(self):
        assert_close(sp.softmax([1000, 0, 0, 0]), np.asarray([1., 0., 0., 0.]), rtol=1e-13)


class TestLogSoftmax:
    def test_log_softmax_basic(self):
        assert_close(sp.log_softmax(np.asarray([1000., 1.])), np.asarray([0., -999.]), rtol=1e-13)

    def test_log_softmax_int_array(self):
        assert_close(sp.log_softmax(np.asarray([1000, 1])), np.asarray([0., -999.]), rtol=1e-13)

    def test_log_softmax_scalar(self):
        assert_close(sp.log_softmax(1.0), 0.0, rtol=1e-13)

    def test_log_softmax_array_like(self):
        assert_close(sp.log_softmax([1000, 1]), np.asarray([0., -999.]), rtol=1e-13)

    @staticmethod
    def data_1d():
        x = np.arange(4, dtype=np.float64)
        expect = [-3.4401896985611953, -2.4401896985611953, -1.4401896985611953, -0.44018969856119533]
        return x, np.asarray(expect)

    @staticmethod
    def data_2d():
        x = np.reshape(np.arange(8, dtype=np.float64), (2, 4))
        return x, np.tile(TestLogSoftmax.data_1d()[1], (2, 1))

    @pytest.mark.parametrize("offset", [0, 100])
    def test_log_softmax_translation(self, offset):
        x, expect = self.data_1d()
        assert_close(sp.log_softmax(x + offset), expect, rtol=1e-13)

    def test_log_softmax_noneaxis(self):
        x, expect = self.data_1d()
        assert_close(sp.log_softmax(np.reshape(x, (2, 2))), np.reshape(expect, (2, 2)), rtol=1e-13)

    @pytest.mark.parametrize('axis_2d, expected_2d', [
        (0, np.log(0.5) * np.ones((2, 2))),
        (1, [[0., -999.], [0., -999.]]),
    ])
    def test_axes(self, axis_2d, expected_2d):
        x = np.asarray([[1000., 1.], [1000., 1.]])
        assert_close(sp.log_softmax(x, axis=axis_2d), np.asarray(expected_2d, dtype=x.dtype), rtol=1e-13)

    def test_log_softmax_2d_axis1(self):
        x, expect = self.data_2d()
        assert_close(sp.log_softmax(x, axis=1), expect, rtol=1e-13)

    def test_log_softmax_2d_axis0(self):
        x, expect = self.data_2d()
        assert_close(sp.log_softmax(x.T, axis=0), expect.T, rtol=1e-13)

    def test_log_softmax_3d(self):
        x, expect = self.data_2d()
        assert_close(sp.log_softmax(np.reshape(x, (2, 2, 2)), axis=(1, 2)), np.reshape(expect, (2, 2, 2)), rtol=1e-13)


# --- JAX: tests/nn_test.py (NNFunctionsTest) --------------------------------------------

JAX_OPS = [softgen.softmax, softgen.log_softmax]


@pytest.mark.parametrize("fn", JAX_OPS, ids=lambda f: f.__name__)
def testSoftmaxEmptyArray(fn):
    x = np.array([], dtype=float)
    assert np.array_equal(fn(x), x) and fn(x).dtype == x.dtype


@pytest.mark.parametrize("test", ["testSoftmaxEmptyMask", "testSoftmaxWhereMask", "testSoftmaxWhereGrad"])
@pytest.mark.parametrize("fn", JAX_OPS, ids=lambda f: f.__name__)
def test_jax_where_masks(test, fn):
    pytest.skip(WHERE)


@pytest.mark.parametrize("test", ["testSoftmaxGrad", "testSoftmaxGradResiduals", "testSoftmaxGradFlag"])
def test_jax_gradients(test):
    pytest.skip(GRAD)


# --- JAX: tests/lax_scipy_test.py (LaxBackedScipyTests), softgen.scipy against SciPy ------

# JAX's compatible_shapes less [(), ()], for which its range of axes is empty (no cases)
COMPATIBLE_SHAPES = [[(4,), (3, 4)], [(3, 1), (1, 4)], [(2, 3, 4), (2, 1, 4)]]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "complex64"])
@pytest.mark.parametrize("use_b", [False, True])
@pytest.mark.parametrize("shape_group", COMPATIBLE_SHAPES, ids=str)
def testLogSumExp(shape_group, use_b, dtype):
    """Every axis, keepdims and return_sign of the group's shapes (a and b broadcast
    together with use_b), against scipy.special.logsumexp.  Integer weights can cancel
    exactly (a = [1, 1, 1], b = [2, -3, 1]): softgen gives -inf with sign 0 there, SciPy
    the log of its rounding error (-35.4, sign -1, or NaN without return_sign)."""
    if dtype.startswith("complex"):
        pytest.skip(COMPLEX)
    osp = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(0)
    tol = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-13}
    for shapes in itertools.product(*((shape_group, shape_group) if use_b else (shape_group,))):
        args = [(rng.standard_normal(s) * 3).astype(dtype) for s in shapes]
        kw = {"b": args[1]} if use_b else {}
        width = max(len(s) for s in shapes)
        for axis, keepdims, return_sign in itertools.product(range(-width, width), [False, True], [False, True]):
            with np.errstate(all="ignore"):
                expected = osp.logsumexp(args[0], axis, keepdims=keepdims, return_sign=return_sign, **kw)
                cancelled = _cancelled(osp, args, axis, keepdims)
            got = sp.logsumexp(args[0], axis, keepdims=keepdims, return_sign=return_sign, **kw)
            for g, e, exact in zip(*((got, expected, (-inf, 0)) if return_sign else ((got,), (expected,), (-inf,)))):
                t = tol[np.result_type(e)]
                assert np.shape(g) == np.shape(e) and np.result_type(g) == np.result_type(e)
                assert np.all(np.where(cancelled, g, exact) == exact)
                np.testing.assert_allclose(np.where(cancelled, exact, g), np.where(cancelled, exact, e), rtol=t,
                                           atol=t, equal_nan=True,
                                           err_msg=f"{shapes} axis={axis} keepdims={keepdims} sign={return_sign}")


def _cancelled(osp, args, axis, keepdims):
    """Where SciPy's weighted sum is rounding error: below 64 ulp of the sum of |terms|."""
    if len(args) == 1:
        return False
    a, b = args
    size, _ = osp.logsumexp(a, axis, b=b, keepdims=keepdims, return_sign=True)
    scale = osp.logsumexp(a, axis, b=np.abs(b), keepdims=keepdims)
    return size < scale + math.log(64 * np.finfo(np.result_type(size)).eps)


def testLogSumExpZeros():
    osp = pytest.importorskip("scipy.special")
    a, b = np.array([-1000, -2]), np.array([1, 0])
    assert_close(sp.logsumexp(a, b=b), osp.logsumexp(a, b=b), rtol=1e-14)


def testLogSumExpOnes():
    osp = pytest.importorskip("scipy.special")
    a = np.ones(4, dtype='float32')
    assert_close(sp.logsumexp(a), osp.logsumexp(a), rtol=1e-6)


def testLogSumExpNans():
    with np.errstate(all="raise"):  # jax.debug_nans: no invalid operation on the way
        assert sp.logsumexp(1.0) == 1.0
        assert sp.logsumexp(1.0, b=1.0) == 1.0


# --- PyTorch: test/test_nn.py (TestNNDeviceType) ----------------------------------------

BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16)], ids=str)
@pytest.mark.parametrize("op,atol", [("log_softmax", 0.1), ("softmax", 1e-3)])
def test_softmax_cpu(op, atol, dtype):
    """test_log_softmax_cpu and test_softmax_cpu: 16-bit results against float32's (the
    backward half: no autodiff)."""
    rng = np.random.default_rng(0)
    inputf = rng.random((200, 200), dtype=np.float32)
    x = inputf.astype(dtype)
    for dim in [0, 1]:
        outf = getattr(softgen, op)(inputf, dim)
        out = getattr(softgen, op)(x, dim)
        assert out.dtype == dtype
        np.testing.assert_allclose(out.astype(np.float32), outf.astype(dtype).astype(np.float32), atol=atol, rtol=0)


def test_softmax_results():
    """Non-even sizes and shifts, softmax and log_softmax with dtype=float32 over dims 0
    and 1, against float64 (torch compares the GPU with its CPU; the gradients: no autodiff)."""
    sizes = [(0, 10), (32, 20), (10, 0), (31, 20), (32, 21), (31, 23), (32, 1536), (31, 2048), (33, 2049),
             (16, 30576)]
    rng = np.random.default_rng(0)
    for op in ["softmax", "log_softmax"]:
        for size in sizes:
            for shift in [(0, 0), (1, 0), (0, 1), (1, 1)]:
                x = rng.random(size, dtype=np.float32)[shift[0]:, shift[1]:]
                for dim in [0, 1]:
                    y = getattr(softgen, op)(x, dim, dtype=np.float32)  # torch's dtype=torch.float
                    expected = np.moveaxis(reference(op, np.moveaxis(x, dim, -1)), -1, dim)
                    assert y.dtype == np.float32 and y.shape == x.shape
                    np.testing.assert_allclose(y, expected, rtol=1.3e-6, atol=1e-5)


def test_softmax_double():
    """(onlyCUDA in torch; its forward check is device-free): exp(log_softmax) sums to 1."""
    logits = np.random.default_rng(0).standard_normal((5, 513))
    expected_ones = np.exp(softgen.log_softmax(logits, 1)).sum(1)
    np.testing.assert_allclose(expected_ones, np.ones_like(expected_ones), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("test", ["test_softmax_64bit_indexing", "test_warp_softmax_64bit_indexing"])
def test_torch_large_tensors(test):
    pytest.skip("CUDA-only tests of 64-bit indexing on 20-64 GB tensors")


def test_log_softmax_big():
    x_small = np.random.default_rng(0).integers(0, 100, (16, 4)).astype(np.float32)
    x_big = x_small + np.float32(1e7)
    np.testing.assert_allclose(softgen.log_softmax(x_small, -1), softgen.log_softmax(x_big, -1), rtol=1.3e-6, atol=1e-5)


# --- PyTorch: test/test_reductions.py (TestReductions) ----------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_logsumexp(dtype):
    if dtype.startswith("complex"):
        pytest.skip(COMPLEX)
    osp = pytest.importorskip("scipy.special")
    a = np.random.default_rng(0).standard_normal((5, 4)).astype(dtype)
    a[1, :] = -inf  # (torch's CPU run leaves out its +inf at [0, 0]; kept here)
    a[0, 0] = inf
    actual = softgen.logsumexp(a, 1)
    expected = osp.logsumexp(a, 1)
    assert expected.shape == actual.shape
    np.testing.assert_allclose(actual, expected, rtol=1.3e-6, atol=1e-5)
    b = np.zeros((5, 2), dtype)  # out= is written in place, here a strided view
    c = b[:, 0]
    softgen.logsumexp(a, 1, out=c)
    np.testing.assert_allclose(b[:, 0], expected, rtol=1.3e-6, atol=1e-5)


def test_logsumexp_integral_promotion():
    osp = pytest.importorskip("scipy.special")
    e = np.random.default_rng(0).integers(-100, 100, [5, 4])
    actual = softgen.logsumexp(e, 1)
    expected = osp.logsumexp(e, 1)
    assert actual.dtype == np.float64 and expected.shape == actual.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-7, atol=1e-7)


def _torch_tensors(shape, rng):
    """_make_tensors of test_reductions.py, floating types only: contiguous, non-contiguous
    (every other element of a wider array) and a slice, values in [-100, 100]."""
    def contiguous(s, dtype):
        return np.clip(rng.standard_normal(s) * (200 / (2 * math.pi)) + 100, -100, 100).astype(dtype)

    out = {"cont": [], "noncont": [], "slice": []}
    for dtype in (np.float64, np.float32):
        out["cont"].append(contiguous(shape, dtype))
        wide = np.empty(shape + (2,), dtype)
        wide[..., 1] = contiguous(shape, dtype)
        out["noncont"].append(wide[..., 1])
        out["slice"].append(contiguous((1, sum(shape)), dtype)[:1, 1:sum(shape) - 1])
    return out


def test_logsumexp_dim():
    """_test_dim_ops(logsumexp) against scipy.special.logsumexp (torch: rtol 1e-3 and
    atol 1e-5 for float32, exact-ish for float64)."""
    osp = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(0)
    cases = [((5, 400000), 1), ((3, 5, 7), 0), ((3, 5, 7), 1), ((3, 5, 7), 2), ((100000,), -1)]
    cases += [((50, 50, 50), d) for d in (0, 1, 2, (1, 2), (1, -1), (0, 2), (0, 2, 1))]
    for shape, dim in cases:
        for category, tensors in _torch_tensors(shape, rng).items():
            d = 0 if category == "slice" else dim
            for t in tensors:
                expected = osp.logsumexp(t, d)
                actual = softgen.logsumexp(t, d)
                assert actual.shape == np.shape(expected)
                tol = {"rtol": 1e-3, "atol": 1e-5} if t.dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-13}
                np.testing.assert_allclose(actual, expected, **tol, err_msg=f"{shape} {dim} {category}")


# --- softgen.scipy against SciPy itself on special values (not a peer's test) -------------

SPECIAL_ROWS = [[inf, 1.], [inf, inf], [inf, -inf], [-inf, -inf], [nan, 1.], [inf, nan], [1e308, 1e308], [0., -40.]]
# (weights, row of SPECIAL_ROWS): softgen's (log|S|, sign) where SciPy's fallback to
# log(sum(b * exp(a))) gives NaN against its own rules
SCIPY_FALLBACK_ROWS = {
    (0., 1.): {1: (inf, 1.), 2: (-inf, 0.)},  # [inf, inf], [inf, -inf]: a zero weight drops its
                                              # term (SciPy's rule), the fallback's 0 * inf is NaN
    (1., -1.): {6: (-inf, 0.)},               # [1e308, 1e308]: the weights cancel exactly, the
}                                             # fallback's exp overflows to inf - inf


@pytest.mark.parametrize("b", [None, [1., 2.], [0., 1.], [1., -1.], [-1., 2.], [-2., 1.]], ids=str)
def test_scipy_logsumexp_special_values_match_scipy(b):
    osp = pytest.importorskip("scipy.special")
    a = np.array(SPECIAL_ROWS)
    w = None if b is None else np.broadcast_to(np.array(b), a.shape)
    exceptions = SCIPY_FALLBACK_ROWS.get(None if b is None else tuple(b), {})
    for axis, keepdims in itertools.product([1, None], [False, True]):
        with np.errstate(all="ignore"):
            expected = [np.array(e) for e in osp.logsumexp(a, axis, b=w, keepdims=keepdims, return_sign=True)]
        if axis == 1:
            for row, (value, sign) in exceptions.items():
                assert np.isnan(expected[0].reshape(-1)[row])
                expected[0].reshape(-1)[row], expected[1].reshape(-1)[row] = value, sign
        got = sp.logsumexp(a, axis, b=w, keepdims=keepdims, return_sign=True)
        for g, e in zip(got, expected):
            assert_close(g, e[()], rtol=1e-14)
        with np.errstate(invalid="ignore"):
            unsigned = np.where(expected[1] < 0, nan, expected[0])[()]
        assert_close(sp.logsumexp(a, axis, b=w, keepdims=keepdims), unsigned, rtol=1e-14)


@pytest.mark.parametrize("shape,axis", [((0,), None), ((0, 3), 0), ((0, 3), 1), ((3, 0), 0), ((3, 0), None)])
def test_scipy_empty_arrays_match_scipy(shape, axis):
    """Where SciPy raises on empty input (the max of an empty axis; logsumexp's axis=None
    on (3, 0)), softgen gives -inf sums and empty results."""
    osp = pytest.importorskip("scipy.special")
    a = np.zeros(shape)
    for b in (None, np.ones(shape), -np.ones(shape)):
        got = sp.logsumexp(a, axis, b=b, return_sign=True)
        try:
            expected = osp.logsumexp(a, axis, b=b, return_sign=True)
        except IndexError:
            expected = (np.float64(-inf), np.float64(-1.0))
        assert_equal(got[0], expected[0])
        assert_equal(got[1], expected[1])
        assert_equal(sp.logsumexp(a, axis, b=b), expected[0])
    for op in ("softmax", "log_softmax"):
        try:
            expected = getattr(osp, op)(a, axis)
        except ValueError:
            expected = a
        assert_equal(getattr(sp, op)(a, axis), expected)


def test_scipy_softmax_special_values_match_scipy():
    """All but log_softmax of a row holding +inf (and no NaN): softgen gives a NaN row, as
    torch and JAX do; SciPy NaN at the +inf and -inf elsewhere."""
    osp = pytest.importorskip("scipy.special")
    a = np.array(SPECIAL_ROWS)
    with np.errstate(all="ignore"):
        assert_close(sp.softmax(a, axis=1), osp.softmax(a, axis=1), rtol=1e-15)
        expected = osp.log_softmax(a, axis=1)
    got = sp.log_softmax(a, axis=1)
    plus_inf = np.isposinf(a).any(1) & ~np.isnan(a).any(1)
    # atol: SciPy's log_softmax([0, -40]) rounds to 0 at 0, softgen's is -4.2e-18
    assert_close(got[~plus_inf], expected[~plus_inf], rtol=1e-15, atol=1e-17)
    assert np.isnan(got[plus_inf]).all()
