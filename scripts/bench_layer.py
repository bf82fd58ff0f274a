"""Benchmark of one KAN layer: forward, fwd+bwd (params; params and inputs), compiled memory.

Every case is timed next to the equal-contraction dense matmul ``(batch, n*(G+k+1)) @ (n*(G+k+1),
o)`` and an MLP (``n -> h -> o``, SiLU, ``h`` chosen for the same parameter count), interleaved
in one process (round robin, best of rounds), so ratios are robust on a noisy machine.

Modes: ``fwd`` forward only; ``p`` forward + backward w.r.t. parameters (a first layer); ``px``
w.r.t. parameters and inputs (a hidden layer). The loss is ``sum(y * c)`` with a fixed random
``c`` (a constant cotangent would let XLA skip work).

Output: one JSON object per line on stdout (``kind``: ``time``, ``memory``, ``ratio``, ``env``).

Examples::

    python scripts/bench_layer.py --quick                 # acceptance case, ~2 min on 2 CPU cores
    python scripts/bench_layer.py --peers --quick         # + jaxKAN / efficient-kan when installed
    python scripts/bench_layer.py --batch=1024,8192 --width=64,256 --grid=5,10,20,50,100
    python scripts/bench_layer.py --dtype=bfloat16 --batch=65536 --width=1024   # accelerators
    python scripts/bench_layer.py --quick --bases=chebyshev,fourier,rbf --paths=auto --memory-case=
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kan_jax import functional as F  # noqa: E402
from kan_jax import kernels  # noqa: E402


def emit(**kw):
    print(json.dumps(kw), flush=True)


# --------------------------------------------------------------------------- candidates


def loss_fn(apply_fn):
    def loss(p, x, c):
        return jnp.sum(apply_fn(p, x).astype(jnp.float32) * c)

    return loss


def make_steps(apply_fn, p, x, c):
    """Jitted fwd / p / px functions and their args."""
    loss = loss_fn(apply_fn)
    fwd = jax.jit(apply_fn)
    gp = jax.jit(jax.grad(loss, argnums=0))
    gpx = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return {"fwd": (fwd, (p, x)), "p": (gp, (p, x, c)), "px": (gpx, (p, x, c))}


def kan_case(batch, n, o, grid, order, dtype, adaptive, path, uniform=None, seed=0, basis="bspline"):
    rng = np.random.default_rng(seed)
    params, knots, mask = F.init_layer(jax.random.key(seed), n, o, grid_size=grid, spline_order=order, basis=basis)
    params = {k: jnp.asarray(rng.normal(size=v.shape) * 0.1, v.dtype) for k, v in params.items()}
    x = jnp.asarray(np.tanh(rng.normal(size=(batch, n))), dtype)
    if adaptive:
        params, knots = F.update_grid(params, knots, x.astype(jnp.float32), order=order, grid_eps=0.02)
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    c = jnp.asarray(rng.normal(size=(batch, o)), jnp.float32)

    def apply_fn(p, xx):
        return F.apply(p, knots, mask, xx, order=order, basis=basis, path=path, uniform=uniform, dtype=dtype)

    return make_steps(apply_fn, params, x, c)


def dense_case(batch, n, o, grid, order, dtype, seed=0):
    rng = np.random.default_rng(seed)
    kdim = n * (grid + order + 1)
    feats = jnp.asarray(rng.normal(size=(batch, kdim)), dtype)
    w = jnp.asarray(rng.normal(size=(kdim, o)) * 0.01, dtype)
    c = jnp.asarray(rng.normal(size=(batch, o)), jnp.float32)
    acc = jnp.float32

    def apply_fn(p, xx):
        return jnp.dot(xx, p, preferred_element_type=acc)

    return make_steps(apply_fn, w, feats, c)


def mlp_case(batch, n, o, grid, order, dtype, seed=0):
    rng = np.random.default_rng(seed)
    n_params = n * o * (grid + order + 2) + o
    h = max(1, round((n_params - o) / (n + o + 1)))
    p = {
        "w1": jnp.asarray(rng.normal(size=(n, h)) / np.sqrt(n), dtype),
        "b1": jnp.zeros((h,), dtype),
        "w2": jnp.asarray(rng.normal(size=(h, o)) / np.sqrt(h), dtype),
        "b2": jnp.zeros((o,), dtype),
    }
    x = jnp.asarray(rng.normal(size=(batch, n)), dtype)
    c = jnp.asarray(rng.normal(size=(batch, o)), jnp.float32)

    def apply_fn(p, xx):
        hdn = jax.nn.silu(jnp.dot(xx, p["w1"], preferred_element_type=jnp.float32) + p["b1"]).astype(dtype)
        return jnp.dot(hdn, p["w2"], preferred_element_type=jnp.float32) + p["b2"]

    return make_steps(apply_fn, p, x, c), h


def jaxkan_case(batch, n, o, grid, order, dtype, seed=0):
    from flax import nnx
    from jaxkan.layers.Spline import SplineLayer

    layer = SplineLayer(n_in=n, n_out=o, k=order, G=grid, seed=seed)
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(np.tanh(rng.normal(size=(batch, n))), dtype)
    c = jnp.asarray(rng.normal(size=(batch, o)), jnp.float32)

    def apply_fn(p, xx):
        return nnx.merge(graphdef, p, rest)(xx)

    return make_steps(apply_fn, params, x, c)


def efficient_kan_subprocess(batch, n, o, grid, order, rounds):
    """efficient-kan (PyTorch) timings in a subprocess, on CUDA when torch sees a GPU.

    Returns ``(best seconds per mode, torch device)``, or ``(None, reason)`` when efficient-kan is
    not importable or the run failed.
    """
    code = f"""
