"""The JIT runtime: compile() a kernel for this machine (Kernel) and call it on numpy arrays
(any layout, axis and output; the copies and views that takes).  Which kernel runs for a
shape is decided above this module (softgen.tune, softgen.api)."""
from __future__ import annotations

import ctypes
import math
import threading
from functools import cached_property

import numpy as np

from . import algorithms
from . import threads as _threads
from .backends.llvm import CompiledModule, compile_program
from .dtypes import DTYPES, NATIVE_DTYPES, check_dtype, compute_dtype, ir_dtype
from .lower import Schedule
from .ir import Program
from .split import SplitKernel
from .targets import Target

_ABI = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                        ctypes.c_void_p, ctypes.c_int64)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


class Kernel:
    """A compiled kernel for one op x algorithm x dtypes on the host.  `kernel(x, axis=-1,
    out=None)` runs it over an axis (or axes) of an array of `dtype` (any dimension and
    layout), writing `out_dtype`."""

    def __init__(self, program: Program, compiled: CompiledModule, schedule: Schedule, op=None,
                 variant: algorithms.Variant = algorithms.Variant()):
        self.program = program
        self.op, self.algorithm = program.op, program.algorithm
        self._recipe_op = op or program.op   # an OpSpec where the op has parameters
        self.row_output = program.row_output
        self.in_place_safe = program.in_place_safe   # (read on every call)
        self.schedule = schedule
        x_dtype, _, y_dtype = program.dtypes
        self.dtype = check_dtype(x_dtype)       # x's numpy dtype
        self.out_dtype = check_dtype(y_dtype)   # y's
        # whether both export buffers (the quick way to an address; ml_dtypes' bfloat16 does
        # not, its bits as unsigned integers of its size do)
        self._buffers = _exports_buffer(self.dtype) and _exports_buffer(self.out_dtype)
        self._x_bits, self._y_bits = (np.dtype(f"u{d.itemsize}") for d in (self.dtype, self.out_dtype))
        self._compiled = compiled
        self.operands = program.operands   # row operands after y, as (address, stride) pairs
        self.variant = variant
        # whether rows stay whole on threads (ragged rows' chunks would need lengths of their
        # own, a row operand out (row_max) the merged states)
        self._whole_rows = program.length or any(o.output for o in self.operands)
        abi = _ABI if not self.operands else ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * (6 + 2 * len(self.operands)))
        self._fn = abi(compiled.address)

    @property
    def ir(self) -> str:
        return str(self.program)

    @property
    def loop_ir(self) -> str:
        """The kernel after lowering: its loops, forms and merges, before LLVM."""
        return self._compiled.loop_ir

    @property
    def llvm_ir(self) -> str:
        return self._compiled.llvm_ir

    @cached_property
    def asm(self) -> str:
        return self._compiled.asm()

    @property
    def target(self) -> Target:
        return self._compiled.target

    def __repr__(self) -> str:
        return f"<softgen.Kernel {self.program.name} on {self.target.cpu}, {self.target.vector_width} lanes>"

    def __reduce__(self):
        """A kernel pickles as its recipe; unpickling compiles it again, which the on-disk
        cache makes a file read: kernels travel to worker processes."""
        return (_compile_variant, (self._recipe_op, self.algorithm, self.dtype.name, self.out_dtype.name, self.target,
                                   self.schedule, self.variant))

    def __call__(self, x, axis=-1, *, out=None, threads=None, operands: tuple = ()):
        """Run over `axis` of x (an integer, a tuple of axes taken together, or None: all),
        as softgen.softmax(x, axis, out=out, threads=threads) does with this kernel.
        operands: its row operands' values (see run_rows), one per row in the order of the
        rows (the other axes, C order), or one for every row."""
        if threads is not None:
            threads = _threads.check_threads(threads, self.op)
        return _run(self, x, axis, out, threads, operands)

    def run_rows(self, x: np.ndarray, y: np.ndarray, threads: int | None = 1, operands: tuple = ()) -> None:
        """Raw call on 2-D arrays of the kernel's dtypes with unit element stride (no checks
        beyond shape), on up to `threads` threads (None: softgen.get_num_threads()).  One
        by default: the tuner and the benchmarks time a kernel on one core through it.
        operands: one array per row operand, of the compute dtype, a value per row (or one
        value for every row)."""
        self._call(x.shape[0], x.shape[1], _address(x), x.strides[0] // x.itemsize, x.itemsize,
                   _address(y), y.strides[0] // y.itemsize, y.itemsize, threads, _operand_args(operands))

    def _call(self, rows: int, n: int, x: int, x_stride: int, x_itemsize: int, y: int, y_stride: int,
              y_itemsize: int, threads: int | None, operands: tuple = ()) -> None:
        """The kernel on [rows, n] at addresses x and y (row strides in elements), with its
        row operands (address, stride, itemsize), its rows split over threads when the call
        is large enough (softgen.threads)."""
        if threads == 1 or threads is None and rows * n < _threads.parallel_from:
            self._fn(rows, n, x, x_stride, y, y_stride, *(v for a, s, _ in operands for v in (a, s)))
            return
        chunks = 1 if self._whole_rows else _threads.split_chunks(rows, n, threads)
        unit = _threads.row_unit(self.schedule.rows_per_group, y_stride * y_itemsize)
        if chunks > 1:
            self._split.run(rows, n, x, x_stride, x_itemsize, y, y_stride, y_itemsize, chunks,
                            threads or _threads.get_num_threads(), operands)
        elif operands:
            _threads.run_row_tasks(self._fn, rows, n, (x, x_stride, x_itemsize), (y, y_stride, y_itemsize),
                                   operands, unit, threads)
        else:
            _threads.run_rows(self._fn, rows, n, x, x_stride, x_itemsize, y, y_stride, y_itemsize, unit, threads)

    @cached_property
    def _split(self) -> SplitKernel:
        """The kernel as chunk kernels, for rows split across threads (compiled on first use)."""
        return SplitKernel(self.program, self.target, self.schedule)


_cache: dict = {}
_cache_lock = threading.Lock()


def compile(op: str, *, algorithm: str, dtype="float32", out_dtype=None, target="host",
            schedule: Schedule | None = None, temperature: bool = False, sink: bool = False,
            where: bool = False, empty_rows: str = "nan", length: bool = False) -> Kernel:
    """JIT-compile op x algorithm for the host, or for a narrower target this machine runs
    (e.g. "x86-64-v3" on an AVX-512 host).  x holds `dtype`, y `out_dtype` (default: dtype);
    the kernel computes in float64 if either is float64, else in float32.  temperature, sink,
    where, length: the variant taking those operands (algorithms.Variant: x times
    inv_temperature = 1 / T, one more logit per row, a mask as bytes, each row's length: a
    prefix mask); empty_rows: "nan" (numpy) or "zero" (rows with nothing above -inf give
    0 / -inf).  Cached: compiling twice costs nothing."""
    variant = algorithms.variant("compile", temperature=temperature, sink=sink, where=where, empty_rows=empty_rows,
                                 length=length)
    return _compile_variant(op, algorithm, dtype, out_dtype, target, schedule or Schedule(), variant)


def _compile_variant(op: str, algorithm: str, dtype, out_dtype, target, schedule: Schedule,
                     variant: algorithms.Variant = algorithms.Variant()) -> Kernel:
    storage = ir_dtype(dtype)
    output = storage if out_dtype is None else ir_dtype(out_dtype)
    tgt = Target.parse(target)
    key = (op, algorithm, storage, output, tgt, schedule, variant)
    with _cache_lock:
        if key not in _cache:
            program = algorithms.build(op, algorithm, storage, compute_dtype(storage, output), output, variant)
            _cache[key] = Kernel(program, compile_program(program, tgt, schedule, jit=True), schedule, op, variant)
        return _cache[key]


_char_at = ctypes.c_char.from_buffer


def _address(a: np.ndarray) -> int:
    """The data pointer; through the buffer protocol when it is writable and contiguous
    (a quarter of the cost of a.ctypes.data) and its dtype exports one."""
    flags = a.flags
    if flags.writeable and flags.c_contiguous and a.size:
        try:
            return ctypes.addressof(_char_at(a))
        except ValueError:  # "cannot include dtype 'E' in a buffer": bfloat16
            pass
    return a.__array_interface__["data"][0]


def _exports_buffer(dtype: np.dtype) -> bool:
    try:
        memoryview(np.empty(1, dtype))
        return True
    except ValueError:
        return False


def _as_input(x, who: str) -> np.ndarray:
    """x as an array softgen computes on: float32, float64, float16 and bfloat16 arrays as
    they are (in native byte order), integers and bools converted to float64 (as
    scipy.special.softmax does); objects exporting DLPack without a copy; TypeError naming
    `who` (the public function) for anything else."""
    if type(x) is np.ndarray:
        arr = x
    elif isinstance(x, np.ndarray):  # a subclass (np.ma imported only for those)
        if isinstance(x, np.ma.MaskedArray):  # its mask would be silently ignored
            raise TypeError(f"{who}(): masked arrays (np.ma) are not supported; pass x.filled(-np.inf) "
                            f"to give the masked entries no weight")
        arr = x.view(np.ndarray)
    else:
        arr = _foreign_array(x, who)
    dt = arr.dtype
    if dt in NATIVE_DTYPES:
        return arr
    if not dt.isnative and dt.newbyteorder("=") in NATIVE_DTYPES:
        return arr.astype(dt.newbyteorder("="))
    if dt.kind in "biu":
        return arr.astype(np.float64)
    if dt.kind == "c":
        raise TypeError(f"{who}(): complex input ({dt}) is not supported: softgen computes softmax of "
                        f"real numbers; pass x.real or abs(x)")
    if dt == object:
        raise TypeError(f"{who}(): object arrays are not supported; pass an array of {_SUPPORTED}")
    raise TypeError(f"{who}(): unsupported dtype {dt}; softgen supports {_SUPPORTED}")


def _foreign_array(x, who: str) -> np.ndarray:
    """Anything but an ndarray as one: DLPack exporters (torch, JAX... on the CPU) without a
    copy, other array-likes through np.asarray."""
    try:
        if hasattr(x, "__dlpack__"):
            return np.from_dlpack(x)
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - anything numpy cannot convert
        raise TypeError(f"{who}(): expected an array of floats, got {type(x).__name__}: {e}") from None


_SUPPORTED = f"{', '.join(DTYPES)} (integers and bools are computed as float64)"
_AxisError = np.exceptions.AxisError if hasattr(np, "exceptions") else np.AxisError  # numpy < 1.25


def _normalize_axes(axis, ndim: int, who: str) -> tuple:
    """axis (an integer, a tuple of them, or None: all axes) as sorted non-negative axes.
    A 0-d array counts as 1-d, as in torch: axis -1, 0, None or () take its one element."""
    ndim = max(ndim, 1)
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = []
    for item in items:
        if not isinstance(item, (int, np.integer)) or isinstance(item, bool):
            raise TypeError(f"{who}(): axis must be an integer, a tuple of integers or None, "
                            f"not {type(item).__name__}")
        if not -ndim <= item < ndim:
            raise _AxisError(int(item), ndim, f"{who}()")
        axes.append(int(item) % ndim)
    if len(set(axes)) < len(axes):
        raise ValueError(f"{who}(): axis {axis} repeats an axis")
    return tuple(sorted(axes))


def _check_out(out, shape: tuple, dtype: np.dtype, who: str) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{who}(): out must be a numpy array, not {type(out).__name__}")
    if out.dtype != dtype or not out.dtype.isnative:
        raise TypeError(f"{who}(): out has dtype {out.dtype}; expected {dtype} (the result's dtype)")
    if out.shape != shape:
        raise ValueError(f"{who}(): out has shape {out.shape}; expected {shape}")
    if not out.flags.writeable:
        raise ValueError(f"{who}(): out is read-only")
    return out


def _rows_view(a: np.ndarray) -> np.ndarray | None:
    """a as a 2-D [rows, n] view with unit element stride, or None if that needs a copy."""
    if a.ndim == 0:
        return None
    n, size = a.shape[-1], a.itemsize
    if a.size and n > 1 and a.strides[-1] != size:
        return None
    lead = a.shape[:-1]
    try:
        v = a.view()
        v.shape = (math.prod(lead), n)  # raises if not expressible as a view
    except AttributeError:
        return None
    if v.size and (v.strides[0] % size or v.strides[0] < 0):
        return None
    return v


PAGE = 4096
# Where softgen puts a new output relative to x (mod PAGE): half a page from where loads of
# x running ahead of stores to y could alias them, in either direction.
OUTPUT_DELTA = PAGE // 2


def same_page_offset(x: np.ndarray, shape: tuple, delta: int = OUTPUT_DELTA, dtype=None) -> np.ndarray:
    """An empty array of `shape` and `dtype` (default: x's) that starts `delta` bytes after
    x's offset within a 4 KB page (rounded down to a whole element).  Where the output sits relative to the input (mod 4 KB) changes the speed of
    streaming kernels: a load that follows a store to an address equal in its low 12 bits
    waits on it (4K aliasing), which costs up to 45% when y lies 64-256 bytes after x
    (benchmarks/aliasing.py).  softgen allocates its outputs this way."""
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    size, itemsize = math.prod(shape), dtype.itemsize  # (np.prod: 6 us a call)
    buf = np.empty(size + PAGE // itemsize, dtype)
    start = ((_address(x) + delta - _address(buf)) % PAGE) // itemsize
    return buf[start:start + size].reshape(shape)


def _new_output(x: np.ndarray, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A new output for x, OUTPUT_DELTA after x mod PAGE once it spans pages (numpy's own
    placement put it 64 or 96 bytes after x in some runs)."""
    return same_page_offset(x, shape, OUTPUT_DELTA, dtype) if x.nbytes > PAGE else np.empty(shape, dtype)


def _operand_args(operands: tuple) -> tuple:
    """Operand arrays (a value per row, one for every row, or rows of elements) as the
    kernel call's (address, stride in elements, itemsize)."""
    return tuple((_address(a), 0 if a.size == 1 else a.strides[0] // a.itemsize, a.itemsize) for a in operands)


def _fast_call(kernel: Kernel, x, axis, out, threads=None, operands: tuple = ()):
    """The common case with no copies or views: a C-contiguous array of the kernel's dtype
    over its last axis, a new output or a C-contiguous one (operands: for its rows in C
    order, as run_rows takes them).  None when the case does not apply.  threads: as
    checked by softgen.threads.check_threads, or None (the default)."""
    if not (type(x) is np.ndarray and x.dtype is kernel.dtype and x.size
            and (axis == -1 or axis == x.ndim - 1) and x.flags.c_contiguous):
        return None
    row_output = kernel.row_output
    shape = x.shape[:-1] if row_output else x.shape
    if out is None:
        y = _new_output(x, shape, kernel.out_dtype)
    elif (type(out) is np.ndarray and out.dtype is kernel.out_dtype and out.shape == shape
          and out.flags.c_contiguous and out.flags.writeable
          and (out is x and kernel.in_place_safe or not np.may_share_memory(out, x))):  # else the general path
        y = out
    else:
        return None
    n, size = x.shape[-1], x.size
    if kernel._buffers:
        x_address, y_address = _address(x), ctypes.addressof(_char_at(y))
    else:
        x_address, y_address = _address(x.view(kernel._x_bits)), ctypes.addressof(_char_at(y.view(kernel._y_bits)))
    y_stride = 1 if row_output else n
    args = _operand_args(operands) if operands else ()
    if threads == 1 or threads is None and size < _threads.parallel_from:
        kernel._fn(size // n, n, x_address, n, y_address, y_stride, *(v for a, s, _ in args for v in (a, s)))
    else:
        kernel._call(size // n, n, x_address, n, x.itemsize, y_address, y_stride, y.itemsize, threads, args)
    return y


def _run(kernel: Kernel, x, axis, out, threads=None, operands: tuple = ()):
    y = _fast_call(kernel, x, axis, out, threads, operands)
    return y if y is not None else _run_general(kernel, x, axis, out, threads, operands)


def _run_general(kernel: Kernel, x, axis, out, threads=None, operands: tuple = ()):
    """Any array, axis (an integer, a tuple of axes taken together, None: all) and out:
    through views, copies and temporaries as needed.  New results are C-contiguous."""
    who = kernel.op
    arr = _as_input(x, who)
    if arr.dtype != kernel.dtype:
        given = x.dtype if isinstance(x, np.ndarray) else arr.dtype
        raise TypeError(f"{who}(): x has dtype {given}; this kernel reads {kernel.dtype} "
                        f"(softgen.compile(..., dtype=...) for another)")
    row_output, out_dtype = kernel.row_output, kernel.out_dtype
    if arr.ndim == 0:  # as in torch: one row of one element (axis -1, 0, None or ())
        _normalize_axes(axis, 0, who)
        if out is not None:
            _check_out(out, (), out_dtype, who)
        y = _run_general(kernel, arr.reshape(1), 0, out if out is None or row_output else out.reshape(1), threads,
                         operands)
        return out if out is not None else y.reshape(())
    axes = _normalize_axes(axis, arr.ndim, who)
    perm = rows_last(axes, arr.ndim)
    lead = tuple(arr.shape[i] for i in perm[:arr.ndim - len(axes)])
    if out is not None:
        y = _check_out(out, lead if row_output else arr.shape, out_dtype, who)
    else:
        y = np.empty(lead, out_dtype) if row_output else _new_output(arr, arr.shape, out_dtype)
    if arr.size == 0 and not row_output:
        return y
    k = len(axes)
    if row_output:
        _run_rows(kernel, arr, perm, k, y[..., None], 1, out is None, threads, operands)
    else:
        _run_rows(kernel, arr, perm, k, y.transpose(perm), k, out is None, threads, operands)
    return y


def rows_last(axes: tuple, ndim: int) -> tuple:
    """The axis order that puts the reduced axes (taken together) last: the kernel's rows."""
    return tuple(i for i in range(ndim) if i not in axes) + axes


def elementwise_rows(a: np.ndarray, axes: tuple) -> np.ndarray:
    """An elementwise operand of x's shape as the kernel's [rows, n] (rows_last's order): a
    view where one exists (a broadcast row repeats at stride 0), else a copy."""
    moved = a.transpose(rows_last(axes, a.ndim)) if a.ndim else a.reshape(1)
    if moved.ndim == 2 and moved.strides[1] == moved.itemsize:   # already rows (the common case, quickly)
        return moved
    rows = _rows_of(moved, len(axes) if a.ndim else 1)
    if rows is None:
        rows = np.ascontiguousarray(moved).reshape(-1, math.prod(moved.shape[moved.ndim - max(len(axes), 1):]))
    return rows


def _run_rows(kernel: Kernel, arr: np.ndarray, perm: tuple, k: int, ys: np.ndarray, k_out: int, fresh: bool,
              threads: int | None, operands: tuple = ()) -> None:
    """Run kernel on the rows of arr.transpose(perm) (its last k axes merged into one)
    writing the rows of ys (its last k_out axes merged); ys is a new array if `fresh`;
    on up to `threads` threads.
    Rows no view can express go through a copy, results no view can hold through a
    temporary (or the copy)."""
    xin = _rows_of(arr.transpose(perm), k)
    copied = xin is None
    if copied:
        xin = _row_copy(arr, perm, k)
    yout = _rows_of(ys, k_out)
    # Most kernels read each element before they write the same element, so an output laid
    # out exactly like its input is safe (Program.in_place_safe); any other overlap goes
    # through a temporary.
    same = kernel.in_place_safe and _same_layout(xin, yout) if yout is not None else False
    direct = yout is not None and (copied or fresh or same or not np.shares_memory(xin, yout))
    if direct:
        target = yout
    elif copied and not kernel.row_output and kernel.out_dtype == kernel.dtype:
        target = xin  # the copy is ours: compute in place
    else:
        target = np.empty((xin.shape[0], 1 if kernel.row_output else xin.shape[1]), kernel.out_dtype)
    if xin.shape[0]:
        kernel.run_rows(xin, target, threads, operands)
    if not direct:
        ys[...] = _split(target, ys.shape)


def _rows_of(a: np.ndarray, k: int) -> np.ndarray | None:
    """a as a 2-D [rows, n] view (its last k axes merged into n, the others into rows) with
    unit element stride, or None if that needs a copy."""
    merged = a.view()
    try:
        merged.shape = a.shape[:a.ndim - k] + (math.prod(a.shape[a.ndim - k:]),)
    except AttributeError:  # not expressible as a view
        return None
    return _rows_view(merged)


def _row_copy(arr: np.ndarray, perm: tuple, k: int) -> np.ndarray:
    """The rows of arr.transpose(perm) (its last k axes merged) copied into a new [rows, n]
    array whose rows are a cache line longer than n.  Plain assignment copies a transposed
    view in the destination's order, reading arr at the stride of the reduced axes; where
    that is a multiple of 1 KB each line read evicts the last from its cache set.  A ufunc
    with out= can iterate in the source's memory order instead (256x1024 float32 over axis
    0: 0.8 ms by assignment, 0.27 ms this way), and the padding keeps the rows' own stride
    off such multiples for the write-back."""
    shape = arr.transpose(perm).shape
    n = math.prod(shape[len(shape) - k:])
    rows = np.empty((math.prod(shape) // n if n else 0, n + 64 // arr.itemsize), arr.dtype)[:, :n]
    inverse = tuple(sorted(range(len(perm)), key=perm.__getitem__))
    # an exact copy (-0.0 and NaNs kept), presented in arr's axis order: on a tie the ufunc
    # keeps that order
    np.positive(arr, out=_split(rows, shape).transpose(inverse))
    return rows


def _split(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """A [rows, n] array seen in `shape` (splitting rows and n into axes: always a view)."""
    view = rows.view()
    view.shape = shape
    return view


def _same_layout(a: np.ndarray, b: np.ndarray) -> bool:
    return a.ctypes.data == b.ctypes.data and a.strides == b.strides and a.shape == b.shape
