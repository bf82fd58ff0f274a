"""Pure B-spline math: knots, basis, evaluation, least-squares fits, grid update and refinement.

Conventions (see docs/DESIGN.md):

* A grid of ``G`` intervals of order ``k`` is an increasing knot vector of ``G + 2k + 1``
  knots: the ``G + 1`` knots of the base interval ``[t[k], t[G + k]]`` plus ``k`` extension
  knots on each side. It carries ``G + k`` basis functions.
* Knots are stored per input, shape ``(n, n_knots)``; coefficients per edge, shape
  ``(n, out, n_basis)`` with ``n_basis = n_knots - order - 1``.

Everything here is a pure function of arrays, safe under ``jit``, ``vmap`` and ``grad``,
except the host-side helpers ``insert_knots`` / ``refine_knots`` whose output shape depends
on the knot count (they run on concrete arrays, in float64 NumPy).
"""

from __future__ import annotations

from collections.abc import Sequence

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "uniform_knots",
    "uniform_knots_np",
    "bspline_basis",
    "spline_eval",
    "fit_coef",
    "lstsq_coef",
    "adaptive_knots",
    "refine_knots",
    "is_nested",
    "insert_knots",
    "validate_grid_args",
    "EXTRAPOLATION_REACH",
    "extrapolation_bounds",
    "clamp_to_reach",
]


def validate_grid_args(*, grid_size, spline_order, grid_range) -> tuple[float, float]:
    """Checks grid hyperparameters; returns ``grid_range`` as a float pair.

    Raises:
      ValueError: naming the argument and the allowed values.
    """
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or grid_size < 1:
        raise ValueError(f"grid_size must be an integer >= 1, got {grid_size!r}")
    if isinstance(spline_order, bool) or not isinstance(spline_order, (int, np.integer)) or spline_order < 0:
        raise ValueError(f"spline_order must be an integer >= 0, got {spline_order!r}")
    try:
        lo, hi = (float(v) for v in grid_range)
    except (TypeError, ValueError):
        raise ValueError(f"grid_range must be a pair (low, high) of floats with low < high, got {grid_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"grid_range must be a pair (low, high) of finite floats with low < high, got {grid_range!r}")
    return lo, hi


def uniform_knots(grid_size: int, order: int, grid_range: Sequence[float] = (-1.0, 1.0), *, dtype=None) -> jax.Array:
    """Uniform extended knot vector.

    Args:
      grid_size: number of intervals ``G`` of the base interval ``grid_range``.
      order: spline order ``k`` (3 = cubic); ``k`` extra knots are added on each side.
      grid_range: ``(low, high)`` of the base interval.
      dtype: knot dtype (default: JAX's default float).

    Returns:
      Knots of shape ``(G + 2k + 1,)``.
    """
    return jax.device_put(uniform_knots_np(grid_size, order, grid_range, dtype=dtype))


def uniform_knots_np(grid_size: int, order: int, grid_range: Sequence[float] = (-1.0, 1.0), *, dtype=None) -> np.ndarray:
    """``uniform_knots`` as a numpy array, computed on the host: no XLA program is compiled for
    it (nor for moving it to a device with ``jax.device_put``). float32 and float64 knots are computed in that dtype (the
    values jnp gives); narrower dtypes are rounded once from float64."""
    lo, hi = validate_grid_args(grid_size=grid_size, spline_order=order, grid_range=grid_range)
    h = (hi - lo) / grid_size
    dtype = np.dtype(dtype or jnp.result_type(float))
    work = dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float64)
    return (lo + np.arange(-order, grid_size + order + 1, dtype=work) * h).astype(dtype)


EXTRAPOLATION_REACH = 1000.0
"""How far (in widths of the base interval) ``extrapolate=True`` continues the end pieces."""


def extrapolation_bounds(lo, hi):
    """``(lo - R (hi - lo), hi + R (hi - lo))`` with ``R = EXTRAPOLATION_REACH``: the inputs where an
    extrapolating spline on the base interval ``[lo, hi]`` continues its end pieces; beyond, it is
    constant. A cubic there is at most ``(R G)^3 / 6`` times its coefficients (``G`` intervals):
    finite in float32 (max ~3e38) for any input, where ``x**3`` at ``x = 1e30`` is not."""
    w = hi - lo
    return lo - EXTRAPOLATION_REACH * w, hi + EXTRAPOLATION_REACH * w


