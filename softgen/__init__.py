"""softgen: a compiler-style code generator for softmax-family kernels."""
from .algorithms import ALGORITHMS, OPS
from .ops import OpSpec
from .api import Kernel, compile, log_softmax, logsumexp, softmax
from .backends.c import CSource, emit_c
from .artifacts import Artifact, generate
from .ir import VerifyError
from .targets import Target

__version__ = "0.1.0"
__all__ = ["ALGORITHMS", "OPS", "OpSpec", "Kernel", "Target", "VerifyError", "compile", "log_softmax",
           "logsumexp", "softmax", "__version__"]
__all__ += ["Artifact", "generate"]
__all__ += ["CSource", "emit_c"]
from . import tune  # noqa: E402  softgen.tune(op, shapes=...) and softgen.tune.choose(...)
__all__ += ["tune"]
