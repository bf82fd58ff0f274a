"""The spline least-squares solve: ``kan_jax.splines._lstsq_householder`` against LAPACK's QR.

``fit_coef`` (grid updates, grid extension) solves one ridge-augmented system per input,
``a: (n, rows + m, m)``, ``b: (n, rows + m, out)``. The library's solve is Householder QR in plain
array ops (it replaces ``jnp.linalg.qr`` + ``solve_triangular``, whose LAPACK calls deadlock with
several CPU devices in one process; see its docstring). This prints one JSON line per shape:
``lapack_ms`` / ``householder_ms`` (best of ``--rounds`` interleaved rounds after one warm-up
call), ``*_compile_s`` (``lower().compile()``), ``max_rel_diff`` (max |difference| / max |c|).

    python scripts/bench_lstsq.py [--rounds 5]
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import splines

# (rows, n inputs, out columns, grid size G, dtype): a refined small KAN, a wide layer at a
# large batch, a long grid.
SHAPES = [(1000, 6, 4, 20, "float64"), (8192, 64, 64, 5, "float32"), (4096, 16, 16, 100, "float64"),
          (8192, 256, 256, 5, "float32")]


def lapack(a, b):
    q, r = jnp.linalg.qr(a)
    return jax.scipy.linalg.solve_triangular(r, jnp.swapaxes(q, -1, -2) @ b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    for rows, n, out, grid, dtype in SHAPES:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.uniform(-1, 1, (rows, n)), dtype)
        basis = jnp.moveaxis(splines.bspline_basis(x, splines.adaptive_knots(x, grid, 3), 3), 1, 0)
        m = basis.shape[-1]
        a = jnp.concatenate([basis, jnp.broadcast_to(1e-4 * jnp.eye(m, dtype=dtype), (n, m, m))], axis=1)
        b = jnp.asarray(rng.normal(size=(n, rows + m, out)), dtype)
        line = {"rows": rows, "n": n, "out": out, "m": m, "dtype": dtype, "backend": jax.default_backend()}
        fns, results = {}, {}
        for name, fn in (("lapack", jax.vmap(lapack)), ("householder", splines._lstsq_householder)):
            t0 = time.perf_counter()
            fns[name] = jax.jit(fn).lower(a, b).compile()
            line[f"{name}_compile_s"] = round(time.perf_counter() - t0, 3)
            results[name] = np.asarray(fns[name](a, b))
            line[f"{name}_ms"] = float("inf")
        for _ in range(args.rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn(a, b))
                line[f"{name}_ms"] = min(line[f"{name}_ms"], round((time.perf_counter() - t0) * 1e3, 2))
        ref = results["lapack"]
        line["max_rel_diff"] = float(np.max(np.abs(results["householder"] - ref)) / np.max(np.abs(ref)))
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