def clamp_to_reach(x, lo, hi):
    """``(x clamped to extrapolation_bounds(lo, hi), whether x was within them)``: an extrapolating
    kernel evaluates its pieces at the clamped ``x`` and zeroes its x-derivatives where ``x`` was not."""
    lo_b, hi_b = extrapolation_bounds(lo, hi)
    return clamp(x, lo_b, hi_b), (x >= lo_b) & (x <= hi_b)


def clamp(x, lo, hi):
    """``x`` clamped to ``[lo, hi]``, with x-derivative 1 on the closed interval (``jnp.clip``
    halves it where ``x`` equals a bound) and 0 outside."""
    return jnp.where(x < lo, lo, jnp.where(x > hi, hi, x))


def _safe_inv(d):
    """1/d where d > 0, else 0 (gradient-safe)."""
    pos = d > 0
    return jnp.where(pos, 1.0 / jnp.where(pos, d, 1.0), 0.0)


def bspline_basis(x: jax.Array, knots: jax.Array, order: int, *, extrapolate: bool = False) -> jax.Array:
    """B-spline basis functions by the Cox-de Boor recursion.

    Basis function ``m`` equals ``scipy.interpolate.BSpline.basis_element(knots[m:m+order+2],
    extrapolate=False)`` (its NaN outside the support read as 0), for any non-decreasing knots.
    Intervals are half open, ``[t_m, t_{m+1})``.

    With ``extrapolate=True`` the basis outside the base interval ``[t_k, t_{n_basis}]`` is the
    polynomial continuation of the first / last base interval's pieces, so that
    ``sum_m c_m B_m(x)`` equals ``scipy.interpolate.BSpline(knots, c, k, extrapolate=True)(x)``
    within ``EXTRAPOLATION_REACH`` base-interval widths of the base interval (inside the base
    interval both modes agree). Farther out the input is clamped to that bound (``extrapolation_bounds``):
    the basis, and so every spline, holds its value there (x-derivative 0). Without the bound a
    degree-``k`` piece grows like ``x**k``: a cubic at ``x = 1e30`` is ``1e90``, infinite in float32.

    Without ``extrapolate`` every basis function is 0 outside the knot span ``[t_0, t_{-1})``,
    for any finite ``x`` (the recursion's factors see ``x`` clamped into the span, so values and
    gradients stay finite at any magnitude).

    Args:
      x: inputs of shape ``(..., n)``.
      knots: one increasing knot vector per input, shape ``(n, n_knots)``.
      order: spline order ``k >= 0``.
      extrapolate: continue the end pieces beyond the base interval (default: 0 outside the
        knot span, partial sums in the extension intervals).

    Returns:
      Basis values of shape ``(..., n, n_knots - order - 1)``.
    """
    t = jnp.asarray(knots)
    x = jnp.asarray(x)[..., None]  # (..., n, 1)
    t = t.astype(jnp.result_type(x.dtype, t.dtype))
    x = x.astype(t.dtype)
    xs = x
    if extrapolate:  # pick the interval with x clamped into the base interval; evaluate at x
        lo, hi = t[:, order : order + 1], t[:, t.shape[-1] - order - 1 : t.shape[-1] - order]
        xs = jnp.clip(x, lo, jnp.nextafter(hi, lo))
        x = clamp(x, *extrapolation_bounds(lo, hi))
    b = ((xs >= t[:, :-1]) & (xs < t[:, 1:])).astype(t.dtype)  # (..., n, K-1)
    if not extrapolate:  # outside the span every b is 0; clamped, the factors below stay finite
        x = clamp(x, t[:, :1], t[:, -1:])
    for p in range(1, order + 1):
        t_lo = t[:, : -(p + 1)]  # t_m
        t_lo_p = t[:, p:-1]  # t_{m+p}
        t_hi = t[:, p + 1 :]  # t_{m+p+1}
        t_hi_1 = t[:, 1:-p]  # t_{m+1}
        left = (x - t_lo) * _safe_inv(t_lo_p - t_lo) * b[..., :-1]
        right = (t_hi - x) * _safe_inv(t_hi - t_hi_1) * b[..., 1:]
        b = left + right
    return b


def spline_eval(x: jax.Array, knots: jax.Array, coef: jax.Array, order: int, *, extrapolate: bool = False) -> jax.Array:
    """Evaluates one spline per (input, output) edge.

    Args:
      x: ``(..., n)`` inputs.
      knots: ``(n, n_knots)``.
      coef: ``(n, out, n_basis)``.
      order: spline order.
      extrapolate: see ``bspline_basis``.

    Returns:
      ``(..., n, out)``: ``spline_ij(x_i)``.
    """
    basis = bspline_basis(x, knots, order, extrapolate=extrapolate)
    return jnp.einsum("...nm,nom->...no", basis, coef.astype(basis.dtype))


