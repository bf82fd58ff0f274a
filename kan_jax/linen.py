"""Flax Linen modules: ``KANDense`` and ``KAN``, for existing Linen codebases.

Same math as the NNX modules (``kan_jax.functional``). Trainable arrays live in ``params``
(``coef``, ``w_base``, ``w_spline``, ``bias``); the knots and the edge mask live in the separate
``"grid"`` collection (``knots``, ``mask``), so ``params`` stays trainable-only::

    model = kan_jax.linen.KAN([2, 5, 1])
    variables = model.init(jax.random.key(0), x)          # {"params": ..., "grid": ...}
    y = model.apply(variables, x)
    variables = kan_jax.linen.update_grid(model, variables, x)   # adapt the grids to x
    model, variables = kan_jax.linen.refine(model, variables, 10, x)  # grid extension to G=10

The params are boxed with ``nn.with_partitioning`` (output features over the ``"model"`` mesh
axis, the NNX layer's rule): ``nn.get_partition_spec(variables)`` gives the layout,
``nn.meta.unbox(variables)`` the plain arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kan_jax import functional as F
from kan_jax import splines
from kan_jax.nnx import layer_shards, validate_widths

__all__ = ["KANDense", "KAN", "update_grid", "refine", "GRID_COLLECTION"]

GRID_COLLECTION = "grid"
_PARAM_NAMES = ("coef", "w_base", "w_spline", "bias")
# The NNX layer's rule (kan_jax.KANLayer): output (or input) features over the "model" mesh axis.
# The params are boxed in ``nn.Partitioned`` (``nn.get_partition_spec(variables)`` reads them;
# ``apply`` unboxes them as usual).
_NDIM = {"coef": 3, "w_base": 2, "w_spline": 2, "bias": 1, "mask": 2}


def _partitioning(name: str, shard: str) -> tuple:
    return F.shard_metadata(shard, _NDIM[name], bias=name == "bias")["out_sharding"]


class KANDense(nn.Module):
    """A KAN layer: ``(..., in) -> (..., features)``; ``in`` is inferred from the input.

    Attributes mirror ``kan_jax.KANLayer`` (``grid_size``, ``spline_order``, ``grid_range``,
    ``basis``, ``base_activation``, ``noise_scale``, ``base_scale``, ``dtype``, ``param_dtype``,
    ``shard``: the params' partitioning names ``model`` on their ``"outputs"`` or ``"inputs"``,
    ``path``: ``"reference"`` for forward-mode derivatives, see ``kan_jax.KANLayer``).
    """

    features: int
    grid_size: int = 5
    spline_order: int = 3
    grid_range: Sequence[float] = (-1.0, 1.0)
    basis: str = "bspline"
    base_activation: str = "silu"
    noise_scale: float = 0.3
    base_scale: float = 1.0
    extrapolate: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    shard: str = "outputs"
    path: str = "auto"

    def _init_state(self, key, n):
        return F.init_layer(
            key,
            n,
            self.features,
            grid_size=self.grid_size,
            spline_order=self.spline_order,
            grid_range=self.grid_range,
            basis=self.basis,
            noise_scale=self.noise_scale,
            base_scale=self.base_scale,
            param_dtype=self.param_dtype,
        )

    def _variables(self, n):
        F.get_base_activation(self.base_activation)
        params = {
            name: self.param(name, nn.with_partitioning(lambda key, name=name: self._init_state(key, n)[0][name],
                                                        _partitioning(name, self.shard)))
            for name in _PARAM_NAMES
        }
        # The mask is boxed like the params; the knots are replicated (plain).
        knots = self.variable(GRID_COLLECTION, "knots", lambda: self._init_state(jax.random.key(0), n)[1])
        mask = self.variable(GRID_COLLECTION, "mask", nn.with_partitioning(
            lambda: self._init_state(jax.random.key(0), n)[2], _partitioning("mask", self.shard)))
        return params, knots.value, mask.value

    def _kw(self):
        return F.layer_kwargs(self)

    @nn.compact
    def __call__(self, x):
        params, knots, mask = self._variables(x.shape[-1])
        return F.apply(params, knots, mask, x, path=F.check_path(self.path), **self._kw())

    @nn.compact
    def edge_activations(self, x):
        """``(batch, in) -> (batch, in, features)`` per-edge values."""
        params, knots, mask = self._variables(x.shape[-1])
        edges = F.edge_apply if F.check_path(self.path) == "reference" else F.edge_values
        return edges(params, knots, mask, x, **self._kw())


class KAN(nn.Module):
    """A KAN network of ``KANDense`` layers (submodules ``layers_0``, ``layers_1``, ...).

    ``model_sharding``: as ``kan_jax.KAN`` (``"outputs"`` or ``"alternate"``).
    """

    widths: Sequence[int]
    grid_size: int = 5
    spline_order: int = 3
    grid_range: Sequence[float] = (-1.0, 1.0)
    basis: str = "bspline"
    base_activation: str = "silu"
    noise_scale: float = 0.3
    base_scale: float = 1.0
    extrapolate: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    model_sharding: str = "outputs"
    path: str = "auto"

    def setup(self):
        widths = validate_widths(self.widths)
        splines.validate_grid_args(grid_size=self.grid_size, spline_order=self.spline_order, grid_range=self.grid_range)
        self.layers = [
            KANDense(
                o,
                grid_size=self.grid_size,
                spline_order=self.spline_order,
                grid_range=self.grid_range,
                basis=self.basis,
                base_activation=self.base_activation,
                noise_scale=self.noise_scale,
                base_scale=self.base_scale,
                extrapolate=self.extrapolate,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                shard=shard,
                path=self.path,
            )
            for o, shard in zip(widths[1:], layer_shards(self.model_sharding, len(widths) - 1))
        ]

    def __call__(self, x):
        """``(batch, widths[0]) -> (batch, widths[-1])``."""
        F.check_features(x, validate_widths(self.widths)[0])
        for layer in self.layers:
            x = layer(x)
        return x

    def layer_inputs(self, x):
        """Activations reaching each layer, then the output."""
        acts = [x]
        for layer in self.layers:
            acts.append(layer(acts[-1]))
        return acts


def _layer_state(variables, l):
    """Layer ``l``'s params and grid collection (unboxed arrays)."""
    name = f"layers_{l}"
    return (dict(nn.meta.unbox(dict(variables["params"][name]))),
            dict(nn.meta.unbox(dict(variables[GRID_COLLECTION][name]))))


