"""Training step of a wide KAN on device meshes: speed, compile time, collectives, per-device memory.

One Adam step (``optax.adam(1e-3)``) on the MSE of a ``kan_jax.KAN`` against random targets,
written as a single ``jax.jit`` function ``(params, rest, opt_state, x, y) -> (params, opt_state,
loss)``: params and the rest of the model's state placed by ``kan_jax.train.sharding.place_state``
(the layers' partitioning metadata: output features over ``model``), ``x``/``y`` rows over ``data``
(``sharding.put_batch``), the optimizer state from ``jax.jit(optimizer.init)`` in its layout; ``out_shardings`` fixed to that input layout, params and optimizer state donated. This is
the step of ``kan_jax.train.loop.fit`` on a mesh without its loop, minibatch sampling and penalty;
like ``fit`` it is traced under ``jax.set_mesh(mesh)``.

The model is built as ``kan_jax.train.models.make_model`` builds it for training from
configs/default.py (``--model-sharding=alternate``, ``model.sharding``'s default; ``outputs`` is
``kan_jax.KAN``'s own default): an empty symbolic
table (``--symbolic-lib=default`` keeps ``KANLayer``'s own table, whose gated symbolic branch is
compiled into every step and its buffers counted in the memory, even though no edge is symbolic).
Adam's moments: ``--opt-layout=params`` (default) sharded like their params, as ``fit`` creates them
(``sharding.opt_state_shardings``); ``--opt-layout=replicated`` on every device. (Lines recorded
before 2026-12-05 say ``opt_layout: "init"``: the moments where ``jax.jit(optimizer.init)`` left
them, which was replicated.)

Per (mesh, dtype) one JSON line (``kind: "step"``) on stdout (and appended to ``--out``):

* ``ms_per_step``, ``steps_per_s``, ``samples_per_s``: best round after warm-up
  (``jax.block_until_ready`` on each round's last step), unless ``--compile-only``;
  ``loss_warmup``: the loss the last warm-up step returns (the same step on every mesh, so equal
  across meshes up to rounding), ``loss_end`` the last one timed;
* ``lower_s``, ``compile_s``: ``jax.jit(step).lower(...)`` and ``.compile()``;
* ``collectives``: instructions of each kind in the compiled (partitioned, per-device) HLO,
  ``compiled.as_text()``: ``all-reduce``, ``all-gather``, ``reduce-scatter``,
  ``collective-permute``, ``all-to-all``; an async pair (``all-reduce-start`` / ``-done``) counts
  once; an instruction inside a loop body counts once however often the loop runs;
  ``collectives_in_branches``: those of them inside ``conditional`` branches (run only when
  taken); ``collective_elements``: the elements those instructions produce, per kind;
* ``memory``: ``compiled.memory_analysis()`` per device in bytes: ``argument``, ``output``,
  ``alias`` (outputs written into donated arguments), ``temp``, ``generated_code``, ``peak``
  (as the backend reports it) and ``total = argument + output - alias + temp``; ``params_bytes``
  and ``batch_bytes`` (global sizes) to read them against;
* the mesh (``mesh``: the spec, ``mesh_sizes``, ``n_devices``), ``dtype``, ``widths``, ``grid``,
  ``batch``, ``opt_layout``, ``symbolic_lib``, ``model_sharding``, ``device_kind``, ``backend``, ``jax``, ``xla_flags``.

After each dtype, ``kind: "ratio"`` lines compare every mesh with ``data:1`` (same dtype, when it
was measured): ``memory_total``, ``memory_temp`` and ``memory_argument`` ratios, and
``samples_per_s``. A mesh needing more devices than exist gives a ``kind: "skip"`` line, a mesh
that fails a ``kind: "error"`` line. The devices of an ``N``-device mesh are the first ``N`` of
``jax.devices()``.

``--meshes``: meshes separated by ``,``; the axes of one mesh joined by ``+`` (``data:2+model:2``
is ``config.mesh = "data:2,model:2"``); an axis left out has size 1; ``-1`` takes every device.

With fake CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``) the script adds
``--xla_cpu_enable_concurrency_optimized_scheduler=false`` unless that flag is set: with XLA's
default CPU scheduler a ``model`` mesh's step deadlocks (jax 0.10.2: the devices wait in different
collectives until XLA aborts the process after 40 s). It changes the CPU schedule, hence the
``temp`` memory (docs/SCALING.md has both).

Examples::

    # CPU with 4 fake devices (they share the machine's cores: speed says nothing about scaling)
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python scripts/bench_scale.py \\
        --widths=64,256,256,10 --batch=4096 --meshes=data:1,data:2,data:4,model:4,data:2+model:2
    # the default wide size, memory and collectives only (no run)
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python scripts/bench_scale.py \\
        --compile-only --dtypes=float32 --meshes=data:1,model:4,data:4
    # one accelerator, the default wide size [256, 1024, 1024, 10], G = 10, batch 65536
    python scripts/bench_scale.py --meshes=data:1 --out=bench_scale.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# Fake CPU devices (--xla_force_host_platform_device_count): with XLA's concurrency-optimized CPU
# scheduler the step on a model mesh deadlocks once the backward's batch loop holds a collective
# (one device waits in an all-reduce, the others in an all-gather, until XLA aborts after 40 s);
# the plain scheduler runs. Set before JAX starts its backend.
_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" in _FLAGS and "xla_cpu_enable_concurrency_optimized_scheduler" not in _FLAGS:
    os.environ["XLA_FLAGS"] = (_FLAGS + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import kan_jax  # noqa: E402
from kan_jax.train import sharding  # noqa: E402

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")

_OUT_FH = None


def emit(**kw):
    line = json.dumps(kw)
    print(line, flush=True)
    if _OUT_FH is not None:
        _OUT_FH.write(line + "\n")
        _OUT_FH.flush()


# --------------------------------------------------------------------------- HLO and memory

# One HLO instruction: ``[ROOT ]%name = <shape> opcode(operands), attributes``. The opcode is the
# first word followed by "(" after the shape; operands are names (``%all-reduce.3``), never
# followed by "(". ``-start`` is the async form (its ``-done`` is not counted again).
_INSTR_RE = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.*?)\s(?P<op>[a-z][a-z0-9\-]*)\(")
_ARRAY_RE = re.compile(r"\b(?:pred|[su]\d+|f\d+|bf16|f8\w*|c\d+)\[([0-9,]*)\]")
# A computation's header line (``[ENTRY ]%name (params) -> shape {``) and the computations an
# instruction calls.
_COMP_RE = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\{\s*$")
_CALLS_RE = re.compile(r"\b(?:calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES_RE = re.compile(r"branch_computations=\{([^}]*)\}")


def count_collectives(hlo: str) -> dict:
    """The collectives of an HLO text: ``{"collectives": {kind: instructions}, "collective_elements":
    {kind: elements produced}, "collectives_in_branches": {kind: instructions}}``.

    ``collectives_in_branches`` counts those inside the branches of a ``conditional`` (and what
    those call): they run only when their branch is taken (the symbolic edges' ``lax.cond``).
    """
    counts = {k: 0 for k in COLLECTIVES}
    elems = {k: 0 for k in COLLECTIVES}
    per_comp: dict[str, dict] = {}
    calls: dict[str, set] = {}
    branch_roots: set = set()
    comp = None
    for line in hlo.splitlines():
        head = _COMP_RE.match(line)
        if head:
            comp = head.group(1)
            calls.setdefault(comp, set())
            continue
        for group in _BRANCHES_RE.findall(line):
            names = {n.strip().lstrip("%") for n in group.split(",") if n.strip()}
            branch_roots |= names
            if comp is not None:
                calls[comp] |= names
        if comp is not None:
            calls[comp] |= set(_CALLS_RE.findall(line))
            for name in re.findall(r"\b(?:true|false)_computation=%?([\w.\-]+)", line):
                branch_roots.add(name)
        m = _INSTR_RE.match(line)
        if not m:
            continue
        op = m.group("op")
        base = op[: -len("-start")] if op.endswith("-start") else op
        if base not in counts:
            continue
        counts[base] += 1
        per_comp.setdefault(comp, {k: 0 for k in COLLECTIVES})[base] += 1
        shapes = [math.prod(int(d) for d in dims.split(",") if d) for dims in _ARRAY_RE.findall(m.group("shape"))]
        # A plain op's (and all-reduce-start's) shape is its result(s); all-gather-start's is
        # (operands..., results...), collective-permute-start's (operand, result, contexts...).
        if op == "all-gather-start" and len(shapes) >= 2:
            shapes = shapes[len(shapes) // 2:]
        elif op == "collective-permute-start" and len(shapes) >= 2:
            shapes = shapes[1:2]
        elems[base] += sum(shapes)
    in_branches, todo = set(), list(branch_roots)
    while todo:
        name = todo.pop()
        if name not in in_branches:
            in_branches.add(name)
            todo.extend(calls.get(name, ()))
    branch_counts = {k: sum(per_comp.get(c, {}).get(k, 0) for c in in_branches) for k in COLLECTIVES}
    return {"collectives": counts, "collective_elements": elems, "collectives_in_branches": branch_counts}


def memory_stats(compiled) -> dict | None:
    """``compiled.memory_analysis()`` as a dict of bytes (per device), ``total`` added."""
    try:
        ma = compiled.memory_analysis()
    except Exception as err:  # noqa: BLE001  (not every backend implements it)
        return {"error": f"{type(err).__name__}: {err}"[:300]}
    if ma is None:
        return None
    fields = {"argument": "argument_size_in_bytes", "output": "output_size_in_bytes", "alias": "alias_size_in_bytes",
              "temp": "temp_size_in_bytes", "generated_code": "generated_code_size_in_bytes",
              "peak": "peak_memory_in_bytes"}
    out = {key: int(getattr(ma, attr)) for key, attr in fields.items() if getattr(ma, attr, None) is not None}
    if all(k in out for k in ("argument", "output", "temp")):
        out["total"] = out["argument"] + out["output"] - out.get("alias", 0) + out["temp"]
    return out


# --------------------------------------------------------------------------- meshes


def parse_meshes(spec: str) -> list[str]:
    """``"data:1,data:2+model:2"`` -> ``["data:1", "data:2,model:2"]`` (``config.mesh`` form)."""
    return [m.strip().replace("+", ",") for m in spec.split(",") if m.strip()]


def devices_needed(mesh_spec: str) -> int:
    """Devices a mesh spec uses (``-1``: all of them)."""
    sizes = [int(part.split(":", 1)[1]) for part in mesh_spec.split(",")]
    return jax.device_count() if -1 in sizes else math.prod(sizes)


# --------------------------------------------------------------------------- the step


def build(widths, grid, order, batch, dtype_name, mesh, seed, opt_layout="params", symbolic_lib="empty",
          model_sharding="outputs"):
    """The placed arrays and the jitted step on ``mesh``."""
    dtype = jnp.dtype(dtype_name)
    lib = {} if symbolic_lib == "empty" else None  # None: KANLayer's default table (SYMBOLIC_LIB)
    model = kan_jax.KAN(widths, grid_size=grid, spline_order=order, param_dtype=dtype, dtype=dtype, symbolic_lib=lib,
                        model_sharding=model_sharding, rngs=nnx.Rngs(seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = sharding.place_state(params, mesh)
    rest = sharding.place_state(rest, mesh)
    optimizer = optax.adam(1e-3)
    if opt_layout == "params":  # as kan_jax.train.loop.fit creates it
        shapes = jax.eval_shape(optimizer.init, params)
        out = sharding.opt_state_shardings(optimizer, shapes, params, mesh, lbfgs=False)
    else:  # every leaf replicated
        out = sharding.replicated(mesh)
    opt_state = jax.jit(optimizer.init, out_shardings=out)(params)
    rng = np.random.default_rng(seed)
    x = sharding.put_batch(rng.uniform(-1.0, 1.0, size=(batch, widths[0])).astype(dtype), mesh, what="x")
    y = sharding.put_batch(rng.normal(size=(batch, widths[-1])).astype(np.float32), mesh, what="y")

    def loss_fn(params, rest, x, y):
        pred = nnx.merge(graphdef, params, rest)(x)
        return jnp.mean(jnp.square(pred.astype(jnp.float32) - y))

    def step(params, rest, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, rest, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    shardings_of = lambda tree: jax.tree.map(lambda a: a.sharding, tree)  # noqa: E731
    fn = jax.jit(step, donate_argnums=(0, 2),
                 out_shardings=(shardings_of(params), shardings_of(opt_state), sharding.replicated(mesh)))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    params_bytes = sum(int(a.nbytes) for a in jax.tree.leaves(params))
    return fn, (params, rest, opt_state, x, y), n_params, params_bytes, int(x.nbytes + y.nbytes)


def time_steps(compiled, args, rounds, min_time, warmup):
    """Best seconds per step over ``rounds`` rounds (each of enough steps to last ``min_time``)."""
    params, rest, opt_state, x, y = args
    losses = []

    def run(n):
        nonlocal params, opt_state
        loss = None
        for _ in range(n):
            params, opt_state, loss = compiled(params, rest, opt_state, x, y)
        jax.block_until_ready((params, opt_state, loss))
        losses.append(float(loss))

    run(max(1, warmup))
    t = time.perf_counter()
    run(1)
    reps = max(1, int(min_time / max(time.perf_counter() - t, 1e-6)))
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        run(reps)
        best = min(best, (time.perf_counter() - t) / reps)
    return best, reps, losses


# --------------------------------------------------------------------------- main


def main():
    global _OUT_FH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="256,1024,1024,10", help="layer widths, comma-separated")
    ap.add_argument("--grid", type=int, default=10, help="grid intervals G")
    ap.add_argument("--order", type=int, default=3, help="spline order k")
    ap.add_argument("--batch", type=int, default=65536, help="global batch (rows split over data)")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="param_dtype = dtype, comma-separated")
    ap.add_argument("--meshes", default="data:1", help="meshes separated by ',', axes of one mesh by '+': "
                                                      "data:1,data:4,model:4,data:2+model:2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timing round")
    ap.add_argument("--warmup", type=int, default=2, help="steps before timing")
    ap.add_argument("--compile-only", action="store_true",
                    help="lower and compile only: memory and collectives, no timing")
    ap.add_argument("--opt-layout", choices=("params", "replicated"), default="params",
                    help="Adam's moments: 'params' sharded like their parameters (as kan_jax.train.loop.fit "
                         "creates them, sharding.opt_state_shardings), 'replicated' on every device")
    ap.add_argument("--symbolic-lib", choices=("empty", "default"), default="empty",
                    help="the layers' symbolic table: 'empty' as kan_jax.train.models.make_model builds models "
                         "for training (no symbolic edges: nothing traced), 'default' KANLayer's SYMBOLIC_LIB "
                         "(a gated branch per layer whose buffers count in the memory)")
    ap.add_argument("--model-sharding", choices=("outputs", "alternate"), default="alternate",
                    help="kan_jax.KAN(model_sharding=...): 'alternate' (configs/default.py's model.sharding) "
                         "pairs of layers split on outputs then inputs over 'model', 'outputs' every layer on "
                         "its outputs (kan_jax.KAN's own default)")
    ap.add_argument("--dump-hlo", default=None, help="write each compiled HLO text into this folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        _OUT_FH = open(args.out, "a")
    dev0 = jax.devices()[0]
    common = dict(jax=jax.__version__, backend=jax.default_backend(), device_kind=dev0.device_kind,
                  xla_flags=os.environ.get("XLA_FLAGS", ""))
    emit(kind="env", devices=jax.device_count(), platform=platform.platform(), n_cpu=os.cpu_count(),
         argv=sys.argv[1:], date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **common)
    meshes = parse_meshes(args.meshes)
    for dtype_name in args.dtypes.split(","):
        rows = {}
        for spec in meshes:
            base = dict(mesh=spec.replace(",", "+"), opt_layout=args.opt_layout, symbolic_lib=args.symbolic_lib,
                        model_sharding=args.model_sharding,
                        dtype=dtype_name, widths=widths, grid=args.grid, order=args.order, batch=args.batch, **common)
            try:
                need = devices_needed(spec)
                if need > jax.device_count():
                    emit(kind="skip", reason=f"needs {need} devices, {jax.device_count()} exist", **base)
                    continue
                sizes = sharding.parse_mesh(spec, need)
                mesh = sharding.make_mesh(sizes, devices=jax.devices()[:need])
                sizes = {a: int(mesh.shape[a]) for a in sharding.MESH_AXES}
                fn, fargs, n_params, params_bytes, batch_bytes = build(widths, args.grid, args.order, args.batch,
                                                                        dtype_name, mesh, args.seed, args.opt_layout,
                                                                        args.symbolic_lib, args.model_sharding)
                t = time.perf_counter()
                with jax.set_mesh(mesh):  # as loop.fit traces on a mesh (the kernels chunk local rows)
                    lowered = fn.lower(*fargs)
                lower_s = time.perf_counter() - t
                t = time.perf_counter()
                compiled = lowered.compile()
                compile_s = time.perf_counter() - t
                hlo = compiled.as_text()
                coll = count_collectives(hlo)
                if args.dump_hlo:
                    os.makedirs(args.dump_hlo, exist_ok=True)
                    name = "_".join((spec.replace(",", "+").replace(":", ""), dtype_name, args.opt_layout,
                                     args.symbolic_lib, args.model_sharding))
                    with open(os.path.join(args.dump_hlo, name + ".hlo.txt"), "w") as fh:
                        fh.write(hlo)
                rec = dict(kind="step", **base, mesh_sizes=sizes, n_devices=need, n_params=n_params,
                           params_bytes=params_bytes, batch_bytes=batch_bytes, lower_s=round(lower_s, 3),
                           compile_s=round(compile_s, 3), **coll, memory=memory_stats(compiled))
                if not args.compile_only:
                    sec, reps, losses = time_steps(compiled, fargs, args.rounds, args.min_time, args.warmup)
                    rec.update(ms_per_step=round(sec * 1e3, 4), steps_per_s=round(1.0 / sec, 3),
                               samples_per_s=round(args.batch / sec, 1), steps_per_round=reps, rounds=args.rounds,
                               loss_warmup=losses[0], loss_end=losses[-1])
                emit(**rec)
                rows[spec] = rec
                del fargs, compiled, lowered, fn
            except Exception as err:  # noqa: BLE001  (one failing mesh should not end the sweep)
                emit(kind="error", error=f"{type(err).__name__}: {err}"[:500], **base)
        ref = rows.get("data:1")
        if ref is None:
            continue
        for spec, rec in rows.items():
            out = dict(kind="ratio", vs="data:1", mesh=spec.replace(",", "+"), opt_layout=args.opt_layout,
                       symbolic_lib=args.symbolic_lib, model_sharding=args.model_sharding, dtype=dtype_name, widths=widths,
                       grid=args.grid, batch=args.batch, **common)
            m, r = rec.get("memory") or {}, ref.get("memory") or {}
            for key in ("total", "temp", "argument"):
                if m.get(key) is not None and r.get(key):
                    out[f"memory_{key}"] = round(m[key] / r[key], 4)
            if "samples_per_s" in rec and "samples_per_s" in ref:
                out["samples_per_s"] = round(rec["samples_per_s"] / ref["samples_per_s"], 3)
            emit(**out)
    if _OUT_FH is not None:
        _OUT_FH.close()


if __name__ == "__main__":
    main()
