"""Pure KAN layer math over a params pytree and a grid.

A layer with ``n`` inputs and ``o`` outputs computes (docs/DESIGN.md)::

    y_j = bias_j + sum_i mask_ij * phi_ij(x_i)
    phi_ij(x) = w_base[i, j] * b(x) + w_spline[i, j] * sum_m coef[i, j, m] * B_m(x; grid_i)

State of one layer:

* ``params`` (trainable): ``coef (n, o, G + k)``, ``w_base (n, o)``, ``w_spline (n, o)``,
  ``bias (o,)``.
* ``grid (n, G + 2k + 1)``: knots per input (non-trainable).
* ``mask (n, o)``: 1 for live edges, 0 for pruned ones (non-trainable).

``apply`` is the fused path (basis computed once per input, a single contraction over
``(input, basis)`` with the base branch folded in as one extra basis column); ``edge_apply`` is
the reference written as a scalar edge function vmapped over every edge. They agree (tests).

``apply`` (the hot path) compiles with XLA's defaults; parameter init, ``update_grid`` and
``edge_values``, which run rarely, compile quickly on CPU for small inputs
(``kan_jax.compilation.quick_jit``); inside a caller's ``jax.jit`` all of them are inlined.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import bases, kernels, splines
from kan_jax.compilation import quick_jit

__all__ = [
    "BASE_ACTIVATIONS",
    "get_base_activation",
    "init_layer",
    "apply",
    "edge_phi",
    "edge_apply",
    "edge_values",
    "spline_values",
    "update_grid",
    "refine",
    "check_features",
    "layer_kwargs",
    "MODEL_AXIS",
    "LAYER_SHARDS",
    "check_shard",
    "shard_metadata",
    "LAYER_PATHS",
    "check_path",
]

Params = dict[str, jax.Array]

MODEL_AXIS = "model"
"""The mesh axis a layer's features shard over (``kan_jax.train.sharding``; docs/SCALING.md)."""

LAYER_SHARDS = ("outputs", "inputs")
"""Which features of a layer ``MODEL_AXIS`` splits: its outputs (the default) or its inputs."""


LAYER_PATHS = ("auto", "check", "reference") + kernels.PATHS
"""``apply``'s ``path`` values (a layer's ``path=``): ``"reference"`` is plain autodiff through the
basis, the one path that JAX can differentiate in forward mode (``jax.jvp``, e.g. a PDE residual's
Laplacian as ``jax.jvp`` of ``jax.grad``); the kernels' paths are ``jax.custom_vjp`` functions,
reverse mode only (any order of ``jax.grad``)."""


def check_path(path: str) -> str:
    if path not in LAYER_PATHS:
        raise ValueError(f"path must be one of {list(LAYER_PATHS)}, got {path!r}")
    return path


def check_shard(shard: str) -> str:
    if shard not in LAYER_SHARDS:
        raise ValueError(f"shard must be one of {list(LAYER_SHARDS)}, got {shard!r}")
    return shard


def shard_metadata(shard: str, ndim: int, *, bias: bool = False) -> dict:
    """The partitioning metadata of a layer array (``nnx.Variable`` keyword arguments).

    A per-edge array ``(n, o, ...)`` names ``MODEL_AXIS`` on ``o`` (``shard="outputs"``) or on
    ``n`` (``"inputs"``); the bias ``(o,)`` (``bias=True``) on ``o``, or is replicated when the
    inputs are split (each device then holds partial sums of every output, added up across the
    axis before the bias). The knots carry none (replicated: a few numbers per input; splitting
    them with the inputs changed no byte of the wide step in docs/SCALING.md). Eager sharding is
    off: a layer is built the same with or without a mesh, and is placed by
    ``kan_jax.train.sharding.place_state`` (or ``jax.device_put`` with ``nnx.get_named_sharding``).
    """
    spec = [None] * ndim
    if bias:
        if check_shard(shard) == "outputs":
            spec[0] = MODEL_AXIS
    else:
        spec[1 if check_shard(shard) == "outputs" else 0] = MODEL_AXIS
    return {"out_sharding": tuple(spec), "eager_sharding": False}


