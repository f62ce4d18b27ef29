"""softmax, log_softmax, logsumexp and cross_entropy on dask arrays (the optional extra `dask`), chunked
along any axis, the reduced one included, so arrays larger than one machine's memory are
normalized chunk by chunk.

When the reduced axis is in one chunk, each chunk is an ordinary softgen call.  Otherwise
(two reads of x, as two-pass softmax):
  1. each chunk's log-sum-exp, by softgen's logsumexp kernel computing in float64 (a
     (max, sum) pair would need a second value; float64 keeps the sum's digits instead);
  2. a tree reduction of those partials (dask's `reduction`), each merge softgen's
     logsumexp kernel over the partials it is given;
  3. the output per chunk: softmax is the chunk's own softmax (softgen's kernel, in float32
     or float64) scaled by e^(partial - total); log_softmax is x - total in float64;
     logsumexp is the total.
cross_entropy takes the total as its log-sum-exp, each chunk's logits at the labels that
fall in it (summed over the chunks of classes: one holds each label), and for label
smoothing the mean logit; the loss per row follows softgen.cross_entropy's formula.
Results are rounded once to the output dtype.  float64 results carry the total's rounding:
relative error up to about |total| * 2^-53 beyond the kernels' own.

Workers import softgen and find its kernels in their kernel cache after the first compile.
"""
from __future__ import annotations

import numpy as np
import dask.array as da

from . import api
from . import cross_entropy as _ce
from .runtime import _normalize_axes

_F64 = np.dtype(np.float64)


def softmax(x, axis: int = -1) -> da.Array:
    """softgen.softmax over one axis of a dask array (any chunking)."""
    x, ax = _checked(x, axis, "softmax")
    if x.numblocks[ax] == 1:
        return x.map_blocks(api.softmax, axis=ax, dtype=x.dtype)
    parts = _partials(x, ax)
    return da.map_blocks(_softmax_chunk, x, parts, _total(parts, ax), axis=ax, dtype=x.dtype)


def log_softmax(x, axis: int = -1) -> da.Array:
    """softgen.log_softmax over one axis of a dask array (any chunking)."""
    x, ax = _checked(x, axis, "log_softmax")
    if x.numblocks[ax] == 1:
        return x.map_blocks(api.log_softmax, axis=ax, dtype=x.dtype)
    return da.map_blocks(_log_softmax_chunk, x, _total(_partials(x, ax), ax), dtype=x.dtype)


def logsumexp(x, axis: int = -1, *, keepdims: bool = False) -> da.Array:
    """softgen.logsumexp over one axis of a dask array (any chunking)."""
    x, ax = _checked(x, axis, "logsumexp")
    if x.numblocks[ax] == 1:
        return x.map_blocks(api.logsumexp, axis=ax, keepdims=keepdims, dtype=x.dtype,
                            **({} if keepdims else {"drop_axis": ax}))
    total = _total(_partials(x, ax), ax).astype(x.dtype)
    return total if keepdims else total.squeeze(axis=ax)


def cross_entropy(logits, labels, axis: int = -1, *, reduction: str = "mean", ignore_index: int = -100,
                  label_smoothing: float = 0.0, z_loss: float = 0.0):
    """softgen.cross_entropy on a dask array of logits (classes along `axis`, any chunking)
    and its labels (a dask or numpy array of the other axes' shape), lazily; computed in
    float64, returned in the logits' dtype."""
    x, ax = _checked(logits, axis, "cross_entropy")
    labels = da.asarray(labels)
    lead = tuple(d for i, d in enumerate(x.shape) if i != ax)
    if labels.shape != lead or labels.dtype.kind not in "iu":
        raise ValueError(f"softgen.dask.cross_entropy(): labels must be integers of shape {lead}, not "
                         f"{labels.dtype} {labels.shape}")
    lse = _total(_partials(x, ax), ax)
    kept = da.expand_dims(labels, ax).rechunk(tuple(1 if i == ax else c for i, c in enumerate(x.chunks)))
    picked = da.map_blocks(_picked_block, x, kept, axis=ax, dtype=_F64,
                           chunks=tuple((1,) * len(c) if i == ax else c for i, c in enumerate(x.chunks)))
    picked = picked.sum(axis=ax, keepdims=True, dtype=_F64)
    mean = x.mean(axis=ax, keepdims=True, dtype=_F64) if label_smoothing else None
    loss = da.map_blocks(_row_loss, lse, picked, kept, *([mean] if mean is not None else []), dtype=_F64,
                         ignore_index=ignore_index, eps=label_smoothing, z=z_loss).squeeze(axis=ax)
    keep = (labels != ignore_index)
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.sum() / keep.sum()
    elif reduction != "none":
        raise ValueError(f"softgen.dask.cross_entropy(): reduction must be one of {', '.join(_ce.REDUCTIONS)}")
    return loss.astype(x.dtype)


