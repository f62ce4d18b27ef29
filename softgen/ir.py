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
    ACC_TOPK = "acc.topk"

    @property
    def is_accumulator(self) -> bool:
        return self.value.startswith("acc.")

    @property
    def state_parts(self) -> int:
        """An accumulator's state as row values (merge.state's results; numerics.ACCUMULATORS
        keeps states of this many parts).  acc.topk keeps k entries of this many parts each
        (a value and its index): its state has parts(k)."""
        return _STATE_PARTS[self]

    def parts(self, k: int | None = None) -> int:
        """The parts of a state of this type; acc.topk's with its op's k= (its entries kept)."""
        return self.state_parts * k if self is Type.ACC_TOPK else self.state_parts


_STATE_PARTS = {Type.ACC_MAX: 1, Type.ACC_SUM: 1, Type.ACC_PAIR: 2, Type.ACC_ONLINE: 3, Type.ACC_EXCESS: 2,
                Type.ACC_TOPK: 2}


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
    LOAD_IN = ("load.in", Where.PASS, (), (E,))     # load.in name=...: an elementwise operand, like x
    # load.keep name=...: a boolean elementwise operand (a mask) as 0 where it is true (keep)
    # and -inf where it is false; keep x, k value=...: x where k is 0, else value (masked)
    LOAD_KEEP = ("load.keep", Where.PASS, (), (E,))
    KEEP = ("keep", Where.PASS, (E, E), (E,))
    # fill_empty v, flag value=...: v, or `value` in a row whose flag is -inf (an empty row)
    FILL_EMPTY = ("fill_empty", Where.PASS, (E, R), (E,))
    INDEX = ("index", Where.PASS, (), (E,))         # the element's index in the row (an exact integer)
    SUB = ("sub", Where.PASS, (E, R), (E,))
    MUL = ("mul", Where.PASS, (E, R), (E,))
    MUL_E = ("mul.e", Where.PASS, (E, E), (E,))      # elementwise products and differences
    SUB_E = ("sub.e", Where.PASS, (E, E), (E,))
    EXP = ("exp", Where.PASS, (E, R), (E,))         # e^(x - c) for x <= c (or NaN)
    EXP_PAIR = ("exp_pair", Where.PASS, (E,), (P,))
    # softplus(scale * x)^power as a pair p * 2^k (numerics.softplus_pow): softplus_pow x scale=s power=p
    SOFTPLUS_POW = ("softplus_pow", Where.PASS, (E,), (P,))
    # softplus(scale * x) as a value (numerics.softplus: 0, subnormal or inf where it leaves
    # the normal range): softplus x scale=s
    SOFTPLUS = ("softplus", Where.PASS, (E,), (E,))
    PAIR_SCALE = ("pair_scale", Where.PASS, (P, R, R), (E,))  # p * c * 2^(k - e)
    STORE = ("store", Where.PASS, (E,), ())
    CAST = ("cast", Where.PASS, (E,), (E,))          # cast v from=dtype to=dtype: storage/output <-> compute
    # acc.max x nan_caught=True: a NaN x may be skipped, because a later pass sums a term of
    # every x (nan_caught) and that NaN sum reaches every output
    ACC_MAX = ("acc.max", Where.PASS, (E,), (Type.ACC_MAX,))
    ACC_SUM = ("acc.sum", Where.PASS, (E,), (Type.ACC_SUM,))
    ACC_PAIR = ("acc.pair", Where.PASS, (P,), (Type.ACC_PAIR,))
    ACC_ONLINE = ("acc.online", Where.PASS, (E,), (Type.ACC_ONLINE,))
    # sum of e = e^(x - m) as its excess over the max term (see numerics.excess): acc.excess e, x, m
    ACC_EXCESS = ("acc.excess", Where.PASS, (E, E, R), (Type.ACC_EXCESS,))
    # the k largest values with their indices, ties to the lower index, NaN above +inf (as a
    # stable descending sort): acc.topk x, index k=K
    ACC_TOPK = ("acc.topk", Where.PASS, (E, E), (Type.ACC_TOPK,))
    # row ops
    MERGE_MAX = ("merge.max", Where.ROW, (Type.ACC_MAX,), (R,))
    MERGE_SUM = ("merge.sum", Where.ROW, (Type.ACC_SUM,), (R,))
    MERGE_PAIR = ("merge.pair", Where.ROW, (Type.ACC_PAIR,), (R, R))        # -> S, E
    MERGE_ONLINE = ("merge.online", Where.ROW, (Type.ACC_ONLINE,), (R, R))  # -> m, d - 1
    MERGE_EXCESS = ("merge.excess", Where.ROW, (Type.ACC_EXCESS,), (R,))     # -> sum - 1
    # -> v0, ..., v(k-1), i0, ..., i(k-1): the values best first (NaN first), then their
    # indices; merge.topk t k=K (its acc op's k: the result count is 2k, see _signature)
    MERGE_TOPK = ("merge.topk", Where.ROW, (Type.ACC_TOPK,), ())
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
    # row operands (Program.operands): one compute-dtype value per row, read or written at
    # name[row * name_stride]
    LOAD_OPERAND = ("load.operand", Where.ROW, (), (R,))   # load.operand name=...
    # store.operand v name=... (at=j: value j of the row, for an operand of several per row)
    STORE_OPERAND = ("store.operand", Where.ROW, (R,), ())
    # Reduction states as row values, for rows reduced in chunks (softgen.chunks): a
    # reduction's lanes merged into its state's parts (numerics.Accumulator: Type.state_parts
    # row values); a state from its parts (state p0, p1, ... type=acc.*); two states merged.
    # Their operand and result counts are those of the state (see _signature).
    MERGE_STATE = ("merge.state", Where.ROW, (), ())
    STATE = ("state", Where.ROW, (), ())
    MERGE_STATES = ("merge.states", Where.ROW, (), ())
    # One more element of the row given as a row value (a sink): its state as the acc op of
    # `type` would make it from these operands (that op's, a pair as two row values), and
    # the per-element ops it needs on row values.
    ELEMENT_STATE = ("element.state", Where.ROW, (), ())
    EXP_ROW = ("exp.row", Where.ROW, (R, R), (R,))              # e^(a - c) for a <= c
    EXP_PAIR_ROW = ("exp_pair.row", Where.ROW, (R,), (R, R))    # (p, k): e^a = p * 2^k

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