BASE_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "gelu": kernels.gelu,  # jax.nn.gelu's values, finite derivatives at any magnitude
    "tanh": jnp.tanh,
    "identity": lambda x: x,
    "zero": jnp.zeros_like,
}


def get_base_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The base function ``b`` by name; ValueError naming the allowed values otherwise."""
    if name not in BASE_ACTIVATIONS:
        raise ValueError(f"base_activation must be one of {sorted(BASE_ACTIVATIONS)}, got {name!r}")
    return BASE_ACTIVATIONS[name]


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def layer_kwargs(layer) -> dict:
    """The static keyword arguments of ``apply`` / ``edge_apply`` from a layer module's attributes
    (``spline_order``, ``basis``, ``base_activation``, ``dtype``, ``extrapolate``; NNX or Linen)."""
    return dict(
        order=layer.spline_order,
        basis=layer.basis,
        base_activation=layer.base_activation,
        dtype=layer.dtype,
        extrapolate=layer.extrapolate,
    )


def check_features(x: jax.Array, in_features: int) -> None:
    """Raises ValueError if ``x``'s last axis is not ``in_features`` (static shapes only)."""
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(
            f"KAN layer expects inputs with in_features={in_features} on the last axis, "
            f"got shape {tuple(x.shape)} ({x.shape[-1] if x.ndim else 0} features)"
        )


def init_layer(
    key: jax.Array,
    in_features: int,
    out_features: int,
    *,
    grid_size: int = 5,
    spline_order: int = 3,
    grid_range: Sequence[float] = (-1.0, 1.0),
    basis: str = "bspline",
    noise_scale: float = 0.3,
    base_scale: float = 1.0,
    param_dtype=jnp.float32,
) -> tuple[Params, jax.Array, jax.Array]:
    """pykan-style initialization of one layer.

    Spline coefficients are small noise ``U(-1/2, 1/2) * noise_scale / G``, ``w_spline = 1``,
    ``w_base ~ U(-1, 1) * base_scale / sqrt(in_features)``, ``bias = 0``, uniform grid, mask 1.

    Args:
      key: PRNG key.
      in_features: ``n``.
      out_features: ``o``.
      grid_size: ``G``.
      spline_order: ``k``.
      grid_range: base interval ``(low, high)``.
      basis: basis family name (see ``kan_jax.bases``).
      noise_scale: scale of the initial spline noise.
      base_scale: scale of the base weights.
      param_dtype: dtype of params, grid and mask.

    Returns:
      ``(params, grid (n, G + 2k + 1), mask (n, o))``.
    """
    _check_positive_int("in_features", in_features)
    _check_positive_int("out_features", out_features)
    lo, hi = splines.validate_grid_args(grid_size=grid_size, spline_order=spline_order, grid_range=grid_range)
    family = bases.get_basis(basis)
    n_basis = family.n_basis(grid_size, spline_order)
    params = _init_params(key, in_features, out_features, n_basis, float(noise_scale / grid_size),
                          float(base_scale / np.sqrt(in_features)), jnp.dtype(param_dtype))
    # Built on the host and moved with device_put: eager jnp ops (jnp.asarray included) would each
    # compile a small program.
    knots = splines.uniform_knots_np(grid_size, spline_order, (lo, hi), dtype=param_dtype)
    grid = jax.device_put(np.broadcast_to(knots, (in_features, knots.shape[0])))
    mask = jax.device_put(np.ones((in_features, out_features), knots.dtype))
    return params, grid, mask


@quick_jit(static_argnums=(1, 2, 3, 4, 5, 6))
def _init_params(key, n: int, o: int, n_basis: int, coef_scale: float, base_scale: float, dtype) -> Params:
    """``init_layer``'s params, one compiled program per shape (the random draws and the arithmetic
    run eagerly would be a dozen small compiles, ~1 s of a cold run); same values as eager."""
    k_coef, k_base = jax.random.split(key)
    coef = (jax.random.uniform(k_coef, (n, o, n_basis), dtype) - 0.5) * coef_scale
    w_base = jax.random.uniform(k_base, (n, o), dtype, -1.0, 1.0) * base_scale
    return {"coef": coef, "w_base": w_base, "w_spline": jnp.ones((n, o), dtype), "bias": jnp.zeros((o,), dtype)}


