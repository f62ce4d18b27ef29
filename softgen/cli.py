"""The softgen command line.

    softgen info [--target T] [--cpus]
    softgen emit-asm|emit-obj|emit-so --op OP --algorithm ALGO --target T [--schedule S] [--name SYM] [-o PATH]
    softgen emit-c --op OP --algorithm ALGO --isa ISA [--schedule S] [--name SYM] [-o PATH]
    softgen bench --op OP [--algorithm ALGO] [--shape ROWSxN] [--peers a,b] [--threads N] [-o FILE.csv]
                  [--temperature T] [--sink] [--where causal|random] [--phi PHI] [--k K] [--order O]
    softgen tune [--op OP]... [--shape ROWSxN]... [--budget S] [--wisdom FILE] [--quiet]
    softgen warmup [--op OP]... --shape ROWSxN... [--algorithm ALGO]
    softgen cache info|clear

The commands that make or run kernels (emit-*, bench, tune, warmup) take --dtype D (x's, default
float32) and --out-dtype D (y's, default --dtype).  The emit commands' -o is a file if it
has a suffix (k.s, out/k.c), else a directory (out, out/kernels) for the usual file names;
either way the directories on the way are created.  `python -m softgen` runs this too.

`bench --op` takes the registry's ops (with the variant options --temperature, --sink,
--where, --algorithm unified_max [--phi]) and the family's entry points (softmax_backward,
log_softmax_backward, cross_entropy, topk_softmax [--k --order --temperature]), each timed
beside numpy, torch and ONNX Runtime computing the same (softgen.bench.FAMILY, case()).

Each command is one small function plus an entry in COMMANDS (its arguments, its help).
Errors in what the user asked for (argparse's, and ValueError/TypeError/NotImplementedError
raised by softgen) exit with status 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import llvmlite

from . import algorithms, ops, topk
from . import bench as measuring
from . import tune as tuning
from .artifacts import emit_c as emit_c_source
from .api import kernel_for_shape
from .artifacts import generate
from .backends.c import ISAS
from .backends.llvm import cache as kernel_cache
from .dtypes import DTYPES
from .lower import Schedule
from .targets import ACCEPTED, Target, known_cpus, llvm_version
from .version import __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line and status 2 (argparse would print the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _one_line(message) -> str:
    return " ".join(str(message).split())


# --- arguments shared by several commands -------------------------------------------------

def _add_op_argument(p: argparse.ArgumentParser, names=ops.NAMES, help="default: %(default)s"):
    p.add_argument("--op", choices=names, default=ops.SOFTMAX.name, help=help)
    params = ", ".join(f"{s.name}: {', '.join(f'{k}={v}' for k, v in s.params)}" for s in ops.REGISTRY.values()
                       if s.params)
    p.add_argument("--param", type=_param, action="append", metavar="NAME=VALUE",
                   help=f"an op parameter, may be repeated (defaults: {params})")


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a number, got {text!r}") from None


def _with_params(args):
    """args.op as the OpSpec with its --param values (the op's name where none are given)."""
    if args.param:
        if args.op not in ops.REGISTRY:   # bench's family entry points
            raise ValueError(f"--param sets a registry op's parameters; {args.op} has none")
        args.op = ops.get(args.op).with_params(**dict(args.param))


def _add_kernel_arguments(p: argparse.ArgumentParser, default_name: str, output_help: str):
    _add_op_argument(p)
    p.add_argument("--algorithm", choices=algorithms.ALGORITHMS + ("unified_max", "backward", "auto"), default="two_pass",
                   help="default: %(default)s; auto (with --schedule auto:ROWSxN): the JIT's choice")
    p.add_argument("--schedule", type=_schedule,
                   help="the code shape: a Schedule as JSON ('{\"unroll\": 2}'), a JSON file, or "
                        "auto:ROWSxN (what the JIT runs for that shape; default: Schedule())")
    p.add_argument("--name", help=f"the kernel's C symbol (default: {default_name})")
    p.add_argument("--temperature", action="store_true",
                   help="the variant taking 1 / T per row (row operand inv_temperature after y): op(x / T)")
    p.add_argument("--sink", action="store_true",
                   help="the variant taking one more logit per row (row operand sink): in the max and sum, no output")
    p.add_argument("--where", action="store_true",
                   help="the variant taking a mask (operand where after y: a byte per element, nonzero keeps it)")
    p.add_argument("--length", action="store_true",
                   help="the variant taking each row's length (operand length: an int64 per row; a prefix mask)")
    p.add_argument("--empty-rows", choices=algorithms.EMPTY_ROWS, default="nan",
                   help="what a row of only -inf gives: nan (numpy, default) or zero (0; -inf for the log ops)")
    p.add_argument("--topk", type=_positive_int, metavar="K",
                   help="softmax's top-k gating kernel instead (softgen.topk_softmax: the K largest of each "
                        "row and their weights; --order, --renormalize, --temperature)")
    p.add_argument("--order", choices=[o.value for o in algorithms.Order], default="topk_then_softmax",
                   help="with --topk: default %(default)s")
    p.add_argument("--renormalize", action="store_true", help="with --topk --order softmax_then_topk")
    p.add_argument("-o", "--output", metavar="PATH", help=output_help)


def _add_dtype_arguments(p: argparse.ArgumentParser):
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="x's dtype (default: %(default)s); float16 and bfloat16 compute in float32, "
                        "float64 in float64")
    p.add_argument("--out-dtype", choices=DTYPES,
                   help="y's dtype (default: --dtype); float64 computes in float64")