def _picked_block(block: np.ndarray, labels: np.ndarray, axis: int, block_info=None) -> np.ndarray:
    """The logits at the labels that fall in this block's classes, 0 elsewhere (float64)."""
    start, stop = block_info[0]["array-location"][axis]
    inside = (labels >= start) & (labels < stop)
    index = np.where(inside, labels - start, 0)
    picked = np.take_along_axis(block, index, axis).astype(_F64)
    return np.where(inside, picked, 0.0)


def _row_loss(lse, picked, labels, mean=None, *, ignore_index: int, eps: float, z: float) -> np.ndarray:
    """softgen.cross_entropy's loss per row (0 where the label is ignored)."""
    with np.errstate(invalid="ignore"):
        loss = lse - (1 - eps) * picked - (eps * mean if mean is not None else 0.0) + z * lse * lse
    return np.where(labels != ignore_index, loss, 0.0)


def _checked(x, axis, who: str) -> tuple[da.Array, int]:
    """x as a dask array of a dtype softgen computes on, and the axis as a non-negative int."""
    x = x if isinstance(x, da.Array) else da.asarray(x)
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"softgen.dask.{who}(): axis must be one integer, not {axis!r}")
    if x.ndim == 0:
        raise ValueError(f"softgen.dask.{who}(): x must have at least one axis")
    if x.dtype.kind in "biu":
        x = x.astype(_F64)  # as softgen's own functions do
    (ax,) = _normalize_axes(int(axis), x.ndim, f"softgen.dask.{who}")
    return x, ax


def _partials(x: da.Array, ax: int) -> da.Array:
    """Each chunk's float64 log-sum-exp over `ax`, kept with length 1 (one per chunk)."""
    chunks = tuple((1,) * len(c) if i == ax else c for i, c in enumerate(x.chunks))
    return x.map_blocks(_chunk_lse, axis=ax, chunks=chunks, dtype=_F64)


def _chunk_lse(block: np.ndarray, axis: int) -> np.ndarray:
    return api.logsumexp(block, axis, keepdims=True, dtype=_F64)


def _total(parts: da.Array, ax: int) -> da.Array:
    """The partials merged by a tree reduction over `ax` (length 1 kept)."""
    return da.reduction(parts, chunk=_merge, combine=_merge, aggregate=_merge, axis=ax, keepdims=True,
                        dtype=_F64, concatenate=True)


def _merge(parts: np.ndarray, axis, keepdims: bool = True) -> np.ndarray:
    """log(sum(e^parts)) over `axis`: the pair merge of partial log-sum-exps."""
    return api.logsumexp(parts, axis, keepdims=keepdims)


def _softmax_chunk(block: np.ndarray, part: np.ndarray, total: np.ndarray, axis: int) -> np.ndarray:
    """The chunk's softmax rescaled from its own sum to the row's: e^(x - part) e^(part - total)
    (float32 for 16-bit x, rounded once more at the end).  A chunk of -inf holds zeros; a
    row whose total is not finite (all -inf, +inf or NaN in it) is NaN, as softgen.softmax
    gives."""
    wide = _F64 if block.dtype == _F64 else np.dtype(np.float32)
    y = api.softmax(block, axis, dtype=wide)
    with np.errstate(invalid="ignore"):
        scale = np.exp(part - total)
    scale[~np.isfinite(total) | np.isnan(part)] = np.nan
    y *= scale.astype(wide)
    empty = (part == -np.inf) & np.isfinite(total)   # its own softmax is NaN: NaN * 0
    if empty.any():
        y[np.broadcast_to(empty, y.shape)] = 0.0
    return y.astype(block.dtype, copy=False)


def _log_softmax_chunk(block: np.ndarray, total: np.ndarray) -> np.ndarray:
    """x - total in float64, rounded once (NaN rows where the total is +inf, as softgen's)."""
    total = np.where(total == np.inf, np.nan, total)
    with np.errstate(invalid="ignore"):   # -inf - -inf: an all -inf row is NaN, silently
        return np.subtract(block, total, dtype=_F64).astype(block.dtype)
