"""Flax NNX modules: ``KANLayer`` and ``KAN`` (the primary API).

Thin shells over ``kan_jax.functional``. Trainable state is ``nnx.Param``; the knots are a
``Grid`` variable and the edge mask an ``EdgeMask`` variable, so optimizers built with
``wrt=nnx.Param`` skip them while ``nnx.state`` / checkpoints keep them.

Example (a KAN layer inside your own NNX model)::

    class Model(nnx.Module):
      def __init__(self, rngs):
        self.dense = nnx.Linear(16, 8, rngs=rngs)
        self.kan = kan_jax.KANLayer(8, 1, grid_size=10, rngs=rngs)
      def __call__(self, x):
        return self.kan(jnp.tanh(self.dense(x)))
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kan_jax import functional as F
from kan_jax import symbolic_edges as SE

__all__ = ["Grid", "EdgeMask", "SymbolicMask", "KANLayer", "KAN", "validate_widths"]


class Grid(nnx.Variable):
    """Knots of a KAN layer, ``(in_features, G + 2k + 1)``; not trained by gradient."""


class EdgeMask(nnx.Variable):
    """Per-edge 0/1 mask of a KAN layer, ``(in_features, out_features)``; set by pruning."""


class SymbolicMask(nnx.Variable):
    """Per-edge 0/1 mask of the symbolic edges of a KAN layer, ``(in_features, out_features)``."""


def validate_widths(widths) -> tuple[int, ...]:
    """Checks network widths; returns them as a tuple of ints."""
    try:
        ws = tuple(widths)
    except TypeError:
        ws = None
    if (
        ws is None
        or len(ws) < 2
        or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 for w in ws)
    ):
        raise ValueError(f"widths must be a sequence of at least 2 positive integers like [2, 5, 1], got {widths!r}")
    return tuple(int(w) for w in ws)


class KANLayer(nnx.Module):
    """One KAN layer: a learnable B-spline activation on each of ``in * out`` edges.

    Args:
      in_features: number of inputs ``n``.
      out_features: number of outputs ``o``.
      grid_size: grid intervals ``G``.
      spline_order: spline order ``k`` (3 = cubic).
      grid_range: ``(low, high)`` of the initial uniform grid.
      basis: basis family (``"bspline"``).
      base_activation: the fixed base function ``b`` (``"silu"`` etc.).
      noise_scale: scale of the initial spline noise.
      base_scale: scale of the initial base weights (times ``1/sqrt(n)``).
      grid_eps: uniform/quantile mix of ``update_grid`` (1 uniform, 0 quantiles).
      extrapolate: beyond the grid's base interval, continue each spline's end polynomial
        pieces instead of letting it fall to 0 over the extension knots (default False, the
        plain B-spline of SPEC.md; the experiment runner turns it on).
      dtype: computation dtype (``None``: from inputs and params; ``jnp.bfloat16`` works).
      param_dtype: dtype of params and grid.
      rngs: ``nnx.Rngs``.

    Call with ``x (batch, n)`` -> ``(batch, o)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        basis: str = "bspline",
        base_activation: str = "silu",
        noise_scale: float = 0.3,
        base_scale: float = 1.0,
        grid_eps: float = 0.02,
        extrapolate: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        F.get_base_activation(base_activation)
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"grid_eps must be in [0, 1], got {grid_eps!r}")
        params, grid, mask = F.init_layer(
            rngs.params(),
            in_features,
            out_features,
            grid_size=grid_size,
            spline_order=spline_order,
            grid_range=grid_range,
            basis=basis,
            noise_scale=noise_scale,
            base_scale=base_scale,
            param_dtype=param_dtype,
        )
        self.in_features = in_features
        self.out_features = out_features
        self.spline_order = spline_order
        self.basis = basis
        self.base_activation = base_activation
        self.grid_eps = grid_eps
        self.extrapolate = bool(extrapolate)
        self.dtype = dtype
        self.coef = nnx.Param(params["coef"])
        self.w_base = nnx.Param(params["w_base"])
        self.w_spline = nnx.Param(params["w_spline"])
        self.bias = nnx.Param(params["bias"])
        self.grid = Grid(grid)
        self.mask = EdgeMask(mask)

    @property
    def grid_size(self) -> int:
        return self.grid.shape[-1] - 2 * self.spline_order - 1

    def params(self) -> F.Params:
        """The layer's params as the pytree ``kan_jax.functional`` takes."""
        return {"coef": self.coef[...], "w_base": self.w_base[...], "w_spline": self.w_spline[...], "bias": self.bias[...]}

    def _set_params(self, params: F.Params) -> None:
        for name in ("coef", "w_base", "w_spline", "bias"):
            getattr(self, name).set_value(params[name])

    def _kw(self):
        return F.layer_kwargs(self)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, n) -> (batch, o)``."""
        if self.all_symbolic:  # every spline is masked: the bias and the symbolic edges are the layer
            F.check_features(x, self.in_features)
            return SE.layer_output(self.sym_affine[...], self.sym_mask[...], x, self.sym_names, self.sym_funcs,
                                   dtype=F.compute_dtype(self.dtype, x, self.coef[...]), bias=self.bias[...])
        y = F.apply(self.params(), self.grid[...], self.mask[...], x, **self._kw())
        if self.has_symbolic:
            y = y + SE.layer_output(self.sym_affine[...], self.sym_mask[...], x, self.sym_names, self.sym_funcs, dtype=y.dtype)
        return y

    def edge_activations(self, x: jax.Array) -> jax.Array:
        """``(batch, n) -> (batch, n, o)``: ``mask_ij * phi_ij(x_i)`` (sum over axis 1 + bias = output).

        Fused (``functional.edge_values``: one basis evaluation per input, closed-form backward).
        """
        if self.all_symbolic:
            F.check_features(x, self.in_features)
            return SE.edge_values(self.sym_affine[...], self.sym_mask[...], x, self.sym_names, self.sym_funcs,
                                  dtype=F.compute_dtype(self.dtype, x, self.coef[...]))
        acts = F.edge_values(self.params(), self.grid[...], self.mask[...], x, **self._kw())
        if self.has_symbolic:
            acts = acts + SE.edge_values(self.sym_affine[...], self.sym_mask[...], x, self.sym_names, self.sym_funcs, dtype=acts.dtype)
        return acts

    # --- symbolic edges (see kan_jax.symbolic_edges; fitting in kan_jax.symbolic) ---

    @property
    def has_symbolic(self) -> bool:
        """Whether the layer holds symbolic-edge state (created by the first ``set_symbolic``)."""
        return getattr(self, "sym_names", None) is not None

    @property
    def all_symbolic(self) -> bool:
        """Whether every edge holds a symbolic function (static). Their splines are masked
        (``set_symbolic``), so the layer then evaluates no spline at all: a smaller, faster
        program for the retraining of a fully symbolic network."""
        return self.has_symbolic and all(name is not None for row in self.sym_names for name in row)

    def set_symbolic(self, edges, funcs, params=None) -> None:
        """Fixes edges ``[(i, j), ...]`` to library functions: ``c * f(a x_i + b) + d``.

        Sets ``mask_ij = 0`` and ``sym_mask_ij = 1`` (the spline params are kept, so
        ``clear_symbolic`` restores the spline). ``funcs``: one ``SymbolicFunction`` (``.name``,
        ``.jax_fn``, ``.sympy_fn``) per edge; ``params``: ``(len(edges), 4)`` ``[a, b, c, d]``
        (default ``[1, 0, 1, 0]``). The first call creates ``sym_affine`` (an ``nnx.Param``
        ``(n, o, 4)``), ``sym_mask`` (a ``SymbolicMask``) and the static ``sym_names`` /
        ``sym_funcs``.
        """
        edges = [(int(i), int(j)) for i, j in edges]
        funcs = list(funcs)
        if len(funcs) != len(edges):
            raise ValueError(f"need one function per edge, got {len(funcs)} for {len(edges)} edges")
        n, o = self.in_features, self.out_features
        for i, j in edges:
            if not (0 <= i < n and 0 <= j < o):
                raise ValueError(f"edge ({i}, {j}) out of range for a layer with {n} inputs, {o} outputs")
        dt = self.coef[...].dtype
        p = jnp.broadcast_to(jnp.asarray(SE.IDENTITY_PARAMS, dt), (len(edges), 4)) if params is None else jnp.asarray(params, dt).reshape(len(edges), 4)
        if not self.has_symbolic:
            self.sym_affine = nnx.Param(jnp.broadcast_to(jnp.asarray(SE.IDENTITY_PARAMS, dt), (n, o, 4)))
            self.sym_mask = SymbolicMask(jnp.zeros((n, o), self.mask[...].dtype))
            self.sym_names = SE.empty_names(n, o)
            self.sym_funcs = ()
        if not edges:
            return
        ii, jj = np.array([e[0] for e in edges]), np.array([e[1] for e in edges])
        _set_edges(self.sym_affine, ii, jj, np.asarray(p))
        _set_edges(self.sym_mask, ii, jj, 1)
        _set_edges(self.mask, ii, jj, 0)
        self.sym_names = SE.set_names(self.sym_names, edges, [f.name for f in funcs])
        by_name = {f.name: f for f in self.sym_funcs}
        by_name.update({f.name: f for f in funcs})
        used = {nm for row in self.sym_names for nm in row if nm is not None}
        self.sym_funcs = tuple(f for nm, f in by_name.items() if nm in used)

    def clear_symbolic(self, edges) -> None:
        """Turns edges ``[(i, j), ...]`` back into spline edges (``mask = 1``, ``sym_mask = 0``)."""
        if not self.has_symbolic:
            return
        edges = [(int(i), int(j)) for i, j in edges]
        if not edges:
            return
        ii, jj = np.array([e[0] for e in edges]), np.array([e[1] for e in edges])
        _set_edges(self.sym_mask, ii, jj, 0)
        _set_edges(self.mask, ii, jj, 1)
        self.sym_names = SE.set_names(self.sym_names, edges, [None] * len(edges))
        used = {nm for row in self.sym_names for nm in row if nm is not None}
        self.sym_funcs = tuple(f for f in self.sym_funcs if f.name in used)

    def update_grid(self, x: jax.Array) -> None:
        """Adapts the grid to samples ``x (batch, n)``, refitting the splines (function ~kept)."""
        params, grid = F.update_grid(
            self.params(),
            self.grid[...],
            jnp.asarray(x),
            order=self.spline_order,
            grid_eps=self.grid_eps,
            basis=self.basis,
            extrapolate=self.extrapolate,
        )
        self._set_params(params)
        self.grid.set_value(grid)

    def refine(self, new_grid_size: int, x: jax.Array | None = None) -> None:
        """Grid extension to ``new_grid_size`` intervals (exact for nested grids). Params change shape."""
        params, grid = F.refine(
            self.params(), self.grid[...], new_grid_size, x, order=self.spline_order, extrapolate=self.extrapolate
        )
        self._set_params(params)
        self.grid.set_value(grid)


def _set_edges(var, ii, jj, value) -> None:
    """``var[ii, jj] = value`` on the host (a structural edit: no XLA compile per shape)."""
    a = np.array(var[...])
    a[ii, jj] = value
    var.set_value(jnp.asarray(a))


class KAN(nnx.Module):
    """A Kolmogorov-Arnold network: a stack of ``KANLayer``.

    Args:
      widths: layer widths, e.g. ``[2, 5, 1]``.
      grid_size, spline_order, grid_range, basis, ...: as ``KANLayer`` (shared by all layers).
      rngs: ``nnx.Rngs``.

    Example::

      model = kan_jax.KAN([2, 5, 1], grid_size=5, rngs=nnx.Rngs(0))
      y = model(jnp.zeros((16, 2)))  # (16, 1)
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        basis: str = "bspline",
        rngs: nnx.Rngs,
        **layer_kwargs,
    ):
        self.widths = validate_widths(widths)
        self.layers = nnx.List(
            [
                KANLayer(
                    i,
                    o,
                    grid_size=grid_size,
                    spline_order=spline_order,
                    grid_range=grid_range,
                    basis=basis,
                    rngs=rngs,
                    **layer_kwargs,
                )
                for i, o in zip(self.widths[:-1], self.widths[1:])
            ]
        )

    @property
    def grid_size(self) -> int:
        return self.layers[0].grid_size

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, widths[0]) -> (batch, widths[-1])``."""
        for layer in self.layers:
            x = layer(x)
        return x

    def layer_inputs(self, x: jax.Array) -> list[jax.Array]:
        """The activations reaching each layer, then the output: ``len(widths)`` arrays."""
        acts = [x]
        for layer in self.layers:
            acts.append(layer(acts[-1]))
        return acts

    def forward_with_edges(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """One pass: the output ``(batch, widths[-1])`` and per layer ``(batch, n_l, n_{l+1})`` edge activations.

        Each layer's output is the sum of its edge activations plus its bias (equal to
        ``layer(x)`` up to float rounding), so the regularized loss needs no second forward.
        """
        acts = []
        for layer in self.layers:
            a = layer.edge_activations(x)
            acts.append(a)
            x = jnp.sum(a, axis=-2) + layer.bias[...].astype(a.dtype)
        return x, acts

    def edge_activations(self, x: jax.Array) -> list[jax.Array]:
        """Per layer ``(batch, n_l, n_{l+1})`` edge activations on the samples ``x``."""
        return self.forward_with_edges(x)[1]

    def update_grid(self, x: jax.Array) -> None:
        """Adapts every layer's grid to the samples reaching it (pykan's ``update_grid``)."""
        for layer in self.layers:
            layer.update_grid(x)
            x = layer(x)

    def refine(self, new_grid_size: int, x: jax.Array | None = None) -> None:
        """Grid extension of every layer to ``new_grid_size`` (samples ``x`` used for non-nested sizes)."""
        for layer in self.layers:
            nxt = layer(x) if x is not None else None
            layer.refine(new_grid_size, x)
            x = nxt
