"""Fast paths of the KAN layer contraction (used by ``kan_jax.functional.apply``).

The layer output is one contraction ``y = feats(x) @ W`` with
``feats(x) = [b(x_i), B_0(x_i), ..., B_{M-1}(x_i)]_i`` of shape ``(batch, n, 1 + M)`` and
``W (n, 1 + M, o)`` (base weights in column 0, ``w_spline * coef`` after it, mask folded in).

Paths (all exact: same values as ``splines.bspline_basis`` to float rounding):

* **uniform** (dense): closed-form cardinal B-splines on ``u = (x - t_0) / h``. Per input element
  one interval index ``j = floor(u)`` and the ``k + 1`` non-zero values (de Boor's triangle with
  constant denominators, no divisions); the dense basis row is scattered from them by index
  comparison inside one XLA fusion.
* **general** (dense): Cox-de Boor recursion with per-input reciprocal knot spacings precomputed
  once (no divisions in the batch loop), for any increasing knots (adaptive grids).
* **local** (uniform or general): only the ``k + 1`` non-zero bases per input; the contraction
  gathers, per input, the one window of ``k + 1`` consecutive rows of ``W`` it needs (forward)
  and scatter-adds into those windows (backward), in batch chunks that stay in cache. Its flops
  and temporaries do not grow with ``G``; on XLA CPU a gathered element costs about 15 times a
  matmul multiply-add, so it wins from about ``G = 100`` (``choose_path``, docs/PERFORMANCE.md).

Every path is wrapped in a ``jax.custom_vjp`` whose backward recomputes the basis and its
derivative (``dB_m^k/dx = k/(t_{m+k}-t_m) B_m^{k-1} - k/(t_{m+k+1}-t_{m+1}) B_{m+1}^{k-1}``)
instead of keeping the recursion's intermediates: the residuals are just ``x``, ``grid`` and
``W``. The knots get a zero cotangent (the grid is not trained by gradient).

Large batches run in chunks (``_scan_batch``). Under a device mesh whose ``DATA_AXIS`` splits
the rows (``jax.set_mesh``, as ``kan_jax.train.loop.fit`` traces on a mesh), each device chunks
its own rows and the accumulated weight cotangent is summed across devices once, at the end
(``jax.shard_map``): chunking the global rows instead would make XLA gather the whole batch onto
every device and run the full backward there (docs/SCALING.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from kan_jax.splines import clamp, clamp_to_reach

# What users call; the basis evaluators are public math (tests compare them to scipy), the
# local-window, chunking and custom-VJP pieces are internals of ``contract``.
__all__ = ["PATHS", "choose_path", "contract", "is_uniform", "uniform_basis", "general_basis"]

PATHS = ("uniform", "general", "local_uniform", "local_general")

DATA_AXIS = "data"
"""The mesh axis a batch's rows split over (``kan_jax.train.sharding``)."""


# --------------------------------------------------------------------------- base activations


def _silu_grad(x):
    s = jax.nn.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _base_value_and_grad(name: str) -> tuple[Callable, Callable]:
    if name == "silu":
        return jax.nn.silu, _silu_grad
    if name == "tanh":
        return jnp.tanh, lambda x: 1.0 - jnp.tanh(x) ** 2
    if name == "identity":
        return (lambda x: x), jnp.ones_like
    if name == "zero":
        return jnp.zeros_like, jnp.zeros_like
    if name == "gelu":
        return gelu, _elementwise_grad(gelu)
    raise ValueError(f"unknown base activation {name!r}")


GELU_SATURATION = 10.0
"""``|x|`` from which ``gelu`` is ``relu`` (``jax.nn.gelu``'s tanh is +-1 in every float dtype)."""


def gelu(x):
    """``jax.nn.gelu`` (tanh approximation) with finite derivatives at any finite ``x``.

    Same values: from ``|x| = GELU_SATURATION`` on, ``jax.nn.gelu(x)`` is exactly ``relu(x)``
    (its ``tanh(0.8 (x + 0.045 x^3))`` rounds to +-1), and there it is computed as such. The plain
    one's derivative multiplies ``sech^2 = 0`` by ``x^2``, which overflows float32 from
    ``|x| ~ 1e19``: ``0 * inf = NaN``.
    """
    big = jnp.abs(x) >= GELU_SATURATION
    return jnp.where(big, jnp.maximum(x, 0), jax.nn.gelu(jnp.where(big, 0, x)))


