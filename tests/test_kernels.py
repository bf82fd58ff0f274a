"""Fast paths of the layer contraction: values equal the reference, gradients equal finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax import functional as F
from kan_jax import kernels as K
from kan_jax import splines as S

ALL = ("uniform", "general", "local_uniform", "local_general")


def _layer(n=3, o=2, grid=5, order=3, adaptive=False, dtype=jnp.float64, seed=0):
    rng = np.random.default_rng(seed)
    params, knots, mask = F.init_layer(jax.random.key(seed), n, o, grid_size=grid, spline_order=order, param_dtype=dtype)
    params = {k: jnp.asarray(rng.normal(size=v.shape), dtype) for k, v in params.items()}
    mask = mask.at[0, 1].set(0.0)
    if adaptive:
        xs = jnp.asarray(rng.normal(size=(200, n)) * 0.5, dtype)
        params, knots = F.update_grid(params, knots, xs, order=order, grid_eps=0.02)
    # Inputs cover the extension intervals and beyond the knot span on both sides.
    x = jnp.asarray(rng.uniform(-2.4, 2.4, (40, n)), dtype)
    return params, knots, mask, x


def _paths(adaptive):
    return ("general", "local_general") if adaptive else ALL


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("adaptive", [False, True])
def test_local_values_and_derivatives_match_recursion(order, adaptive):
    _, knots, _, x = _layer(order=order, adaptive=adaptive)
    ref = S.bspline_basis(x, knots, order)
    dref = jnp.einsum("bnmn->bnm", jax.vmap(jax.jacfwd(lambda v: S.bspline_basis(v, knots, order)))(x))
    fns = [K.general_basis] + ([K.uniform_basis] if not adaptive else [])
    for fn in fns:
        b, db = fn(x, knots, order, deriv=True)
        np.testing.assert_allclose(b, ref, atol=1e-13)
        np.testing.assert_allclose(db, dref, atol=1e-12)
    j, v, dv = K.general_local(x, knots, order, deriv=True)
    m = knots.shape[-1] - order - 1
    np.testing.assert_allclose(K._scatter_dense(j, v, m, order), ref, atol=1e-13)
    np.testing.assert_allclose(K._scatter_dense(j, dv, m, order), dref, atol=1e-12)


@pytest.mark.parametrize("adaptive", [False, True])
def test_paths_equal_reference_float32(adaptive):
    params, knots, mask, x = _layer(n=5, o=4, grid=6, adaptive=adaptive, dtype=jnp.float32)
    ref = F.apply(params, knots, mask, x, order=3, path="reference")
    for path in _paths(adaptive) + ("auto", "check"):
        y = F.apply(params, knots, mask, x, order=3, path=path, uniform=not adaptive)
        np.testing.assert_allclose(y, ref, atol=1e-6 * float(jnp.abs(ref).max()), err_msg=path)
    # The per-edge reference agrees with the fused layer too.
    e = F.edge_apply(params, knots, mask, x, order=3)
    np.testing.assert_allclose(e.sum(1) + params["bias"], ref, atol=1e-5)


def test_check_path_detects_non_uniform():
    params, knots, mask, x = _layer(adaptive=True)
    assert not bool(K.is_uniform(knots))
    assert bool(K.is_uniform(_layer()[1]))
    ref = F.apply(params, knots, mask, x, order=3, path="reference")
    np.testing.assert_allclose(F.apply(params, knots, mask, x, order=3, path="check"), ref, atol=1e-12)
    # Promising uniformity on an adaptive grid is wrong (the check is what protects against it).
    bad = F.apply(params, knots, mask, x, order=3, path="uniform")
    assert float(jnp.abs(bad - ref).max()) > 1e-3


def _fd_check(f, args, argnum, eps=1e-6, n_dirs=3, seed=0):
    """Directional derivatives of scalar f along random directions vs central differences."""
    rng = np.random.default_rng(seed)
    grads = jax.grad(f, argnums=argnum)(*args)
    for _ in range(n_dirs):
        d = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), args[argnum])

        def shifted(s):
            a = list(args)
            a[argnum] = jax.tree.map(lambda p, q: p + s * q, args[argnum], d)
            return f(*a)

        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        an = sum(jnp.vdot(g, q) for g, q in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
        np.testing.assert_allclose(an, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("adaptive", [False, True])
def test_gradients_match_finite_differences_float64(adaptive):
    params, knots, mask, x = _layer(adaptive=adaptive)
    c = jnp.asarray(np.random.default_rng(3).normal(size=(x.shape[0], 2)))
    # Keep inputs off knots (finite differences across a knot see the kink of B^k's derivative).
    for path in _paths(adaptive):

        def loss(p, xx, path=path):
            return jnp.sum(F.apply(p, knots, mask, xx, order=3, path=path) * c)

        _fd_check(loss, (params, x), 0)
        _fd_check(loss, (params, x), 1)
        # And equal to autodiff through the recursion.
        gr = jax.grad(lambda p, xx: jnp.sum(F.apply(p, knots, mask, xx, order=3, path="reference") * c), (0, 1))(params, x)
        gk = jax.grad(loss, (0, 1))(params, x)
        for a, b in zip(jax.tree.leaves(gk), jax.tree.leaves(gr)):
            np.testing.assert_allclose(a, b, atol=1e-10, err_msg=path)


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("extrapolate", [False, True])
def test_fused_edge_values_equal_per_edge_reference(adaptive, extrapolate):
    """``edge_values`` (one basis per input, closed-form backward) = the vmapped per-edge ``edge_apply``."""
    params, knots, mask, x = _layer(n=3, o=4, adaptive=adaptive)
    kw = dict(order=3, extrapolate=extrapolate)
    ref = F.edge_apply(params, knots, mask, x, **kw)
    for uniform in ([None, True] if not adaptive else [None]):
        np.testing.assert_allclose(F.edge_values(params, knots, mask, x, uniform=uniform, **kw), ref, atol=1e-12)
    w = jnp.asarray(np.random.default_rng(5).normal(size=ref.shape))

    def loss(fn):
        # A nonlinear statistic of the edge values (as the sparsity penalty uses them).
        return lambda p, xx: jnp.sum(jnp.var(fn(p, knots, mask, xx, **kw) * w, axis=0))

    got = jax.grad(loss(F.edge_values), (0, 1))(params, x)
    want = jax.grad(loss(F.edge_apply), (0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=1e-10)
    _fd_check(loss(F.edge_values), (params, x), 1)
    assert float(jnp.abs(jax.grad(lambda t: F.edge_values(params, t, mask, x, **kw).sum())(knots)).max()) == 0.0


def test_batch_dims_bfloat16_and_jit_only():
    params, knots, mask, x = _layer(dtype=jnp.float32)
    x3 = x.reshape(4, 10, 3)
    ref = F.apply(params, knots, mask, x3, order=3, path="reference")
    for path in ALL:
        y = F.apply(params, knots, mask, x3, order=3, path=path)
        assert y.shape == (4, 10, 2)
        np.testing.assert_allclose(y, ref, atol=1e-5)
        yb = F.apply(params, knots, mask, x, order=3, path=path, dtype=jnp.bfloat16)
        assert yb.dtype == jnp.bfloat16
        np.testing.assert_allclose(yb.astype(jnp.float32), ref.reshape(40, 2), atol=0.1 * float(jnp.abs(ref).max()))
    # Grid cotangent is zero (the grid is not trained by gradient); vmap over a batch works.
    gg = jax.grad(lambda t: F.apply(params, t, mask, x, order=3).sum())(knots)
    assert float(jnp.abs(gg).max()) == 0.0
    yv = jax.vmap(lambda xx: F.apply(params, knots, mask, xx, order=3))(x3)
    np.testing.assert_allclose(yv, ref, atol=1e-5)


@pytest.mark.parametrize("adaptive", [False, True])
def test_auto_path_is_local_for_large_grids(adaptive):
    """From LOCAL_MIN_GRID on, "auto" runs the local-support path; values and gradients stay exact."""
    g = K.LOCAL_MIN_GRID
    assert K.choose_path(g, not adaptive) == ("local_general" if adaptive else "local_uniform")
    assert K.choose_path(g - 1, not adaptive) == ("general" if adaptive else "uniform")
    params, knots, mask, x = _layer(n=2, o=3, grid=g, adaptive=adaptive)
    ref = F.apply(params, knots, mask, x, order=3, path="reference")
    np.testing.assert_allclose(F.apply(params, knots, mask, x, order=3, uniform=not adaptive), ref, atol=1e-12)

    def loss(p, x, path):
        return jnp.sum(jnp.sin(F.apply(p, knots, mask, x, order=3, path=path, uniform=not adaptive)))

    got = jax.grad(loss, argnums=(0, 1))(params, x, "auto")
    want = jax.grad(loss, argnums=(0, 1))(params, x, "reference")
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_knot_interval_equals_searchsorted():
    """Binary search for the knot interval: np.searchsorted(side="right") - 1, ties and edges too."""
    rng = np.random.default_rng(3)
    for n_knots in (1, 2, 3, 8, 12, 107):
        t = np.sort(rng.normal(size=(4, n_knots)), axis=1)
        if n_knots > 3:
            t[1, 2] = t[1, 3]  # a repeated knot
        x = rng.normal(size=(50, 4)) * 1.5
        x[:4, :] = t[:, 0]  # exactly on knots, first and last
        x[4:8, :] = t[:, -1]
        x[8, 0] = np.nan
        got = np.asarray(K.knot_interval(jnp.asarray(x), jnp.asarray(t)))
        want = np.stack([np.searchsorted(t[i], x[:, i], side="right") - 1 for i in range(4)], axis=1)
        want[8, 0] = -1  # NaN: below every knot, as the dense paths treat it (no basis is non-zero)
        np.testing.assert_array_equal(got, want, err_msg=f"K={n_knots}")


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("extrapolate", [False, True])
@pytest.mark.parametrize("adaptive", [False, True])
def test_paths_equal_reference_other_orders_and_extrapolation(order, extrapolate, adaptive):
    """Every fast path: values and gradients equal autodiff through the recursion (float64)."""
    params, knots, mask, x = _layer(order=order, adaptive=adaptive)
    kw = dict(order=order, extrapolate=extrapolate, uniform=not adaptive)

    def loss(p, xx, path):
        return jnp.sum(jnp.sin(F.apply(p, knots, mask, xx, path=path, **kw)))

    ref = F.apply(params, knots, mask, x, path="reference", **kw)
    gr = jax.grad(loss, (0, 1))(params, x, "reference")
    for path in _paths(adaptive):
        np.testing.assert_allclose(F.apply(params, knots, mask, x, path=path, **kw), ref, atol=1e-12, err_msg=path)
        for a, b in zip(jax.tree.leaves(jax.grad(loss, (0, 1))(params, x, path)), jax.tree.leaves(gr)):
            np.testing.assert_allclose(a, b, atol=1e-10, err_msg=path)
