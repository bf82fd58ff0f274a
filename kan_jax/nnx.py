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
from kan_jax.symbolic.edges import SymbolicEdges

__all__ = ["Grid", "EdgeMask", "KANLayer", "KAN", "validate_widths", "MODEL_AXIS", "MODEL_SHARDINGS", "layer_shards"]

MODEL_AXIS = F.MODEL_AXIS


class Grid(nnx.Variable):
    """Knots of a KAN layer, ``(in_features, G + 2k + 1)``; not trained by gradient."""


class EdgeMask(nnx.Variable):
    """Per-edge 0/1 mask of a KAN layer, ``(in_features, out_features)``; set by pruning."""


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
        plain B-spline of SPEC.md; the experiment runner turns it on), up to
        ``splines.EXTRAPOLATION_REACH`` base-interval widths out; beyond, the spline is constant.
      dtype: computation dtype (``None``: from inputs and params; ``jnp.bfloat16`` works).
      param_dtype: dtype of params and grid.
      symbolic_lib: the function table of the layer's symbolic edges (default
        ``kan_jax.symbolic.SYMBOLIC_LIB``).
      shard: which features the ``model`` mesh axis splits, ``"outputs"`` or ``"inputs"``
        (partitioning metadata only: nothing is placed until a mesh is used).
      path: the forward's implementation (``functional.LAYER_PATHS``): ``"auto"`` (default) the
        fastest exact kernel, reverse-mode differentiable to any order; ``"reference"`` plain
        autodiff through the basis, needed for forward-mode derivatives (``jax.jvp``, e.g. a
        Laplacian as ``jax.jvp`` of ``jax.grad``), slower.
      rngs: ``nnx.Rngs``.

    Every edge ``(i, j)`` is a spline ``mask_ij * phi_ij(x_i)`` plus, when made symbolic
    (``set_symbolic``; then ``mask_ij = 0``), the symbolic edge ``c f(a x_i + b) + d`` held by
    ``self.symbolic`` (a ``kan_jax.symbolic.SymbolicEdges``, always present: making edges
    symbolic changes values, never the module structure).

    Call with ``x (batch, n)`` -> ``(batch, o)``.

    Sharding: the arrays carry NNX partitioning metadata naming ``MODEL_AXIS`` on their output
    features (``coef (n, o, M)``, ``w_base``/``w_spline``/``mask (n, o)``, ``bias (o,)``, the
    symbolic edges' ``func (n, o)``/``affine (n, o, 4)``; ``grid`` replicated), so
    ``nnx.get_partition_spec(nnx.state(layer))`` shows the rule for any model holding layers.
    ``shard="inputs"`` names it on the input features ``n`` of the per-edge arrays instead (bias
    replicated): a layer after an output-sharded one then takes its input as it is laid out and
    sums its outputs across ``model`` (``KAN(model_sharding="alternate")``; docs/SCALING.md).
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
        symbolic_lib=None,
        shard: str = "outputs",
        path: str = "auto",
        rngs: nnx.Rngs,
    ):
        F.get_base_activation(base_activation)
        F.check_shard(shard)
        F.check_path(path)
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
        self.shard = shard
        self.path = path
        # Partitioning metadata (docs/SCALING.md, functional.shard_metadata): the output (or input)
        # feature axis of every per-edge array, and of the bias when outputs shard, names the
        # ``model`` mesh axis; the knots are replicated.
        self.coef = nnx.Param(params["coef"], **F.shard_metadata(shard, 3))
        self.w_base = nnx.Param(params["w_base"], **F.shard_metadata(shard, 2))
        self.w_spline = nnx.Param(params["w_spline"], **F.shard_metadata(shard, 2))
        self.bias = nnx.Param(params["bias"], **F.shard_metadata(shard, 1, bias=True))
        self.grid = Grid(grid)
        self.mask = EdgeMask(mask, **F.shard_metadata(shard, 2))
        self.symbolic = SymbolicEdges(in_features, out_features, library=symbolic_lib, param_dtype=param_dtype,
                                      shard=shard)

    @property
    def grid_size(self) -> int:
        return self.grid.shape[-1] - 2 * self.spline_order - 1

    def params(self) -> F.Params:
        """The layer's params as the pytree ``kan_jax.functional`` takes."""
        return {"coef": self.coef[...], "w_base": self.w_base[...], "w_spline": self.w_spline[...], "bias": self.bias[...]}

    def _set_params(self, params: F.Params) -> None:
        for name in ("coef", "w_base", "w_spline", "bias"):
            getattr(self, name).set_value(params[name])

    def spline_kwargs(self) -> dict:
        """The static keyword arguments of ``kan_jax.functional.apply`` / ``edge_values`` for this
        layer (``order``, ``basis``, ``base_activation``, ``dtype``, ``extrapolate``)."""
        return F.layer_kwargs(self)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, n) -> (batch, o)``."""
        y = F.apply(self.params(), self.grid[...], self.mask[...], x, path=self.path, **self.spline_kwargs())
        return y + self.symbolic(x, dtype=y.dtype)

    def edge_activations(self, x: jax.Array) -> jax.Array:
        """``(batch, n) -> (batch, n, o)``: ``mask_ij * phi_ij(x_i)`` plus the symbolic edges
        (sum over axis 1 + bias = output).

        Fused (``functional.edge_values``: one basis evaluation per input, closed-form backward).
        """
        edges = F.edge_apply if self.path == "reference" else F.edge_values
        acts = edges(self.params(), self.grid[...], self.mask[...], x, **self.spline_kwargs())
        return acts + self.symbolic.edge_values(x, dtype=acts.dtype)

    def spline_activations(self, x: jax.Array) -> jax.Array:
        """``(batch, n) -> (batch, n, o)``: every edge's spline function ``phi_ij(x_i)``, the mask
        not applied (what the symbolic fits sample)."""
        ones = jnp.ones_like(self.mask[...])
        return F.edge_values(self.params(), self.grid[...], ones, x, **self.spline_kwargs())

    # --- symbolic edges (``self.symbolic``; fitting in kan_jax.symbolic) ---

    def set_symbolic(self, edges, funcs, params=None) -> None:
        """Fixes edges ``[(i, j), ...]`` to library functions: ``c * f(a x_i + b) + d``.

        Sets ``mask_ij = 0`` (the spline params are kept, so ``clear_symbolic`` restores the
        spline) and the symbolic edge (``self.symbolic.set``). ``funcs``: one
        ``SymbolicFunction`` (or name in the layer's table) per edge; ``params``:
        ``(len(edges), 4)`` ``[a, b, c, d]`` (default ``[1, 0, 1, 0]``).
        """
        edges = [(int(i), int(j)) for i, j in edges]
        self.symbolic.set(edges, funcs, params)
        if edges:
            _set_edges(self.mask, np.array([e[0] for e in edges]), np.array([e[1] for e in edges]), 0)

    def clear_symbolic(self, edges) -> None:
        """Turns edges ``[(i, j), ...]`` back into spline edges (``mask = 1``, not symbolic)."""
        edges = [(int(i), int(j)) for i, j in edges]
        self.symbolic.clear(edges)
        if edges:
            _set_edges(self.mask, np.array([e[0] for e in edges]), np.array([e[1] for e in edges]), 1)

    def live_edges(self) -> np.ndarray:
        """``(n, o)`` bool numpy array: edges that are not pruned (spline ``mask`` or symbolic)."""
        return (np.asarray(self.mask[...]) != 0) | self.symbolic.active()

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
            self.params(), self.grid[...], new_grid_size, x, order=self.spline_order, basis=self.basis, extrapolate=self.extrapolate
        )
        self._set_params(params)
        self.grid.set_value(grid)


def _set_edges(var, ii, jj, value) -> None:
    """``var[ii, jj] = value`` on the host (a structural edit: no XLA compile per shape)."""
    a = np.array(var[...])
    a[ii, jj] = value
    var.set_value(jax.device_put(a))


MODEL_SHARDINGS = ("outputs", "alternate")
"""``KAN(model_sharding=...)``: every layer on its outputs, or alternating (``layer_shards``)."""


def layer_shards(model_sharding: str, n_layers: int) -> list[str]:
    """Each layer's ``KANLayer(shard=...)`` under ``model_sharding`` (``MODEL_SHARDINGS``).

    ``"alternate"``: layer ``l`` splits its outputs when ``l`` is even and not the last layer, its
    inputs otherwise. Pairs of layers then need no gather between them (the second takes the
    first's output features where they are), and the last layer, whose few outputs (the
    targets) rarely divide the axis, splits its wide inputs: ``[256, 1024, 1024, 10]`` is
    outputs, inputs, inputs.
    """
    if model_sharding not in MODEL_SHARDINGS:
        raise ValueError(f"model_sharding must be one of {list(MODEL_SHARDINGS)}, got {model_sharding!r}")
    if model_sharding == "outputs":
        return ["outputs"] * n_layers
    return ["outputs" if l % 2 == 0 and l < n_layers - 1 else "inputs" for l in range(n_layers)]


class KAN(nnx.Module):
    """A Kolmogorov-Arnold network: a stack of ``KANLayer``.

    Args:
      widths: layer widths, e.g. ``[2, 5, 1]``.
      grid_size, spline_order, grid_range, basis, ...: as ``KANLayer`` (shared by all layers).
      model_sharding: how the ``model`` mesh axis splits the layers (docs/SCALING.md):
        ``"outputs"`` (default) every layer on its output features; ``"alternate"`` the layers
        in pairs, outputs then inputs, the last layer on its inputs (``layer_shards``,
        ``KANLayer(shard=...)``): the second layer of a pair takes the first one's output as it
        is laid out, with no gather, and every device computes B-spline features for its share
        of the inputs only (a third of the memory per device on a 4-way ``model`` axis;
        docs/SCALING.md).
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
        model_sharding: str = "outputs",
        rngs: nnx.Rngs,
        **layer_kwargs,
    ):
        self.widths = validate_widths(widths)
        self.model_sharding = model_sharding
        self.layers = nnx.List(
            [
                KANLayer(
                    i,
                    o,
                    grid_size=grid_size,
                    spline_order=spline_order,
                    grid_range=grid_range,
                    basis=basis,
                    shard=shard,
                    rngs=rngs,
                    **layer_kwargs,
                )
                for i, o, shard in zip(self.widths[:-1], self.widths[1:], layer_shards(model_sharding, len(self.widths) - 1))
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
        inputs = _layer_inputs(self, x) if x is not None else [None] * len(self.layers)
        for layer, xin in zip(self.layers, inputs):
            layer.refine(new_grid_size, xin)


@nnx.jit
def _layer_inputs(model: KAN, x: jax.Array) -> list[jax.Array]:
    """``model.layer_inputs(x)`` as one compiled program per network structure (for host-side
    edits such as ``refine``; called eagerly, each layer's program and sum would compile).

    XLA's default options, like the layer's own forward: the refit after a grid extension then
    sees bit-for-bit the layer inputs training sees (quick-compiled, they differ at rounding
    level, and a float64 L-BFGS run amplifies that into other stage RMSEs)."""
    return model.layer_inputs(x)