@functools.partial(jax.jit, static_argnames=("order",))
def fit_coef(x: jax.Array, y: jax.Array, knots: jax.Array, order: int, *, ridge: float = 1e-8) -> jax.Array:
    """Least-squares spline coefficients, per input, for every output (numerically stable).

    Solves ``min_c ||B c - y||^2 + ridge * ||c||^2`` per input by Householder QR of the augmented,
    full-rank system ``[B; sqrt(ridge) I] c = [y; 0]`` (no normal equations). The ridge keeps
    basis functions that no sample reaches at (near) zero instead of undefined.

    Args:
      x: samples ``(batch, n)``.
      y: targets ``(batch, n, out)``.
      knots: ``(n, n_knots)``.
      order: spline order.
      ridge: Tikhonov weight, relative to the mean squared basis value.

    Returns:
      Coefficients ``(n, out, n_basis)``.
    """
    return lstsq_coef(bspline_basis(x, knots, order), y, ridge=ridge)


def lstsq_coef(basis: jax.Array, y: jax.Array, *, ridge: float = 1e-8) -> jax.Array:
    """``fit_coef`` for any basis: ``basis (batch, n, m)`` values, ``y (batch, n, out)`` targets ->
    coefficients ``(n, out, m)`` (per input, QR of ``[B; sqrt(ridge) I]``; ``kan_jax.bases``)."""
    basis = jnp.moveaxis(basis, 1, 0)  # (n, batch, m)
    y = jnp.moveaxis(jnp.asarray(y, basis.dtype), 1, 0)  # (n, batch, out)
    m = basis.shape[-1]
    scale = jnp.sqrt(ridge * jnp.mean(basis**2, axis=(1, 2), keepdims=True))  # (n, 1, 1)
    a = jnp.concatenate([basis, scale * jnp.eye(m, dtype=basis.dtype)[None]], axis=1)
    b = jnp.concatenate([y, jnp.zeros((y.shape[0], m, y.shape[2]), y.dtype)], axis=1)
    return jnp.swapaxes(_lstsq_householder(a, b), 1, 2)


def _lstsq_householder(a: jax.Array, b: jax.Array) -> jax.Array:
    """Least-squares solutions of full-column-rank systems ``a c = b``, batched over the first axis.

    Householder QR and back substitution in plain array ops, ``a``: ``(n, rows, m)``, ``b``:
    ``(n, rows, out)`` -> ``(n, m, out)``. Not ``jnp.linalg.qr``: on XLA:CPU that is a LAPACK
    call which splits a large batch over XLA's thread pool and blocks until the pieces are done.
    With several CPU devices in one process (``--xla_force_host_platform_device_count``), every
    device runs that call at once on the same pool, and once all of its threads wait, nothing runs
    the pieces: a grid update of a ``[16, 64, 64, 1]`` KAN on a ``data: 2, model: 2`` mesh of 4 CPU
    devices hung in ``lapack_dgeqrf_ffi`` (jax 0.10.2). The loops here have ``m`` steps of
    ``O(n rows m)`` work each (LAPACK's unblocked QR), on every backend.
    """
    n, rows, m = a.shape
    row = jnp.arange(rows)

    def reflector(a, j):  # the Householder reflection I - s v v^T that zeroes column j below the diagonal
        col = jnp.where(row >= j, jax.lax.dynamic_index_in_dim(a, j, axis=2, keepdims=False), 0)  # (n, rows)
        diag = jax.lax.dynamic_index_in_dim(col, j, axis=1, keepdims=False)  # (n,)
        alpha = -jnp.where(diag >= 0, 1, -1) * jnp.linalg.norm(col, axis=1)
        v = col - jnp.where(row == j, alpha[:, None], 0)
        vv = jnp.sum(v * v, axis=1)
        s = jnp.where(vv > 0, 2 / jnp.where(vv > 0, vv, 1), 0)  # a zero column: no reflection
        return reflect(a, (v, s)), (v, s)

    def reflect(a, vs):  # (I - s v v^T) a
        v, s = vs
        return a - v[:, :, None] * (s[:, None] * jnp.einsum("nr,nrk->nk", v, a))[:, None, :]

    # Q^T b: b reflected along with a when it has at most m columns; else Q's first m columns
    # (H_0 ... H_{m-1} applied to them) and one contraction, cheaper for wide b (measured in
    # scripts/bench_lstsq.py).
    wide = b.shape[2] > m
    ab = a if wide else jnp.concatenate([a, b.astype(a.dtype)], axis=2)
    ab, reflectors = jax.lax.scan(reflector, ab, jnp.arange(m))
    r = ab[:, :m, :m]  # R: the upper triangle (below it rounding-level values, never read)
    if wide:
        eye = jnp.broadcast_to(jnp.eye(rows, m, dtype=a.dtype), (n, rows, m))
        q = jax.lax.scan(lambda q, vs: (reflect(q, vs), None), eye, reflectors, reverse=True)[0]
        qtb = jnp.einsum("nrm,nro->nmo", q, b.astype(a.dtype))
    else:
        qtb = ab[:, :m, m:]

    def substitute(i, c):  # solve row j = m-1-i of R c = Q^T b; c is still zero in rows <= j
        j = m - 1 - i
        r_j = jax.lax.dynamic_index_in_dim(r, j, axis=1, keepdims=False)  # (n, m)
        rhs = jax.lax.dynamic_index_in_dim(qtb, j, axis=1, keepdims=False) - jnp.einsum("nm,nmo->no", r_j, c)
        diag = jax.lax.dynamic_index_in_dim(r_j, j, axis=1, keepdims=True)  # (n, 1)
        return jax.lax.dynamic_update_index_in_dim(c, rhs / diag, j, axis=1)

    return jax.lax.fori_loop(0, m, substitute, jnp.zeros((n, m, b.shape[2]), a.dtype))