def _elementwise_grad(f):
    def g(x):
        return jax.jvp(f, (x,), (jnp.ones_like(x),))[1]

    return g


# --------------------------------------------------------------------------- uniform grids


def is_uniform(grid: jax.Array, *, rtol: float | None = None) -> jax.Array:
    """Traced bool: every knot row is evenly spaced (to a few ulps of its magnitude)."""
    t = jnp.asarray(grid)
    n_knots = t.shape[-1]
    h = (t[:, -1] - t[:, 0]) / (n_knots - 1)
    ideal = t[:, :1] + jnp.arange(n_knots, dtype=t.dtype) * h[:, None]
    tol = (rtol if rtol is not None else 16 * jnp.finfo(t.dtype).eps) * jnp.max(jnp.abs(t), axis=1, keepdims=True)
    return jnp.all(jnp.abs(t - ideal) <= tol) & jnp.all(h > 0)


def _uniform_params(grid):
    n_knots = grid.shape[-1]
    t0 = grid[:, 0]
    h = (grid[:, -1] - t0) / (n_knots - 1)
    return t0, h


def uniform_local(x, t0, h, order: int, *, deriv: bool = False, n_basis: int | None = None):
    """Interval index and the ``k + 1`` non-zero cardinal B-spline values (and derivatives).

    Args:
      x: ``(..., n)`` inputs.
      t0, h: ``(n,)`` first knot and knot spacing per input.
      order: ``k``.
      deriv: also return ``d/dx`` of the values.
      n_basis: if given, extrapolate: the interval index is clamped to the base intervals
        ``[k, n_basis)`` and their polynomial pieces are evaluated at ``x``, itself clamped to
        ``splines.extrapolation_bounds`` (beyond them values are constant, derivatives 0).

    Returns:
      ``(j, vals)`` or ``(j, vals, dvals)``: ``j (..., n)`` int32 interval index (knot ``t_j <= x <
      t_{j+1}``), ``vals`` a list of ``k + 1`` arrays ``(..., n)``: basis ``m = j - k + r`` for
      ``r = 0..k``. Indices outside ``[0, G + k)`` are not basis functions of the grid.
    """
    k = order
    reach = None
    if n_basis is not None:
        x, reach = clamp_to_reach(x, t0 + k * h, t0 + n_basis * h)  # beyond: constant values, zero derivatives
    u = (x - t0) / h
    u = jnp.clip(u, -k - 2.0, 1e7)
    jf = jnp.floor(u)
    if n_basis is not None:
        jf = jnp.clip(jf, k, n_basis - 1)
    j = jf.astype(jnp.int32)
    f = (x - (t0 + jf * h)) / h  # local coordinate in [0, 1), from a nearby origin (accurate)
    vals = [jnp.ones_like(f)]
    lower = None
    for d in range(1, k + 1):
        if d == k:
            lower = vals
        inv_d = 1.0 / d
        new = []
        saved = jnp.zeros_like(f)
        for r in range(d):
            # right[r+1] = r + 1 - f, left[d-r] = f + d - r - 1 (in units of h); denominators are d.
            temp = vals[r] * inv_d
            new.append(saved + (r + 1 - f) * temp)
            saved = (f + (d - r - 1)) * temp
        new.append(saved)
        vals = new
    if not deriv:
        return j, vals
    if k == 0:
        return j, vals, [jnp.zeros_like(f)]
    inv_h = 1.0 / h
    dvals = []
    for r in range(k + 1):
        a = lower[r - 1] if r >= 1 else 0.0
        b = lower[r] if r < k else 0.0
        dvals.append((a - b) * inv_h)
    if reach is not None:
        dvals = [jnp.where(reach, d, 0.0) for d in dvals]
    return j, vals, dvals


