"""Top-k gating as mixture-of-experts routers compute it: the k largest logits of each
row and their weights, in one kernel.

  order="topk_then_softmax"  softmax over the k largest logits (Mixtral): weights sum to 1;
  order="softmax_then_topk"  the k largest probabilities of the row's softmax (Switch,
                             DeepSeek); renormalize=True divides them by their sum, which
                             is topk_then_softmax's result (one program for both).

The selection is a reduction of the IR (acc.topk: each lane keeps its k best (value, index)
entries, merged across lanes, accumulator sets and blocks), one pass over x (a second one
sums the row's softmax where the weights need it); see algorithms.topk_program for the
program and its ABI (the output operands `weights` and `indices`, k values per row each).
"""
from __future__ import annotations

import ctypes
import dataclasses
import threading

import numpy as np

from . import threads as _threads
from . import tune
from .artifacts import Artifact
from .algorithms import Order, TopK, Variant, topk_program
from .api import _kept_shape, _per_row
from .backends.c import CSource, emit_program
from .backends.llvm import compile_program
from .dtypes import ir_dtype
from .ir import DType, Program
from .lower import Schedule
from .runtime import NATIVE_DTYPES, _F64, _address, _as_input, _normalize_axes
from .targets import Target

ORDERS = tuple(o.value for o in Order)
# float32 holds every integer up to 2^24 exactly: longer rows are computed in float64,
# whose indices are exact
F32_EXACT_INDICES = 2 ** 24
# vector registers the C kernels' default schedule assumes (x86's ymm and xmm)
C_REGISTERS = 16


@dataclasses.dataclass(frozen=True)
class TopKKernel:
    """One compiled top-k kernel: its program, schedule and entry point."""
    program: Program
    schedule: Schedule
    fn: object
    compiled: object   # keeps the JIT's code alive

    def __call__(self, rows: np.ndarray, inv_temperature: np.ndarray | None, weights: np.ndarray,
                 indices: np.ndarray, threads: int | None = 1) -> None:
        """The kernel on [rows, n] (unit element stride) into weights and indices ([rows, k]
        of the compute dtype, C-contiguous), x / T with one 1 / T per row or one for all;
        rows split over up to `threads` threads (None: the default, for large calls)."""
        x = (_address(rows), rows.strides[0] // rows.itemsize, rows.itemsize)
        t = inv_temperature
        operands = ((() if t is None else ((_address(t), int(t.size > 1), t.itemsize),))
                    + tuple((_address(a), a.shape[1], a.itemsize) for a in (weights, indices)))
        if threads == 1 or threads is None and rows.size < _threads.parallel_from:
            self.fn(rows.shape[0], rows.shape[1], x[0], x[1], 0, 0, *(v for a, s, _ in operands for v in (a, s)))
            return
        # y is not written: the outputs' rows decide the unit (whole cache lines of weights)
        unit = _threads.row_unit(self.schedule.rows_per_group, weights.shape[1] * weights.itemsize)
        _threads.run_row_tasks(self.fn, rows.shape[0], rows.shape[1], x, (0, 0, 1), operands, unit, threads)


# rows up to this long go in groups of rows (_schedule)
GROUPED_UP_TO = 4096

# (topk, storage, compute, temperature, grouped, target as given) -> TopKKernel: the
# per-call lookup (a call's other work is a few microseconds)
_kernels: dict = {}
_lock = threading.Lock()


def kernel(topk: TopK, storage: DType, compute: DType, temperature: bool, n: int, target="host") -> TopKKernel:
    """The compiled kernel for `topk` over rows of n `storage` values computed in `compute`
    (cached)."""
    key = (topk, storage, compute, temperature, n <= GROUPED_UP_TO, target)
    found = _kernels.get(key)
    if found is not None:
        return found
    tgt = Target.parse(target)
    schedule = _schedule(topk, tgt, n)
    with _lock:
        if key not in _kernels:
            program = topk_program(topk, storage, compute, Variant(temperature=temperature))
            compiled = compile_program(program, tgt, schedule, jit=True)
            abi = ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * (6 + 2 * len(program.operands)))
            _kernels[key] = TopKKernel(program, schedule, abi(compiled.address), compiled)
        return _kernels[key]


