"""The dtypes softgen accepts, checked once for every entry point (API, generate, emit_c),
and the IR dtype each maps to.  bfloat16 arrays come from ml_dtypes (an optional extra)."""
from __future__ import annotations

import sys

import numpy as np

from .ir import DType

DTYPES = tuple(d.numpy_name for d in DType)


def _bfloat16() -> np.dtype:
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError("bfloat16 needs the ml_dtypes package (pip install softgen[bfloat16])") from None
    return np.dtype(ml_dtypes.bfloat16)


def check_dtype(dtype) -> np.dtype:
    """`dtype` (a numpy dtype or name, or an IR DType) as a numpy dtype; TypeError unless
    softgen supports it."""
    if isinstance(dtype, DType):
        dtype = dtype.numpy_name
    if isinstance(dtype, str) and dtype == "bfloat16":
        return _bfloat16()
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unsupported dtype {dtype!r}; softgen supports {', '.join(DTYPES)}") from None
    if dt.name not in DTYPES:
        raise TypeError(f"unsupported dtype {dt}; softgen supports {', '.join(DTYPES)}")
    return dt


class _NativeDtypes:
    """The supported numpy dtypes in native byte order, for `dtype in NATIVE_DTYPES`.
    bfloat16 is recognised once ml_dtypes is imported (no bfloat16 array exists before),
    so importing softgen does not pay for ml_dtypes' import (0.7 s)."""

    def __init__(self):
        self._known = {np.dtype(name) for name in DTYPES if name != "bfloat16"}

    def __contains__(self, dtype) -> bool:
        if dtype in self._known:
            return True
        if "ml_dtypes" in sys.modules and len(self._known) < len(DTYPES):
            self._known.add(_bfloat16())
            return dtype in self._known
        return False


NATIVE_DTYPES = _NativeDtypes()


def ir_dtype(dtype) -> DType:
    """The IR dtype of a numpy dtype or name softgen supports (TypeError otherwise)."""
    name = check_dtype(dtype).name
    return next(d for d in DType if d.numpy_name == name)


def compute_dtype(*dtypes: DType) -> DType:
    """What kernels over these storage dtypes compute in: float64 if any is float64, else
    float32 (16-bit values are widened to float32 in registers)."""
    return DType.F64 if DType.F64 in dtypes else DType.F32


# How x and y are declared in the C ABI (generated headers, emitted C): 16-bit floats are
# passed as their bits (float16: IEEE binary16; bfloat16: the upper half of a float32).
C_ABI_TYPES = {DType.F32: "float", DType.F64: "double", DType.F16: "uint16_t", DType.BF16: "uint16_t"}


def c_parameters(x: DType, y: DType, operands: tuple = (), compute: DType | None = None,
                 restrict: str = "") -> str:
    """The kernel's C parameter list for x of dtype x and y of dtype y, then its operands
    (ir.Operand, each with its stride: one `compute` value or int64 per row, or elements as
    x's or as bytes for a mask); `restrict` spelled on x and y where given."""
    params = (f"int64_t rows, int64_t n, const {C_ABI_TYPES[x]} *{restrict}x, int64_t x_row_stride, "
              f"{C_ABI_TYPES[y]} *{restrict}y, int64_t y_row_stride")
    for o in operands:
        ctype = ("uint8_t" if o.boolean else "int64_t" if o.integer
                 else C_ABI_TYPES[x if o.elementwise else compute])
        params += f", {'' if o.output else 'const '}{ctype} *{o.name}, int64_t {o.name}_stride"
    return params


# How a caller with its own threads splits the work, for the generated headers (rows are
# independent, so any row range is a call of its own)
ROW_RANGES = ("Rows are independent: threads may each run a range of rows r0 <= r < r1 by calling it",
              "with rows = r1 - r0, x + r0 * x_row_stride and y + r0 * y_row_stride. Give each thread",
              "whole cache lines of y (for rows shorter than a line, ranges of a multiple of 16 rows)",
              "so that threads do not write to the same line.")
