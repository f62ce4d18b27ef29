"""softgen: a compiler-style code generator for softmax-family kernels.

Layers, bottom to top (a module imports only from its own layer or those below it, never
from above, not even inside a function; tests/test_layering.py checks this):

  base      version, dtypes, timing, targets, ops, ir, numerics, algorithms, chunks (a
            program as one kernel per pass, for rows split into chunks)
  lower     lower/ (the schedule, per-pass plans, the loop IR and the lowering to it)
  backends  backends/c.py, backends/llvm/
  runtime   runtime.py (JIT kernels, calling them on arrays), threads.py (rows split over a
            pool of threads), split.py (rows cut into chunks when they are fewer than threads),
            masks.py (where= masks that keep a prefix of each row, found natively)
  tuning    tune.py (the built-in rule, wisdom, the tuner)
  entry     api.py (softmax & co.), artifacts.py (generate, emit_c with auto schedules),
            scipy.py (SciPy's signatures and defaults: from softgen import scipy as sp),
            dask.py (the ops on dask arrays chunked along any axis; optional),
            cross_entropy.py (the loss from logits, one-shot or a chunk of classes at a time),
            topk.py (top-k gating: the k largest logits of each row and their weights)
  tools     bench.py, cli.py, __main__.py, torch.py (softgen's ops in PyTorch), this package
"""
from . import scipy, tune
from .algorithms import ALGORITHMS, OPS
from .ops import OpSpec
from .api import Kernel, LearnedPhi, compile, log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward, softplus_normalize
from .artifacts import Artifact, emit_c, generate
from .cross_entropy import CrossEntropyChunks, cross_entropy, cross_entropy_backward
from .topk import topk_softmax
from .backends.c import CSource
from .ir import VerifyError
from .targets import Target
from .threads import get_num_threads, set_num_threads, threadpool_info
from .version import __version__

__all__ = ["ALGORITHMS", "OPS", "OpSpec", "Kernel", "Target", "VerifyError", "compile", "log_softmax",
           "log_softmax_backward", "logsumexp", "softmax", "softmax_backward", "softplus_normalize", "__version__"]
__all__ += ["Artifact", "generate", "CrossEntropyChunks", "cross_entropy", "cross_entropy_backward"]
__all__ += ["CSource", "emit_c", "topk_softmax"]
__all__ += ["get_num_threads", "set_num_threads", "threadpool_info"]
__all__ += ["tune"]  # softgen.tune(op, shapes=...) and softgen.tune.choose(...)
# softgen.scipy (scipy.special's signatures) stays out of __all__: a star import would shadow scipy