def nan_caught(op: Op) -> bool:
    """Whether op is an acc.max whose NaN elements may be skipped (see Kind.ACC_MAX)."""
    return op.kind is Kind.ACC_MAX and op.attrs.get("nan_caught", False)


def _fmt_attr(v) -> str:
    if isinstance(v, DType):
        return v.short
    if isinstance(v, Type):
        return v.value
    return v.name if isinstance(v, Program) else repr(v)


@dataclass(eq=False)
class Pass:
    ops: list[Op]

    @property
    def reductions(self) -> list[Op]:
        return [op for op in self.ops if op.results and op.results[0].type.is_accumulator]


@dataclass(frozen=True)
class Operand:
    """A row operand: one compute-dtype value per row, an input (`load.operand`) or an
    output (`store.operand`).  In the C ABI it follows y as `name, name_stride`: value
    name[row * name_stride] (stride 0: one value for every row).  An elementwise operand
    (`load.in`) is a second input like x: name[row * name_stride + j] of x's dtype; a
    boolean one (`load.keep`, a mask) holds one byte per element, nonzero for true.  An
    integer row operand holds an int64 per row (Program.length's).  An output of `count`
    values per row (top-k's) holds value j at name[row * name_stride + j]."""
    name: str
    output: bool = False
    elementwise: bool = False
    boolean: bool = False
    integer: bool = False
    count: int = 1

    def __str__(self) -> str:
        kind = "bool " if self.boolean else "int " if self.integer else ""
        per_row = 'n' if self.elementwise else 'row' if self.count == 1 else f"row, {self.count}"
        return f"{'out' if self.output else 'in'} {kind}{self.name}[{per_row}]"


