"""Symbolic edges of a KAN layer, as pure functions (pykan's ``Symbolic_KANLayer``).

An edge ``(i, j)`` of a layer can hold a library function ``f`` (e.g. ``sin``) with affine
parameters ``[a, b, c, d]``; its value is ``sym_mask_ij * (c * f(a * x_i + b) + d)`` and the layer
output becomes ``bias_j + sum_i [mask_ij * phi_ij(x_i) + sym_mask_ij * (c f(a x_i + b) + d)]``.

The network keeps, per layer (created on the first symbolic edge; a layer without one has no
extra state and no extra compute):

* ``names``: static Python metadata, a tuple of ``n`` tuples of ``o`` entries, the function name
  of each edge or ``None`` for non-symbolic edges;
* ``funcs``: static tuple of the functions in use, each with ``.name`` and ``.jax_fn`` (a
  ``kan_jax.symbolic_fit.SymbolicFunction``);
* ``affine``: ``(n, o, 4)`` params ``[a, b, c, d]`` (trainable);
* ``sym_mask``: ``(n, o)`` 0/1 (non-trainable).

Only the functions actually in use are evaluated, each once on the gathered inputs of the edges
that use it (static index arrays), so the cost grows with the number of symbolic edges only.

This module imports no model code (``kan_jax.nnx`` imports it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["empty_names", "set_names", "edge_groups", "edge_values", "layer_output", "IDENTITY_PARAMS"]

IDENTITY_PARAMS = (1.0, 0.0, 1.0, 0.0)
"""``[a, b, c, d]`` of an edge that is exactly ``f(x)``."""


def empty_names(n: int, o: int) -> tuple[tuple[str | None, ...], ...]:
    """``n x o`` tuple of ``None`` (no symbolic edge)."""
    return tuple((None,) * o for _ in range(n))


def set_names(names, edges: Sequence[tuple[int, int]], new: Sequence[str | None]):
    """Returns ``names`` with ``names[i][j] = new[k]`` for each ``edges[k] = (i, j)``."""
    rows = [list(r) for r in names]
    for (i, j), name in zip(edges, new):
        rows[i][j] = name
    return tuple(tuple(r) for r in rows)


def edge_groups(names) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """Static grouping of the symbolic edges by function: ``((name, in_idx, out_idx), ...)``."""
    groups: dict[str, tuple[list[int], list[int]]] = {}
    for i, row in enumerate(names):
        for j, name in enumerate(row):
            if name is not None:
                ii, jj = groups.setdefault(name, ([], []))
                ii.append(i)
                jj.append(j)
    return tuple((k, np.asarray(ii, np.int32), np.asarray(jj, np.int32)) for k, (ii, jj) in groups.items())


def _group_values(affine, sym_mask, x, names, funcs, dtype):
    """Yields ``(in_idx, out_idx, vals (..., E_g))`` per function in use."""
    fn_of = {f.name: f.jax_fn for f in funcs}
    for name, ii, jj in edge_groups(names):
        p = affine[ii, jj].astype(dtype)  # (E_g, 4)
        a, b, c, d = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        xi = x[..., ii].astype(dtype)  # (..., E_g)
        vals = c * fn_of[name](a * xi + b) + d
        yield ii, jj, vals * sym_mask[ii, jj].astype(dtype)


# Jitted with the static names / functions: one compiled program per layer structure instead of
# one small compile per eager op (gathers, scatters, each function) on every new shape.
@functools.partial(jax.jit, static_argnames=("names", "funcs", "dtype"))
def edge_values(affine: jax.Array, sym_mask: jax.Array, x: jax.Array, names, funcs, *, dtype=None) -> jax.Array:
    """Symbolic edge values ``sym_mask_ij * (c f(a x_i + b) + d)``.

    Args:
      affine: ``(n, o, 4)`` ``[a, b, c, d]`` per edge.
      sym_mask: ``(n, o)``.
      x: ``(..., n)`` inputs.
      names: static ``n x o`` names (``None``: not symbolic, value 0).
      funcs: static tuple of functions with ``.name`` / ``.jax_fn``.
      dtype: computation dtype (default: result type of ``x`` and ``affine``).

    Returns:
      ``(..., n, o)``, zero on non-symbolic edges.
    """
    dtype = jnp.result_type(x, affine) if dtype is None else dtype
    n, o = sym_mask.shape
    out = jnp.zeros(x.shape[:-1] + (n, o), dtype)
    for ii, jj, vals in _group_values(affine, sym_mask, x, names, funcs, dtype):
        out = out.at[..., ii, jj].add(vals)
    return out


@functools.partial(jax.jit, static_argnames=("names", "funcs", "dtype"))
def layer_output(affine: jax.Array, sym_mask: jax.Array, x: jax.Array, names, funcs, *, dtype=None,
                 bias: jax.Array | None = None) -> jax.Array:
    """``(..., n) -> (..., o)``: the sum over inputs of :func:`edge_values` (without forming it),
    plus ``bias (o,)`` when given (a layer whose edges are all symbolic needs nothing else)."""
    dtype = jnp.result_type(x, affine) if dtype is None else dtype
    o = sym_mask.shape[1]
    out = jnp.zeros(x.shape[:-1] + (o,), dtype)
    for _, jj, vals in _group_values(affine, sym_mask, x, names, funcs, dtype):
        out = out.at[..., jj].add(vals)
    return out if bias is None else bias.astype(dtype) + out