def _scatter_dense(j, vals, n_basis, order):
    """Dense ``(..., n, n_basis)`` row from the local values (index comparison, fusible)."""
    m = jnp.arange(n_basis, dtype=jnp.int32)
    d = m - (j[..., None] - order)  # which local value lands on basis m
    out = jnp.zeros(d.shape, vals[0].dtype)
    for r, v in enumerate(vals):
        out = jnp.where(d == r, v[..., None], out)
    return out


def uniform_basis(x, grid, order: int, *, deriv: bool = False, extrapolate: bool = False):
    """Dense basis ``(..., n, G + k)`` of a uniform grid (and its x-derivative when ``deriv``)."""
    t0, h = _uniform_params(grid)
    n_basis = grid.shape[-1] - order - 1
    res = uniform_local(x, t0, h, order, deriv=deriv, n_basis=n_basis if extrapolate else None)
    b = _scatter_dense(res[0], res[1], n_basis, order)
    if not deriv:
        return b
    return b, _scatter_dense(res[0], res[2], n_basis, order)


# --------------------------------------------------------------------------- general grids


def _safe_inv(d):
    pos = d > 0
    return jnp.where(pos, 1.0 / jnp.where(pos, d, 1.0), 0.0)


def general_basis(x, grid, order: int, *, deriv: bool = False, extrapolate: bool = False):
    """Dense basis ``(..., n, G + k)`` for any increasing knots, and its derivative.

    Each output element ``B_m(x)`` runs its own small de Boor triangle on the knots
    ``t_m .. t_{m+k+1}`` (broadcast ``(n, M)`` tables, reciprocal spacings precomputed): one
    elementwise XLA fusion with no slicing of batch-sized intermediates (slicing a
    ``(batch, n, K)`` array level by level, as the textbook recursion does, is ~10x slower on CPU).
    Same arithmetic as ``splines.bspline_basis`` (``extrapolate`` likewise, and ``x`` clamped as there).
    """
    k = order
    t = grid
    n_basis = t.shape[-1] - k - 1
    x = x[..., None]  # (..., n, 1)
    reach = None
    if extrapolate:
        lo, hi = t[:, k : k + 1], t[:, n_basis : n_basis + 1]
        xs = jnp.clip(x, lo, jnp.nextafter(hi, lo))
        x, reach = clamp_to_reach(x, lo, hi)  # beyond: constant values, zero derivatives
    else:
        xs = x
    tab = [t[:, i : i + n_basis] for i in range(k + 2)]  # t_{m+i}, (n, M)
    nodes = [((xs >= tab[i]) & (xs < tab[i + 1])).astype(t.dtype) for i in range(k + 1)]  # N^0_{m+i}
    if not extrapolate:  # every node is 0 outside the knot span; clamped, the factors stay finite
        x = clamp(x, t[:, :1], t[:, -1:])
    # Reciprocal spacings 1/(t_{m+p} - t_m) for p = 1..k in one computation (one XLA fusion,
    # not one per (p, i): fewer kernels to compile); inv[p - 1][:, i : i + M] = 1/(t_{m+i+p} - t_{m+i}).
    if k > 0:
        diffs = jnp.stack([jnp.pad(t[:, p:] - t[:, :-p], ((0, 0), (0, p - 1))) for p in range(1, k + 1)])
        inv = _safe_inv(diffs)  # (k, n, K - 1)
    lower = nodes
    for p in range(1, k + 1):
        lower = nodes
        new = []
        for i in range(k + 1 - p):
            inv_l = inv[p - 1, :, i : i + n_basis]
            inv_r = inv[p - 1, :, i + 1 : i + 1 + n_basis]
            new.append((x - tab[i]) * inv_l * nodes[i] + (tab[i + p + 1] - x) * inv_r * nodes[i + 1])
        nodes = new
    b = nodes[0]
    if not deriv:
        return b
    if k == 0:
        return b, jnp.zeros_like(b)
    db = k * inv[k - 1, :, :n_basis] * lower[0] - k * inv[k - 1, :, 1 : 1 + n_basis] * lower[1]
    if reach is not None:
        db = jnp.where(reach, db, 0.0)
    return b, db


def _take_per_input(table, idx, *, trailing: int = 0):
    """``table[n, idx]`` for a small per-input table ``(n, K)`` and ``idx (..., n, *trailing dims)``:
    one gather from the flat table, without broadcasting the table to ``idx``'s shape."""
    row = jnp.arange(table.shape[0], dtype=jnp.int32) * table.shape[1]
    return table.reshape(-1)[row.reshape(row.shape + (1,) * trailing) + idx]


