"""softgen.dask on a LocalCluster: an array larger than each worker's memory limit, chunked
along the reduced axis, normalized chunk by chunk.  Prints the array size, chunks, wall
time per op, and each worker's peak resident memory.

    python benchmarks/dask_run.py [--rows 24] [--n 2^24] [--chunk 2^21] [--memory 1.5GB]
"""
import argparse
import resource
import time

import numpy as np
import dask.array as da
import distributed

import softgen
import softgen.dask as sd


def power(text: str) -> int:
    base, _, exp = text.partition("^")
    return int(base) ** int(exp) if exp else int(base)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=24)
    p.add_argument("--n", type=power, default=2 ** 24)
    p.add_argument("--chunk", type=power, default=2 ** 21, help="elements per chunk along the row")
    p.add_argument("--memory", default="1.5GB", help="memory limit per worker (dask spills past 60%% of it)")
    args = p.parse_args()
    x = da.random.default_rng(0).standard_normal((args.rows, args.n), chunks=(2, args.chunk), dtype=np.float32) * 20
    print(f"x: {args.rows} x {args.n} float32 = {x.nbytes / 2**20:.0f} MiB in {x.npartitions} chunks of "
          f"{x.chunksize} ({np.prod(x.chunksize) * 4 / 2**20:.0f} MiB); 2 workers of {args.memory}")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.memory,
                                  dashboard_address=None, silence_logs=40) as cluster, distributed.Client(cluster) as client:
        client.run(lambda: softgen.logsumexp(np.zeros((1, 8), np.float32)))   # imports, kernel cache
        x = x.persist()
        distributed.wait(x)
        for name, result in [("logsumexp", sd.logsumexp(x)), ("softmax (row sums)", sd.softmax(x).sum(axis=-1)),
                             ("log_softmax (max)", sd.log_softmax(x).max(axis=-1))]:
            start = time.perf_counter()
            value = result.compute()
            seconds = time.perf_counter() - start
            print(f"  {name:<20} {seconds:6.2f} s  {x.size / seconds / 1e9:5.2f} el/ns  e.g. {value[:2]}")
        peaks = client.run(peak_rss_mb)
        print("  peak resident memory per worker: " + ", ".join(f"{mb:.0f} MiB" for mb in peaks.values()))


if __name__ == "__main__":
    main()