# names the kernel's own parameters take (an operand's stride is its name + "_stride")
RESERVED_NAMES = ("rows", "n", "x", "x_row_stride", "y", "y_row_stride")


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
    operands: tuple[Operand, ...] = ()   # row operands, in ABI order
    y_stored: bool = False  # y already holds what an earlier kernel stored (load.y may read it)
    # ragged rows: an integer input operand holding each row's length (clamped to [0, n]); the
    # program runs over that prefix and y past it is `fill` (a causal mask, without its bytes)
    length: str | None = None
    fill: float = 0.0

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
    def fallbacks(self) -> list["Program"]:
        """The fallback programs its guards name."""
        return [op.attrs["fallback"] for op in self.steps
                if isinstance(op, Op) and isinstance(op.attrs.get("fallback"), Program)]

    @property
    def fills_empty_rows(self) -> bool:
        """Whether rows with nothing above -inf give 0 / -inf (a fill_empty op, here or in a
        fallback its guards name) rather than numpy's NaN."""
        return (any(op.kind is Kind.FILL_EMPTY for p in self.passes for op in p.ops)
                or any(f.fills_empty_rows for f in self.fallbacks))

    @property
    def in_place_safe(self) -> bool:
        """Whether y may be x itself (in place): no step reads x after a pass stored y (a
        later pass's load.x, or a guard, whose fallback reads the row again)."""
        stored = False
        for step in self.steps:
            if stored and (not isinstance(step, Pass) and step.kind is Kind.GUARD
                           or isinstance(step, Pass) and any(op.kind is Kind.LOAD_X for op in step.ops)):
                return False
            stored = stored or isinstance(step, Pass) and any(op.kind is Kind.STORE for op in step.ops)
        return True

    @property
    def writes_y(self) -> bool:
        """Whether the kernel stores to y (a top-k kernel's results are in output operands)."""
        return any(isinstance(s, Op) and s.kind is Kind.STORE_ROW for s in self.steps) or any(
            op.kind is Kind.STORE for p in self.passes for op in p.ops)

    @property
    def passes(self) -> list[Pass]:
        return [s for s in self.steps if isinstance(s, Pass)]

    def __str__(self) -> str:
        out = "y[row]" if self.row_output else "y[n]"
        dtypes = (f" {self.storage.short} storage, {self.compute.short} compute"
                  + (f", {self.out_dtype.short} output" if self.out_dtype is not self.storage else "")
                  if self.dtypes != (DType.F32,) * 3 else "")  # f32: implied
        extra = "".join(f", {o}" for o in self.operands)
        ragged = f"\n  rows of length {self.length}[row], y past it {self.fill!r}" if self.length else ""
        lines = [f"kernel {self.name} (x[n] -> {out}{extra}){dtypes}{ragged}"]
        n_pass = 0
        for step in self.steps:
            if isinstance(step, Pass):
                lines.append(f"  pass {n_pass}:")
                lines += [f"    {op}" for op in step.ops]
                n_pass += 1
            else:
                lines.append(f"  {step}")
        return "\n".join(lines)


def listing(program: Program) -> str:
    """The program's text, then that of each fallback program its guards name (their text
    is not in the guard's line): the whole of what it computes."""
    return "\n".join([str(program)] + [listing(f) for f in program.fallbacks])


class VerifyError(ValueError):
    """A malformed IR program; the message names the offending op."""


def _fail(program: Program, op: Op, msg: str):
    raise VerifyError(f"{program.name}: `{op}`: {msg}")


def value_dtypes(program: Program, op: Op) -> tuple[DType, DType]:
    """(operand dtype, result dtype) of op: load.x gives storage values, load.y gives and
    the stores take output values, a cast converts `from` one dtype `to` another,
    everything else computes."""
    if op.kind in (Kind.LOAD_X, Kind.LOAD_IN):
        return program.storage, program.storage
    if op.kind in (Kind.LOAD_Y, Kind.STORE, Kind.STORE_ROW):
        return program.out_dtype, program.out_dtype
    if op.kind in (Kind.CAST, Kind.CAST_ROW):
        return op.attrs.get("from"), op.attrs.get("to")
    return program.compute, program.compute


_STATE_KINDS = (Kind.MERGE_STATE, Kind.STATE, Kind.MERGE_STATES, Kind.ELEMENT_STATE)


def _signature(op: Op) -> tuple[tuple, tuple] | None:
    """(operand types, result types) of op; for the ops whose counts vary, from its operands
    and attrs (None: a state op without an accumulator to take them from)."""
    k = op.kind
    if k is Kind.GUARD:
        return (Type.ROW,) * len(op.attrs.get("ranges", ())), ()
    acc = op.attrs.get("type") if k in (Kind.STATE, Kind.ELEMENT_STATE) else (op.args[0].type if op.args else None)
    # (top-k states are not cut into chunks: a chunk's indices would start at its own 0)
    if k in _STATE_KINDS and not (isinstance(acc, Type) and acc.is_accumulator and acc is not Type.ACC_TOPK):
        return None
    if k is Kind.MERGE_TOPK:
        return k.arg_types, (Type.ROW,) * Type.ACC_TOPK.parts(_count(op))
    if k is Kind.ELEMENT_STATE:   # the acc op's operands, a pair as its two parts
        return tuple(t for a in Kind[acc.name].arg_types for t in ((R, R) if a is P else (R,))), (acc,)
    if k is Kind.MERGE_STATE:
        return (acc,), (Type.ROW,) * acc.state_parts
    if k is Kind.STATE:
        return (Type.ROW,) * acc.state_parts, (acc,)
    if k is Kind.MERGE_STATES:
        return (acc, acc), (acc,)
    return k.arg_types, k.result_types


