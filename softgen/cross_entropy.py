"""Cross-entropy from logits: the log-sum-exp of each row in one read (softgen's logsumexp
kernel), the label's logit picked, and the loss per row:

  loss = lse - (1 - eps) * x[label] - eps * mean(x)  (+ z_loss * lse^2)

as torch.nn.functional.cross_entropy with label_smoothing=eps (and PaLM's z-loss).  Rows
whose label is ignore_index have loss 0 and do not count in the mean.

`CrossEntropyChunks` takes the logits a chunk of classes at a time (Cut Cross-Entropy: a
caller computes h @ W_chunk.T chunk by chunk and never holds [tokens, vocabulary]): each
chunk goes through the online algorithm's chunk kernels (softgen.chunks), its (max, sum)
states merged into the running ones by the merge kernel, so the memory is O(tokens) beside
one chunk, and the result is the one-shot call's within rounding.
"""
from __future__ import annotations

import numpy as np

from . import algorithms, api, lower
from .dtypes import compute_dtype, ir_dtype
from .runtime import _F32, _F64, _as_input
from .split import SplitKernel, merge_chunk, state_addresses
from .targets import Target

REDUCTIONS = ("none", "mean", "sum")


def cross_entropy(logits, labels, *, axis: int = -1, reduction: str = "mean", ignore_index: int = -100,
                  label_smoothing: float = 0.0, z_loss: float = 0.0, return_lse: bool = False, threads=None):
    """The cross-entropy of `logits` (classes along `axis`, default the last; torch's
    input is [N, C] with dim 1 for C) against integer `labels` (logits' shape without that
    axis).  reduction "none" (a loss per row), "mean" (over the rows not ignored) or "sum";
    with return_lse also the log-sum-exp of each row.  Computed in float64 for float64
    logits, else in float32; results in that dtype."""
    x = _as_input(logits, "cross_entropy")
    if x.ndim == 0:
        raise ValueError("cross_entropy(): logits need a class axis")
    moved = np.moveaxis(x, axis, -1)
    lse = api.logsumexp(moved, -1, dtype=_wide(x.dtype), threads=threads)
    picked, keep = _picked(moved, labels, ignore_index)
    mean = _class_mean(moved, label_smoothing)
    return _loss(lse, picked, mean, keep, reduction, label_smoothing, z_loss, return_lse)


def _wide(dtype: np.dtype) -> np.dtype:
    return _F64 if dtype == _F64 else _F32


