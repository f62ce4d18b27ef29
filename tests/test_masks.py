"""where= masks and empty_rows=: JAX's semantics (a masked element counts as -inf and
outputs 0 / -inf whatever its row holds; a row with nothing kept gives 0 / -inf), checked
per row against float64 on the kept elements, at every vector width, for masks read as
bytes and for prefix masks run as ragged rows; the native prefix analysis; the API's
broadcasting, axes, dtypes and threads."""
import math

import numpy as np
import pytest

import softgen
from softgen import masks
from softgen.lower import Schedule
from reference import BFLOAT16, PAIRS, check, masked_rows, misaligned_rows, special_rows
from widths import width_targets

OP_FN = {"softmax": softgen.softmax, "log_softmax": softgen.log_softmax, "logsumexp": softgen.logsumexp}
MASK_PAIRS = [(op, algo) for op, algo in PAIRS if op in OP_FN]
FILL = {"softmax": 0.0, "log_softmax": -np.inf, "logsumexp": -np.inf}


def check_masked(op: str, x: np.ndarray, keep: np.ndarray, y: np.ndarray, zero_empty: bool = False) -> None:
    """Each row of y is op over the row's kept elements, the fill where masked (and, with
    zero_empty, everywhere in a row with nothing above -inf).  logsumexp's y: a value per row."""
    y = y.reshape(x.shape[0], -1)
    for i in range(x.shape[0]):
        kept, out = x[i][keep[i]], y[i]
        empty = not kept.size or (zero_empty and np.all(kept == -np.inf))
        try:
            if op == "logsumexp":
                if empty:
                    assert out[0] == -np.inf, out
                else:
                    check(op, kept[None], out)
                continue
            assert np.all(out[~keep[i]] == FILL[op]), "masked outputs are not the fill"
            if empty:
                assert np.all(out == FILL[op]), "an empty row is not the fill"
            else:
                check(op, kept[None], out[keep[i]][None])
        except AssertionError as e:
            raise AssertionError(f"row {i} ({keep[i].sum()} kept): {e}") from None


def prefix_mask(rows: int, n: int, seed: int) -> np.ndarray:
    lengths = np.random.default_rng(seed).integers(0, n + 1, rows)
    lengths[:3] = (0, n, 1)[:rows]
    return np.arange(n)[None, :] < lengths[:, None]


@pytest.mark.parametrize("lanes", sorted(width_targets()))
@pytest.mark.parametrize("op,algo", MASK_PAIRS)
def test_byte_masks_at_every_width(op, algo, lanes):
    """numpy's empty rows at the narrower widths, empty_rows='zero' at the widest (compile
    time: the fill is one select more)."""
    empty_rows = "zero" if lanes == max(width_targets()) else "nan"
    kernel = softgen.compile(op, algorithm=algo, target=width_targets()[lanes], where=True, empty_rows=empty_rows)
    assert "load.keep" in kernel.ir
    for n in (1, 19, 1001):
        x, keep = masked_rows(n, lanes + n)
        y = kernel(misaligned_rows(x), operands=(misaligned_rows(keep.view(np.uint8)),))
        check_masked(op, x, keep, y, empty_rows == "zero")


@pytest.mark.parametrize("lanes", sorted(width_targets()))
@pytest.mark.parametrize("op,algo", MASK_PAIRS)
def test_ragged_rows_at_every_width(op, algo, lanes):
    """Rows of their own lengths (a prefix mask) in pipelined row groups, two side by side
    (each to its own end), lengths from 0 to past n (every residue mod the width, also
    of n - length: the fill's first vector and tail), the special rows among them,
    misaligned.  (Schedule()'s one row at a time: the C and cross-target tests.)"""
    schedule = Schedule(rows_per_group=4, interleave=2, pipeline=True, unroll=2)
    kernel = softgen.compile(op, algorithm=algo, target=width_targets()[lanes], length=True, schedule=schedule)
    assert "rows of length length[row]" in kernel.ir
    for n in (7, 64, 1001):
        x = np.concatenate([np.stack(list(special_rows(n).values())),
                            np.random.default_rng(n).standard_normal((40, n)).astype(np.float32) * 5])
        lengths = np.random.default_rng(lanes).integers(-2, n + 3, x.shape[0])
        lengths[-2 * lanes - 4:] = np.arange(-2, 2 * lanes + 2) + (n > 2 * lanes) * (n // 2)
        y = kernel(misaligned_rows(x), operands=(lengths,))
        check_masked(op, x, np.arange(n)[None, :] < lengths[:, None], y)


@pytest.mark.parametrize("op", OP_FN)
def test_prefix_masks_run_as_ragged_rows(op, monkeypatch):
    """A causal mask broadcast over batch axes is analysed once, runs without its bytes
    (the kernel's variant says so), and matches the byte-mask kernel exactly."""
    seen = []
    original = masks.prefix_lengths
    monkeypatch.setattr(masks, "prefix_lengths", lambda rows, *a: seen.append(rows.shape) or original(rows, *a))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 37, 37)).astype(np.float32) * 4
    causal = np.tri(37, dtype=bool)
    y = OP_FN[op](x, where=causal)
    assert seen == [(37, 37)]
    check_masked(op, x.reshape(-1, 37), np.broadcast_to(causal, x.shape).reshape(-1, 37), y)
    not_prefix = causal.copy()
    not_prefix[5, 30] = True
    kernel = softgen.compile(op, algorithm="three_pass_recompute", where=True)
    want = kernel(x, operands=(np.broadcast_to(not_prefix, x.shape).reshape(-1, 37).view(np.uint8),))
    np.testing.assert_array_equal(OP_FN[op](x, where=not_prefix, algorithm="three_pass_recompute"), want)


