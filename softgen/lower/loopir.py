"""The loop IR: one kernel after lowering, as structured statements a backend renders.

Every decision about the algorithm and the schedule is made before this stage (the
row-group loop, pipeline stages, blocks, unrolled accumulator sets, the remainder loop
and the masked tail, the exp forms with their range checks, pair sums, streaming
stores, lane merges, the guard); a renderer maps each statement to its language and
decides nothing.  Values are SSA (`Val`, printed %N) and typed (`Ty`: a float or int of
some bits, or a bool, with a lane count; a pointer; an array); mutable state lives in
`Var`s (printed $N), which a renderer keeps in registers or locals.

Statements: `Instr` (op, operands, at most one result), and structured control flow:
`Loop` (while its head's condition holds), `If`, `DoWhile`.  A value is visible in the
block that defines it, after its definition, and in the blocks nested there; the
top-level values of a loop's head and of a do-while's body stay visible after the loop
(both run at least once).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ty:
    kind: str              # "float" | "int" | "bool" | "ptr" | "array"
    bits: int = 0          # float / int: bits per lane
    lanes: int = 1
    elem: "Ty | None" = None   # array: its element type
    count: int = 0             # array: elements

    def vector(self, lanes: int) -> "Ty":
        return Ty(self.kind, self.bits, lanes)

    @property
    def scalar(self) -> "Ty":
        return self.vector(1)

    @property
    def bytes(self) -> int:
        return self.bits // 8

    def __str__(self) -> str:
        if self.kind == "array":
            return f"[{self.count} x {self.elem}]"
        base = {"float": f"f{self.bits}", "int": f"i{self.bits}", "bool": "i1", "ptr": "ptr"}[self.kind]
        return base if self.lanes == 1 else f"<{self.lanes} x {base}>"


def float_ty(bits: int, lanes: int = 1) -> Ty:
    return Ty("float", bits, lanes)


def int_ty(bits: int, lanes: int = 1) -> Ty:
    return Ty("int", bits, lanes)


def bool_ty(lanes: int = 1) -> Ty:
    return Ty("bool", 1, lanes)


def array_ty(elem: Ty, count: int) -> Ty:
    return Ty("array", elem=elem, count=count)


I64, I32, PTR = int_ty(64), int_ty(32), Ty("ptr")


@dataclass(eq=False)
class Val:
    id: int
    ty: Ty
    name: str = ""   # parameters are named

    def __str__(self) -> str:
        return self.name or f"%{self.id}"


@dataclass(frozen=True)
class Const:
    ty: Ty
    value: object    # a number (every lane), or a tuple with one per lane

    def __str__(self) -> str:
        v = self.value
        if isinstance(v, tuple):
            return "<" + ", ".join(map(_number, v)) + ">"
        return _number(v) if self.ty.lanes == 1 else f"splat({_number(v)})"


def _number(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


@dataclass(eq=False)
class Var:
    id: int
    ty: Ty

    def __str__(self) -> str:
        return f"${self.id}"


@dataclass(eq=False)
class Instr:
    op: str
    args: tuple
    result: Val | None = None
    attrs: dict = field(default_factory=dict)

    def __str__(self) -> str:
        attrs = "".join(f" {k}={v}" for k, v in self.attrs.items())
        text = f"{self.op} {', '.join(map(str, self.args))}{attrs}".rstrip()
        return f"{self.result}: {self.result.ty} = {text}" if self.result else text


@dataclass(eq=False)
class Loop:
    """while (head; cond) body"""
    name: str
    head: list
    cond: object
    body: list


@dataclass(eq=False)
class If:
    name: str
    cond: object
    then: list
    else_: list | None = None
    else_first: bool = False   # a layout hint: the else branch's code first (a guard's fallback)


@dataclass(eq=False)
class DoWhile:
    """do body while (cond), cond computed at the end of body"""
    name: str
    body: list
    cond: object = None


@dataclass(eq=False)
class Kernel:
    """One function: void name(params...)."""
    name: str
    params: list
    vars: list = field(default_factory=list)
    body: list = field(default_factory=list)
    notes: list = field(default_factory=list)   # what the lowering chose, for the printout

    def __str__(self) -> str:
        params = ", ".join(f"{p}: {p.ty}" for p in self.params)
        lines = [f"kernel {self.name}({params})"] + [f"  ; {n}" for n in self.notes]
        lines += [f"  var {v}: {v.ty}" for v in self.vars]
        _print_block(self.body, 1, lines)
        return "\n".join(lines)


def _print_block(block: list, depth: int, lines: list) -> None:
    pad = "  " * depth
    for s in block:
        if isinstance(s, Instr):
            lines.append(pad + str(s))
        elif isinstance(s, Loop):
            lines.append(f"{pad}loop {s.name}:")
            _print_block(s.head, depth + 2, lines)
            lines.append(f"{pad}  while {s.cond}:")
            _print_block(s.body, depth + 2, lines)
        elif isinstance(s, If):
            lines.append(f"{pad}if {s.name} {s.cond}:")
            _print_block(s.then, depth + 1, lines)
            if s.else_ is not None:
                lines.append(f"{pad}else {s.name}:")
                _print_block(s.else_, depth + 1, lines)
        else:
            lines.append(f"{pad}do {s.name}:")
            _print_block(s.body, depth + 1, lines)
            lines.append(f"{pad}while {s.cond}")


class Builder:
    """Appends statements to the innermost open block; the control-flow helpers take
    functions that emit their parts."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self._blocks = [kernel.body]
        self._ids = len(kernel.params)

    def emit(self, op: str, *args, ty: Ty | None = None, **attrs):
        result = None
        if ty is not None:
            result = Val(self._ids, ty)
            self._ids += 1
        self._blocks[-1].append(Instr(op, args, result, attrs))
        return result

    def var(self, ty: Ty, init=None) -> Var:
        v = Var(len(self.kernel.vars), ty)
        self.kernel.vars.append(v)
        if init is not None:
            self.write(v, init)
        return v

    def read(self, var: Var):
        return self.emit("read", var, ty=var.ty)

    def write(self, var: Var, value) -> None:
        self.emit("write", var, value)

    @contextmanager
    def _into(self, block: list):
        self._blocks.append(block)
        try:
            yield block
        finally:
            self._blocks.pop()

    def block(self, fn) -> list:
        with self._into([]) as block:
            fn()
        return block

    def loop_while(self, cond_fn, body_fn, name: str) -> None:
        head, cond = [], None
        with self._into(head):
            cond = cond_fn()
        self._blocks[-1].append(Loop(name, head, cond, self.block(body_fn)))

    def if_then(self, cond, then_fn, name: str, else_fn=None, else_first: bool = False) -> None:
        then = self.block(then_fn)
        self._blocks[-1].append(If(name, cond, then, self.block(else_fn) if else_fn else None, else_first))

    def do_while(self, body_fn, name: str) -> None:
        node = DoWhile(name, [])
        with self._into(node.body):
            node.cond = body_fn()
        self._blocks[-1].append(node)


