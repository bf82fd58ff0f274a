"""Affine fitting of library functions to samples of one edge, and their ranking.

Given samples ``(x, y)`` of one learned edge activation (Liu et al., 2024, Sec. 2.5.1), find the
best affine-wrapped library function

    y ~= c * f(a * x + b) + d

and rank library functions by accuracy and simplicity. Independent of the network modules
(jax and numpy only); the network level is :mod:`kan_jax.symbolic.network`.

* :func:`fit_affine` / :func:`fit_affine_all`: vectorized, chunked grid search over ``(a, b)``
  with closed-form ``r^2`` and least squares for ``(c, d)``;
* :func:`symbolic_scores`, :func:`rank_functions` (one edge), :func:`rank_functions_batch`
  (many edges): pykan-style ranking into :class:`SymbolicCandidate`.

Every function that needs a library takes it as the keyword ``lib`` (default
:data:`kan_jax.symbolic.library.SYMBOLIC_LIB`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax.symbolic.library import SYMBOLIC_LIB, SymbolicFunction

__all__ = [
    "fit_affine",
    "fit_affine_all",
    "symbolic_scores",
    "SymbolicCandidate",
    "rank_functions",
    "rank_functions_batch",
]


def _resolve_fn(fn, lib=None):
    """-> (jax_fn, search_fn, canonical or None) for a name, SymbolicFunction or plain callable."""
    if isinstance(fn, str):
        fn = (SYMBOLIC_LIB if lib is None else lib)[fn]
    if isinstance(fn, SymbolicFunction):
        return fn.jax_fn, fn.search_fn or fn.jax_fn, fn.canonical
    return fn, fn, None


def _canonical(params: jax.Array, canonical) -> jax.Array:
    """``params (..., 4)`` in the function's canonical form (unchanged without one)."""
    if canonical is None:
        return params
    out = canonical(np.asarray(params, np.float64)).astype(params.dtype)
    return out if isinstance(params, np.ndarray) else jnp.asarray(out)


# ---------------------------------------------------------------------------
# Affine fitting
# ---------------------------------------------------------------------------


def _centered_r2(f: jax.Array, yc: jax.Array, vy: jax.Array) -> jax.Array:
    """Squared correlation of ``f`` with the centered target, guarded.

    Args:
      f: Candidate feature values ``(..., N)``.
      yc: Centered target ``(..., N)``, broadcastable against ``f``.
      vy: Target variance ``(...,)`` (mean of ``yc**2``).

    Returns:
      ``r2`` of shape ``(...)`` in ``[0, 1]``; 0 for (numerically) constant
      ``f`` or ``y`` and for non-finite ``f``.
    """
    eps = jnp.finfo(f.dtype).eps
    # Scale-invariant: normalize by max |f| so squares cannot overflow.
    scale = jnp.max(jnp.abs(f), axis=-1, keepdims=True)
    scale = jnp.where(scale > 0, scale, 1.0)
    fn = f / scale
    mf = jnp.mean(fn, axis=-1, keepdims=True)
    fc = fn - mf
    vf = jnp.mean(fc * fc, axis=-1)
    cov = jnp.mean(fc * yc, axis=-1)
    # Variation below the rounding noise of the values is "constant".
    floor = (16 * eps) ** 2 * jnp.maximum(jnp.squeeze(mf, -1) ** 2, 1e-30)
    ok = (vf > floor) & (vy > 0)
    r2 = cov * cov / jnp.where(ok, vf * vy, 1.0)
    r2 = jnp.where(ok & jnp.isfinite(r2), r2, 0.0)
    return jnp.clip(r2, 0.0, 1.0)