def adaptive_knots(x: jax.Array, grid_size: int, order: int, *, grid_eps: float = 0.02) -> jax.Array:
    """Grid adapted to samples (pykan's convention), extended by ``order`` knots per side.

    The base grid is ``grid_eps * uniform + (1 - grid_eps) * quantiles`` over each input's sample
    range: ``grid_eps=1`` is uniform, ``0`` pure quantiles. Extension knots continue with the mean
    spacing ``(max - min) / grid_size``.

    Args:
      x: samples ``(batch, n)``.
      grid_size: ``G``.
      order: ``k``.
      grid_eps: mixing weight in ``[0, 1]``.

    Returns:
      Knots ``(n, G + 2k + 1)``.
    """
    if not 0.0 <= grid_eps <= 1.0:
        raise ValueError(f"grid_eps must be in [0, 1], got {grid_eps!r}")
    x = jnp.asarray(x)
    q = jnp.linspace(0.0, 1.0, grid_size + 1, dtype=x.dtype)
    quant = jnp.quantile(x, q, axis=0).T  # (n, G+1)
    lo, hi = quant[:, :1], quant[:, -1:]
    # A constant input gets a small non-degenerate interval around its value.
    half = jnp.where(hi - lo > 0, 0.0, jnp.maximum(jnp.abs(lo), 1.0) * 1e-3)
    lo, hi = lo - half, hi + half
    quant = jnp.clip(quant, lo, hi)
    unif = lo + (hi - lo) * q
    base = grid_eps * unif + (1.0 - grid_eps) * quant
    base = base.at[:, 0].set(lo[:, 0]).at[:, -1].set(hi[:, 0])
    h = (hi - lo) / grid_size
    ext = jnp.arange(1, order + 1, dtype=x.dtype)
    left = lo - h * ext[::-1]
    right = hi + h * ext
    return jnp.concatenate([left, base, right], axis=1)


# --------------------------------------------------------------------------- refinement (host side)


def refine_knots(knots, order: int, new_grid_size: int) -> np.ndarray:
    """Knots of a finer (or coarser) grid that follows the shape of ``knots``.

    Inner knot ``j`` of the new grid sits at index ``j * G / G'`` of the old base knots
    (piecewise-linear in the index), so a uniform grid stays uniform and an adaptive one keeps its
    density; when ``G'`` is a multiple of ``G`` every old base knot is kept (nested grids).
    Extension knots continue with the old end spacings scaled by ``G / G'``.

    Args:
      knots: ``(n, G + 2k + 1)``.
      order: ``k``.
      new_grid_size: ``G'``.

    Returns:
      ``(n, G' + 2k + 1)`` float64 NumPy array.
    """
    t = np.asarray(knots, dtype=np.float64)
    g = t.shape[-1] - 2 * order - 1
    base = t[:, order : order + g + 1]
    pos = np.arange(new_grid_size + 1) * (g / new_grid_size)
    new_base = np.stack([np.interp(pos, np.arange(g + 1), row) for row in base])
    h_left = (t[:, order] - t[:, 0]) / max(order, 1) * g / new_grid_size
    h_right = (t[:, -1] - t[:, -order - 1]) / max(order, 1) * g / new_grid_size
    ext = np.arange(1, order + 1)
    left = new_base[:, :1] - h_left[:, None] * ext[::-1]
    right = new_base[:, -1:] + h_right[:, None] * ext
    return np.concatenate([left, new_base, right], axis=1)