def i64(v: int) -> Const:
    return Const(I64, v)


class VerifyError(ValueError):
    """A malformed loop-IR kernel."""


def verify(kernel: Kernel) -> Kernel:
    """Every operand is a constant, a parameter or a value defined earlier in an enclosing
    block; every var is declared; conditions are bools.  Returns the kernel."""
    _verify_block(kernel.body, set(kernel.params), set(kernel.vars), kernel.name)
    return kernel


def _verify_block(block: list, visible: set, variables: set, where: str) -> None:
    visible = set(visible)
    for s in block:
        if isinstance(s, Instr):
            for a in s.args:
                _check_operand(a, visible, variables, f"{where}: `{s}`")
            if s.result is not None:
                visible.add(s.result)
        elif isinstance(s, Loop):
            visible |= _verify_nested(s.head, visible, variables, where)
            _check_cond(s.cond, visible, where, s.name)
            _verify_block(s.body, visible, variables, where)
        elif isinstance(s, If):
            _check_cond(s.cond, visible, where, s.name)
            _verify_block(s.then, visible, variables, where)
            _verify_block(s.else_ or [], visible, variables, where)
        else:
            visible |= _verify_nested(s.body, visible, variables, where)
            _check_cond(s.cond, visible, where, s.name)


def _verify_nested(block: list, visible: set, variables: set, where: str) -> set:
    """Verify a block whose values stay visible after it (a loop head, a do-while body)."""
    _verify_block(block, visible, variables, where)
    return {s.result for s in block if isinstance(s, Instr) and s.result is not None}


def _check_operand(a, visible: set, variables: set, where: str) -> None:
    if isinstance(a, Val) and a not in visible:
        raise VerifyError(f"{where}: {a} is used where it is not defined")
    if isinstance(a, Var) and a not in variables:
        raise VerifyError(f"{where}: {a} is not a declared var")


def _check_cond(cond, visible: set, where: str, name: str) -> None:
    if not isinstance(cond, (Val, Const)) or cond.ty != bool_ty():
        raise VerifyError(f"{where}: the condition of {name} is not an i1 value")
    if isinstance(cond, Val) and cond not in visible:
        raise VerifyError(f"{where}: the condition of {name} ({cond}) is not defined there")


def remove_dead_code(kernel: Kernel) -> Kernel:
    """Drop, until none is left, values nothing uses and writes to vars nothing reads, then
    the vars themselves (a renderer whose compiler warns of them needs this; LLVM does it
    itself).  Returns the kernel."""
    while True:
        live, read = set(), set()
        for s in walk(kernel.body):
            args = s.args if isinstance(s, Instr) else (s.cond,)
            live.update(a for a in args if isinstance(a, Val))
            if isinstance(s, Instr) and s.op in ("read", "read_at"):
                read.add(s.args[0])
        if not _sweep_dead(kernel.body, live, read):
            kernel.vars = [v for v in kernel.vars if v in read]
            return kernel


def walk(block: list):
    """Every statement of `block`, nested ones included, in order."""
    for s in block:
        yield s
        for part in ("head", "body", "then", "else_"):
            yield from walk(getattr(s, part, None) or [])


def _sweep_dead(block: list, live: set, read: set) -> bool:
    removed = False
    for s in list(block):
        if isinstance(s, Instr):
            dead_value = s.result is not None and s.result not in live
            dead_write = s.op in ("write", "write_at") and s.args[0] not in read
            if dead_value or dead_write:
                block.remove(s)
                removed = True
            continue
        for part in ("head", "body", "then", "else_"):
            removed |= _sweep_dead(getattr(s, part, None) or [], live, read)
    return removed
