"""Basis families for KAN edges, behind one interface.

Every family reads the same per-input knot rows ``(n, G + 2k + 1)`` (the layer's grid:
``splines.uniform_knots``, then ``update_grid``/``refine``), so the layer state, its shapes and
everything written over it (regularization, pruning, attribution, plots, symbolic fitting,
checkpoints) are the same for all families. The base interval of input ``i`` is
``[knots[i, k], knots[i, -k-1]]``; a family evaluates ``(..., n) -> (..., n, n_basis)``:

* ``bspline`` (default): the B-splines of order ``k`` on the knots, ``G + k`` of them
  (``splines.bspline_basis``; the layer's fast kernels in ``kan_jax.kernels``).
* ``chebyshev``: ``T_m(tanh(u))``, ``m = 0..G`` (degree ``G``), ``u`` the input mapped affinely
  so that the base interval becomes ``[-1, 1]``; tanh squashes any input into the polynomials'
  domain (ChebyKAN). ``G + 1`` functions.
* ``fourier``: ``cos(m pi u / 2)`` and ``sin(m pi u / 2)`` for ``m = 1..G``: ``2G`` functions. The
  lowest harmonic spans half a period over the base interval, so the family does not force the
  function to be periodic on it (FourierKAN's ``cos(m x), sin(m x)`` likewise on ``[-1, 1]``).
* ``rbf``: Gaussian bumps ``exp(-((x - c_m) / h_m)^2)`` centred on the ``G + 1`` knots of the
  base interval, ``h_m`` half the distance between a centre's two neighbouring knots (the grid
  spacing on a uniform grid; FastKAN). ``G + 1`` functions.

``adaptive``: whether the knots place the functions, so that ``update_grid`` (knots following the
samples' quantiles) means something: B-splines and RBF bumps yes, Chebyshev and Fourier no (their
functions depend on the base interval only; ``update_grid`` refuses them). ``refine`` raises the
grid size (more B-splines or bumps, a higher degree, more harmonics) for every family.

Only the B-spline family has dedicated kernels. The others need none: each is a handful of
elementwise functions of the input, then the one contraction every family shares (measured in
docs/PERFORMANCE.md, "Basis families": ``scripts/bench_layer.py --bases``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from kan_jax import splines

__all__ = ["Basis", "BASES", "get_basis", "fit_coef"]


@dataclasses.dataclass(frozen=True)
class Basis:
    """A basis family.

    Attributes:
      name: registry name (the ``basis=`` argument).
      evaluate: ``(x (..., n), knots (n, K), order, *, extrapolate) -> (..., n, n_basis)``;
        ``extrapolate`` (B-splines only) continues the end pieces beyond the base interval.
      n_basis: ``(grid_size, order) -> n_basis``.
      adaptive: whether ``update_grid`` can move the functions (the knots place them).
    """

    name: str
    evaluate: Callable[..., jax.Array]
    n_basis: Callable[[int, int], int]
    adaptive: bool


def _unit(x: jax.Array, knots: jax.Array, order: int) -> jax.Array:
    """``x (..., n)`` mapped affinely so that each input's base interval becomes ``[-1, 1]``."""
    lo, hi = knots[:, order], knots[:, knots.shape[-1] - order - 1]
    return (2 * x - lo - hi) / (hi - lo)


def chebyshev_basis(x: jax.Array, knots: jax.Array, order: int, *, extrapolate: bool = False) -> jax.Array:
    """``(..., n) -> (..., n, G + 1)``: ``T_0 .. T_G`` of ``tanh(u)`` (three-term recurrence)."""
    del extrapolate  # tanh keeps every input inside the polynomials' domain
    degree = knots.shape[-1] - 2 * order - 1
    t = jnp.tanh(_unit(x, knots, order))
    polys = [jnp.ones_like(t), t]
    for _ in range(degree - 1):
        polys.append(2 * t * polys[-1] - polys[-2])
    return jnp.stack(polys[: degree + 1], axis=-1)


def fourier_basis(x: jax.Array, knots: jax.Array, order: int, *, extrapolate: bool = False) -> jax.Array:
    """``(..., n) -> (..., n, 2G)``: ``cos(m pi u / 2)`` for ``m = 1..G``, then the sines."""
    del extrapolate  # bounded everywhere
    harmonics = knots.shape[-1] - 2 * order - 1
    angle = _unit(x, knots, order)[..., None] * (0.5 * jnp.pi * jnp.arange(1, harmonics + 1, dtype=x.dtype))
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def rbf_basis(x: jax.Array, knots: jax.Array, order: int, *, extrapolate: bool = False) -> jax.Array:
    """``(..., n) -> (..., n, G + 1)``: Gaussian bumps on the base interval's knots."""
    del extrapolate  # the bumps decay to 0 outside
    n_knots = knots.shape[-1]
    centres = knots[:, order : n_knots - order]  # (n, G + 1)
    widths = 0.5 * (knots[:, order + 1 : n_knots - order + 1] - knots[:, order - 1 : n_knots - order - 1])
    return jnp.exp(-jnp.square((x[..., None] - centres) / widths))


BASES: dict[str, Basis] = {
    "bspline": Basis("bspline", splines.bspline_basis, lambda g, k: g + k, adaptive=True),
    "chebyshev": Basis("chebyshev", chebyshev_basis, lambda g, k: g + 1, adaptive=False),
    "fourier": Basis("fourier", fourier_basis, lambda g, k: 2 * g, adaptive=False),
    "rbf": Basis("rbf", rbf_basis, lambda g, k: g + 1, adaptive=True),
}


def get_basis(name: str) -> Basis:
    """Returns the registered basis ``name``.

    Raises:
      ValueError: naming the allowed values.
    """
    if name not in BASES:
        raise ValueError(f"basis must be one of {sorted(BASES)}, got {name!r}")
    return BASES[name]


def fit_coef(basis: str, x: jax.Array, y: jax.Array, knots: jax.Array, order: int, *, ridge: float = 1e-8) -> jax.Array:
    """Least-squares coefficients ``(n, out, n_basis)`` of ``y (batch, n, out)`` on the family's
    functions of ``x (batch, n)`` (``splines.lstsq_coef``: Householder QR with a small ridge)."""
    values = get_basis(basis).evaluate(x, knots, order)
    return splines.lstsq_coef(values, y, ridge=ridge)