def knot_interval(x, t):
    """Index ``(..., n)`` int32 of the last knot ``t[n, j] <= x[..., n]`` (-1 below ``t[n, 0]`` or NaN).

    Binary search over each input's increasing knot row ``t (n, K)``: ``ceil(log2(K + 1))`` steps
    of one small gather each, instead of ``K`` comparisons per input (the local path's cost must
    not grow with ``G``). Equals ``np.searchsorted(t[n], x, side="right") - 1``.
    """
    n_knots = t.shape[-1]
    # Invariant: t[lo] <= x < t[hi], with t[-1] = -inf and t[K] = +inf.
    lo = jnp.full(x.shape, -1, jnp.int32)
    hi = jnp.full(x.shape, n_knots, jnp.int32)
    for _ in range(max(1, math.ceil(math.log2(n_knots + 1)))):
        mid = (lo + hi) // 2
        active = hi - lo > 1  # then lo < mid < hi, a real knot
        right = active & (x >= _take_per_input(t, jnp.clip(mid, 0, n_knots - 1)))
        left = active & ~right
        lo = jnp.where(right, mid, lo)
        hi = jnp.where(left, mid, hi)
        # Materialize each step: fused, XLA would recompute the chain in every consumer.
        lo, hi = jax.lax.optimization_barrier((lo, hi))
    return lo


def general_local(x, grid, order: int, *, deriv: bool = False, extrapolate: bool = False, interval=None):
    """Local values for any increasing knots: same outputs as ``uniform_local``.

    The interval is found by binary search (``knot_interval``; pass it as ``interval`` when
    already known); the ``2k`` knots around it are gathered and de Boor's triangle (with
    divisions) gives the ``k + 1`` non-zero values.
    """
    k = order
    t = grid
    n_knots = t.shape[-1]
    j = knot_interval(x, t) if interval is None else interval  # (..., n), -1 .. K-1
    reach = None
    if extrapolate:  # base intervals only; their pieces are evaluated at x (clamped to the reach)
        j = jnp.clip(j, k, n_knots - k - 2)
        x, reach = clamp_to_reach(x, t[:, k], t[:, n_knots - k - 1])  # beyond: constant values, zero derivatives
    inside = (j >= 0) & (j < n_knots - 1)
    win = None
    if k > 0:
        # Pad k knots per side (end spacing) so the window t_{j-k+1} .. t_{j+k} always exists; the
        # padded knots only enter basis indices outside [0, M), which callers drop.
        ext = jnp.arange(1, k + 1, dtype=t.dtype)
        tp = jnp.concatenate(
            [t[:, :1] - (t[:, 1:2] - t[:, :1]) * ext[::-1], t, t[:, -1:] + (t[:, -1:] - t[:, -2:-1]) * ext], axis=1
        )
        offs = jnp.arange(1, 2 * k + 1, dtype=jnp.int32)  # t_{j-k+1+q} = tp[j + 1 + q]
        idx = jnp.clip(j, 0, n_knots - 2)[..., None] + offs
        win = _take_per_input(tp, idx, trailing=1)  # (..., n, 2k)
    vals = [inside.astype(x.dtype)]
    lower = None
    for d in range(1, k + 1):
        if d == k:
            lower = vals
        new = []
        saved = jnp.zeros_like(x)
        for r in range(d):
            right = win[..., k - 1 + r + 1] - x  # t_{j+r+1} - x
            left = x - win[..., k - 1 - (d - r) + 1]  # x - t_{j+1-(d-r)}
            # The knot spacing itself, not right + left: far outside the grid that sum cancels
            # (at |x| = 1e30 in float32 it is 0).
            temp = vals[r] * _safe_inv(win[..., k - 1 + r + 1] - win[..., k - 1 - (d - r) + 1])
            new.append(saved + right * temp)
            saved = left * temp
        new.append(saved)
        vals = new
    if not deriv:
        return j, vals
    if k == 0:
        return j, vals, [jnp.zeros_like(x)]
    dvals = []
    for r in range(k + 1):
        # basis m = j - k + r: k/(t_{m+k}-t_m) N^{k-1}_m - k/(t_{m+k+1}-t_{m+1}) N^{k-1}_{m+1}
        a = 0.0
        b = 0.0
        if r >= 1:
            a = lower[r - 1] * k * _safe_inv(win[..., k - 1 + r] - win[..., k - 1 + r - k + 0])
        if r < k:
            b = lower[r] * k * _safe_inv(win[..., k - 1 + r + 1] - win[..., k - 1 + r + 1 - k])
        dvals.append(a - b)
    if reach is not None:
        dvals = [jnp.where(reach, d, 0.0) for d in dvals]
    return j, vals, dvals


