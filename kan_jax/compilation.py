"""Compile options by the kind of program: quick compiles for programs that run rarely.

On XLA:CPU a small program costs far more to compile than to run: a grid update of a
``[2, 5, 1]`` KAN compiles in ~0.5 s and runs in ~2 ms, and a pipeline such as hellokan
compiles ~140 programs, most of them run a handful of times (docs/PERFORMANCE.md). Programs
of that kind (``quick_jit``: parameter init, grid updates, the training loop's evaluations)
compile with ``QUICK_CPU_OPTIONS`` on the CPU backend: no LLVM optimization and XLA's
classic elemental emitters instead of the MLIR fusion emitters, 3-5x faster to compile,
1.5-3x slower to run. Hot programs (the layer forward, the training loop) keep XLA's defaults.
On other backends ``quick_jit`` is plain ``jax.jit``.

Inside another ``jax.jit`` a ``quick_jit`` function is inlined like any jitted function and
compiles with the outer program's options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

__all__ = ["QUICK_CPU_OPTIONS", "quick_options", "quick_jit"]

# XLA DebugOptions fields (``jax.jit(..., compiler_options=...)``).
QUICK_CPU_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def quick_options(backend: str | None = None) -> dict | None:
    """``QUICK_CPU_OPTIONS`` on the CPU backend (default: ``jax.default_backend()``), else None."""
    backend = backend or jax.default_backend()
    return dict(QUICK_CPU_OPTIONS) if backend == "cpu" else None


def quick_jit(fun: Callable | None = None, **jit_kwargs) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` compiled with ``quick_options()`` (decorator or call).

    The backend is read at the first call (not at import), so importing never initializes JAX.
    """
    if fun is None:
        return functools.partial(quick_jit, **jit_kwargs)
    jitted: dict[str, Callable] = {}

    def get(traced: bool):
        backend = "traced" if traced else jax.default_backend()
        f = jitted.get(backend)
        if f is None:
            options = None if traced else quick_options(backend)
            f = jitted[backend] = jax.jit(fun, compiler_options=options, **jit_kwargs)
        return f

    @functools.wraps(fun)
    def call(*args, **kwargs):
        # Under a trace (inside another jit, vmap, grad, eval_shape) the call is inlined into the
        # outer program, which JAX only allows for a jit without compiler options.
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs)))
        return get(traced)(*args, **kwargs)

    call.lower = lambda *args, **kwargs: get(False).lower(*args, **kwargs)  # as jax.jit's (compile ahead)
    return call
