"""The symbolic edges of a KAN layer (pykan's ``Symbolic_KANLayer``) as one NNX module.

An edge ``(i, j)`` of a layer with ``n`` inputs and ``o`` outputs may hold a library function
``f`` with affine parameters ``[a, b, c, d]``; its value is ``c * f(a * x_i + b) + d``, added to
the layer's output next to the (then masked) spline. The state is data only:

* ``func``: ``(n, o)`` int32 index into the module's function table, ``-1`` for "not symbolic"
  (a :class:`SymbolicIndex` variable: not trained, kept by ``nnx.state`` and checkpoints);
* ``affine``: ``(n, o, 4)`` ``[a, b, c, d]`` (an ``nnx.Param``: trained with the layer).

The function table (``SymbolicEdges.table``, by default every function of
:data:`~kan_jax.symbolic.library.SYMBOLIC_LIB`) is static and fixed at construction, so fixing
an edge to a function of the table, or clearing it, changes values only: the module's
``nnx.graphdef`` stays the same and a program jitted for the layer runs it without compiling
again. Only a function that is not in the table extends it (a new static structure).

Evaluation (:func:`symbolic_edge_values`) does nothing while no edge is symbolic (a
``jax.lax.cond``, forward and backward: a spline-only network pays ~nothing); otherwise it runs
every function of the table on every edge in one elementwise pass and selects per edge (one
fused loop, cheap to compile). Edges that do not select a function feed it a fixed safe input,
so values and gradients stay finite for every function (``log``, ``sqrt``, ``1/x``, ...). The
gradient is a custom VJP (reverse mode only).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kan_jax.functional import check_shard, shard_metadata
from kan_jax.symbolic.library import SYMBOLIC_LIB, SymbolicFunction

__all__ = ["SymbolicEdges", "SymbolicIndex", "symbolic_edge_values", "IDENTITY_PARAMS", "NO_FUNCTION"]

IDENTITY_PARAMS = (1.0, 0.0, 1.0, 0.0)
"""``[a, b, c, d]`` of an edge that is exactly ``f(x)``."""

NO_FUNCTION = -1
"""``func`` value of an edge that is not symbolic."""

# The input that edges not selecting a function feed it: inside every library function's domain
# (log, sqrt, 1/x, arcsin, arctanh, ...), away from any singularity.
_SAFE_INPUT = 0.5


class SymbolicIndex(nnx.Variable):
    """Per-edge int32 index into a ``SymbolicEdges`` function table, ``(n, o)``; -1: not symbolic."""


class UnusedAffine(nnx.Variable):
    """The affine parameters of a ``SymbolicEdges`` whose table is empty: no edge can use them,
    so they are not an ``nnx.Param`` (optimizers, L-BFGS's flat vector and parameter counts skip
    them). They become an ``nnx.Param`` when a function first enters the table."""


def _as_input(fn, z):
    """``fn(z)`` broadcast to ``z``'s shape and dtype (a constant function may return a scalar)."""
    return jnp.broadcast_to(jnp.asarray(fn(z)), z.shape).astype(z.dtype)


def symbolic_edge_values(
    func: jax.Array,
    affine: jax.Array,
    x: jax.Array,
    table: Sequence[SymbolicFunction],
    *,
    dtype=None,
) -> jax.Array:
    """Values of symbolic edges: ``c_ij * table[func_ij](a_ij * x_i + b_ij) + d_ij``.

    Args:
      func: ``(n, o)`` int index into ``table`` per edge; negative: not symbolic (value 0).
      affine: ``(n, o, 4)`` ``[a, b, c, d]`` per edge.
      x: ``(..., n)`` inputs.
      table: the functions (``.jax_fn``), a static tuple.
      dtype: computation dtype (default: result type of ``x`` and ``affine``).

    Returns:
      ``(..., n, o)``, zero on non-symbolic edges; nothing is evaluated if no edge is symbolic.
      Gradients w.r.t. ``affine`` and ``x`` (reverse mode, a custom VJP) are finite.
    """
    return _evaluate(func, affine, x, tuple(table), dtype=None if dtype is None else jnp.dtype(dtype), reduce=False)


