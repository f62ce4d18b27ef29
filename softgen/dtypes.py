"""The dtypes softgen accepts, checked once for every entry point (API, generate, emit_c)."""
from __future__ import annotations

import numpy as np

DTYPES = ("float32",)


def check_dtype(dtype) -> np.dtype:
    """`dtype` as a numpy dtype; TypeError unless softgen supports it."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unsupported dtype {dtype!r}; softgen supports {', '.join(DTYPES)}") from None
    if dt.name not in DTYPES:
        raise TypeError(f"unsupported dtype {dt}; softgen supports {', '.join(DTYPES)}")
    return dt