def _with_layer(variables, l, params, knots):
    """``variables`` with layer ``l``'s params and knots replaced (boxed values keep their boxes)."""
    name = f"layers_{l}"
    new = {c: dict(v) for c, v in variables.items()}

    def rebox(old, v):
        return old.replace_boxed(v) if isinstance(old, nn.meta.AxisMetadata) else v

    old = variables["params"][name]
    new["params"][name] = {k: rebox(old[k], v) for k, v in params.items()}
    grid = variables[GRID_COLLECTION][name]
    new[GRID_COLLECTION][name] = {**grid, "knots": rebox(grid["knots"], knots)}
    return new


def update_grid(model: KAN, variables, x, *, grid_eps: float = 0.02):
    """Returns ``variables`` with every layer's grid adapted to the samples reaching it."""
    acts = model.apply(variables, x, method=KAN.layer_inputs)
    for l in range(len(model.widths) - 1):
        params, grid_vars = _layer_state(variables, l)
        params, knots = F.update_grid(
            params,
            grid_vars["knots"],
            acts[l],
            order=model.spline_order,
            grid_eps=grid_eps,
            basis=model.basis,
            extrapolate=model.extrapolate,
        )
        variables = _with_layer(variables, l, params, knots)
        acts = model.apply(variables, x, method=KAN.layer_inputs)
    return variables


def refine(model: KAN, variables, new_grid_size: int, x=None):
    """Grid extension of every layer to ``new_grid_size`` intervals.

    Returns:
      ``(model.clone(grid_size=new_grid_size), variables)``: Linen checks param shapes against the
      module's attributes, so the refined variables go with the cloned module.
    """
    acts = model.apply(variables, x, method=KAN.layer_inputs) if x is not None else None
    for l in range(len(model.widths) - 1):
        params, grid_vars = _layer_state(variables, l)
        params, knots = F.refine(
            params,
            grid_vars["knots"],
            new_grid_size,
            None if acts is None else acts[l],
            order=model.spline_order,
            basis=model.basis,
            extrapolate=model.extrapolate,
        )
        variables = _with_layer(variables, l, params, knots)
    return model.clone(grid_size=new_grid_size), variables