def _picked(rows: np.ndarray, labels, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(each row's logit at its label, in the compute dtype; whether the row counts).
    IndexError for a label outside the classes that is not ignore_index."""
    labels = np.asarray(labels)
    if labels.shape != rows.shape[:-1] or labels.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy(): labels must be integers of shape {rows.shape[:-1]} (the logits' "
                         f"without the class axis), not {labels.dtype} {labels.shape}")
    keep = labels != ignore_index
    n = rows.shape[-1]
    if np.any(keep & ((labels < 0) | (labels >= n))):
        raise IndexError(f"cross_entropy(): a label is outside 0..{n - 1} (and not ignore_index={ignore_index})")
    safe = np.where(keep, labels, 0)
    picked = np.take_along_axis(rows, safe[..., None], -1)[..., 0].astype(_wide(rows.dtype))
    return picked, keep


def _class_mean(rows: np.ndarray, label_smoothing: float):
    """Each row's mean logit where label smoothing needs it (one more read), else None."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy(): label_smoothing must be in [0, 1], not {label_smoothing}")
    if label_smoothing == 0.0:
        return None
    return rows.mean(-1, dtype=np.float64).astype(_wide(rows.dtype))


def _loss(lse, picked, mean, keep, reduction: str, label_smoothing: float, z_loss: float, return_lse: bool):
    """The loss from each row's lse, picked logit and mean logit (None: no smoothing)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy(): reduction must be one of {', '.join(REDUCTIONS)}, not {reduction!r}")
    eps = label_smoothing
    with np.errstate(invalid="ignore"):
        loss = lse - picked if mean is None else lse - (1 - eps) * picked - eps * mean
        if z_loss:
            loss = loss + z_loss * lse * lse
    loss = np.where(keep, loss, 0).astype(lse.dtype)
    if reduction == "sum":
        loss = loss.sum(dtype=np.float64).astype(lse.dtype)
    elif reduction == "mean":
        count = np.count_nonzero(keep)
        loss = (loss.sum(dtype=np.float64) / count if count else np.float64(np.nan)).astype(lse.dtype)
    return (loss, lse) if return_lse else loss


def cross_entropy_backward(logits, labels, grad=1.0, *, axis: int = -1, reduction: str = "mean",
                           ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0):
    """d loss / d logits of cross_entropy with the same arguments, times `grad` (the loss's
    own gradient: a number, or one per row for reduction "none"):
    (softmax(x) * (1 + 2 z lse) - (1 - eps) onehot(label) - eps / C) * grad, over the rows
    counted (divided by their number for "mean")."""
    x = _as_input(logits, "cross_entropy_backward")
    moved = np.moveaxis(x, axis, -1)
    wide = _wide(x.dtype)
    p = api.softmax(moved, -1, dtype=wide)
    _, keep = _picked(moved, labels, ignore_index)
    scale = np.broadcast_to(np.asarray(grad, wide), keep.shape) * keep
    if reduction == "mean":
        scale = scale / max(np.count_nonzero(keep), 1)
    if z_loss:
        lse = api.logsumexp(moved, -1, dtype=wide)
        p *= (1 + 2 * z_loss * lse)[..., None]
    eps, n = label_smoothing, moved.shape[-1]
    if eps:
        p -= eps / n
    np.put_along_axis(p, np.where(keep, labels, 0)[..., None], np.take_along_axis(
        p, np.where(keep, labels, 0)[..., None], -1) - (1 - eps), -1)
    p *= scale[..., None]
    return np.moveaxis(p.astype(x.dtype, copy=False), -1, axis)


class CrossEntropyChunks:
    """The cross-entropy of logits given a chunk of classes at a time: `update(chunk,
    start)` with chunk = logits[:, start:start + width] ([tokens, width], any order of
    chunks, each class once), then `result()` as cross_entropy(...) would give on the whole
    [tokens, classes] logits.  Memory: a few values per token."""

    def __init__(self, labels, *, dtype="float32", ignore_index: int = -100, label_smoothing: float = 0.0):
        self.labels = np.asarray(labels)
        if self.labels.ndim != 1 or self.labels.dtype.kind not in "iu":
            raise ValueError("CrossEntropyChunks: labels must be a 1-D array of integers (one per token)")
        storage = ir_dtype(dtype)
        compute = compute_dtype(storage)
        program = algorithms.build("logsumexp", "online", storage, compute, compute)   # lse in compute
        self._kernels = SplitKernel(program, Target.parse("host"), lower.Schedule())
        layout = self._kernels.layout()
        self._pass, self._merge, self._finish = layout.passes[0], layout.merges[0], layout.finish
        self.dtype = np.dtype(program.storage.numpy_name)
        wide = _wide(self.dtype)
        tokens = len(self.labels)
        self._states = np.empty((len(layout.names), tokens, 2), wide)   # [part, token, (running, chunk)]
        self._started = False
        self._picked = np.zeros(tokens, wide)
        self._sums = np.zeros(tokens, np.float64)
        self._classes = 0
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def update(self, chunk, start: int) -> None:
        chunk = np.ascontiguousarray(_as_input(chunk, "CrossEntropyChunks.update"), self.dtype)
        tokens = len(self.labels)
        if chunk.ndim != 2 or chunk.shape[0] != tokens:
            raise ValueError(f"CrossEntropyChunks.update: chunk must be [tokens={tokens}, width], not {chunk.shape}")
        width = chunk.shape[1]
        column = 0 if not self._started else 1
        self._pass.fn(tokens, width, chunk.ctypes.data, width, 0, 0, *self._state_args(self._pass, column))
        if self._started:
            merge_chunk(self._merge, self._states, 1)
        self._started = True
        inside = (self.labels >= start) & (self.labels < start + width)
        self._picked[inside] = chunk[inside.nonzero()[0], self.labels[inside] - start]
        if self.label_smoothing:
            self._sums += chunk.sum(-1, dtype=np.float64)
        self._classes += width

    def _state_args(self, entry, column: int) -> list:
        """entry's state operands in `column` (0: the running states, 1: the chunk's), a
        token apart."""
        address = state_addresses(self._states)
        args = []
        for k, _ in entry.operands:
            args += [address(k, 0, column), self._states.shape[2]]
        return args

    def result(self, reduction: str = "mean", z_loss: float = 0.0, return_lse: bool = False):
        if not self._started:
            raise ValueError("CrossEntropyChunks.result: no chunk was given")
        tokens = len(self.labels)
        lse = np.empty(tokens, self._states.dtype)
        self._finish.fn(tokens, 0, 0, 0, lse.ctypes.data, 1, *self._state_args(self._finish, 0))
        keep = self.labels != self.ignore_index
        if np.any(keep & ((self.labels < 0) | (self.labels >= self._classes))):
            raise IndexError(f"CrossEntropyChunks: a label is outside the {self._classes} classes given")
        mean = (self._sums / self._classes).astype(lse.dtype) if self.label_smoothing else None
        return _loss(lse, self._picked, mean, keep, reduction, self.label_smoothing, z_loss, return_lse)
