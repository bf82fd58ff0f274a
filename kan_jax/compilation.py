"""Compile options by the kind of program: quick compiles for programs that run rarely.

This module is the one place that decides how a program is compiled; the algorithms only say
which of their programs run rarely. On XLA:CPU a small program costs far more to compile than to
run: a grid update of a ``[2, 5, 1]`` KAN compiles in ~0.5 s and runs in ~2 ms
(docs/PERFORMANCE.md). Programs of that kind (``quick_jit``: parameter init, grid updates, the
L-BFGS start, the training loop's evaluations) compile with ``QUICK_CPU_OPTIONS`` on the CPU
backend: no LLVM optimization and XLA's classic elemental emitters instead of the MLIR fusion
emitters, 2-4x faster to compile, 1.5-3x slower to run. Hot programs (the layer forward, the
training chunk) keep XLA's defaults. On other backends ``quick_jit`` is plain ``jax.jit``.

Calls whose inputs hold more than ``QUICK_MAX_INPUT_ELEMENTS`` elements in all use the
optimized program: their runs, not the compile, dominate. The choice depends only on the input
shapes, never on timings or call counts, so a resumed run computes bitwise what an
uninterrupted one does.

Inside another ``jax.jit`` these functions are inlined like any jitted function and compile
with the outer program's options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from flax import nnx

__all__ = ["QUICK_CPU_OPTIONS", "QUICK_MAX_INPUT_ELEMENTS", "quick_options", "quick_jit", "quick_module_fn"]

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
    initializes JAX.
    """
    if fun is None:
        return functools.partial(quick_jit, **jit_kwargs)

    def options(backend, leaves):
        size = sum(int(getattr(leaf, "size", 0) or 0) for leaf in leaves if hasattr(leaf, "dtype"))
        return quick_options(backend) if size <= QUICK_MAX_INPUT_ELEMENTS else None

    return _jit_with_options(fun, options, jit_kwargs)


def _jit_with_options(fun: Callable, options: Callable, jit_kwargs: dict) -> Callable:
    """``fun`` jitted with the compiler options ``options(backend, leaves)`` picks per call (None:
    XLA's defaults); one ``jax.jit`` per distinct choice. Under a trace the call is inlined into
    the outer program (JAX only allows that for a jit without compiler options)."""
    jitted: dict[tuple, Callable] = {}

    def pick(args, kwargs):
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            chosen = None
        else:
            chosen = options(jax.default_backend(), leaves)
        key = tuple(sorted(chosen.items())) if chosen else None
        f = jitted.get(key)
        if f is None:
            f = jitted[key] = jax.jit(fun, compiler_options=chosen, **jit_kwargs)
        return f

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return pick(args, kwargs)(*args, **kwargs)

    return call


def quick_module_fn(fn: Callable) -> Callable:
    """Decorator: ``fn(module, *args)`` as one ``quick_jit`` program per module structure.

    For queries of a whole network that run rarely and outside any jit (attribution scores, a
    diagram's curves, a formula check, the layer inputs of a grid extension): called eagerly,
    each layer's program and every small op between layers would compile on its own. ``fn``
    must not modify the module. Under a trace it is inlined like any jitted function.
    """
    programs: dict = {}

    @functools.wraps(fn)
    def call(module, *args):
        graphdef, state = nnx.split(module)
        prog = programs.get(graphdef)
        if prog is None:
            prog = programs[graphdef] = quick_jit(lambda state, *a: fn(nnx.merge(graphdef, state), *a))
        return prog(state, *args)

    return call
