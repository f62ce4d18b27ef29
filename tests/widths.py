"""The vector widths this host can run: the host CPU with its wider ISAs switched off, so
every width's code paths run here whatever the machine (a bug that only shows at 8 lanes
is still a bug)."""
from softgen.targets import Target, host

HOST = host()
# lanes -> LLVM features on top of the host CPU's (x86; other arches run their own width)
X86_WIDTH_FEATURES = {
    16: "+avx512f,+avx512vl,+avx512dq,+avx512bw,+avx2,+avx,+fma",
    8: "+avx2,+avx,+fma,-avx512f",
    4: "+sse4.2,-avx,-avx2,-fma,-avx512f",
}


def width_targets() -> dict:
    """lanes -> a host Target of that width, for each width this machine runs (no wider
    than the host as SOFTGEN_HOST_CPU / SOFTGEN_HOST_FEATURES present it)."""
    if HOST.arch != "x86_64":
        return {HOST.vector_width: HOST}
    out = {}
    for lanes, features in X86_WIDTH_FEATURES.items():
        target = Target(f"host-{lanes}", HOST.triple, HOST.cpu, features, is_host=True)
        if target.runs_here and lanes <= HOST.vector_width:   # SOFTGEN_HOST_FEATURES limits it
            assert target.vector_width == lanes
            out[lanes] = target
    return out