import json, time, torch
from efficient_kan import KANLinear
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
torch.manual_seed(0)
layer = KANLinear({n}, {o}, grid_size={grid}, spline_order={order}).to(dev)
x0 = torch.tanh(torch.randn({batch}, {n}, device=dev)); c = torch.randn({batch}, {o}, device=dev)
def step(mode):
    x = x0.clone().requires_grad_(mode == 'px')
    layer.zero_grad(set_to_none=True)
    if mode == 'fwd':
        with torch.no_grad(): layer(x)
    else:
        (layer(x) * c).sum().backward()
best = {{}}
for m in ('fwd', 'p', 'px'): step(m); step(m)
sync()
for r in range({rounds}):
    for m in ('fwd', 'p', 'px'):
        t = time.perf_counter(); [step(m) for _ in range(5)]; sync(); dt = (time.perf_counter() - t) / 5
        best[m] = min(best.get(m, 1e9), dt)
print(json.dumps({{"best": best, "device": dev}}))
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    except Exception as e:  # noqa: BLE001
        return None, repr(e)
    if out.returncode != 0:
        return None, (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["best"], res["device"]


def temp_bytes(fn, args):
    try:
        ma = fn.lower(*args).compile().memory_analysis()
        return int(ma.temp_size_in_bytes) if ma is not None else None
    except Exception:  # noqa: BLE001
        return None


def time_interleaved(cands, rounds, min_time):
    """cands: name -> (fn, args). Round robin; per round, each fn runs >= min_time; best per-call."""
    reps = {}
    for name, (fn, args) in cands.items():
        jax.block_until_ready(fn(*args))
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        dt = max(time.perf_counter() - t, 1e-6)
        reps[name] = max(1, int(min_time / dt))
    best = {name: float("inf") for name in cands}
    for _ in range(rounds):
        for name, (fn, args) in cands.items():
            t = time.perf_counter()
            for _ in range(reps[name]):
                out = fn(*args)
            jax.block_until_ready(out)
            best[name] = min(best[name], (time.perf_counter() - t) / reps[name])
    return best


# --------------------------------------------------------------------------- main


def run_config(args, batch, n, o, grid, dtype_name):
    dtype = jnp.dtype(dtype_name)
    order = args.order
    paths = args.paths.split(",")
    cases = {}
    for adaptive in (False, True):
        tag = "adaptive" if adaptive else "uniform"
        for path in paths:
            if adaptive and path in ("uniform", "local_uniform"):
                continue
            cases[f"kan/{tag}/{path}"] = kan_case(batch, n, o, grid, order, dtype, adaptive, path)
    for basis in filter(None, args.bases.split(",")):  # the other families: basis values + one contraction
        cases[f"kan/{basis}"] = kan_case(batch, n, o, grid, order, dtype, False, "auto", basis=basis)
    cases["dense"] = dense_case(batch, n, o, grid, order, dtype)
    cases["mlp"], hidden = mlp_case(batch, n, o, grid, order, dtype)
    if args.peers:
        try:
            cases["jaxkan"] = jaxkan_case(batch, n, o, grid, order, dtype)
        except ImportError:
            emit(kind="skip", peer="jaxkan", reason="not installed")
    base = dict(batch=batch, n_in=n, n_out=o, grid=grid, order=order, dtype=dtype_name)
    times = {}
    for mode in args.modes.split(","):
        cands = {name: steps[mode] for name, steps in cases.items()}
        best = time_interleaved(cands, args.rounds, args.min_time)
        times.update({(name, mode): t for name, t in best.items()})
        for name, t in best.items():
            mem = temp_bytes(*cands[name]) if args.memory else None
            emit(kind="time", impl=name, mode=mode, ms=round(t * 1e3, 4), temp_bytes=mem, **base,
                 **({"mlp_hidden": hidden} if name == "mlp" else {}))
        for name, t in best.items():
            if name.startswith("kan/") or name == "jaxkan":
                emit(kind="ratio", impl=name, mode=mode, vs="dense", ratio=round(t / best["dense"], 3), **base)
    if args.peers and dtype_name == "float32":
        ek, where = efficient_kan_subprocess(batch, n, o, grid, order, args.rounds)
        if ek is None:
            emit(kind="skip", peer="efficient-kan", reason=where)
        else:
            for mode, t in ek.items():
                emit(kind="time", impl="efficient-kan", mode=mode, ms=round(t * 1e3, 4), torch_device=where, **base)
                if ("kan/uniform/auto", mode) in times:
                    emit(kind="ratio", impl="kan/uniform/auto", mode=mode, vs="efficient-kan",
                         ratio=round(times[("kan/uniform/auto", mode)] / t, 3), **base)
    return times


def memory_config(args, batch, n, o, grid, dtype_name):
    """Compiled temp memory of a training step (p and px), vs one (batch, n, G+k) float32 tensor."""
    dtype = jnp.dtype(dtype_name)
    basis_bytes = batch * n * (grid + args.order) * 4
    for path in args.paths.split(","):
        for adaptive in (False, True):
            if adaptive and path in ("uniform", "local_uniform"):
                continue
            steps = kan_case(batch, n, o, grid, args.order, dtype, adaptive, path)
            # "p"/"px": gradients of a linear loss (no forward value needed, so XLA drops the forward
            # contraction); "step_p"/"step_px": a training step, value_and_grad of the MSE.
            apply_fn, (p, x) = steps["fwd"]

            def mse(p, x, apply_fn=apply_fn):
                return jnp.mean(jnp.square(apply_fn(p, x).astype(jnp.float32)))

            steps["step_p"] = (jax.jit(jax.value_and_grad(mse)), (p, x))
            steps["step_px"] = (jax.jit(jax.value_and_grad(mse, argnums=(0, 1))), (p, x))
            for mode in ("p", "px", "step_p", "step_px"):
                tb = temp_bytes(*steps[mode])
                emit(kind="memory", impl=f"kan/{'adaptive' if adaptive else 'uniform'}/{path}", mode=mode,
                     batch=batch, n_in=n, n_out=o, grid=grid, dtype=dtype_name, temp_bytes=tb,
                     basis_bytes=basis_bytes, ratio=None if tb is None else round(tb / basis_bytes, 3))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1024")
    ap.add_argument("--width", default="64", help="n_in = n_out, comma-separated")
    ap.add_argument("--grid", default="5,100")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--dtype", default="float32", help="comma-separated: float32,bfloat16")
    ap.add_argument("--paths", default="auto,general,local_general,reference",
                    help=f"KAN paths: auto, reference, {', '.join(kernels.PATHS)}")
    ap.add_argument("--modes", default="fwd,p,px")
    ap.add_argument("--bases", default="", help="other basis families to time beside the B-spline paths, e.g. "
                    "chebyshev,fourier,rbf (kan_jax.bases)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per candidate per round")
    ap.add_argument("--memory", action="store_true", help="also report temp memory of every timed case")
    ap.add_argument("--memory-case", default="8192,256,10,50",
                    help="batch,width,grid[,grid...] of the training-step memory check ('' to skip)")
    ap.add_argument("--memory-only", action="store_true", help="only the training-step memory check")
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--quick", action="store_true", help="acceptance case only, fewer rounds")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.width, args.grid, args.rounds = "1024", "64", "5,100", 5
    emit(kind="env", jax=jax.__version__, backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
         platform=platform.platform(), cpu=_cpu_model(), n_cpu=os.cpu_count(), argv=sys.argv[1:])
    for dtype_name in args.dtype.split(","):
        for batch in ([] if args.memory_only else map(int, args.batch.split(","))):
            for n in map(int, args.width.split(",")):
                grids = sorted(map(int, args.grid.split(",")))
                times = {grid: run_config(args, batch, n, n, grid, dtype_name) for grid in grids}
                # Grid scaling: time at each larger G over time at the smallest, same impl and mode.
                for grid in grids[1:]:
                    for key, t in times[grid].items():
                        if key in times[grids[0]]:
                            emit(kind="ratio", impl=key[0], mode=key[1], vs=f"grid={grids[0]}", ratio=round(t / times[grids[0]][key], 3),
                                 batch=batch, n_in=n, n_out=n, grid=grid, order=args.order, dtype=dtype_name)
        if args.memory_case:
            b, w, *grids = map(int, args.memory_case.split(","))
            for g in grids:
                memory_config(args, b, w, w, g, dtype_name)


def _cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