def compute_dtype(dtype, *arrays):
    """The dtype a layer computes in: ``dtype`` when set, else the result type of ``arrays``."""
    return jnp.dtype(dtype) if dtype is not None else jnp.result_type(*arrays)


@functools.partial(jax.jit, static_argnames=("order", "basis", "base_activation", "dtype", "path", "uniform", "extrapolate"))
def apply(
    params: Params,
    grid: jax.Array,
    mask: jax.Array,
    x: jax.Array,
    *,
    order: int,
    basis: str = "bspline",
    base_activation: str = "silu",
    dtype=None,
    path: str = "auto",
    uniform: bool | None = None,
    extrapolate: bool = False,
) -> jax.Array:
    """Fused layer forward.

    Args:
      params: layer params (see module docstring).
      grid: ``(n, K)`` knots.
      mask: ``(n, o)``.
      x: ``(..., n)`` inputs.
      order: spline order ``k``.
      basis: basis family name.
      base_activation: name of ``b``.
      dtype: computation dtype (default: the inputs' and params' result type). Low-precision
        dtypes (bfloat16, float16) accumulate the contraction in float32.
      path: ``"auto"`` (default: the fastest exact path for ``uniform``, see
        ``kan_jax.kernels.choose_path``), ``"check"`` (tests the grid for uniformity at run time
        and branches with ``lax.cond``; ~10% slower than knowing it), one of
        ``kan_jax.kernels.PATHS`` to force one, or ``"reference"`` (plain autodiff through the
        Cox-de Boor recursion). Non-B-spline bases always use the reference.
      uniform: the caller's promise that every knot row is evenly spaced: ``True`` allows the
        closed-form path (wrong values on a non-uniform grid); ``None``/``False`` (default) use
        the general path, exact for any increasing knots and nearly as fast.
      extrapolate: beyond the base interval, continue each spline's end polynomial pieces
        (``splines.bspline_basis(..., extrapolate=True)``) instead of letting it fall to 0 over
        the extension knots. Inputs slightly outside the grid (test points beyond the range of
        the training samples) then see the function the data determined. The continuation
        reaches ``splines.EXTRAPOLATION_REACH`` (1000) base-interval widths; farther out each
        spline holds its value at that bound, so outputs stay finite for any finite input
        (without extrapolation the spline is 0 outside the knot span: the output is the base
        term plus bias there).

    Returns:
      ``(..., o)`` outputs in the computation dtype.
    """
    check_features(x, params["coef"].shape[0])
    cdt = compute_dtype(dtype, x, params["coef"])
    acc = jnp.float32 if jnp.finfo(cdt).bits < 32 else cdt
    if path == "reference" or basis != "bspline":
        return _apply_reference(
            params, grid, mask, x, order=order, basis=basis, base_activation=base_activation, cdt=cdt, extrapolate=extrapolate
        )
    w = _fused_weights(params, mask, cdt)  # (n, 1 + M, o)
    # The basis is evaluated in at least float32 (bfloat16 knots would be too coarse), then the
    # features are cast to the computation dtype for the contraction.
    bdt = jnp.promote_types(cdt, jnp.float32)
    xb, gb = x.astype(bdt), grid.astype(bdt)
    grid_size = grid.shape[-1] - 2 * order - 1

    def run(p):
        return kernels.contract(xb, gb, w, order=order, base_activation=base_activation, path=p, acc=acc, extrapolate=extrapolate)

    if path == "check":
        pu, pg = kernels.choose_path(grid_size, True), kernels.choose_path(grid_size, False)
        y = jax.lax.cond(kernels.is_uniform(grid), lambda: run(pu), lambda: run(pg))
    elif path != "auto":
        y = run(path)
    else:
        y = run(kernels.choose_path(grid_size, bool(uniform)))
    return (y + params["bias"].astype(acc)).astype(cdt)


