"""The normalization IR: a kernel is a short program of passes over one row.

A program runs once per row of a row-major [rows, n] array of its storage dtype.  It is a list
of *steps*: a `Pass` is a loop over the n elements of the row whose ops act on one
element at a time (the backends vectorize it), and between passes there are
row-level ops on scalars (one value per row).

Value types:
  ELEM   one f32 per element (only inside the pass that defines it)
  PAIR   one (mantissa p, exponent k) per element, e^x = p * 2^k (inside a pass)
  ROW    one f32 per row
  ACC_*  a reduction accumulator: defined by an `acc.*` op in a pass, consumed
         after the pass by the matching `merge.*` op, which combines the lanes

Every value also has a dtype: `load.x` gives values of the program's storage dtype (what x
holds), `load.y` and the stores those of its output dtype (what y holds, the storage dtype
unless told otherwise), and everything else computes in its compute dtype; where they
differ, `cast` / `cast.row` convert (`from` and `to` name the two dtypes).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class Type(enum.Enum):
    ELEM = "elem"
    PAIR = "pair"
    ROW = "row"
    ACC_MAX = "acc.max"
    ACC_SUM = "acc.sum"
    ACC_PAIR = "acc.pair"
    ACC_ONLINE = "acc.online"
    ACC_EXCESS = "acc.excess"

    @property
    def is_accumulator(self) -> bool:
        return self.value.startswith("acc.")


class Where(enum.Enum):
    PASS = "pass"  # per element, inside a pass
    ROW = "row"    # once per row, between passes


class DType(enum.Enum):
    """A floating-point element type: (short name, numpy name, bits)."""
    F32 = ("f32", "float32", 32)
    F64 = ("f64", "float64", 64)
    F16 = ("f16", "float16", 16)
    BF16 = ("bf16", "bfloat16", 16)

    def __init__(self, short, numpy_name, bits):
        self.short, self.numpy_name, self.bits = short, numpy_name, bits


E, P, R = Type.ELEM, Type.PAIR, Type.ROW


class Kind(enum.Enum):
    """Every op: (printed name, where it lives, argument types, result types)."""

    # per-element ops
    LOAD_X = ("load.x", Where.PASS, (), (E,))
    LOAD_Y = ("load.y", Where.PASS, (), (E,))       # re-read what an earlier pass stored
    SUB = ("sub", Where.PASS, (E, R), (E,))
    MUL = ("mul", Where.PASS, (E, R), (E,))
    EXP = ("exp", Where.PASS, (E, R), (E,))         # e^(x - c) for x <= c (or NaN)
    EXP_PAIR = ("exp_pair", Where.PASS, (E,), (P,))
    # softplus(scale * x)^power as a pair p * 2^k (numerics.softplus_pow): softplus_pow x scale=s power=p
    SOFTPLUS_POW = ("softplus_pow", Where.PASS, (E,), (P,))
    PAIR_SCALE = ("pair_scale", Where.PASS, (P, R, R), (E,))  # p * c * 2^(k - e)
    STORE = ("store", Where.PASS, (E,), ())
    CAST = ("cast", Where.PASS, (E,), (E,))          # cast v from=dtype to=dtype: storage/output <-> compute
    ACC_MAX = ("acc.max", Where.PASS, (E,), (Type.ACC_MAX,))
    ACC_SUM = ("acc.sum", Where.PASS, (E,), (Type.ACC_SUM,))
    ACC_PAIR = ("acc.pair", Where.PASS, (P,), (Type.ACC_PAIR,))
    ACC_ONLINE = ("acc.online", Where.PASS, (E,), (Type.ACC_ONLINE,))
    # sum of e = e^(x - m) as its excess over the max term (see numerics.excess): acc.excess e, x, m
    ACC_EXCESS = ("acc.excess", Where.PASS, (E, E, R), (Type.ACC_EXCESS,))
    # row ops
    MERGE_MAX = ("merge.max", Where.ROW, (Type.ACC_MAX,), (R,))
    MERGE_SUM = ("merge.sum", Where.ROW, (Type.ACC_SUM,), (R,))
    MERGE_PAIR = ("merge.pair", Where.ROW, (Type.ACC_PAIR,), (R, R))        # -> S, E
    MERGE_ONLINE = ("merge.online", Where.ROW, (Type.ACC_ONLINE,), (R, R))  # -> m, d - 1
    MERGE_EXCESS = ("merge.excess", Where.ROW, (Type.ACC_EXCESS,), (R,))     # -> sum - 1
    CONST = ("const", Where.ROW, (), (R,))
    ADD = ("add", Where.ROW, (R, R), (R,))
    SUB_ROW = ("sub.row", Where.ROW, (R, R), (R,))
    MUL_ROW = ("mul.row", Where.ROW, (R, R), (R,))
    RECIP = ("recip", Where.ROW, (R,), (R,))
    LOG = ("log", Where.ROW, (R,), (R,))
    LOG1P = ("log1p", Where.ROW, (R,), (R,))  # log(1 + u), accurate for small u
    LOG_PAIR = ("log.pair", Where.ROW, (R, R), (R, R))  # log(s) + e*ln2 as hi + lo (numerics.log_pair)
    WHERE_FINITE = ("where_finite", Where.ROW, (R, R, R), (R,))  # isfinite(a) ? b : c
    WHERE_IN = ("where_in", Where.ROW, (R, R, R), (R,))  # where_in a, b, c range=(lo, hi): lo <= a <= hi ? b : c
    # guard v1, v2, ... ranges=((lo1, hi1), ...): every lo <= v <= hi, else run the fallback program
    GUARD = ("guard", Where.ROW, (R,), ())  # (its operand count is that of its ranges)
    STORE_ROW = ("store.row", Where.ROW, (R,), ())  # y[row * y_row_stride] = v
    CAST_ROW = ("cast.row", Where.ROW, (R,), (R,))   # cast.row v to=dtype, before store.row

    def __init__(self, mnemonic, where, args, results):
        self.mnemonic, self.where, self.arg_types, self.result_types = mnemonic, where, args, results


@dataclass(eq=False)
class Value:
    id: int
    type: Type
    dtype: DType = DType.F32

    def __str__(self) -> str:
        return f"%{self.id}"


@dataclass(eq=False)
class Op:
    kind: Kind
    args: tuple[Value, ...]
    results: tuple[Value, ...]
    attrs: dict = field(default_factory=dict)

    def __str__(self) -> str:
        lhs = ", ".join(map(str, self.results))
        rhs = " ".join([self.kind.mnemonic] + [", ".join(map(str, self.args))] if self.args
                       else [self.kind.mnemonic])
        attrs = "".join(f" {k}={_fmt_attr(v)}" for k, v in self.attrs.items())
        return f"{lhs} = {rhs}{attrs}" if lhs else rhs + attrs


def _fmt_attr(v) -> str:
    if isinstance(v, DType):
        return v.short
    return v.name if isinstance(v, Program) else repr(v)


@dataclass(eq=False)
class Pass:
    ops: list[Op]

    @property
    def reductions(self) -> list[Op]:
        return [op for op in self.ops if op.results and op.results[0].type.is_accumulator]


@dataclass(eq=False)
class Program:
    """One kernel: `op` (softmax, ...) computed with `algorithm`, as a list of steps, over
    rows of `storage` computed in `compute`, writing rows (or row values) of `output`
    (None: the storage dtype)."""

    op: str
    algorithm: str
    steps: list  # of Pass | Op
    row_output: bool = False  # True: one value per row (logsumexp); False: a full row
    storage: DType = DType.F32
    compute: DType = DType.F32
    output: DType | None = None

    @property
    def out_dtype(self) -> DType:
        return self.output or self.storage

    @property
    def dtypes(self) -> tuple[DType, DType, DType]:
        """(x's, compute, y's)."""
        return self.storage, self.compute, self.out_dtype

    @property
    def name(self) -> str:
        return f"{self.op}.{self.algorithm}"

    @property
    def passes(self) -> list[Pass]:
        return [s for s in self.steps if isinstance(s, Pass)]

    def __str__(self) -> str:
        out = "y[row]" if self.row_output else "y[n]"
        dtypes = (f" {self.storage.short} storage, {self.compute.short} compute"
                  + (f", {self.out_dtype.short} output" if self.out_dtype is not self.storage else "")
                  if self.dtypes != (DType.F32,) * 3 else "")  # f32: implied
        lines = [f"kernel {self.name} (x[n] -> {out}){dtypes}"]
        n_pass = 0
        for step in self.steps:
            if isinstance(step, Pass):
                lines.append(f"  pass {n_pass}:")
                lines += [f"    {op}" for op in step.ops]
                n_pass += 1
            else:
                lines.append(f"  {step}")
        return "\n".join(lines)


class VerifyError(ValueError):
    """A malformed IR program; the message names the offending op."""


def _fail(program: Program, op: Op, msg: str):
    raise VerifyError(f"{program.name}: `{op}`: {msg}")


def value_dtypes(program: Program, op: Op) -> tuple[DType, DType]:
    """(operand dtype, result dtype) of op: load.x gives storage values, load.y gives and
    the stores take output values, a cast converts `from` one dtype `to` another,
    everything else computes."""
    if op.kind is Kind.LOAD_X:
        return program.storage, program.storage
    if op.kind in (Kind.LOAD_Y, Kind.STORE, Kind.STORE_ROW):
        return program.out_dtype, program.out_dtype
    if op.kind in (Kind.CAST, Kind.CAST_ROW):
        return op.attrs.get("from"), op.attrs.get("to")
    return program.compute, program.compute


def _check_cast(program: Program, op: Op):
    """A cast goes between compute and storage (loaded x) or compute and output (y)."""
    pair = (op.attrs.get("from"), op.attrs.get("to"))
    allowed = [p for d in {program.storage, program.out_dtype} if d is not program.compute
               for p in ((d, program.compute), (program.compute, d))]
    if pair not in allowed:
        shown = ", ".join(f"from={a.short} to={b.short}" for a, b in allowed) or "none: every dtype is " + program.compute.short
        _fail(program, op, f"cast needs one of ({shown})")


def _check_args(program: Program, op: Op, visible: set[Value]):
    """Operand count, definition, type and dtype; result types and dtypes."""
    arg_types = op.kind.arg_types
    if op.kind is Kind.GUARD:
        arg_types = (Type.ROW,) * len(op.attrs.get("ranges", ()))
    if len(op.args) != len(arg_types):
        _fail(program, op, f"{op.kind.mnemonic} takes {len(arg_types)} operands, got {len(op.args)}")
    if op.kind in (Kind.CAST, Kind.CAST_ROW):
        _check_cast(program, op)
    arg_dtype, result_dtype = value_dtypes(program, op)
    for i, (arg, want) in enumerate(zip(op.args, arg_types)):
        if arg not in visible:
            _fail(program, op, f"operand {i} ({arg}) is undefined here")
        if arg.type is not want:
            _fail(program, op, f"operand {i} ({arg}) has type {arg.type.value}, expected {want.value}")
        if arg.dtype is not arg_dtype:
            _fail(program, op, f"operand {i} ({arg}) has dtype {arg.dtype.short}, expected {arg_dtype.short}")
    if tuple(r.type for r in op.results) != op.kind.result_types:
        _fail(program, op, "result types do not match the op")
    if any(r.dtype is not result_dtype for r in op.results):
        _fail(program, op, f"results must have dtype {result_dtype.short}")


def _check_pass(program: Program, step: Pass, defined_row: set, pending_acc: dict, stored: bool):
    """Checks one pass; its accumulators go into pending_acc."""
    local: set[Value] = set()
    if not step.ops:
        raise VerifyError(f"{program.name}: empty pass")
    for op in step.ops:
        if op.kind.where is not Where.PASS:
            _fail(program, op, "a row op cannot appear inside a pass")
        if op.kind is Kind.LOAD_Y and not stored:
            _fail(program, op, "load.y reads the output row before any pass stored to it")
        if op.kind is Kind.SOFTPLUS_POW:
            _check_softplus_pow(program, op)
        _check_args(program, op, defined_row | local)
        for r in op.results:
            if r.type.is_accumulator:
                pending_acc[r] = op
            else:
                local.add(r)


def _check_row_op(program: Program, op: Op, defined_row: set, pending_acc: dict):
    if op.kind.where is not Where.ROW:
        _fail(program, op, "a per-element op must be inside a pass")
    _check_args(program, op, defined_row)
    for a in op.args:
        pending_acc.pop(a, None)
    if op.kind is Kind.GUARD:
        fallback = op.attrs.get("fallback")
        if not op.args:
            _fail(program, op, "guard needs ranges=((lo, hi), ...), one per operand")
        if not isinstance(fallback, Program):
            _fail(program, op, "guard needs a fallback program")
        if fallback.dtypes != program.dtypes:
            _fail(program, op, "the fallback program must have the same storage, compute and output dtypes")
        verify(fallback)
    if op.kind is Kind.CONST and not isinstance(op.attrs.get("value"), float):
        _fail(program, op, "const needs a float value")
    if op.kind is Kind.WHERE_IN and not (isinstance(op.attrs.get("range"), tuple) and len(op.attrs["range"]) == 2):
        _fail(program, op, "where_in needs range=(lo, hi)")


def _check_softplus_pow(program: Program, op: Op):
    """The kernel parameters baked into the op: a finite nonzero scale, a finite positive power."""
    scale, power = op.attrs.get("scale"), op.attrs.get("power")
    if not (isinstance(scale, float) and math.isfinite(scale) and scale != 0.0):
        _fail(program, op, "softplus_pow needs a finite nonzero float scale=")
    if not (isinstance(power, float) and math.isfinite(power) and power > 0.0):
        _fail(program, op, "softplus_pow needs a finite positive float power=")


def verify(program: Program) -> Program:
    """Check types and dtypes, def-before-use, scoping of per-element values, and that
    every reduction is merged.  Returns the program so calls can be chained."""
    defined_row: set[Value] = set()
    pending_acc: dict[Value, Op] = {}
    stored = False
    for step in program.steps:
        if isinstance(step, Pass):
            _check_pass(program, step, defined_row, pending_acc, stored)
            stored = stored or any(op.kind is Kind.STORE for op in step.ops)
            defined_row |= set(pending_acc)
        else:
            _check_row_op(program, step, defined_row, pending_acc)
            defined_row |= set(step.results)
    if pending_acc:
        acc, op = next(iter(pending_acc.items()))
        raise VerifyError(f"{program.name}: `{op}`: reduction {acc} is never merged (unused reduction)")
    stores = [op for s in program.passes for op in s.ops if op.kind is Kind.STORE]
    row_stores = [op for op in program.steps if isinstance(op, Op) and op.kind is Kind.STORE_ROW]
    if program.row_output and (stores or len(row_stores) != 1):
        raise VerifyError(f"{program.name}: a row-output kernel stores exactly one value per row")
    if not program.row_output and (row_stores or not stores):
        raise VerifyError(f"{program.name}: an elementwise kernel must store the row and only the row")
    return program


class Builder:
    """Builds a Program; `b.exp(x)` appends an EXP op and returns its result(s).  Loads
    and stores cast between storage and compute where those differ."""

    def __init__(self, op: str, algorithm: str, row_output: bool = False,
                 storage: DType = DType.F32, compute: DType = DType.F32, output: DType | None = None):
        self.program = Program(op, algorithm, [], row_output, storage, compute,
                               None if output is storage else output)
        self._next_id = 0
        self._pass: Pass | None = None

    def pass_(self) -> "_PassScope":
        return _PassScope(self)

    def emit(self, kind: Kind, *args: Value, **attrs):
        op = Op(kind, tuple(args), (), attrs)
        dtype = value_dtypes(self.program, op)[1]
        op.results = tuple(self._new(t, dtype) for t in kind.result_types)
        (self._pass.ops if self._pass is not None else self.program.steps).append(op)
        return op.results[0] if len(op.results) == 1 else (op.results or None)

    def const(self, value: float) -> Value:
        return self.emit(Kind.CONST, value=float(value))

    def load_x(self) -> Value:
        return self._cast(self.emit(Kind.LOAD_X), Kind.CAST, self.program.compute)

    def load_y(self) -> Value:
        return self._cast(self.emit(Kind.LOAD_Y), Kind.CAST, self.program.compute)

    def store(self, v: Value):
        return self.emit(Kind.STORE, self._cast(v, Kind.CAST, self.program.out_dtype))

    def store_row(self, v: Value):
        return self.emit(Kind.STORE_ROW, self._cast(v, Kind.CAST_ROW, self.program.out_dtype))

    def _cast(self, v: Value, cast: Kind, to: DType) -> Value:
        return v if v.dtype is to else self.emit(cast, v, **{"from": v.dtype, "to": to})

    def __getattr__(self, name: str):
        kind = Kind[name.upper()]
        return lambda *args, **attrs: self.emit(kind, *args, **attrs)

    def _new(self, t: Type, dtype: DType) -> Value:
        self._next_id += 1
        return Value(self._next_id - 1, t, dtype)


class _PassScope:
    def __init__(self, b: Builder):
        self.b = b

    def __enter__(self):
        self.b._pass = Pass([])

    def __exit__(self, *exc):
        self.b.program.steps.append(self.b._pass)
        self.b._pass = None
