"""SciPy's conventions: drop-in replacements for scipy.special.softmax, log_softmax and
logsumexp, with their signatures and defaults (axis=None: over the whole array), run by
softgen's kernels.

    from softgen import scipy as sp
    sp.softmax(x)                       # scipy.special.softmax(x, axis=None)
    sp.logsumexp(a, axis=1, b=w, keepdims=True, return_sign=True)

As SciPy: integers are computed in float64, a 0-d input is one element and gives a numpy
scalar, logsumexp's b= weights broadcast against a (a zero weight drops its term even
where a is inf or NaN), a negative weighted sum is NaN unless return_sign=True, which
returns (log|sum|, sign of sum) with sign 0 for a zero sum (and -1 for an empty array,
SciPy's sign of its -inf).  Non-negative weights run softgen's logsumexp kernel on
a + log(b); weights of both signs are computed with numpy (a max, an exp and two sums
over the array, splitting off the largest terms as SciPy does for accuracy near 0).

Differences: results on 16-bit input are computed in float32 and rounded once (SciPy
computes in the 16-bit dtype); log_softmax of a row holding +inf (and no NaN) is a NaN
row, as in torch and JAX (SciPy gives NaN at the +inf and -inf elsewhere); where SciPy
falls back to log(sum(b * exp(a))) and gets NaN against its own rules, softgen keeps
them: a zero weight drops an infinite term (logsumexp([inf, inf], b=[0, 1]) is inf),
weights cancelling exactly give -inf with sign 0 (also on [1e308, 1e308], b=[1, -1]);
empty input SciPy refuses (softmax over an empty axis) gives empty results; complex
input raises TypeError.
"""
from __future__ import annotations

import numpy as np

from . import api
from .runtime import _as_input, _normalize_axes
from .threads import check_threads


def softmax(x, axis=None, *, threads=None):
    """scipy.special.softmax: exp(x) / sum(exp(x)) over `axis` (None: all axes; a tuple:
    those axes together).  threads: as softgen.softmax's."""
    return _scalar(api.softmax(x, axis, threads=threads))


def log_softmax(x, axis=None, *, threads=None):
    """scipy.special.log_softmax: log(softmax(x)) over `axis`, without its rounding."""
    return _scalar(api.log_softmax(x, axis, threads=threads))


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, *, threads=None):
    """scipy.special.logsumexp: log(sum(b * exp(a))) over `axis` (None: all axes), with
    (result, sign) if return_sign.  threads: as softgen.logsumexp's (weights of both signs
    are computed with numpy, on one thread)."""
    if threads is not None:
        check_threads(threads, "logsumexp")
    a = np.atleast_1d(_as_input(a, "logsumexp"))  # SciPy computes on at least one axis
    if b is not None:
        a, b = np.broadcast_arrays(a, _as_input(b, "logsumexp"))
        dtype = np.result_type(a, b)
        if not np.all(b >= 0):  # negative or NaN weights
            return _signed_logsumexp(a, b, _normalize_axes(axis, a.ndim, "logsumexp"), keepdims, return_sign, dtype)
        compute = np.float64 if dtype == np.float64 else np.float32
        with np.errstate(divide="ignore", invalid="ignore"):  # log(0); inf + log(0) is masked
            # a zero weight drops its term whatever a holds there (SciPy's convention)
            a = np.where(b > 0, a.astype(compute) + np.log(b.astype(compute)), -np.inf).astype(compute)
        out = api.logsumexp(a, axis, keepdims=keepdims, dtype=dtype, threads=threads)
    else:
        out = api.logsumexp(a, axis, keepdims=keepdims, threads=threads)
    if not return_sign:
        return _scalar(out)
    with np.errstate(invalid="ignore"):
        sign = np.where(np.isnan(out), np.nan, np.where(out == -np.inf, 0.0, 1.0)).astype(out.dtype)
    return _scalar(out), _scalar(_empty_sign(sign) if a.size == 0 else sign)


def _signed_logsumexp(a, b, axes: tuple, keepdims: bool, return_sign: bool, dtype):
    """logsumexp with weights of either sign, in numpy (in float64 for float64 operands,
    else float32, rounded to `dtype` at the end)."""
    compute = np.float64 if dtype == np.float64 else np.float32
    a, b = a.astype(compute), b.astype(compute)
    if a.size == 0:
        shape = tuple(1 if i in axes else d for i, d in enumerate(a.shape))
        out = np.full(shape, -np.inf, dtype)
        sign = _empty_sign(out)
    else:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out, sign = _log_abs_weighted_sum(np.where(b == 0, -np.inf, a), b, axes)
            out = out.astype(dtype)
            if not return_sign:
                out[sign < 0] = np.nan  # the log of a negative sum
    if not keepdims:
        out, sign = np.squeeze(out, axes), np.squeeze(sign, axes)
    out, sign = _scalar(out), _scalar(sign.astype(dtype))
    return (out, sign) if return_sign else out


def _log_abs_weighted_sum(a, b, axes: tuple):
    """(log|S|, sign(S)) of S = sum(b * exp(a)) over axes (kept with length 1), with the
    terms scaled by exp(-max a).  S is split into the weights on the largest terms (lead)
    and the other terms relative to them, log|lead + rest| = log|lead| + log1p(rest / lead),
    which keeps results near 0 accurate; where lead is 0 (or max a is not finite: no
    largest terms) S is the rest."""
    top = np.max(a, axis=axes, keepdims=True)
    finite = np.isfinite(top)
    shift = np.where(finite, top, 0)
    terms = a - shift
    np.exp(terms, out=terms)
    terms *= b
    at_top = (a == top) & finite
    lead = np.sum(b, axis=axes, keepdims=True, where=at_top)
    rest = np.sum(terms, axis=axes, keepdims=True, where=~at_top)
    q = rest / lead
    split = lead != 0
    # below -1, |1 + q| = 1 + (-2 - q): log1p keeps its accuracy on either side
    log_split = np.log(np.abs(lead)) + np.log1p(np.where(q < -1, -2 - q, q))
    out = shift + np.where(split, log_split, np.log(np.abs(rest)))
    sign = np.where(split, np.sign(lead) * np.sign(1 + q), np.sign(rest))
    return out, sign


def _empty_sign(out: np.ndarray) -> np.ndarray:
    """SciPy's sign for an empty array: that of its -inf result."""
    return np.full_like(out, -1)


def _scalar(y: np.ndarray):
    """A 0-d result as a numpy scalar, as SciPy returns it."""
    return y[()] if y.ndim == 0 else y