def _count(op: Op) -> int:
    """An acc.topk or merge.topk op's k (0 where it has none that is a positive integer)."""
    k = op.attrs.get("k")
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else 0


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
    signature = _signature(op)
    if signature is None:
        _fail(program, op, f"{op.kind.mnemonic} needs an accumulator"
                           + (" type=acc.*" if op.kind in (Kind.STATE, Kind.ELEMENT_STATE) else " operand")
                           + " other than acc.topk")
    arg_types, result_types = signature
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
    if tuple(r.type for r in op.results) != result_types:
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
        if op.kind in (Kind.LOAD_IN, Kind.LOAD_KEEP):
            _check_row_op_operand(program, op)
        if op.kind in (Kind.FILL_EMPTY, Kind.KEEP) and not isinstance(op.attrs.get("value"), float):
            _fail(program, op, f"{op.kind.mnemonic} needs a float value=")
        if op.kind in (Kind.SOFTPLUS_POW, Kind.SOFTPLUS):
            _check_softplus(program, op)
        if op.kind is Kind.ACC_TOPK and not _count(op):
            _fail(program, op, "acc.topk needs a positive integer k=")
        if not isinstance(op.attrs.get("nan_caught", False), bool):
            _fail(program, op, "nan_caught= must be True or False")
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
    if op.kind is Kind.MERGE_TOPK and (not _count(op) or op.args[0] in pending_acc
                                       and _count(pending_acc[op.args[0]]) != _count(op)):
        _fail(program, op, "merge.topk needs the k= of its acc.topk")
    for a in op.args:
        pending_acc.pop(a, None)
    if op.kind is Kind.GUARD:
        _check_guard(program, op)
    if op.kind is Kind.CONST and not isinstance(op.attrs.get("value"), float):
        _fail(program, op, "const needs a float value")
    if op.kind in (Kind.LOAD_OPERAND, Kind.STORE_OPERAND):
        _check_row_op_operand(program, op)
    if op.kind is Kind.WHERE_IN and not (isinstance(op.attrs.get("range"), tuple) and len(op.attrs["range"]) == 2):
        _fail(program, op, "where_in needs range=(lo, hi)")


def _check_row_op_operand(program: Program, op: Op):
    """The operand a load.operand, store.operand, load.in or load.keep names is the program's."""
    want = Operand(op.attrs.get("name"), op.kind is Kind.STORE_OPERAND, op.kind in (Kind.LOAD_IN, Kind.LOAD_KEEP),
                   op.kind is Kind.LOAD_KEEP)
    if not any(o.name == want.name and (o.output, o.elementwise, o.boolean) == (want.output, want.elementwise,
                                                                               want.boolean)
               for o in program.operands):
        kind = ("a boolean elementwise input" if want.boolean else "an elementwise input" if want.elementwise
                else "an output" if want.output else "an input")
        _fail(program, op, f"needs {kind} operand {want.name!r} among the program's operands")


def _check_guard(program: Program, op: Op):
    """A guard names a fallback program, or an output operand it flags rows out of range in
    (1, else 0) for the caller to run the fallback on (a chunk of a row cannot)."""
    fallback, flag = op.attrs.get("fallback"), op.attrs.get("flag")
    if not op.args:
        _fail(program, op, "guard needs ranges=((lo, hi), ...), one per operand")
    if flag is not None:
        if Operand(flag, True) not in program.operands:
            _fail(program, op, f"guard flags rows in {flag!r}, which is not an output operand")
        return
    if not isinstance(fallback, Program):
        _fail(program, op, "guard needs a fallback program (or a flag=operand)")
    if fallback.dtypes != program.dtypes:
        _fail(program, op, "the fallback program must have the same storage, compute and output dtypes")
    verify(fallback)