def _dtypes_label(args) -> str:
    out = args.out_dtype
    return args.dtype if out is None or out == args.dtype else f"{args.dtype}->{out}"


def _add_target_argument(p: argparse.ArgumentParser):
    p.add_argument("--target", default="host",
                   help=f"one of {', '.join(ACCEPTED)} (default: %(default)s)")


def _artifact(args):
    if args.topk:
        return topk.generate(args.topk, **_topk_options(args), target=args.target, dtype=args.dtype, name=args.name)
    return generate(args.op, algorithm=args.algorithm, target=args.target, dtype=args.dtype,
                    out_dtype=args.out_dtype, name=args.name, schedule=args.schedule, **_variant(args))


def _topk_options(args) -> dict:
    """--topk's kernel options, checked against what it does not take."""
    others = {"--op": args.op != ops.SOFTMAX.name, "--out-dtype": args.out_dtype, "--sink": args.sink,
              "--where": args.where, "--length": args.length, "--empty-rows": args.empty_rows != "nan",
              "--schedule": args.schedule}
    taken = [flag for flag, given in others.items() if given]
    if taken:
        raise ValueError(f"--topk makes softmax's top-k gating kernel, which takes none of {', '.join(taken)}")
    return dict(order=args.order, renormalize=args.renormalize, temperature=args.temperature)


def _variant(args) -> dict:
    """The variant options of the kernel commands, as generate / emit_c take them."""
    return dict(temperature=args.temperature, sink=args.sink, where=args.where, length=args.length,
                empty_rows=args.empty_rows)


def _describe(artifact) -> str:
    t = artifact.target
    return f"{artifact.name} for {t} ({t.cpu}, {t.vector_registers}, {t.vector_width} lanes)"


# --- the commands ----------------------------------------------------------------------------

def info(args) -> None:
    target = Target.parse(args.target)
    print(f"softgen {__version__}, LLVM {llvm_version()} (llvmlite {llvmlite.__version__})")
    print(f"target:   {target}")
    print(f"triple:   {target.triple}")
    print(f"cpu:      {target.cpu}")
    print(f"features: {','.join(sorted(target.feature_set)) or '(those of the CPU)'}")
    lanes = target.vector_width
    print(f"vectors:  {target.vector_registers}: {lanes} float32 or {max(lanes // 2, 1)} float64 lanes; "
          f"float16 {'converted by instructions' if target.converts_half else 'converted in integer code'}, "
          f"bfloat16 in integer code")
    if args.cpus:
        cpus = textwrap.fill(", ".join(known_cpus(target.arch)), width=100, initial_indent="  ",
                             subsequent_indent="  ", break_on_hyphens=False)
        print(f"LLVM CPUs for {target.arch}:\n{cpus}")


def emit_asm(args) -> None:
    artifact = _artifact(args)
    if args.output in (None, "-"):
        sys.stdout.write(artifact.asm)
        return
    print(f"wrote {artifact.write(_output(args, artifact, '.s'))}: {_describe(artifact)}")


def emit_obj(args) -> None:
    artifact = _artifact(args)
    print(f"wrote {artifact.write(_output(args, artifact, '.o'))}: {_describe(artifact)}")


def emit_so(args) -> None:
    artifact = _artifact(args)
    path = artifact.shared_library(_output(args, artifact, '.so', prefix="lib"))
    print(f"wrote {path}: {_describe(artifact)}")