@pytest.mark.parametrize("shape", [(5, 37), (1, 5, 37), (3, 5, 37), (2, 1, 5, 37), (37,), (1, 1, 37)])
def test_prefix_masks_broadcast_over_any_axes(shape):
    """Prefix masks broadcast over leading or middle axes (lengths repeated natively or
    broadcast in numpy), also not C-contiguous, give each row its own length."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 37)).astype(np.float32) * 4
    rows = math.prod(shape[:-1])
    mask = prefix_mask(rows, 37, 11).reshape(shape)
    keep = np.broadcast_to(mask, x.shape).copy()
    want = softgen.softmax(x, where=keep)
    check_masked("softmax", x.reshape(-1, 37), keep.reshape(-1, 37), want.reshape(-1, 37))
    for where in (mask, np.asfortranarray(mask)):
        np.testing.assert_array_equal(softgen.softmax(x, where=where), want)


def test_prefix_lengths():
    rng = np.random.default_rng(4)
    for n in (1, 2, 63, 64, 65, 1000):
        mask = prefix_mask(50, n, n)
        np.testing.assert_array_equal(masks.prefix_lengths(mask), mask.sum(1))
        np.testing.assert_array_equal(masks.prefix_lengths(mask, 3), np.tile(mask.sum(1), 3))
        holes = mask.copy()
        holes[rng.integers(50), :] = rng.random(n) < 0.5
        expect = holes.sum(1) if all(np.all(np.diff(r.astype(int)) <= 0) for r in holes) else None
        got = masks.prefix_lengths(holes)
        assert (masks.prefix_lengths(holes, 2) is None) == (expect is None)
        assert (got is None) == (expect is None) and (got is None or np.array_equal(got, expect))
    for n, gap, rise in ((128, 63, 64), (128, 0, 64), (65, 63, 64), (130, 127, 129)):   # across 64 bytes only
        row = np.arange(n) < gap
        row[rise] = True
        assert masks.prefix_lengths(row[None]) is None
        assert masks.prefix_lengths(np.arange(n)[None] < rise).tolist() == [rise]
    bytes_ = np.array([[2, 7, 0, 0], [1, 0, 0, 3]], np.uint8)    # any nonzero byte is True
    assert masks.prefix_lengths(bytes_[:1]).tolist() == [2] and masks.prefix_lengths(bytes_) is None
    assert masks.prefix_lengths(np.zeros((3, 0), bool)).tolist() == [0, 0, 0]


@pytest.mark.parametrize("op", OP_FN)
def test_api_broadcasting_and_axes(op):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 50, 6)).astype(np.float32) * 5
    for where in (rng.random((4, 50, 6)) < 0.5, rng.random((50, 1)) < 0.5, np.tri(50, 6, dtype=bool)):
        y = OP_FN[op](x, axis=1, where=where)
        keep = np.broadcast_to(where, x.shape)
        moved = lambda a: np.moveaxis(a, 1, -1).reshape(-1, 50)
        check_masked(op, moved(x), moved(keep), y if op == "logsumexp" else moved(y))


def test_api_dtypes_threads_and_out(monkeypatch):
    """softmax's mask on float64 and bfloat16, and on rows over threads (bytes and ragged)
    with a temperature and out=."""
    from softgen import threads
    rng = np.random.default_rng(6)
    keep = rng.random((30, 40)) < 0.5
    for dtype in (np.float64, BFLOAT16):
        x = (rng.standard_normal((30, 40)) * 5).astype(dtype)
        want = np.where(keep, softgen.softmax(np.where(keep, x, -np.inf).astype(dtype)), 0)
        np.testing.assert_array_equal(softgen.softmax(x, where=keep), want.astype(dtype))
    monkeypatch.setattr(threads, "MIN_ELEMENTS_PER_THREAD", 64)
    monkeypatch.setattr(threads, "parallel_from", 2)
    x = rng.standard_normal((64, 300)).astype(np.float32)
    for where in (rng.random(x.shape) < 0.5, prefix_mask(64, 300, 6)):
        out = np.empty_like(x)
        assert softgen.softmax(x * 2, where=where, temperature=2.0, out=out, threads=4) is out
        check_masked("softmax", x, where, out)


@pytest.mark.parametrize("op", OP_FN)
def test_empty_rows_zero_with_variants(op):
    x = np.array([[-np.inf] * 5, [0, 1, 2, -np.inf, 3], [np.nan, 0, 0, 0, 0]], np.float32)
    for algo in softgen.ops.get(op).algorithms:
        kw = {"phi": 0.0} if algo == "unified_max" else {}
        y = OP_FN[op](x, empty_rows="zero", algorithm=algo, **kw)
        check_masked(op, x, np.ones(x.shape, bool), y, zero_empty=True)
    sunk = OP_FN[op](x[:1], empty_rows="zero", sink=0.0)   # a finite sink: not empty
    assert np.all(sunk == FILL[op]) if op == "softmax" else np.all(np.isfinite(sunk)) == (op == "logsumexp")
    assert np.all(np.isnan(OP_FN[op](x[:1]))) != (op == "logsumexp")   # numpy's NaN by default


@pytest.mark.parametrize("bad,err,match", [
    ({"where": np.ones((3, 5))}, TypeError, "booleans"), ({"where": np.ones((2, 5), bool)}, ValueError, "broadcast"),
    ({"empty_rows": "zeros"}, ValueError, "empty_rows must be"), ({"where": [[1, 0, 1, 0, 1]]}, TypeError, "booleans"),
])
def test_bad_masks(bad, err, match):
    with pytest.raises(err, match=match):
        softgen.softmax(np.zeros((3, 5), np.float32), **bad)