def _fit_affine_core(
    x, y, *, fn, search_fn, a_range, b_range, grid_number, iterations, chunk_size,
    search_samples,
):
    """:func:`fit_affine`'s computation (traced inside a jit): ``(params (E, 4), r2 (E,))``."""
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x = x.astype(dtype)
    y = y.astype(dtype)
    e = x.shape[0]
    g = grid_number
    total = g * g
    c = min(chunk_size, total)
    n_chunks = -(-total // c)

    my = jnp.mean(y, axis=-1, keepdims=True)
    yc = y - my
    vy = jnp.mean(yc * yc, axis=-1)  # (E,)

    # The search runs on u = (x - mid) / half in [-1, 1] (scale-free: a hidden node's input can
    # have any range), and (a, b) found for u are mapped back to x at the end.
    lo_x, hi_x = jnp.min(x, axis=-1), jnp.max(x, axis=-1)
    mid = (hi_x + lo_x) / 2
    half = (hi_x - lo_x) / 2
    half = jnp.where(half > 0, half, 1.0)
    u = (x - mid[:, None]) / half[:, None]

    # The grid search sees an evenly strided subset of S <= N samples.
    n = x.shape[1]
    if search_samples is not None and search_samples < n:
        sub = np.round(np.linspace(0, n - 1, search_samples)).astype(np.int32)
        us, ys = u[:, sub], y[:, sub]
        ysc = ys - jnp.mean(ys, axis=-1, keepdims=True)
    else:
        us, ysc = u, yc
    vys = jnp.mean(ysc * ysc, axis=-1)

    def search(lo_a, step_a, lo_b, step_b):
        """One grid search; lo/step of shape (E,). Returns best (ia, ib)."""

        def body(carry, k):
            best_r2, best_idx = carry
            idx = k * c + jnp.arange(c, dtype=jnp.int32)  # (C,)
            valid = idx < total
            ia = (idx // g).astype(dtype)
            ib = (idx % g).astype(dtype)
            a = lo_a[:, None] + ia[None, :] * step_a[:, None]  # (E, C)
            b = lo_b[:, None] + ib[None, :] * step_b[:, None]
            # (E, C, S); the barrier keeps XLA from re-evaluating fn in each
            # of the reductions below.
            f = jax.lax.optimization_barrier(
                search_fn(a[:, :, None] * us[:, None, :] + b[:, :, None])
            )
            r2 = _centered_r2(f, ysc[:, None, :], vys[:, None])  # (E, C)
            r2 = jnp.where(valid[None, :], r2, -1.0)
            j = jnp.argmax(r2, axis=1)
            r2_j = jnp.take_along_axis(r2, j[:, None], axis=1)[:, 0]
            better = r2_j > best_r2
            best_r2 = jnp.where(better, r2_j, best_r2)
            best_idx = jnp.where(better, idx[j], best_idx)
            return (best_r2, best_idx), None

        init = (jnp.full((e,), -2.0, dtype), jnp.zeros((e,), jnp.int32))
        (_, best_idx), _ = jax.lax.scan(
            body, init, jnp.arange(n_chunks, dtype=jnp.int32)
        )
        return best_idx // g, best_idx % g

    def zoom(lo, step, i):
        lo_new = lo + jnp.maximum(i - 1, 0).astype(dtype) * step
        hi_new = lo + jnp.minimum(i + 1, g - 1).astype(dtype) * step
        return lo_new, (hi_new - lo_new) / (g - 1)

    def round_(state, _):
        lo_a, step_a, lo_b, step_b = state
        ia, ib = search(lo_a, step_a, lo_b, step_b)
        a = lo_a + ia.astype(dtype) * step_a
        b = lo_b + ib.astype(dtype) * step_b
        lo_a, step_a = zoom(lo_a, step_a, ia)
        lo_b, step_b = zoom(lo_b, step_b, ib)
        return (lo_a, step_a, lo_b, step_b), (a, b)

    def full(v):
        return jnp.full((e,), v, dtype)

    init = (
        full(a_range[0]),
        full((a_range[1] - a_range[0]) / (g - 1)),
        full(b_range[0]),
        full((b_range[1] - b_range[0]) / (g - 1)),
    )
    _, (a_hist, b_hist) = jax.lax.scan(round_, init, None, length=iterations)
    a, b = a_hist[-1] / half, b_hist[-1] - a_hist[-1] * mid / half  # a u + b' = a x + b

    # Closed-form least squares of y on [f, 1].
    f = fn(a[:, None] * x + b[:, None])  # (E, N)
    mf = jnp.mean(f, axis=-1, keepdims=True)
    fc = f - mf
    vf = jnp.mean(fc * fc, axis=-1)
    cov = jnp.mean(fc * yc, axis=-1)
    eps = jnp.finfo(dtype).eps
    ok = (vf > (16 * eps) ** 2 * jnp.maximum(mf[:, 0] ** 2, 1e-30)) & jnp.isfinite(vf)
    cc = jnp.where(ok, cov / jnp.where(ok, vf, 1.0), 0.0)
    dd = my[:, 0] - cc * jnp.where(ok, mf[:, 0], 0.0)
    r2 = _centered_r2(f, yc, vy)
    params = jnp.stack([a, b, cc, dd], axis=-1)
    return params, r2


_FIT_STATIC = ("a_range", "b_range", "grid_number", "iterations", "chunk_size", "search_samples")
_fit_affine_jit = jax.jit(_fit_affine_core, static_argnames=("fn", "search_fn") + _FIT_STATIC)


def fit_affine(
    x: jax.Array,
    y: jax.Array,
    fn: Callable[[jax.Array], jax.Array] | SymbolicFunction | str,
    *,
    a_range: tuple[float, float] = (-10.0, 10.0),
    b_range: tuple[float, float] = (-10.0, 10.0),
    grid_number: int = 101,
    iterations: int = 3,
    chunk_size: int = 128,
    search_samples: int | None = 128,
) -> tuple[jax.Array, jax.Array]:
    """Fits ``y ~= c * fn(a * x + b) + d`` independently for every edge.

    Method (after pykan's ``fit_params``): a ``grid_number x grid_number``
    grid over ``(a, b)`` is searched, with ``x`` first mapped to ``u`` in
    ``[-1, 1]`` per edge (``a_range`` and ``b_range`` are in those units, so the
    search is the same whatever the scale of a hidden node); each candidate is scored by the ``r^2``
    of the best linear fit of ``y`` on ``fn(a x + b)``, which in closed form is
    the squared correlation (0 when either side has zero variance). The best
    candidate's neighbouring grid cells become the next, finer grid; there are
    ``iterations`` searches in total (the first on the full ranges). Finally
    ``(c, d)`` come from closed-form least squares.

    The candidates are evaluated ``chunk_size`` at a time inside a
    ``lax.scan`` that keeps only a running best, so the largest temporary is
    about ``chunk_size * E * S`` floats (``S = min(N, search_samples)``),
    independent of ``grid_number``.

    Args:
      x: Inputs ``(E, N)``: ``E`` edges, ``N`` samples each (a 1-D ``(N,)``
        input is treated as ``E = 1`` and the leading axis is dropped on
        output).
      y: Targets ``(E, N)``.
      fn: Elementwise jnp function, a :class:`SymbolicFunction`, or a name in
        :data:`SYMBOLIC_LIB`. It is a static (hashed) jit argument.
      a_range: Initial search interval of ``a`` (for ``x`` scaled to [-1, 1]).
      b_range: Initial search interval of ``b`` (likewise).
      grid_number: Grid points per axis (>= 2).
      iterations: Number of grid searches (>= 1), each zoomed on the last.
      chunk_size: Candidates evaluated per scan step.
      search_samples: The grid search scores candidates on at most this many
        evenly strided samples per edge (``None``: all ``N``); ``(c, d)`` and
        the returned ``r2`` always use all samples. This bounds the search
        cost at ``iterations * grid_number**2 * E * S`` evaluations.

    Returns:
      ``(params, r2)``: ``params`` ``(E, 4)`` holding ``[a, b, c, d]`` (in the
      function's canonical form, ``SymbolicFunction.canonical``, when it has one) and
      ``r2`` ``(E,)`` the coefficient of determination of the final fit.

    Example:
      >>> x = jnp.linspace(-1, 1, 200)[None]
      >>> params, r2 = fit_affine(x, 3 * jnp.sin(2 * x + 1) - 1, jnp.sin)
    """
    if grid_number < 2 or iterations < 1 or chunk_size < 1:
        raise ValueError("need grid_number >= 2, iterations >= 1, chunk_size >= 1")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    squeeze = x.ndim == 1
    if squeeze:
        x, y = x[None], y[None]
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be (E, N); got {x.shape}, {y.shape}")
    jax_fn, search_fn, canonical = _resolve_fn(fn)
    params, r2 = _fit_affine_jit(
        x,
        y,
        fn=jax_fn,
        search_fn=search_fn,
        a_range=(float(a_range[0]), float(a_range[1])),
        b_range=(float(b_range[0]), float(b_range[1])),
        grid_number=int(grid_number),
        iterations=int(iterations),
        chunk_size=int(chunk_size),
        search_samples=None if search_samples is None else int(search_samples),
    )
    params = _canonical(params, canonical)
    if squeeze:
        return params[0], r2[0]
    return params, r2


@functools.partial(jax.jit, static_argnames=("fns", "kwargs"))
def _fit_affine_all_jit(x, y, *, fns, kwargs):
    """``(params (E, F, 4), r2 (E, F))``: the fit of every ``(jax_fn, search_fn)`` of ``fns``.

    One fit, looped over the functions (``lax.scan``) with each function picked by
    ``lax.switch``: XLA compiles the search once, not once per function (hellokan's 10-function
    library on 4 edges: 0.9 s instead of 1.9 s unrolled on 2 CPU cores, runs 0.27 s instead of
    0.22 s; docs/PERFORMANCE.md).
    """

    def switch(k, which):
        # Branches must agree in shape and dtype (a constant such as "0" may return a scalar).
        branches = [functools.partial(_as_input, pair[which]) for pair in fns]
        return lambda z: jax.lax.switch(k, branches, z)

    def one(carry, k):
        return carry, _fit_affine_core(x, y, fn=switch(k, 0), search_fn=switch(k, 1), **dict(kwargs))

    _, (params, r2) = jax.lax.scan(one, None, jnp.arange(len(fns), dtype=jnp.int32))
    return jnp.swapaxes(params, 0, 1), jnp.swapaxes(r2, 0, 1)


def _as_input(f, z):
    """``f(z)`` broadcast to ``z``'s shape and dtype."""
    return jnp.broadcast_to(jnp.asarray(f(z)), z.shape).astype(z.dtype)


def fit_affine_all(
    x: jax.Array,
    y: jax.Array,
    lib: Mapping[str, SymbolicFunction] | None = None,
    *,
    a_range: tuple[float, float] = (-10.0, 10.0),
    b_range: tuple[float, float] = (-10.0, 10.0),
    grid_number: int = 101,
    iterations: int = 3,
    chunk_size: int = 128,
    search_samples: int | None = 128,
) -> tuple[jax.Array, jax.Array]:
    """Runs :func:`fit_affine` for every function of a library, in one jit.

    The functions are fitted one after another inside a single compiled
    program, so peak temporary memory is that of one :func:`fit_affine`.

    Args:
      x: Inputs ``(E, N)``.
      y: Targets ``(E, N)``.
      lib: Library mapping (default :data:`SYMBOLIC_LIB`); ``F = len(lib)``,
        in the library's order.
      a_range, b_range, grid_number, iterations, chunk_size, search_samples: As in
        :func:`fit_affine`.

    Returns:
      ``(params, r2)`` of shapes ``(E, F, 4)`` and ``(E, F)`` (params canonical as in
      :func:`fit_affine`).
    """
    # Padding and the results' post-processing run on the host: no XLA compile per shape.
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be (E, N); got {x.shape}, {y.shape}")
    resolved, static = _fit_all_static(lib, a_range=a_range, b_range=b_range, grid_number=grid_number,
                                       iterations=iterations, chunk_size=chunk_size, search_samples=search_samples)
    e = x.shape[0]
    pad = _padded_edges(e) - e
    if pad > 0:
        x = np.concatenate([x, np.broadcast_to(x[:1], (pad,) + x.shape[1:])])
        y = np.concatenate([y, np.broadcast_to(y[:1], (pad,) + y.shape[1:])])
    params, r2 = _fit_affine_all_jit(_on_device(x), _on_device(y), **static)
    params, r2 = np.asarray(params)[:e], np.asarray(r2)[:e]
    params = np.stack([_canonical(params[:, k], c) for k, (_, _, c) in enumerate(resolved)], axis=1)
    return jax.device_put(params), jax.device_put(r2)


def _padded_edges(e: int) -> int:
    """The edge count is padded to a power of two (>= 4) with copies of the first edge: one
    compiled program serves every layer of similar size (compiling is most of the cost here)."""
    return max(4, 1 << max(e - 1, 0).bit_length())


def _fit_all_static(lib, *, a_range, b_range, grid_number, iterations, chunk_size, search_samples):
    """``fit_affine_all``'s resolved library and the static arguments of its compiled program."""
    lib = SYMBOLIC_LIB if lib is None else lib
    kwargs = (
        ("a_range", (float(a_range[0]), float(a_range[1]))),
        ("b_range", (float(b_range[0]), float(b_range[1]))),
        ("grid_number", int(grid_number)),
        ("iterations", int(iterations)),
        ("chunk_size", int(chunk_size)),
        ("search_samples", None if search_samples is None else int(search_samples)),
    )
    resolved = [_resolve_fn(s) for s in lib.values()]
    return resolved, {"fns": tuple((f, g) for f, g, _ in resolved), "kwargs": kwargs}


# ---------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------

# r2 -> accuracy bits: -log2(1 - r2 + R2_TINY); with r2 in [0, 1] this lies in
# [~0, log2(1/R2_TINY) ~= 16.6], i.e. it is capped.
R2_TINY = 1e-5


def symbolic_scores(r2, complexity, *, weight_simple: float = 0.8):
    """pykan-style score (higher is better) of candidate fits.

    ``score = (1 - weight_simple) * bits(r2) - weight_simple * complexity``
    with ``bits(r2) = -log2(1 - clip(r2, 0, 1) + 1e-5)``, so bits is capped at
    ``log2(1e5) ~= 16.6`` for a perfect fit and is 0 for ``r2 = 0``. This is
    the negation of pykan's ``total_loss`` with ``r2_loss = log2(1 + 1e-5 -
    r2)`` and ``c_loss = complexity``. With the default ``weight_simple=0.8``
    one unit of complexity is worth 4 bits (a 16x smaller ``1 - r2``); note
    the zero function scores exactly 0.

    Args:
      r2: ``(..., F)`` coefficients of determination.
      complexity: ``(F,)`` complexities.
      weight_simple: In ``[0, 1]``; 0 ranks by accuracy only.

    Returns:
      Scores of shape ``(..., F)`` (numpy float64).
    """
    r2 = np.clip(np.nan_to_num(np.asarray(r2, np.float64), nan=0.0), 0.0, 1.0)
    bits = -np.log2(1.0 - r2 + R2_TINY)
    return (1.0 - weight_simple) * bits - weight_simple * np.asarray(complexity, np.float64)


class SymbolicCandidate(NamedTuple):
    """One ranked fit: ``y ~= c * lib[name](a * x + b) + d``.

    Attributes:
      name: Library key.
      params: ``(4,)`` numpy array ``[a, b, c, d]``.
      r2: Coefficient of determination of the fit.
      complexity: The library complexity of ``name``.
      score: :func:`symbolic_scores` value (higher is better).
    """

    name: str
    params: np.ndarray
    r2: float
    complexity: int
    score: float


def _rank(params, r2, names, complexity, *, topk, weight_simple, r2_threshold):
    scores = symbolic_scores(r2, complexity, weight_simple=weight_simple)
    order = np.argsort(-scores, kind="stable")
    out = []
    for f in order:
        if r2[f] < r2_threshold:
            continue
        out.append(
            SymbolicCandidate(
                names[f], np.asarray(params[f]), float(r2[f]), int(complexity[f]),
                float(scores[f]),
            )
        )
        if len(out) == topk:
            break
    return out


def rank_functions_batch(
    x: jax.Array,
    y: jax.Array,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
    topk: int = 5,
    weight_simple: float = 0.8,
    r2_threshold: float = 0.0,
    **fit_kwargs,
) -> list[list[SymbolicCandidate]]:
    """Ranks library functions for many edges at once.

    Args:
      x: Inputs ``(E, N)``.
      y: Targets ``(E, N)``.
      lib: Library (default :data:`SYMBOLIC_LIB`).
      topk: Candidates kept per edge.
      weight_simple: Simplicity weight of :func:`symbolic_scores`.
      r2_threshold: Candidates with a lower ``r2`` are dropped.
      **fit_kwargs: Forwarded to :func:`fit_affine_all` (``a_range``,
        ``grid_number``, ...).

    Returns:
      ``E`` lists of up to ``topk`` :class:`SymbolicCandidate`, best first.
    """
    lib = SYMBOLIC_LIB if lib is None else lib
    params, r2 = fit_affine_all(x, y, lib, **fit_kwargs)
    params, r2 = np.asarray(params), np.asarray(r2)
    names = list(lib.keys())
    complexity = np.array([s.complexity for s in lib.values()])
    return [
        _rank(params[e], r2[e], names, complexity, topk=topk,
              weight_simple=weight_simple, r2_threshold=r2_threshold)
        for e in range(params.shape[0])
    ]


def rank_functions(
    x: jax.Array,
    y: jax.Array,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
    topk: int = 5,
    weight_simple: float = 0.8,
    r2_threshold: float = 0.0,
    **fit_kwargs,
) -> list[SymbolicCandidate]:
    """Ranks library functions for one edge.

    Args:
      x: Inputs ``(N,)``.
      y: Targets ``(N,)``.
      lib, topk, weight_simple, r2_threshold, **fit_kwargs: As in
        :func:`rank_functions_batch`.

    Returns:
      Up to ``topk`` :class:`SymbolicCandidate`, best (highest score) first.

    Example:
      >>> x = jnp.linspace(-2, 2, 300)
      >>> rank_functions(x, jnp.sin(3 * x), topk=1)[0].name
      'sin'
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must both be (N,); got {x.shape}, {y.shape}")
    return rank_functions_batch(
        x[None], y[None], lib=lib, topk=topk, weight_simple=weight_simple,
        r2_threshold=r2_threshold, **fit_kwargs,
    )[0]


def _on_device(a) -> jax.Array:
    """``a`` as a JAX array; host arrays move with ``jax.device_put`` (``jnp.asarray`` of a NumPy
    array compiles a small program per shape)."""
    return a if isinstance(a, jax.Array) else jax.device_put(np.asarray(a))