def _check_operands(program: Program):
    names = [o.name for o in program.operands]
    for name in names:
        if not (isinstance(name, str) and name.isidentifier()) or name in RESERVED_NAMES \
                or name.endswith("_stride"):
            raise VerifyError(f"{program.name}: operand name {name!r} is not an identifier of its own "
                              f"(not one of {', '.join(RESERVED_NAMES)} nor ending in _stride)")
    if len(set(names)) < len(names):
        raise VerifyError(f"{program.name}: operand names repeat: {', '.join(names)}")
    stored = [(op.attrs["name"], op.attrs.get("at", 0)) for op in program.steps
              if isinstance(op, Op) and op.kind is Kind.STORE_OPERAND]
    stored += [(op.attrs["flag"], 0) for op in program.steps if isinstance(op, Op) and "flag" in op.attrs]
    for o in program.operands:
        if o.output and sorted(at for name, at in stored if name == o.name) != list(range(o.count)):
            raise VerifyError(f"{program.name}: output operand {o.name!r} must have each of its {o.count} "
                              f"value(s) per row stored exactly once (at=0..{o.count - 1})")
        if not (isinstance(o.count, int) and o.count >= 1 and (o.output or o.count == 1)):
            raise VerifyError(f"{program.name}: operand {o.name!r}: several values per row are for outputs")
    if program.length is not None and Operand(program.length, integer=True) not in program.operands:
        raise VerifyError(f"{program.name}: rows of length {program.length!r} need it as an integer input operand")


def _check_softplus(program: Program, op: Op):
    """The kernel parameters baked into the op: a finite nonzero scale, a finite positive
    power (softplus_pow's)."""
    scale, name = op.attrs.get("scale"), op.kind.mnemonic
    if not (isinstance(scale, float) and math.isfinite(scale) and scale != 0.0):
        _fail(program, op, f"{name} needs a finite nonzero float scale=")
    power = op.attrs.get("power")
    if op.kind is Kind.SOFTPLUS_POW and not (isinstance(power, float) and math.isfinite(power) and power > 0.0):
        _fail(program, op, f"{name} needs a finite positive float power=")


def verify(program: Program) -> Program:
    """Check types and dtypes, def-before-use, scoping of per-element values, and that
    every reduction is merged.  Returns the program so calls can be chained."""
    _check_operands(program)
    defined_row: set[Value] = set()
    pending_acc: dict[Value, Op] = {}
    stored = program.y_stored
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
    partial = any(o.output for o in program.operands)  # a chunk's states out: y may go unwritten
    if not program.row_output and (row_stores or not (stores or partial)):
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
        self.x_scale: Value | None = None   # a row value load_x multiplies x by (temperature)
        self.sink: Value | None = None      # a row value that is one more element (a sink)
        self.mask: str | None = None        # a boolean operand load_x masks x by (where=)
        self.kept: Value | None = None      # the last load_x's mask as 0 / -inf (with a mask)

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
        x = self._cast(self.emit(Kind.LOAD_X), Kind.CAST, self.program.compute)
        x = x if self.x_scale is None else self.emit(Kind.MUL, x, self.x_scale)
        if self.mask is None:
            return x
        self.kept = self.emit(Kind.LOAD_KEEP, name=self.mask)
        return self.emit(Kind.KEEP, x, self.kept, value=float("-inf"))

    def load_in(self, name: str) -> Value:
        return self._cast(self.emit(Kind.LOAD_IN, name=name), Kind.CAST, self.program.compute)

    def load_y(self) -> Value:
        return self._cast(self.emit(Kind.LOAD_Y), Kind.CAST, self.program.compute)

    def store(self, v: Value):
        return self.emit(Kind.STORE, self._cast(v, Kind.CAST, self.program.out_dtype))

    def merge_topk(self, acc: Value, k: int) -> tuple[Value, ...]:
        return self._counted(Op(Kind.MERGE_TOPK, (acc,), (), {"k": k}))

    def merge_state(self, acc: Value) -> tuple[Value, ...]:
        return self._counted(Op(Kind.MERGE_STATE, (acc,), (), {}))

    def state(self, parts, type: Type) -> Value:
        return self._counted(Op(Kind.STATE, tuple(parts), (), {"type": type}))[0]

    def merge_states(self, a: Value, b: Value) -> Value:
        return self._counted(Op(Kind.MERGE_STATES, (a, b), (), {}))[0]

    def element_state(self, args, type: Type) -> Value:
        return self._counted(Op(Kind.ELEMENT_STATE, tuple(args), (), {"type": type}))[0]

    def _counted(self, op: Op) -> tuple[Value, ...]:
        """A row op whose results _signature counts, appended."""
        op.results = tuple(self._new(t, self.program.compute) for t in _signature(op)[1])
        self.program.steps.append(op)
        return op.results

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