def is_nested(knots, new_knots, *, rtol: float = 1e-9) -> bool:
    """Whether every old knot inside the new knot span ``[new_knots[0], new_knots[-1]]`` is a new knot.

    Then the old spline restricted to the new base interval lies exactly in the new spline space,
    and ``insert_knots`` rewrites it without error.
    """
    t = np.asarray(knots, dtype=np.float64)
    s = np.asarray(new_knots, dtype=np.float64)
    for row_t, row_s in zip(t, s):
        inside = row_t[(row_t > row_s[0] + _knot_tol(row_s[0], rtol)) & (row_t < row_s[-1] - _knot_tol(row_s[-1], rtol))]
        if inside.size and np.any(np.abs(inside[:, None] - row_s[None, :]).min(axis=1) > _knot_tol(inside, rtol)):
            return False
    return True


def _knot_tol(u, rtol: float):
    """How close two knots near ``u`` must be to count as one: ``rtol * max(1, |u|)``, relative to
    the knot itself (a tolerance from the row's largest knot would, on a grid adapted to samples
    with one at 1e30, merge every knot within 1e21 of each other)."""
    return rtol * np.maximum(1.0, np.abs(u))


def _boehm_insert(t: np.ndarray, c: np.ndarray, u: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Inserts knot ``u`` into knots ``t`` (K,) with coefficients ``c`` (out, K-k-1) (Boehm 1980)."""
    mu = int(np.searchsorted(t, u, side="right")) - 1
    k = order
    new_c = np.empty((c.shape[0], c.shape[1] + 1), c.dtype)
    new_c[:, : mu - k + 1] = c[:, : mu - k + 1]
    for i in range(mu - k + 1, mu + 1):
        den = t[i + k] - t[i]
        alpha = (u - t[i]) / den if den > 0 else 0.0
        new_c[:, i] = alpha * c[:, i] + (1.0 - alpha) * c[:, i - 1]
    new_c[:, mu + 1 :] = c[:, mu:]
    return np.insert(t, mu + 1, u), new_c


def insert_knots(knots, coef, new_knots, order: int, *, rtol: float = 1e-9) -> np.ndarray:
    """Exact change to a finer knot vector by Boehm knot insertion.

    Every knot of ``new_knots`` missing from ``knots`` is inserted (the old vector is first padded
    by ``order`` zero-coefficient basis functions per side, so insertion is exact on the whole old
    span ``[knots[0], knots[-1]]``); the coefficients of the new basis are then read off. The
    result equals the old spline on ``[new_knots[k], new_knots[-k-1]]`` to float rounding.

    Args:
      knots: ``(n, K)``.
      coef: ``(n, out, K - k - 1)``.
      new_knots: ``(n, K')``, with ``is_nested(knots, new_knots)`` and its span inside the old one.
      order: ``k``.

    Returns:
      ``(n, out, K' - k - 1)`` float64 NumPy coefficients.

    Raises:
      ValueError: if the knot vectors are not nested.
    """
    if not is_nested(knots, new_knots, rtol=rtol):
        raise ValueError("insert_knots: new_knots must contain every old knot inside its span (nested grids)")
    t_all = np.asarray(knots, dtype=np.float64)
    c_all = np.asarray(coef, dtype=np.float64)
    s_all = np.asarray(new_knots, dtype=np.float64)
    k = order
    out = []
    for t, c, s in zip(t_all, c_all, s_all):
        if s[0] < t[0] - _knot_tol(t[0], rtol) or s[-1] > t[-1] + _knot_tol(t[-1], rtol):
            raise ValueError("insert_knots: new_knots must lie within the old knot span")
        tt = np.concatenate([t[0] - (t[1] - t[0]) * np.arange(k, 0, -1), t, t[-1] + (t[-1] - t[-2]) * np.arange(1, k + 1)])
        cc = np.pad(c, ((0, 0), (k, k)))
        for u in s:
            if np.abs(tt - u).min() > _knot_tol(u, rtol):
                tt, cc = _boehm_insert(tt, cc, u, k)
        first = int(np.argmin(np.abs(tt - s[0])))
        out.append(cc[:, first : first + s.shape[0] - k - 1])
    return np.stack(out)