@functools.partial(jax.jit, static_argnames=("table", "dtype", "reduce"))
def _evaluate(func, affine, x, table, *, dtype, reduce: bool):
    """:func:`symbolic_edge_values`, summed over the inputs (``(..., o)``) when ``reduce``."""
    dtype = jnp.result_type(x, affine) if dtype is None else dtype
    if not table:  # an empty table (a network trained without symbolic edges): nothing to trace
        n, o = func.shape
        return jnp.zeros(x.shape[:-1] + ((o,) if reduce else (n, o)), dtype)
    return _edges(func, affine, x, table, jnp.dtype(dtype), reduce)


def _selected(func, u, table, derivative: bool):
    """``f_ij = table[func_ij](u_ij)`` (and ``f'_ij`` with ``derivative``), 0 where not symbolic.

    One elementwise pass over every function of the table (a single fused loop for XLA: small to
    compile); the edges that do not select a function feed it ``_SAFE_INPUT``, so nothing
    non-finite appears anywhere."""
    safe = jnp.asarray(_SAFE_INPUT, u.dtype)
    f = df = jnp.zeros(u.shape, u.dtype)
    for k, fn in enumerate(table):
        sel = func == k
        z = jnp.where(sel, u, safe)
        if derivative:  # elementwise: the JVP with a unit tangent is the derivative
            fz, dfz = jax.jvp(functools.partial(_as_input, fn.jax_fn), (z,), (jnp.ones_like(z),))
            f, df = jnp.where(sel, fz, f), jnp.where(sel, dfz, df)
        else:
            f = jnp.where(sel, _as_input(fn.jax_fn, z), f)
    return f, df


def _split(affine, x, dtype):
    p = affine.astype(dtype)
    a, b, c, d = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
    xe = x.astype(dtype)[..., :, None]  # (..., n, 1)
    return a, b, c, d, xe


# A custom VJP: the backward pass is one explicit, gated computation, not JAX's autodiff through
# the conditional (whose residuals would be every function's intermediate values on every edge,
# allocated and zero-filled even while no edge is symbolic).
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _edges(func, affine, x, table, dtype, reduce):
    return _edges_fwd(func, affine, x, table, dtype, reduce)[0]


def _edges_fwd(func, affine, x, table, dtype, reduce):
    n, o = func.shape
    out_shape = x.shape[:-1] + ((o,) if reduce else (n, o))

    def compute(affine, x):
        a, b, c, d, xe = _split(affine, x, dtype)
        f, _ = _selected(func, a * xe + b, table, derivative=False)
        vals = jnp.where(func >= 0, c * f + d, jnp.zeros((), dtype))
        return jnp.sum(vals, axis=-2) if reduce else vals

    out = jax.lax.cond(jnp.any(func >= 0), compute, lambda affine, x: jnp.zeros(out_shape, dtype), affine, x)
    return out, (func, affine, x)


def _edges_bwd(table, dtype, reduce, res, g):
    func, affine, x = res

    def compute(affine, x, g):
        a, b, c, d, xe = _split(affine, x, dtype)
        f, df = _selected(func, a * xe + b, table, derivative=True)
        g = g.astype(dtype)
        g = jnp.where(func >= 0, g[..., None, :] if reduce else g, jnp.zeros((), dtype))  # (..., n, o)
        batch = tuple(range(g.ndim - 2))
        gu = g * c * df
        grad_affine = jnp.stack([jnp.sum(gu * xe, batch), jnp.sum(gu, batch), jnp.sum(g * f, batch), jnp.sum(g, batch)], -1)
        return grad_affine.astype(affine.dtype), jnp.sum(gu * a, -1).astype(x.dtype)

    def nothing(affine, x, g):
        return jnp.zeros_like(affine), jnp.zeros_like(x)

    grad_affine, grad_x = jax.lax.cond(jnp.any(func >= 0), compute, nothing, affine, x, g)
    return np.zeros(func.shape, jax.dtypes.float0), grad_affine, grad_x


_edges.defvjp(_edges_fwd, _edges_bwd)