def _fused_weights(params: Params, mask: jax.Array, cdt) -> jax.Array:
    """``(n, 1 + M, o)``: masked base weights in column 0, ``w_spline * coef`` after it."""
    m = mask.astype(cdt)
    return jnp.concatenate(
        [(params["w_base"].astype(cdt) * m)[:, None, :],
         jnp.swapaxes(params["coef"].astype(cdt) * (params["w_spline"].astype(cdt) * m)[..., None], 1, 2)],
        axis=1,
    )


def _apply_reference(params, grid, mask, x, *, order, basis, base_activation, cdt, extrapolate=False):
    """Plain fused math, differentiated by autodiff (the pre-kernel path; any basis family)."""
    x = x.astype(cdt)
    basis_vals = bases.get_basis(basis).evaluate(x, grid.astype(cdt), order, extrapolate=extrapolate)
    feats = jnp.concatenate(
        [get_base_activation(base_activation)(x)[..., None], basis_vals],
        axis=-1,
    )  # (..., n, 1 + m)
    m = mask.astype(cdt)
    weights = jnp.concatenate(
        [(params["w_base"].astype(cdt) * m)[..., None], params["coef"].astype(cdt) * (params["w_spline"].astype(cdt) * m)[..., None]],
        axis=-1,
    )  # (n, o, 1 + m)
    acc = jnp.float32 if jnp.finfo(cdt).bits < 32 else cdt
    y = jnp.einsum("...nm,nom->...o", feats, weights, preferred_element_type=acc)
    return (y + params["bias"].astype(acc)).astype(cdt)


def edge_phi(
    x_i, coef_ij, w_base_ij, w_spline_ij, knots_i, *, order: int, basis: str = "bspline", base_activation: str = "silu",
    extrapolate: bool = False,
):
    """One edge's activation ``phi_ij(x_i)`` for a scalar ``x_i``.

    Args:
      x_i: scalar input.
      coef_ij: ``(n_basis,)``.
      w_base_ij, w_spline_ij: scalars.
      knots_i: ``(K,)``.

    Returns:
      Scalar ``w_base * b(x) + w_spline * sum_m coef_m B_m(x)``.
    """
    b = bases.get_basis(basis).evaluate(x_i[None], knots_i[None], order, extrapolate=extrapolate)[0]
    return w_base_ij * get_base_activation(base_activation)(x_i) + w_spline_ij * jnp.dot(b, coef_ij)


@functools.partial(jax.jit, static_argnames=("order", "basis", "base_activation", "dtype", "extrapolate"))
def edge_apply(
    params: Params,
    grid: jax.Array,
    mask: jax.Array,
    x: jax.Array,
    *,
    order: int,
    basis: str = "bspline",
    base_activation: str = "silu",
    dtype=None,
    extrapolate: bool = False,
) -> jax.Array:
    """Per-edge reference: ``edge_phi`` vmapped over batch, inputs and outputs, times the mask.

    Args:
      x: ``(batch, n)``.

    Returns:
      ``(batch, n, o)`` edge activations ``mask_ij * phi_ij(x_i)``; their sum over axis 1 plus
      ``bias`` equals ``apply``.
    """
    check_features(x, params["coef"].shape[0])
    cdt = compute_dtype(dtype, x, params["coef"])
    p = jax.tree.map(lambda a: a.astype(cdt), params)
    phi = lambda xi, c, wb, ws, t: edge_phi(
        xi, c, wb, ws, t, order=order, basis=basis, base_activation=base_activation, extrapolate=extrapolate
    )
    over_out = jax.vmap(phi, in_axes=(None, 0, 0, 0, None))
    over_in = jax.vmap(over_out, in_axes=(0, 0, 0, 0, 0))
    over_batch = jax.vmap(over_in, in_axes=(0, None, None, None, None))
    vals = over_batch(x.astype(cdt), p["coef"], p["w_base"], p["w_spline"], grid.astype(cdt))
    return vals * mask.astype(cdt)


