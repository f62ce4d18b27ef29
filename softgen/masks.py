"""Runtime analysis of where= masks.  A mask whose rows each keep a prefix (True, then
only False: a causal mask) runs as ragged rows (Program.length): each row over its own
length, its mask never read again, and the masked part of the row never computed.

The analysis is one native pass over the mask's own rows (before broadcasting): per row,
the count of True and whether a True follows a False."""
from __future__ import annotations

import ctypes

import numpy as np

from .backends.llvm.compiler import optimize
from .backends.llvm.host import HOST
from .runtime import _address
from .targets import Target

# rows(i64), n, mask, mask's row stride in bytes, lengths (i64 per row), total -> the rows
# that keep a prefix before the first that does not (rows: all of them; then lengths
# [rows, total) repeat the first rows': a mask broadcast over leading axes).  A row goes 64 bytes at
# a time as a bit mask m of its nonzero bytes (a compare and a move on x86): its count is
# popcount(m), and a False followed by a True is a bit set in m over a clear one in m << 1
# with the previous 64's last bit shifted in (m & ~(m << 1 | last): 1.6x faster from L2 than
# testing the boundary apart); then the rest a byte at a time.
_PREFIX_IR = r"""
declare i64 @llvm.ctpop.i64(i64)

define i64 @softgen_prefix_lengths(i64 %rows, i64 %n, ptr noalias nocapture readonly %mask, i64 %stride,
                                    ptr noalias nocapture %lengths, i64 %total) {
entry:
  %blocks = lshr i64 %n, 6
  br label %row
row:
  %r = phi i64 [0, %entry], [%r.next, %keep]
  %more = icmp slt i64 %r, %rows
  br i1 %more, label %row.start, label %all
row.start:
  %offset = mul i64 %r, %stride
  %base = getelementptr inbounds i8, ptr %mask, i64 %offset
  br label %block
block:
  %k = phi i64 [0, %row.start], [%k.next, %block.body]
  %count = phi i64 [0, %row.start], [%count.next, %block.body]
  %rises = phi i64 [0, %row.start], [%rises.next, %block.body]
  %last = phi i64 [1, %row.start], [%last.next, %block.body]
  %in = icmp ult i64 %k, %blocks
  br i1 %in, label %block.body, label %tail
block.body:
  %at = shl i64 %k, 6
  %p = getelementptr inbounds i8, ptr %base, i64 %at
  %v = load <64 x i8>, ptr %p, align 1
  %nz = icmp ne <64 x i8> %v, zeroinitializer
  %m = bitcast <64 x i1> %nz to i64
  %c = call i64 @llvm.ctpop.i64(i64 %m)
  %count.next = add i64 %count, %c
  %shifted = shl i64 %m, 1
  %before = or i64 %shifted, %last
  %clear = xor i64 %before, -1
  %both = and i64 %m, %clear
  %rises.next = or i64 %rises, %both
  %last.next = lshr i64 %m, 63
  %k.next = add nuw nsw i64 %k, 1
  br label %block
tail:
  %j0 = shl i64 %blocks, 6
  br label %byte
byte:
  %j = phi i64 [%j0, %tail], [%j.next, %byte.body]
  %count.t = phi i64 [%count, %tail], [%count.t.next, %byte.body]
  %rises.t = phi i64 [%rises, %tail], [%rises.t.next, %byte.body]
  %last.t = phi i64 [%last, %tail], [%bit, %byte.body]
  %in.t = icmp slt i64 %j, %n
  br i1 %in.t, label %byte.body, label %check
byte.body:
  %q = getelementptr inbounds i8, ptr %base, i64 %j
  %b = load i8, ptr %q, align 1
  %b.nz = icmp ne i8 %b, 0
  %bit = zext i1 %b.nz to i64
  %count.t.next = add i64 %count.t, %bit
  %last.t.clear = xor i64 %last.t, 1
  %rise = and i64 %bit, %last.t.clear
  %rises.t.next = or i64 %rises.t, %rise
  %j.next = add nuw nsw i64 %j, 1
  br label %byte
check:
  %prefix = icmp eq i64 %rises.t, 0
  br i1 %prefix, label %keep, label %stop
keep:
  %dst = getelementptr inbounds i64, ptr %lengths, i64 %r
  store i64 %count.t, ptr %dst, align 8
  %r.next = add nuw nsw i64 %r, 1
  br label %row
stop:
  ret i64 %r
all:
  br label %copy
copy:
  %to.r = phi i64 [%rows, %all], [%to.next, %copy.body]
  %more.c = icmp slt i64 %to.r, %total
  br i1 %more.c, label %copy.body, label %done
copy.body:
  %from.at = sub i64 %to.r, %rows
  %from = getelementptr inbounds i64, ptr %lengths, i64 %from.at
  %value = load i64, ptr %from, align 8
  %to = getelementptr inbounds i64, ptr %lengths, i64 %to.r
  store i64 %value, ptr %to, align 8
  %to.next = add nuw nsw i64 %to.r, 1
  br label %copy
done:
  ret i64 %rows
}
"""

_PREFIX_LENGTHS = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                   ctypes.c_void_p, ctypes.c_int64)
_prefix_function = None


def _prefix_lengths_function():
    """softgen_prefix_lengths as a ctypes function (compiled on first use)."""
    global _prefix_function
    if _prefix_function is None:   # (a race builds a second wrapper of the same function)
        ir = (lambda: str(optimize(_PREFIX_IR, Target.parse("host").create_target_machine())))
        address = HOST.addresses("softgen_masks", ir, ("softgen_prefix_lengths",))["softgen_prefix_lengths"]
        _prefix_function = _PREFIX_LENGTHS(address)
    return _prefix_function


def prefix_lengths(rows: np.ndarray, repeat: int = 1) -> np.ndarray | None:
    """Each row's count of True for a [rows, n] bool (or uint8) array with unit element
    stride whose every row keeps a prefix, the whole list `repeat` times (the rows of a
    mask broadcast over leading axes); None if some row does not keep a prefix."""
    count, n = rows.shape
    if n == 0:
        return np.zeros(count * repeat, np.int64)
    lengths = np.empty(count * repeat, np.int64)
    if count == 0:
        return lengths
    done = _prefix_lengths_function()(count, n, _address(rows), rows.strides[0], _address(lengths), lengths.size)
    return lengths if done == count else None