def _output(args, artifact, suffix: str, prefix: str = "") -> Path:
    """-o as its suffix says: a file, or (no suffix, or a directory already) the directory
    for <prefix><name><suffix>; the directories on the way are created."""
    path = Path(args.output or ".")
    if path.is_dir() or not path.suffix:
        path = path / f"{prefix}{artifact.name}{suffix}"
    if path.suffix != suffix:
        raise ValueError(f"output {str(path)!r} should end in {suffix} (or be a directory)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def emit_c(args) -> None:
    if args.topk:
        source = topk.emit_c(args.topk, **_topk_options(args), isa=args.isa, dtype=args.dtype, name=args.name)
    else:
        source = emit_c_source(args.op, algorithm=args.algorithm, isa=args.isa, name=args.name,
                               schedule=args.schedule, dtype=args.dtype, out_dtype=args.out_dtype,
                               chunks=args.chunks, **_variant(args))
    for path in source.write(args.output or "."):
        print(f"wrote {path}")
    if source.not_rendered:
        asked = " ".join(f"{k}={v}" for k, v in source.not_rendered.items())
        print(f"not rendered by the C backend: {asked}")


def bench(args) -> None:
    if not Target.parse(args.target).is_host:
        raise ValueError(f"bench runs kernels on this machine: --target must be host, not {args.target!r}")
    options = _bench_options(args)
    case = measuring.case(args.op, options)
    variants = case.variants(args.algorithm, options)
    shapes = args.shape or [(1024, 1024)]
    for shape in shapes:   # before the peers load (torch takes seconds)
        case.check(shape, options)
    peer_fns = _peers(measuring, args.op, args.peers, options)
    label = " ".join(filter(None, [str(args.op), options.describe()]))
    rows = []
    for shape in shapes:
        results = measuring.measure(args.op, shape, variants, peer_fns, budget=args.budget, dtype=args.dtype,
                                    out_dtype=args.out_dtype, threads=args.threads, options=options)
        numpy_speed = next((r.el_per_ns for r in results if r.name == "numpy"), None)
        on = "one thread" if args.threads == 1 else f"softgen on up to {args.threads} threads, peers on one"
        print(f"{label} {shape[0]}x{shape[1]} {_dtypes_label(args)}, {on} (elements/ns)")
        for r in results:
            ratio = f"  {r.el_per_ns / numpy_speed:5.2f}x numpy" if numpy_speed else ""
            print(f"  {r.name:>30} {r.el_per_ns:8.3f}{ratio}")
            rows.append({"op": str(args.op), "options": options.describe(), "rows": shape[0], "n": shape[1],
                         "dtype": _dtypes_label(args), "name": r.name, "el_per_ns": f"{r.el_per_ns:.4f}",
                         "seconds": f"{r.seconds:.6g}"})
    if args.output:
        with open(args.output, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _bench_options(args) -> measuring.Options:
    return measuring.Options(temperature=args.temperature, sink=args.sink, where=args.where, phi=args.phi,
                             k=args.k, order=args.order)


def tune(args) -> None:
    if not Target.parse(args.target).is_host:
        raise ValueError(f"tune times kernels on this machine: --target must be host, not {args.target!r}")
    path = args.wisdom or tuning.wisdom_path()
    results = tuning.tune(tuple(dict.fromkeys(args.op or [ops.SOFTMAX.name])), shapes=args.shape or tuning.DEFAULT_SHAPES,
                          budget=args.budget, path=path, progress=not args.quiet, dtype=args.dtype,
                          out_dtype=args.out_dtype)
    for band, (choice, speed) in results.items():
        print(f"  {band:<32} {speed:7.3f} el/ns  {choice.describe()}")
    print(f"wrote {path}")


def warmup(args) -> None:
    """Build the kernels the ops run for these shapes now, into the kernel cache, so that
    later processes find them (their first call then costs a file read, not a compile)."""
    for op in dict.fromkeys(args.op or [ops.SOFTMAX.name]):
        for rows, n in args.shape:
            start = time.perf_counter()
            kernel = kernel_for_shape(op, rows, n, args.algorithm, args.dtype, args.out_dtype)
            built = tuning.Choice(kernel.algorithm, kernel.schedule).describe()
            print(f"{op} {rows}x{n} {_dtypes_label(args)}: {built} ({time.perf_counter() - start:.2f} s)")
    print(f"kernel cache: {kernel_cache.directory()}")


def cache(args) -> None:
    if args.action == "clear":
        print(f"removed {kernel_cache.clear()} kernels from {kernel_cache.directory()}")
        return
    info = kernel_cache.info()
    print(f"directory: {info.directory}{'' if info.enabled else ' (off: SOFTGEN_CACHE=0)'}")
    print(f"kernels:   {info.entries}")
    print(f"size:      {info.bytes / 2**20:.1f} MB of at most {info.max_bytes / 2**20:.0f} MB "
          f"(SOFTGEN_CACHE_MAX_MB)")


def _peers(measuring, op, names: str | None, options) -> dict:
    if names is None:
        return measuring.case_peers(op, options)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = measuring.case(op, options).peers
    unknown = [name for name in wanted if name not in known]
    if unknown:   # (said without importing every peer library)
        raise ValueError(f"unknown peer(s) {', '.join(unknown)} for {op}; its peers: {', '.join(known)}")
    found = measuring.case_peers(op, options, wanted)
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ValueError(f"peer(s) {', '.join(missing)} not installed; available for {op}: "
                         f"{', '.join(measuring.case_peers(op, options)) or 'none'}")
    return found


def _shape(text: str) -> tuple[int, int]:
    rows, x, n = text.lower().partition("x")
    try:
        shape = (int(rows), int(n))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not ROWSxN (e.g. 1024x1024)") from None
    if x != "x" or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not ROWSxN with positive sizes")
    return shape


def _schedule(text: str) -> Schedule | str:
    """--schedule: auto:ROWSxN as it is (generate and emit_c resolve it), JSON, or a JSON file."""
    try:
        if text.startswith(tuning.AUTO):
            tuning.auto_shape(text)
            return text
        if text.lstrip().startswith("{"):
            return Schedule.from_json(text)
        return Schedule.from_json(Path(text).read_text())
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


# --- the table of commands -------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def _info_arguments(p):
    _add_target_argument(p)
    p.add_argument("--cpus", action="store_true", help="also list the CPU names LLVM accepts")


def _emit_arguments(file: str, file_in_directory: str, default: str):
    def add(p):
        _add_kernel_arguments(p, "softgen_<op>_<algorithm>, then _<operand> per input operand and "
                                 "_zero_empty with --empty-rows zero",
                              f"a file ({file}) or a directory for {file_in_directory} (default: {default})")
        _add_dtype_arguments(p)
        _add_target_argument(p)
    return add


def _emit_c_arguments(p):
    _add_kernel_arguments(p, "softgen_<op>_<algorithm>, then _<operand> per input operand, _zero_empty with "
                             "--empty-rows zero, and _<dtype>[_<out-dtype>]_<isa>",
                          "a file (FILE.c, its header FILE.h beside it) or a directory for <name>.c "
                          "and <name>.h (default: the current directory)")
    _add_dtype_arguments(p)
    p.add_argument("--isa", choices=tuple(ISAS), default="scalar",
                   help="the C flavour to write (default: %(default)s)")
    p.add_argument("--chunks", action="store_true",
                   help="the chunk entry points instead (rows cut into chunks of columns by the caller's "
                        "threads: each pass, the merges of their states; see the header)")


def _bench_arguments(p):
    _add_op_argument(p, ops.NAMES + tuple(measuring.FAMILY),
                     help="a registry op, or one of the family's entry points: softmax_backward and "
                          "log_softmax_backward (of y = softmax(x) and a random dy), cross_entropy (mean, a "
                          "random label per row), topk_softmax (default: %(default)s)")
    p.add_argument("--algorithm", choices=algorithms.ALGORITHMS + tuple(algorithms.OWN_OPERANDS) + ("auto", "all"),
                   default="all", help="softgen variant(s) to time (default: %(default)s: the algorithms and "
                                       "auto; the family's entry points run their own choice, auto)")
    _add_dtype_arguments(p)
    _add_target_argument(p)
    p.add_argument("--shape", type=_shape, action="append",
                   help="ROWSxN, may be repeated (default: 1024x1024)")
    p.add_argument("--peers", help="comma-separated peers to time (default: every installed one)")
    p.add_argument("--budget", type=_positive_float, default=0.3,
                   help="seconds of timing per variant and shape (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="softgen's threads (default: %(default)s; the peers run on one)")
    p.add_argument("-o", "--output", help="also write the results as CSV")
    _bench_variant_arguments(p)


def _bench_variant_arguments(p):
    """The variant options bench times (softgen.bench.Options): the peers compute the same."""
    g = p.add_argument_group("variants (softmax, log_softmax, logsumexp; --temperature also topk_softmax)")
    g.add_argument("--temperature", type=_positive_float, metavar="T", help="op(x / T)")
    g.add_argument("--sink", action="store_true", help="a zero sink per row (softmax1)")
    g.add_argument("--where", choices=tuple(measuring.MASKS),
                   help="a mask: causal (np.tri(q, n, n - q), q = min(rows, n), over x as [rows/q, q, n]: rows "
                        "at most n or a multiple of it) or random (half the elements, each row's first kept)")
    g.add_argument("--phi", type=float, help="with --algorithm unified_max: its phi (default: learned, "
                                             "softgen.LearnedPhi)")
    g = p.add_argument_group("topk_softmax")
    g.add_argument("--k", type=_positive_int, help=f"the experts kept per row (default: {measuring.TOPK_K})")
    g.add_argument("--order", choices=[o.value for o in algorithms.Order],
                   help="default: topk_then_softmax")


def _tune_arguments(p):
    p.add_argument("--op", choices=ops.NAMES, action="append",
                   help=f"op to tune, may be repeated (default: {ops.SOFTMAX.name})")
    _add_dtype_arguments(p)
    _add_target_argument(p)
    p.add_argument("--shape", type=_shape, action="append",
                   help="ROWSxN, may be repeated; one per band counts (default: a spread of bands)")
    p.add_argument("--budget", type=_positive_float, default=0.05,
                   help="seconds of timing per candidate (default: %(default)s)")
    p.add_argument("--wisdom", help=f"wisdom file to update (default: ${tuning.WISDOM_ENV}, else "
                                    f"{tuning.user_wisdom_path()})".replace("%", "%%"))
    p.add_argument("--quiet", action="store_true",
                   help="no progress (a bar on a terminal, else a line per band tuned, on stderr)")


def _warmup_arguments(p):
    p.add_argument("--op", choices=ops.NAMES, action="append",
                   help=f"op to build, may be repeated (default: {ops.SOFTMAX.name})")
    p.add_argument("--algorithm", choices=algorithms.ALGORITHMS + ("auto",), default="auto",
                   help="default: %(default)s (the kernel softmax & co. run for the shape)")
    _add_dtype_arguments(p)
    p.add_argument("--shape", type=_shape, action="append", required=True, help="ROWSxN, may be repeated")


def _cache_arguments(p):
    p.add_argument("action", choices=("info", "clear"), help="show the cache's place and size, or empty it")


COMMANDS = (
    Command("info", "the host (or --target): CPU, features, vector width, LLVM version",
            _info_arguments, info),
    Command("emit-asm", "write a kernel's assembly (to stdout without -o)",
            _emit_arguments("FILE.s", "<name>.s", "stdout, also '-o -'"), emit_asm),
    Command("emit-obj", "write a kernel as an object file (.o)",
            _emit_arguments("FILE.o", "<name>.o", "the current directory"), emit_obj),
    Command("emit-so", "link a kernel into a shared library (.so) with the system cc",
            _emit_arguments("FILE.so", "lib<name>.so", "the current directory"), emit_so),
    Command("emit-c", "write a kernel as portable C (softgen.emit_c)", _emit_c_arguments, emit_c),
    Command("bench", "time an op, or one of the family's entry points, side by side with numpy and the "
            "installed peers computing the same (elements/ns of x)",
            _bench_arguments, bench),
    Command("tune", "time candidate kernels per row-length band and save the winners as wisdom "
            "(algorithm='auto' uses them)", _tune_arguments, tune),
    Command("warmup", "build the kernels for given shapes into the kernel cache (later processes "
            "then start without compiling)", _warmup_arguments, warmup),
    Command("cache", "the on-disk kernel cache: where it is and its size, or clear it",
            _cache_arguments, cache),
)


def build_parser(commands=COMMANDS) -> argparse.ArgumentParser:
    parser = _Parser(prog="softgen", description="Generate softmax-family kernels.")
    parser.add_argument("--version", action="version", version=f"softgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run, parser=p)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "param"):
            _with_params(args)
        args.run(args)
    except (ValueError, TypeError, NotImplementedError, OSError) as e:
        if isinstance(e, BrokenPipeError):   # `softgen emit-asm | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        args.parser.error(_one_line(e))
    except RuntimeError as e:
        print(f"{args.parser.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
