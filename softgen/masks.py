"""Runtime analysis of where= masks.  A mask whose rows each keep a prefix (True, then
only False: a causal mask) runs as ragged rows (Program.length): each row over its own
length, its mask never read again, and the masked part of the row never computed.

The analysis is one native pass over the mask's own rows (before broadcasting), which
LLVM vectorizes: per row, the count of True and whether a True follows a False."""
from __future__ import annotations

import ctypes
import threading

import llvmlite.binding as llvm
import numpy as np

from .backends.llvm.compiler import optimize
from .targets import Target

# rows(i64), n, mask, mask's row stride in bytes, lengths (i64 per row) -> the rows that
# keep a prefix before the first that does not (rows: all of them).  Counts in i32: rows
# of up to 2^31 - 1 elements.
_PREFIX_IR = r"""
define i64 @softgen_prefix_lengths(i64 %rows, i64 %n, ptr noalias nocapture readonly %mask, i64 %stride,
                                    ptr noalias nocapture %lengths) {
entry:
  %last = sub i64 %n, 1
  br label %row
row:
  %r = phi i64 [0, %entry], [%r.next, %keep]
  %more = icmp slt i64 %r, %rows
  br i1 %more, label %scan.start, label %all
scan.start:
  %offset = mul i64 %r, %stride
  %base = getelementptr inbounds i8, ptr %mask, i64 %offset
  %first = load i8, ptr %base, align 1
  %first.nz = icmp ne i8 %first, 0
  %count0 = zext i1 %first.nz to i32
  br label %scan
scan:
  %j = phi i64 [0, %scan.start], [%j.next, %scan.body]
  %count = phi i32 [%count0, %scan.start], [%count.next, %scan.body]
  %rises = phi i8 [0, %scan.start], [%rises.next, %scan.body]
  %in = icmp slt i64 %j, %last
  br i1 %in, label %scan.body, label %check
scan.body:
  %p = getelementptr inbounds i8, ptr %base, i64 %j
  %a = load i8, ptr %p, align 1
  %j.next = add nuw nsw i64 %j, 1
  %q = getelementptr inbounds i8, ptr %base, i64 %j.next
  %b = load i8, ptr %q, align 1
  %a.zero = icmp eq i8 %a, 0
  %b.nz = icmp ne i8 %b, 0
  %rise = and i1 %a.zero, %b.nz
  %rise8 = zext i1 %rise to i8
  %rises.next = or i8 %rises, %rise8
  %b32 = zext i1 %b.nz to i32
  %count.next = add i32 %count, %b32
  br label %scan
check:
  %prefix = icmp eq i8 %rises, 0
  br i1 %prefix, label %keep, label %stop
keep:
  %count64 = zext i32 %count to i64
  %dst = getelementptr inbounds i64, ptr %lengths, i64 %r
  store i64 %count64, ptr %dst, align 8
  %r.next = add nuw nsw i64 %r, 1
  br label %row
stop:
  ret i64 %r
all:
  ret i64 %rows
}
"""

MAX_ROW = 2 ** 31 - 1   # the counts' range


class _Native:
    def __init__(self):
        target = Target.parse("host")
        tm = target.create_target_machine(jit=True)
        self._lljit = llvm.create_lljit_compiler(tm)
        text = str(optimize(_PREFIX_IR, target.create_target_machine()))
        self._library = (llvm.JITLibraryBuilder().add_ir(text).export_symbol("softgen_prefix_lengths")
                         .link(self._lljit, "softgen_masks"))
        i64, p = ctypes.c_int64, ctypes.c_void_p
        self.prefix_lengths = ctypes.CFUNCTYPE(i64, i64, i64, p, i64, p)(self._library["softgen_prefix_lengths"])


_native = None
_native_lock = threading.Lock()


def _get_native() -> _Native:
    global _native
    with _native_lock:
        if _native is None:
            _native = _Native()
        return _native


def prefix_lengths(rows: np.ndarray) -> np.ndarray | None:
    """Each row's count of True for a [rows, n] bool (or uint8) array with unit element
    stride whose every row keeps a prefix; None if some row does not (or rows are longer
    than MAX_ROW)."""
    count, n = rows.shape
    if n == 0 or n > MAX_ROW:
        return None if n else np.zeros(count, np.int64)
    lengths = np.empty(count, np.int64)
    if count == 0:
        return lengths
    done = _get_native().prefix_lengths(count, n, rows.__array_interface__["data"][0], rows.strides[0],
                                        lengths.ctypes.data)
    return lengths if done == count else None