def _schedule(topk: TopK, target: Target, n: int) -> Schedule:
    """Long rows: as many accumulator sets as fit (_sets), a row at a time.  Short rows: one
    set (more cost a merge each, which a short row does not repay) and groups of rows, whose
    lane merges and weights are computed a row per lane: 16 rows for k <= 4, else 8 (their
    merge networks' registers).  Measured on AVX-512, 4096 x 64: k = 2 2.96 elements/ns
    against 2.33 with two sets and groups of 8, k = 8 0.67 against 0.50; 64 x 32768, k = 2:
    5.03 with 4 sets, 4.93 with one."""
    machine = tune.Machine.of(target)
    if n > GROUPED_UP_TO:
        sets = _sets(topk, machine.registers)
        return Schedule(unroll=sets, accumulators=sets)
    return Schedule(unroll=1, rows_per_group=min(machine.lanes, 16 if topk.k <= 4 else 8))


def _sets(topk: TopK, registers: int) -> int:
    """As many accumulator sets (4, 2, 1) as keep every set's k entries (2k vectors) in
    `registers` vector registers (the selecting pass; softmax_then_topk's sum pass takes
    as many)."""
    return next((a for a in (4, 2) if a * 2 * topk.k + tune.TEMPORARIES <= registers), 1)


def generate(k: int, *, order: str = "topk_then_softmax", renormalize: bool = False, target: Target | str = "host",
             dtype="float32", temperature: bool = False, n: int = 256, name: str | None = None) -> Artifact:
    """The top-k kernel compiled for `target` without running it (as softgen.generate): its
    object, assembly, header (Artifact.write), with the schedule the JIT takes for rows of
    n values."""
    topk, program = _program(k, order, renormalize, dtype, temperature, "generate")
    tgt = Target.parse(target)
    schedule = _schedule(topk, tgt, n)
    return Artifact(program.op, program.algorithm, tgt, compile_program(program, tgt, schedule, name=name), schedule,
                    program.dtypes)


def emit_c(k: int, *, order: str = "topk_then_softmax", renormalize: bool = False, isa: str = "scalar",
           dtype="float32", temperature: bool = False, name: str | None = None,
           schedule: Schedule | None = None) -> CSource:
    """C source of the top-k kernel on `isa` (softgen.emit_c's ISAs): x of `dtype`, the
    weights and indices in the compute dtype (the header says where), 1 / T per row with
    `temperature`.  Default schedule: as many accumulator sets as fit C_REGISTERS."""
    topk, program = _program(k, order, renormalize, dtype, temperature, "emit_c")
    sets = _sets(topk, C_REGISTERS)
    name = name or f"softgen_{program.op}_{topk.algorithm}_{program.storage.numpy_name}_{isa}"
    return emit_program(program, isa=isa, name=name, schedule=schedule or Schedule(unroll=sets, accumulators=sets))


