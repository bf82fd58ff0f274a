"""Basis families for KAN edges, behind one interface.

A basis family turns per-input knots (the layer's grid) and inputs into basis values; the layer
math in ``kan_jax.functional`` only ever calls ``basis_values``. Today the family is the B-spline
of the layer contract; the registry is where other families (Chebyshev, RBF, ...) plug in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from kan_jax import splines


@dataclasses.dataclass(frozen=True)
class Basis:
    """A basis family.

    Attributes:
      name: registry name (the ``basis=`` argument).
      evaluate: ``(x (..., n), knots (n, K), order, *, extrapolate) -> (..., n, n_basis)``;
        ``extrapolate`` continues the end pieces beyond the base interval.
      n_basis: ``(grid_size, order) -> n_basis``.
    """

    name: str
    evaluate: Callable[..., jax.Array]
    n_basis: Callable[[int, int], int]


BASES: dict[str, Basis] = {
    "bspline": Basis("bspline", splines.bspline_basis, lambda g, k: g + k),
}


def get_basis(name: str) -> Basis:
    """Returns the registered basis ``name``.

    Raises:
      ValueError: naming the allowed values.
    """
    if name not in BASES:
        raise ValueError(f"basis must be one of {sorted(BASES)}, got {name!r}")
    return BASES[name]
