"""Compile options by the kind of program: quick compiles for programs that run rarely.

On XLA:CPU a small program costs far more to compile than to run: a grid update of a
``[2, 5, 1]`` KAN compiles in ~0.5 s and runs in ~2 ms, and a pipeline such as hellokan
compiles ~140 programs, most of them run a handful of times (docs/PERFORMANCE.md). Programs
of that kind (``quick_jit``: parameter init, grid updates, the training loop's evaluations)
compile with ``QUICK_CPU_OPTIONS`` on the CPU backend: no LLVM optimization and XLA's
classic elemental emitters instead of the MLIR fusion emitters, 2-4x faster to compile,
1.5-3x slower to run. Hot programs (the layer forward, the training loop) keep XLA's defaults.
On other backends ``quick_jit`` is plain ``jax.jit``.

Calls whose inputs hold more than ``QUICK_MAX_INPUT_ELEMENTS`` elements in all use the
optimized program: their runs, not the compile, dominate. The choice depends only on the input
shapes, never on timings or call counts, so a resumed run computes bitwise what an
uninterrupted one does.

Inside another ``jax.jit`` a ``quick_jit`` function is inlined like any jitted function and
compiles with the outer program's options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

__all__ = ["QUICK_CPU_OPTIONS", "QUICK_MAX_INPUT_ELEMENTS", "quick_options", "quick_jit"]

# XLA DebugOptions fields (``jax.jit(..., compiler_options=...)``).
QUICK_CPU_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

# Calls whose array arguments hold more elements than this use the optimized program: their
# runs, not the compile, dominate (a grid update at batch 8192, 256 -> 256: 7.2 s for the quick
# first call, 2.8 s optimized, then 5.4 s against 2.2 s per call).
QUICK_MAX_INPUT_ELEMENTS = 1 << 20


def quick_options(backend: str | None = None) -> dict | None:
    """``QUICK_CPU_OPTIONS`` on the CPU backend (default: ``jax.default_backend()``), else None."""
    backend = backend or jax.default_backend()
    return dict(QUICK_CPU_OPTIONS) if backend == "cpu" else None


def quick_jit(fun: Callable | None = None, **jit_kwargs) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` compiled with ``quick_options()`` unless the inputs are large.

    Decorator or call. The backend is read at the first call (not at import), so importing never
    initializes JAX. ``.lower(...)`` lowers the program a call with those arguments runs (for
    compiling ahead).
    """
    if fun is None:
        return functools.partial(quick_jit, **jit_kwargs)
    jitted: dict[tuple[str, bool], Callable] = {}

    def get(backend: str, quick: bool):
        f = jitted.get((backend, quick))
        if f is None:
            options = quick_options(backend) if quick else None
            f = jitted[(backend, quick)] = jax.jit(fun, compiler_options=options, **jit_kwargs)
        return f

    def pick(args, kwargs):
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        # Under a trace (inside another jit, vmap, grad, eval_shape) the call is inlined into the
        # outer program, which JAX only allows for a jit without compiler options.
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return get("traced", False)
        backend = jax.default_backend()
        size = sum(int(getattr(leaf, "size", 0) or 0) for leaf in leaves if hasattr(leaf, "dtype"))
        return get(backend, quick_options(backend) is not None and size <= QUICK_MAX_INPUT_ELEMENTS)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return pick(args, kwargs)(*args, **kwargs)

    call.lower = lambda *args, **kwargs: pick(args, kwargs).lower(*args, **kwargs)  # the program a call runs
    return call