@quick_jit(static_argnames=("order", "basis", "base_activation", "dtype", "uniform", "extrapolate"))
def edge_values(
    params: Params,
    grid: jax.Array,
    mask: jax.Array,
    x: jax.Array,
    *,
    order: int,
    basis: str = "bspline",
    base_activation: str = "silu",
    dtype=None,
    uniform: bool | None = None,
    extrapolate: bool = False,
) -> jax.Array:
    """Fused per-edge activations: the values of ``edge_apply`` from one basis evaluation.

    The dense features ``(batch, n, 1 + M)`` are evaluated once per input (not once per edge)
    and contracted with the fused weights per edge; the backward uses the closed-form basis
    derivative (``kernels.dense_features``). Same arguments as ``apply`` (``uniform=True``
    promises evenly spaced knots and selects the closed-form basis).

    Args:
      x: ``(batch, n)``.

    Returns:
      ``(batch, n, o)`` edge activations ``mask_ij * phi_ij(x_i)``; their sum over axis 1 plus
      ``bias`` equals ``apply``.
    """
    check_features(x, params["coef"].shape[0])
    cdt = compute_dtype(dtype, x, params["coef"])
    acc = jnp.float32 if jnp.finfo(cdt).bits < 32 else cdt
    bdt = jnp.promote_types(cdt, jnp.float32)
    if basis == "bspline":
        f = kernels.dense_features(x.astype(bdt), grid.astype(bdt), order, base_activation,
                                   "uniform" if uniform else "general", bool(extrapolate))
    else:  # the other families: a few elementwise functions, plain autodiff
        xb = x.astype(bdt)
        f = jnp.concatenate([get_base_activation(base_activation)(xb)[..., None],
                             bases.get_basis(basis).evaluate(xb, grid.astype(bdt), order)], axis=-1)
    f, w = f.astype(cdt), _fused_weights(params, mask, cdt)
    if acc != cdt and jax.default_backend() == "cpu":
        # XLA:CPU has no batched low-precision dot accumulating in float32 ("Unsupported element
        # type for DotThunk::Execute: BF16 x BF16 = F32", jax 0.10.2): the operands go in float32,
        # the same products (exact: two bfloat16 significands fit float32's) and float32 sums.
        f, w = f.astype(acc), w.astype(acc)
    return jnp.einsum("...nm,nmo->...no", f, w, preferred_element_type=acc).astype(cdt)


@functools.partial(jax.jit, static_argnames=("order", "basis", "extrapolate"))
def spline_values(
    params: Params, grid: jax.Array, x: jax.Array, *, order: int, basis: str = "bspline", extrapolate: bool = False
) -> jax.Array:
    """``(batch, n, o)`` spline parts ``sum_m coef_ijm B_m(x_i)`` (no weights, no mask)."""
    b = bases.get_basis(basis).evaluate(x, grid.astype(x.dtype), order, extrapolate=extrapolate)
    return jnp.einsum("bnm,nom->bno", b, params["coef"].astype(b.dtype))


@quick_jit(static_argnames=("order", "grid_eps", "basis", "extrapolate"))
def update_grid(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    *,
    order: int,
    grid_eps: float = 0.02,
    basis: str = "bspline",
    extrapolate: bool = False,
) -> tuple[Params, jax.Array]:
    """Adapts the grid to the samples ``x`` and refits the splines to keep the function.

    The new grid follows ``splines.adaptive_knots`` (same ``G``); coefficients are the
    least-squares fit of the old splines evaluated on the samples. With fewer samples than
    coefficients per edge (``batch < G + k``) that fit is ill-posed (a spline is free between
    samples: ``G = 200`` on 100 samples took toy's test RMSE from 0.14 to 6e4) and the samples'
    quantiles cannot place ``G`` intervals: the layer is then returned unchanged, with a warning
    (under jit: once per compile).

    Args:
      x: ``(batch, n)`` samples that reach this layer.

    Returns:
      ``(params, grid)`` with the same shapes and dtypes.
    """
    check_features(x, params["coef"].shape[0])
    family = bases.get_basis(basis)
    if not family.adaptive:
        raise ValueError(f"update_grid: basis {basis!r} has no knots to adapt (its functions depend on the base "
                         f"interval only; adaptive bases: {sorted(b for b in bases.BASES if bases.BASES[b].adaptive)}); "
                         "use refine for more functions")
    grid_size = grid.shape[-1] - 2 * order - 1
    n_coef = family.n_basis(grid_size, order)
    if x.shape[0] < n_coef:
        warnings.warn(f"update_grid: {x.shape[0]} samples cannot place a grid of {grid_size} intervals "
                      f"({n_coef} coefficients per edge): grid and functions kept as they are "
                      "(use more samples or a smaller grid_size)", stacklevel=2)
        return params, grid
    y = spline_values(params, grid, x, order=order, basis=basis, extrapolate=extrapolate)
    new_grid = splines.adaptive_knots(x, grid_size, order, grid_eps=grid_eps).astype(grid.dtype)
    coef = bases.fit_coef(basis, x, y, new_grid, order).astype(params["coef"].dtype)
    return {**params, "coef": coef}, new_grid