def topk_softmax(x, k: int, *, axis: int = -1, temperature=1.0, order: str = "topk_then_softmax",
                 renormalize: bool = False, threads: int | None = None):
    """(weights, indices) of the k largest entries along `axis`, as a mixture-of-experts
    router gates: weights of x's dtype (float64 for integer x), indices int64, both of x's
    shape with `axis` of length k, best first; equal values in the order of their indices,
    as torch.sort(descending=True, stable=True) orders them (torch.topk on CPU does not
    promise an order of ties).

    order: "topk_then_softmax" (softmax over the k largest of x / T) or "softmax_then_topk"
    (the k largest of softmax(x / T) over the whole row; renormalize=True: divided by their
    sum).  temperature: T > 0, a number or one per row (x's shape without `axis`).
    NaN ranks above +inf (as torch's sort and topk); -inf is an ordinary value.  A row
    holding NaN or +inf has NaN weights, and an all -inf row too (as torch's softmax); with
    softmax_then_topk such rows have indices 0..k-1, the stable order of a row of NaN
    probabilities.  ValueError unless 1 <= k <= the axis' length.  threads: as softmax's
    (the most threads the rows are split over; default softgen.get_num_threads())."""
    who = "topk_softmax"
    threads = None if threads is None else _threads.check_threads(threads, who)
    arr = _as_input(x, who)
    if arr.ndim == 0:
        raise ValueError(f"{who}(): x needs an axis to select along")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{who}(): axis must be one integer, not {axis!r}")
    (ax,) = _normalize_axes(int(axis), arr.ndim, who)
    topk = _check_topk(k, order, renormalize, who, arr.shape[ax])
    arr = arr if arr.dtype in NATIVE_DTYPES else arr.astype(_F64)
    last = ax == arr.ndim - 1
    rows = _rows(arr if last else np.moveaxis(arr, ax, -1))
    lead = arr.shape[:ax] + arr.shape[ax + 1:]
    storage = _ir_dtype(arr.dtype)
    n = rows.shape[1]
    compute = DType.F64 if storage is DType.F64 or n > F32_EXACT_INDICES else DType.F32
    inv_t = _inverse_temperature(temperature, lead, _kept_shape(arr.shape, ax), compute, who)
    weights = np.empty((rows.shape[0], topk.k), compute.numpy_name)
    indices = np.empty_like(weights)
    if rows.shape[0]:
        kernel(topk, storage, compute, inv_t is not None, n)(rows, inv_t, weights, indices, threads)
    shape = lead + (topk.k,)
    w, i = weights.astype(arr.dtype, copy=False).reshape(shape), indices.astype(np.int64).reshape(shape)
    return (w, i) if last else (np.moveaxis(w, -1, ax), np.moveaxis(i, -1, ax))


_ir_dtypes: dict = {}   # numpy dtype -> its IR DType (ir_dtype takes microseconds)


def _ir_dtype(dtype: np.dtype) -> DType:
    if dtype not in _ir_dtypes:
        _ir_dtypes[dtype] = ir_dtype(dtype)
    return _ir_dtypes[dtype]


def _program(k, order, renormalize, dtype, temperature: bool, who: str) -> tuple[TopK, Program]:
    """The TopK and the program of an ahead-of-time request (rows of any length: float64
    computes float64, anything else float32)."""
    topk = _check_topk(k, order, renormalize, who)
    storage = ir_dtype(dtype)
    compute = DType.F64 if storage is DType.F64 else DType.F32
    return topk, topk_program(topk, storage, compute, Variant(temperature=temperature))


def _check_topk(k, order, renormalize, who: str, n: int | None = None) -> TopK:
    """The TopK of the arguments (k checked against the axis' length n where given)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"{who}(): k must be an integer, not {k!r}")
    if n is not None and not 1 <= k <= n:
        raise ValueError(f"{who}(): k must be in 1..{n} (the axis' length), not {k}")
    if k < 1:
        raise ValueError(f"{who}(): k must be at least 1, not {k}")
    if order not in ORDERS:
        raise ValueError(f"{who}(): order must be one of {', '.join(ORDERS)}, not {order!r}")
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"{who}(): renormalize must be a bool, not {renormalize!r}")
    return TopK(int(k), Order(order), bool(renormalize))


def _rows(moved: np.ndarray) -> np.ndarray:
    """x's rows along its last axis as [rows, n] with unit element stride (a view where
    they are already laid out so: x[:, 1:] is not copied)."""
    n = moved.shape[-1]
    rows = moved.reshape(-1, n)
    if rows.strides[1] != rows.itemsize or rows.strides[0] % rows.itemsize:
        rows = np.ascontiguousarray(rows)
    return rows


def _inverse_temperature(temperature, lead: tuple, kept: tuple, compute: DType, who: str) -> np.ndarray | None:
    """1 / T per row (or one for every row) in the compute dtype; None for T = 1."""
    if type(temperature) in (int, float) and temperature == 1:
        return None
    t = _per_row(temperature, lead, "temperature", who, kept)
    if not (np.all(np.isfinite(t)) and np.all(t > 0)):
        raise ValueError(f"{who}(): temperature must be positive and finite")
    if t.size == 1 and t[0] == 1.0:
        return None
    return (1.0 / t).astype(compute.numpy_name)
