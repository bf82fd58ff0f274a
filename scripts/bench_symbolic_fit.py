"""Benchmark: fit the whole symbolic library to every edge of a [4, 8, 1] KAN.

    python scripts/bench_symbolic_fit.py [--n 1000] [--grid 101] [--chunk 128]

Prints one JSON line per configuration: wall time after compilation (best of
3, host-side padding and canonical forms included) and the first call's time (compile
included) for one ``fit_affine_all`` call with E = 4*8 + 8*1 = 40 edges and N samples each.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import symbolic as sf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="4,8,1")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--grid", type=int, default=101)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--chunk", type=int, nargs="+", default=[128])
    ap.add_argument("--search-samples", type=int, nargs="+", default=[128])
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    e = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (e, args.n)).astype(np.float32)
    y = (np.sin(3 * x) + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)
    x, y = jnp.asarray(x), jnp.asarray(y)
    lib = sf.SYMBOLIC_LIB
    for chunk in args.chunk:
        for ss in args.search_samples:
            ss = None if ss <= 0 else ss
            kw = dict(grid_number=args.grid, iterations=args.iterations,
                      chunk_size=chunk, search_samples=ss)
            t0 = time.perf_counter()
            jax.block_until_ready(sf.fit_affine_all(x, y, lib, **kw))  # compiles
            first_s = time.perf_counter() - t0
            times = []
            for _ in range(3):  # the program compiled by the first call (the same shapes)
                t0 = time.perf_counter()
                jax.block_until_ready(sf.fit_affine_all(x, y, lib, **kw))
                times.append(time.perf_counter() - t0)
            _, r2 = sf.fit_affine_all(x, y, lib, **kw)
            print(json.dumps({
                "bench": "fit_affine_all", "widths": widths, "edges": e, "n": args.n,
                "n_functions": len(lib), "grid_number": args.grid,
                "iterations": args.iterations, "chunk_size": chunk,
                "search_samples": ss, "time_s": round(min(times), 4),
                "first_call_s": round(first_s, 2),
                "sin_r2_mean": float(r2[:, list(lib).index("sin")].mean()),
                "backend": jax.default_backend(), "n_cpu_devices": jax.device_count(),
            }), flush=True)


if __name__ == "__main__":
    main()
