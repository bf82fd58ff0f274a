"""Model construction for the runner: ``make_model`` (KAN or MLP), the MLP baseline, parameter counts."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kan_jax.bases import get_basis
from kan_jax.nnx import KAN, KANLayer, validate_widths

__all__ = [
    "MODEL_KINDS",
    "MLP_ACTIVATIONS",
    "MLP",
    "make_model",
    "count_params",
    "kan_param_count",
    "mlp_param_count",
    "mlp_widths_matching",
]

MODEL_KINDS = ("kan", "mlp")
MLP_ACTIVATIONS = {"silu": jax.nn.silu, "tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}


class MLP(nnx.Module):
    """A plain multi-layer perceptron baseline: ``Linear -> act -> ... -> Linear``.

    Args:
      widths: layer widths including input and output, e.g. ``[2, 20, 1]``.
      activation: ``"silu"``, ``"tanh"``, ``"relu"`` or ``"gelu"``.
      param_dtype: dtype of the weights.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, widths: Sequence[int], *, activation: str = "silu", param_dtype=jnp.float32, rngs: nnx.Rngs):
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {sorted(MLP_ACTIVATIONS)}, got {activation!r}")
        self.widths = validate_widths(widths)
        self.activation = activation
        self.layers = nnx.List(
            [nnx.Linear(i, o, param_dtype=param_dtype, rngs=rngs) for i, o in zip(self.widths[:-1], self.widths[1:])]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, widths[0]) -> (batch, widths[-1])``."""
        act = MLP_ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = act(x)
        return x


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves) of ``model`` in use.

    A KAN layer always holds affine parameters ``(in, out, 4)`` for symbolic edges
    (``kan_jax.symbolic.SymbolicEdges``); only those of edges fixed to a function count, so a spline
    network counts as ``kan_param_count`` says and a symbolic edge adds its four numbers. This
    holds for every KAN layer inside ``model`` (a model made of several networks, e.g. a VAE).
    """
    total = sum(np.size(a) for a in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    layers = [node for _, node in nnx.iter_graph(model) if isinstance(node, KANLayer)]
    total -= sum(4 * int((~layer.symbolic.active()).sum()) for layer in layers
                 if isinstance(layer.symbolic.affine, nnx.Param))
    return int(total)


def kan_param_count(widths: Sequence[int], grid_size: int, spline_order: int, *, basis: str = "bspline") -> int:
    """Trainable scalars of ``kan_jax.KAN(widths, grid_size, spline_order, basis=basis)``.

    Per layer ``n -> o``: ``coef n*o*M`` (``M`` basis functions: ``G + k`` B-splines,
    ``kan_jax.bases``), ``w_base n*o``, ``w_spline n*o``, ``bias o``.
    """
    ws = validate_widths(widths)
    m = get_basis(basis).n_basis(grid_size, spline_order)
    return sum(n * o * (m + 2) + o for n, o in zip(ws[:-1], ws[1:]))


def mlp_param_count(widths: Sequence[int]) -> int:
    """Trainable scalars (weights + biases) of ``MLP(widths)``."""
    ws = validate_widths(widths)
    return sum(n * o + o for n, o in zip(ws[:-1], ws[1:]))


def mlp_widths_matching(
    kan_widths: Sequence[int], grid_size: int, spline_order: int, *, n_hidden_layers: int | None = None,
    basis: str = "bspline",
) -> list[int]:
    """MLP widths with the KAN's input/output sizes and a parameter count as close as possible to the KAN's.

    The MLP has ``n_hidden_layers`` hidden layers (default: as many as the KAN) of one common
    width ``h``; ``h >= 1`` is the integer minimizing ``|mlp_param_count - kan_param_count|``
    (the smaller ``h`` on a tie).

    Example::

      mlp_widths_matching([2, 5, 1], 5, 3)  # [2, 12, 1]: 49 params vs the KAN's 51
    """
    ws = validate_widths(kan_widths)
    n_hidden = len(ws) - 2 if n_hidden_layers is None else int(n_hidden_layers)
    if n_hidden < 0:
        raise ValueError(f"n_hidden_layers must be >= 0, got {n_hidden_layers!r}")
    target = kan_param_count(ws, grid_size, spline_order, basis=basis)
    if n_hidden == 0:
        return [ws[0], ws[-1]]

    def count(h):
        return mlp_param_count([ws[0]] + [h] * n_hidden + [ws[-1]])

    hi = 1
    while count(hi) < target:  # count is increasing in h
        hi *= 2
    lo = max(1, hi // 2)
    while lo < hi:  # smallest h with count(h) >= target
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min((h for h in (lo - 1, lo) if h >= 1), key=lambda h: (abs(count(h) - target), h))
    return [ws[0]] + [best] * n_hidden + [ws[-1]]


def make_model(config, *, grid_size: int | None = None, dtype=None, widths=None, seed: int | None = None,
               symbolic_lib=None, path: str | None = None) -> nnx.Module:
    """Builds the model described by ``config.model`` (seeded by ``config.seed``).

    ``config.model.kind``: ``"kan"`` -> ``kan_jax.KAN(widths, grid_size, spline_order, basis,
    grid_range, model_sharding=config.model.sharding)``; ``"mlp"`` -> ``MLP(widths or mlp_widths_matching(...), activation)``
    (``config.model.mlp_widths`` when set, else sized to match the KAN of the same config).

    Args:
      config: the experiment config (uses ``seed``, ``model.*``, ``dtype``).
      grid_size: overrides ``config.model.grid_size`` (e.g. to rebuild a model at a later stage's grid).
      dtype: param dtype override (default ``config.dtype``).
      widths: overrides ``config.model.widths`` (e.g. a narrower network of the same config).
      seed: overrides ``config.seed`` (e.g. a restart).
      symbolic_lib: the KAN's symbolic function table (``kan_jax.symbolic.SymbolicEdges``).
        Default: empty, for runs that fix no symbolic edges: the training programs then hold no
        library function (each table function is traced, compiled and, on symbolic edges,
        evaluated in every step). The symbolic pipeline passes the library it fixes from.
      path: the KAN layers' forward implementation (``kan_jax.KANLayer(path=...)``); None: the
        layer's default (the fast kernels). ``"reference"`` where the loss takes forward-mode
        derivatives (``jax.jvp``: the PDE pipeline's Laplacian). Ignored for an MLP.

    Raises:
      ValueError: naming the bad field and the allowed values.
    """
    m = config.model
    kind = m.kind
    if kind not in MODEL_KINDS:
        raise ValueError(f"model.kind must be one of {list(MODEL_KINDS)}, got {kind!r}")
    dtype = jnp.dtype(dtype or config.dtype)
    rngs = nnx.Rngs(int(config.seed if seed is None else seed))
    widths = validate_widths(m.widths if widths is None else widths)
    g = int(grid_size if grid_size is not None else m.grid_size)
    if kind == "kan":
        return KAN(
            widths,
            grid_size=g,
            spline_order=int(m.spline_order),
            grid_range=tuple(m.grid_range),
            basis=m.basis,
            extrapolate=bool(m.extrapolate),
            symbolic_lib={} if symbolic_lib is None else symbolic_lib,
            param_dtype=dtype,
            model_sharding=m.sharding,
            rngs=rngs,
            **({} if path is None else {"path": path}),
        )
    mlp_widths = m.mlp_widths
    if not mlp_widths:
        mlp_widths = mlp_widths_matching(widths, g, int(m.spline_order), basis=m.basis)
    return MLP(mlp_widths, activation=m.activation, param_dtype=dtype, rngs=rngs)