def refine(
    params: Params, grid: jax.Array, new_grid_size: int, x: jax.Array | None = None, *, order: int,
    basis: str = "bspline", extrapolate: bool = False,
) -> tuple[Params, jax.Array]:
    """Grid extension: the same functions on a grid of ``new_grid_size`` intervals.

    The new grid follows the old one (``splines.refine_knots``). For B-splines on a grid nested
    in the old one (``new_grid_size`` a multiple of ``G``) the coefficients come from exact knot
    insertion (Boehm): the function is unchanged to float rounding. Otherwise (and for the other
    families: a higher Chebyshev degree, more harmonics or bumps, ``kan_jax.bases``) they are the
    least-squares fit of the old functions on the samples ``x`` (or, without samples or with fewer
    than the new number of coefficients, where that fit would be ill-posed, on points spread
    densely over the base interval; the latter with a warning).

    Runs on the host (shapes change); not jit-able.

    Args:
      new_grid_size: ``G'``.
      x: optional ``(batch, n)`` samples that reach this layer.

    Returns:
      ``(params, grid)`` with ``coef (n, o, G' + k)`` and ``grid (n, G' + 2k + 1)``.
    """
    _check_positive_int("new_grid_size", new_grid_size)
    new_grid = splines.refine_knots(grid, order, new_grid_size)
    n_coef = bases.get_basis(basis).n_basis(new_grid_size, order)
    if basis == "bspline" and splines.is_nested(grid, new_grid):
        coef = splines.insert_knots(grid, params["coef"], new_grid, order)
    else:
        if x is None:
            x = _dense_points(grid, new_grid, order)
        else:
            check_features(x, params["coef"].shape[0])
            if x.shape[0] < n_coef:
                x = _ill_posed_fallback(x.shape[0], n_coef, grid, new_grid, order)
        xs = jnp.asarray(x, grid.dtype)
        y = spline_values(params, grid, xs, order=order, basis=basis, extrapolate=extrapolate)
        coef = bases.fit_coef(basis, xs, y, jnp.asarray(new_grid, grid.dtype), order)
    return (
        {**params, "coef": jnp.asarray(coef, params["coef"].dtype)},
        jnp.asarray(new_grid, grid.dtype),
    )


def _dense_points(grid, new_grid, order: int) -> jax.Array:
    """``(n_points, n)`` points spread over the shared base interval, dense in both grids (jit-able)."""
    lo = jnp.maximum(grid[:, order], new_grid[:, order])
    hi = jnp.minimum(grid[:, -order - 1], new_grid[:, -order - 1])
    n_pts = 16 * (grid.shape[1] + new_grid.shape[1])
    return jnp.linspace(lo, hi, n_pts, endpoint=False) + 0.5 * (hi - lo) / n_pts


def _ill_posed_fallback(rows: int, n_coef: int, grid, new_grid, order: int) -> jax.Array:
    """``_dense_points``, with a warning that ``rows`` samples cannot determine ``n_coef``
    coefficients per edge."""
    warnings.warn(f"refine: {rows} samples for {n_coef} spline coefficients per edge is ill-posed; fitting "
                  "the current splines on points spread densely over the grid instead", stacklevel=3)
    return _dense_points(grid, jnp.asarray(new_grid, grid.dtype), order)