# --------------------------------------------------------------------------- features and contraction


def features(x, grid, order: int, base_activation: str, path: str, *, deriv: bool = False, extrapolate: bool = False):
    """Dense features ``(..., n, 1 + M)`` (base column first) and optionally their x-derivative."""
    base, base_grad = _base_value_and_grad(base_activation)
    fn = functools.partial(uniform_basis if path == "uniform" else general_basis, extrapolate=extrapolate)
    if deriv:
        b, db = fn(x, grid, order, deriv=True)
        return (
            jnp.concatenate([base(x)[..., None], b], axis=-1),
            jnp.concatenate([base_grad(x)[..., None], db], axis=-1),
        )
    return jnp.concatenate([base(x)[..., None], fn(x, grid, order)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def dense_features(x, grid, order: int, base_activation: str, path: str, extrapolate: bool = False):
    """``features(x)`` ``(..., n, 1 + M)`` (``path`` "uniform" or "general") with a custom VJP.

    The backward multiplies the cotangent by the closed-form x-derivative of the features instead
    of differentiating through the basis recursion (the knots get a zero cotangent). Used where
    the per-edge values themselves are needed (``kan_jax.functional.edge_values``).
    """
    return features(x, grid, order, base_activation, path, extrapolate=extrapolate)


def _features_fwd(x, grid, order, base_activation, path, extrapolate):
    return features(x, grid, order, base_activation, path, extrapolate=extrapolate), (x, grid)


def _features_bwd(order, base_activation, path, extrapolate, res, g):
    x, grid = res
    _, df = features(x, grid, order, base_activation, path, deriv=True, extrapolate=extrapolate)
    return jnp.sum(g * df.astype(g.dtype), axis=-1).astype(x.dtype), jnp.zeros_like(grid)


dense_features.defvjp(_features_fwd, _features_bwd)


def _dense_contract_impl(x, grid, w, order, base_activation, path, acc, extrapolate):
    f = features(x, grid, order, base_activation, path, extrapolate=extrapolate).astype(w.dtype)
    lead = x.shape[:-1]
    y = jnp.dot(f.reshape(-1, f.shape[-2] * f.shape[-1]), w.reshape(-1, w.shape[-1]), preferred_element_type=acc)
    return y.reshape(lead + (w.shape[-1],))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _dense_contract(x, grid, w, order, base_activation, path, acc, extrapolate):
    return _dense_contract_impl(x, grid, w, order, base_activation, path, acc, extrapolate)


def _dense_fwd(x, grid, w, order, base_activation, path, acc, extrapolate):
    return _dense_contract_impl(x, grid, w, order, base_activation, path, acc, extrapolate), (x, grid, w)


# Large batches run in chunks of the batch, each with at most this many elements in its largest
# temporary: the dense backward's ``(chunk, n, 1 + M)`` features, the local path's gathered
# ``(chunk, n, k + 1, o)`` weight rows (a smaller budget: gathers run fastest when the chunk stays
# in cache). Temporaries then stay a fraction of one basis tensor and do not grow with the batch
# (docs/PERFORMANCE.md, memory).
CHUNK_ELEMENTS = 1 << 22
LOCAL_CHUNK_ELEMENTS = {"cpu": 1 << 20}  # per backend; others use the default below
LOCAL_CHUNK_ELEMENTS_DEFAULT = 1 << 24  # accelerators: fewer, larger steps (64 MB in f32; not measured yet)


def _local_budget() -> int:
    return LOCAL_CHUNK_ELEMENTS.get(jax.default_backend(), LOCAL_CHUNK_ELEMENTS_DEFAULT)


def _chunks(batch: int, row: int, budget: int) -> tuple[int, int]:
    """``(number of chunks, rows per chunk)`` for ``row`` temporary elements per batch row.

    As few chunks as keep ``rows * row <= budget`` (at least one row each), then rows spread
    evenly over them, so padding stays below one row per chunk.
    """
    size = max(1, min(batch, budget // max(row, 1)))
    n_chunks = -(-batch // size)
    return n_chunks, -(-batch // n_chunks)


def _scan_batch(step, carry, arrays, row: int, budget: int):
    """``step(carry, *chunks) -> (carry, out)`` over batch chunks of ``arrays`` (leading axis batch).

    ``carry`` accumulates sums from zeros (``None`` for none). The batch is padded with zero rows
    to a whole number of chunks; ``out`` (leading axis batch) is cut back. Callers make zero rows
    contribute nothing to ``carry`` (zero cotangents).

    Under a context mesh whose ``DATA_AXIS`` (size ``d > 1``) divides the rows, every device
    scans its own ``batch / d`` rows (``jax.shard_map`` over that axis; the other axes stay
    automatic) and the carries are summed across it once. Wide step on 4 CPU devices, data:4
    (``scripts/bench_scale.py``): no batch all-gather, 1,467 MB per device instead of 1,585 MB.
    """
    mesh = jax.sharding.get_abstract_mesh()
    d = 0 if mesh.empty or DATA_AXIS not in mesh.axis_names else mesh.shape[DATA_AXIS]
    if d <= 1 or arrays[0].shape[0] % d:
        return _scan_rows(step, carry, arrays, row, budget)

    def local(carry, *arrays):
        carry = jax.tree.map(lambda c: jax.lax.pcast(c, (DATA_AXIS,), to="varying"), carry)
        carry, out = _scan_rows(step, carry, arrays, row, budget)
        return jax.tree.map(lambda c: jax.lax.psum(c, DATA_AXIS), carry), out

    spec = jax.sharding.PartitionSpec(DATA_AXIS)
    return jax.shard_map(local, in_specs=(jax.sharding.PartitionSpec(),) + (spec,) * len(arrays),
                         out_specs=(jax.sharding.PartitionSpec(), spec), axis_names={DATA_AXIS})(carry, *arrays)


def _scan_rows(step, carry, arrays, row: int, budget: int):
    """``_scan_batch`` on the rows as given (one device's view)."""
    batch = arrays[0].shape[0]
    n_chunks, size = _chunks(batch, row, budget)
    if n_chunks == 1:
        return step(carry, *arrays)
    pad = n_chunks * size - batch
    xs = tuple(jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape((n_chunks, size) + a.shape[1:]) for a in arrays)
    carry, out = jax.lax.scan(lambda c, a: step(c, *a), carry, xs)
    return carry, out.reshape((n_chunks * size,) + out.shape[2:])[:batch]


def _dense_bwd(order, base_activation, path, acc, extrapolate, res, g):
    x, grid, w = res
    n, m1, o = w.shape
    w2t = w.reshape(n * m1, o).T

    def step(dw_acc, xc, gc):
        f, df = features(xc, grid, order, base_activation, path, deriv=True, extrapolate=extrapolate)
        dw = jnp.dot(f.reshape(-1, n * m1).astype(w.dtype).T, gc, preferred_element_type=acc)
        dfeat = jnp.dot(gc, w2t, preferred_element_type=acc).reshape(xc.shape + (m1,))
        return dw_acc + dw, jnp.sum(dfeat * df.astype(dfeat.dtype), axis=-1)

    arrays = (x.reshape(-1, n), g.reshape(-1, o).astype(w.dtype))
    dw, dx = _scan_batch(step, jnp.zeros((n * m1, o), acc), arrays, n * m1, CHUNK_ELEMENTS)
    dw = dw.reshape(w.shape).astype(w.dtype)
    return dx.reshape(x.shape).astype(x.dtype), jnp.zeros_like(grid), dw


_dense_contract.defvjp(_dense_fwd, _dense_bwd)


# Local-support contraction:
#   y[b, o] = sum_n (b(x_bn) w[n, 0, o] + sum_r v_r(x_bn) w[n, 1 + j_bn - k + r, o]).
# The k + 1 rows an input needs are consecutive, so each input gathers one contiguous window of
# the spline rows, padded with k zero rows per side; local values of basis indices outside
# [0, M) (inputs beyond the grid) are zeroed as well.


def _local_parts(x, grid, order, path, deriv, extrapolate, interval=None):
    """Window starts ``(..., n)`` into ``_spline_rows``, values and derivatives ``(..., n, k + 1)``."""
    k = order
    n_basis = grid.shape[-1] - k - 1
    if path == "local_uniform":
        t0, h = _uniform_params(grid)
        res = uniform_local(x, t0, h, k, deriv=deriv, n_basis=n_basis if extrapolate else None)
    else:
        res = general_local(x, grid, k, deriv=deriv, extrapolate=extrapolate, interval=interval)
    m = res[0][..., None] + jnp.arange(-k, 1, dtype=jnp.int32)  # basis index of each local value
    valid = (m >= 0) & (m < n_basis)
    start = jnp.clip(res[0], 0, n_basis + k - 1)  # basis j - k sits at padded row j
    vals = jnp.where(valid, jnp.stack(res[1], axis=-1), 0.0)
    dvals = jnp.where(valid, jnp.stack(res[2], axis=-1), 0.0) if deriv else None
    return start, vals, dvals


def _local_inputs(x, grid, path):
    """Per-row inputs of the chunked local steps: ``(x,)``, and the knot intervals on general grids.

    The binary search runs once over the whole batch: per chunk, its small steps would cost more
    in overhead than in work.
    """
    return (x,) if path == "local_uniform" else (x, knot_interval(x, grid))


def _spline_rows(w, order):
    """``(n, M + 2k, o)``: the spline rows ``w[:, 1:]`` with ``k`` zero rows on each side."""
    z = jnp.zeros((w.shape[0], order, w.shape[2]), w.dtype)
    return jnp.concatenate([z, w[:, 1:], z], axis=1)


def _window_indices(start):
    """Gather/scatter indices ``(B, n, 2)`` and dimension numbers for windows of ``(n, R, o)``."""
    idx = jnp.stack([start, jnp.zeros_like(start)], axis=-1)
    gather = jax.lax.GatherDimensionNumbers(
        offset_dims=(2, 3), collapsed_slice_dims=(), start_index_map=(1, 2), operand_batching_dims=(0,),
        start_indices_batching_dims=(1,),
    )
    scatter = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(2, 3), inserted_window_dims=(), scatter_dims_to_operand_dims=(1, 2),
        operand_batching_dims=(0,), scatter_indices_batching_dims=(1,),
    )
    return idx, gather, scatter


def _windows(rows, start, order):
    """``rows[n, start[b, n] + r, :]`` for ``r = 0..k``: ``(B, n, k + 1, o)``."""
    idx, dnums, _ = _window_indices(start)
    return jax.lax.gather(rows, idx, dnums, (1, order + 1, rows.shape[-1]), mode="clip")


def _add_windows(acc_rows, start, updates):
    """``acc_rows[n, start[b, n] + r, :] += updates[b, n, r, :]`` (transpose of ``_windows``)."""
    idx, _, dnums = _window_indices(start)
    return jax.lax.scatter_add(acc_rows, idx, updates, dnums, mode="clip")


def _local_contract_impl(x, grid, w, order, base_activation, path, acc, extrapolate):
    n, _, o = w.shape
    base, _ = _base_value_and_grad(base_activation)
    rows = _spline_rows(w, order)

    def step(_, xc, *jc):
        start, vals, _ = _local_parts(xc, grid, order, path, False, extrapolate, *jc)
        y = jnp.dot(base(xc).astype(w.dtype), w[:, 0], preferred_element_type=acc)
        # Products in the accumulation dtype, as the dense path's dot (features rounded to w.dtype).
        v = vals.astype(w.dtype).astype(acc)
        y = y + jnp.sum(v[..., None] * _windows(rows, start, order).astype(acc), axis=(1, 2))
        return None, y

    _, y = _scan_batch(step, None, _local_inputs(x.reshape(-1, n), grid, path), n * (order + 1) * o, _local_budget())
    return y.reshape(x.shape[:-1] + (o,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _local_contract(x, grid, w, order, base_activation, path, acc, extrapolate):
    return _local_contract_impl(x, grid, w, order, base_activation, path, acc, extrapolate)


def _local_fwd(x, grid, w, order, base_activation, path, acc, extrapolate):
    return _local_contract_impl(x, grid, w, order, base_activation, path, acc, extrapolate), (x, grid, w)


def _local_bwd(order, base_activation, path, acc, extrapolate, res, g):
    x, grid, w = res
    n, m1, o = w.shape
    k = order
    base, base_grad = _base_value_and_grad(base_activation)
    rows = _spline_rows(w, k)

    def step(carry, gc, xc, *jc):
        dbase, drows = carry
        start, vals, dvals = _local_parts(xc, grid, k, path, True, extrapolate, *jc)
        # d/dx: b'(x) <g, w[n, 0]> + sum_r dv_r <g, row_r>
        dx = base_grad(xc) * jnp.dot(gc, w[:, 0].T, preferred_element_type=acc)
        ga = gc.astype(acc)
        dx = dx + jnp.sum(dvals * jnp.sum(ga[:, None, None, :] * _windows(rows, start, k).astype(acc), -1), -1)
        dbase = dbase + jnp.dot(base(xc).astype(w.dtype).T, gc, preferred_element_type=acc)
        drows = _add_windows(drows, start, vals.astype(w.dtype).astype(acc)[..., None] * ga[:, None, None, :])
        return (dbase, drows), dx

    arrays = (g.reshape(-1, o).astype(w.dtype),) + _local_inputs(x.reshape(-1, n), grid, path)
    carry = (jnp.zeros((n, o), acc), jnp.zeros(rows.shape, acc))
    (dbase, drows), dx = _scan_batch(step, carry, arrays, n * (k + 1) * o, _local_budget())
    dw = jnp.concatenate([dbase[:, None], drows[:, k : k + m1 - 1]], axis=1).astype(w.dtype)
    return dx.reshape(x.shape).astype(x.dtype), jnp.zeros_like(grid), dw


_local_contract.defvjp(_local_fwd, _local_bwd)


def choose_path(grid_size: int, uniform: bool) -> str:
    """Automatic path choice: dense below ``LOCAL_MIN_GRID``, local support from there.

    Measured on XLA CPU (docs/PERFORMANCE.md): at G = 100 the local path is faster than the dense
    one in p at every measured size (8 -> 8 to 256 -> 256) and in the forward and px up to
    128 -> 128 (at 256 -> 256 it won in one run and lost in another); at G = 50 its forward is
    slower from width 64 up (cubic splines; other orders and accelerators not measured yet).
    """
    if grid_size >= LOCAL_MIN_GRID:
        return "local_uniform" if uniform else "local_general"
    return "uniform" if uniform else "general"


# Smallest grid size where the local-support path is chosen automatically (choose_path).
LOCAL_MIN_GRID = 100


def contract(x, grid, w, *, order: int, base_activation: str, path: str, acc=None, extrapolate: bool = False):
    """``y = feats(x) @ w`` with a custom VJP.

    Args:
      x: ``(..., n)`` inputs (computation dtype).
      grid: ``(n, K)`` knots.
      w: ``(n, 1 + M, o)`` fused weights (column 0: base branch).
      order: spline order ``k``.
      base_activation: name of ``b``.
      path: one of ``PATHS``.
      acc: accumulation dtype (default ``w.dtype``).
      extrapolate: continue the end pieces beyond the base interval (``splines.bspline_basis``).

    Returns:
      ``(..., o)`` in ``acc``.
    """
    acc = jnp.dtype(acc or w.dtype)
    if path in ("uniform", "general"):
        return _dense_contract(x, grid, w, order, base_activation, path, acc, bool(extrapolate))
    if path in ("local_uniform", "local_general"):
        return _local_contract(x, grid, w, order, base_activation, path, acc, bool(extrapolate))
    raise ValueError(f"path must be one of {PATHS}, got {path!r}")