class SymbolicEdges(nnx.Module):
    """The symbolic edges of an ``(n, o)`` layer: per edge a function index and ``[a, b, c, d]``.

    Args:
      in_features: ``n``.
      out_features: ``o``.
      library: the function table, a mapping ``name -> SymbolicFunction`` (default
        ``SYMBOLIC_LIB``); kept as the static tuple ``table``.
      param_dtype: dtype of ``affine``.
      shard: the layer's ``shard`` (``kan_jax.KANLayer``): ``func`` and ``affine`` name the
        ``model`` mesh axis on their output (``"outputs"``) or input (``"inputs"``) axis.

    Attributes:
      func: :class:`SymbolicIndex` ``(n, o)`` int32, ``-1`` on non-symbolic edges.
      affine: ``nnx.Param`` ``(n, o, 4)``, ``[1, 0, 1, 0]`` on non-symbolic edges.
      table: static tuple of ``SymbolicFunction``.

    The edits (:meth:`set`, :meth:`clear`) run on the host and change values only, unless
    :meth:`set` gets a function outside ``table`` (then the table grows: a new static structure).
    Call with ``x (..., n)`` -> ``(..., o)``, the sum over inputs of :meth:`edge_values`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        library: Mapping[str, SymbolicFunction] | None = None,
        param_dtype=jnp.float32,
        shard: str = "outputs",
    ):
        lib = SYMBOLIC_LIB if library is None else library
        self.shard = check_shard(shard)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.table = tuple(lib.values())
        n, o = self.in_features, self.out_features
        self.func = SymbolicIndex(jax.device_put(np.full((n, o), NO_FUNCTION, np.int32)), **shard_metadata(self.shard, 2))
        affine = jax.device_put(np.broadcast_to(np.asarray(IDENTITY_PARAMS), (n, o, 4)).astype(param_dtype))
        self.affine = (nnx.Param if self.table else UnusedAffine)(affine, **shard_metadata(self.shard, 3))

    # --- evaluation ---

    def edge_values(self, x: jax.Array, *, dtype=None) -> jax.Array:
        """``(..., n) -> (..., n, o)``: ``c f(a x_i + b) + d`` per symbolic edge, 0 elsewhere."""
        return symbolic_edge_values(self.func[...], self.affine[...], x, self.table, dtype=dtype)

    def __call__(self, x: jax.Array, *, dtype=None) -> jax.Array:
        """``(..., n) -> (..., o)``: the sum over inputs of :meth:`edge_values`."""
        return _evaluate(self.func[...], self.affine[...], x, self.table,
                         dtype=None if dtype is None else jnp.dtype(dtype), reduce=True)

    # --- host-side queries ---

    def active(self) -> np.ndarray:
        """``(n, o)`` bool numpy array: which edges are symbolic."""
        return np.asarray(self.func[...]) >= 0

    def function(self, i: int, j: int) -> SymbolicFunction | None:
        """The function of edge ``(i, j)``, or ``None`` if it is not symbolic."""
        k = int(np.asarray(self.func[...])[i, j])
        return self.table[k] if k >= 0 else None

    def names(self) -> tuple[tuple[str | None, ...], ...]:
        """``n x o`` nested tuple: each edge's function name, ``None`` where not symbolic."""
        func = np.asarray(self.func[...])
        return tuple(tuple(self.table[k].name if k >= 0 else None for k in row) for row in func.tolist())

    def entries(self) -> list[tuple[int, int, SymbolicFunction, np.ndarray]]:
        """The symbolic edges, row-major: ``(i, j, function, params [a, b, c, d] float64 (4,))``."""
        func = np.asarray(self.func[...])
        aff = np.asarray(self.affine[...], np.float64)
        return [(i, j, self.table[func[i, j]], aff[i, j]) for i, j in np.argwhere(func >= 0).tolist()]

    # --- edits (host-side, values only) ---

    def _edge_index(self, edges) -> tuple[np.ndarray, np.ndarray]:
        edges = [(int(i), int(j)) for i, j in edges]
        n, o = self.in_features, self.out_features
        for i, j in edges:
            if not (0 <= i < n and 0 <= j < o):
                raise ValueError(f"edge ({i}, {j}) out of range for a layer with {n} inputs, {o} outputs")
        return np.array([e[0] for e in edges], np.int64), np.array([e[1] for e in edges], np.int64)

    def _index_of(self, fn: SymbolicFunction | str) -> int:
        if isinstance(fn, str):
            for k, f in enumerate(self.table):
                if f.name == fn:
                    return k
            raise ValueError(f"{fn!r} is not in this layer's symbolic table ({', '.join(f.name for f in self.table)})")
        for k, f in enumerate(self.table):
            if f == fn:
                return k
        self.table = self.table + (fn,)  # a function outside the table: a new static structure
        if not isinstance(self.affine, nnx.Param):  # the first function: its parameters train
            self.affine = nnx.Param(self.affine[...], **shard_metadata(self.shard, 3))
        return len(self.table) - 1

    def extend_table(self, library: Mapping[str, SymbolicFunction]) -> None:
        """Adds the functions of ``library`` that the table lacks, in ``library``'s order.

        A new static structure when anything is added (programs jitted for the layer compile
        again); the values are unchanged. For a network that trains without symbolic edges
        first: its programs then hold no function of the table (the symbolic pipeline adds the
        table once the network's shapes are settled, after pruning).
        """
        for fn in library.values():
            self._index_of(fn)

    def set(self, edges: Sequence[tuple[int, int]], funcs, params=None) -> None:
        """Makes edges symbolic: edge ``edges[k]`` becomes ``c f(a x + b) + d`` with ``f = funcs[k]``.

        Args:
          edges: ``[(i, j), ...]``.
          funcs: one ``SymbolicFunction`` or table name per edge.
          params: ``(len(edges), 4)`` ``[a, b, c, d]`` (default ``[1, 0, 1, 0]`` each).
        """
        ii, jj = self._edge_index(edges)
        funcs = list(funcs)
        if len(funcs) != len(ii):
            raise ValueError(f"need one function per edge, got {len(funcs)} for {len(ii)} edges")
        if not len(ii):
            return
        aff = np.array(self.affine[...])
        p = np.broadcast_to(np.asarray(IDENTITY_PARAMS), (len(ii), 4)) if params is None else np.asarray(params, np.float64).reshape(len(ii), 4)
        func = np.array(self.func[...])
        func[ii, jj] = [self._index_of(f) for f in funcs]
        aff[ii, jj] = p
        self.func.set_value(jax.device_put(func.astype(np.int32)))
        self.affine.set_value(jax.device_put(aff))

    def clear(self, edges: Sequence[tuple[int, int]]) -> None:
        """Makes edges ``[(i, j), ...]`` non-symbolic (``func = -1``, ``affine = [1, 0, 1, 0]``)."""
        ii, jj = self._edge_index(edges)
        if not len(ii):
            return
        func = np.array(self.func[...])
        aff = np.array(self.affine[...])
        func[ii, jj] = NO_FUNCTION
        aff[ii, jj] = IDENTITY_PARAMS
        self.func.set_value(jax.device_put(func.astype(np.int32)))
        self.affine.set_value(jax.device_put(aff))

    def clear_where(self, drop) -> None:
        """Clears every edge where the ``(n, o)`` bool ``drop`` is True."""
        self.clear(np.argwhere(np.asarray(drop, bool)).tolist())

    def take(self, rows: Sequence[int], cols: Sequence[int]) -> SymbolicEdges:
        """A new ``SymbolicEdges`` for inputs ``rows`` and outputs ``cols`` (the same table)."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        new = SymbolicEdges(len(rows), len(cols), library={}, param_dtype=self.affine[...].dtype, shard=self.shard)
        new.table = self.table
        ix = np.ix_(rows, cols)
        new.func.set_value(jax.device_put(np.asarray(self.func[...])[ix].astype(np.int32)))
        new.affine = type(self.affine)(jax.device_put(np.asarray(self.affine[...])[ix]), **shard_metadata(self.shard, 3))  # Param iff a table
        return new
