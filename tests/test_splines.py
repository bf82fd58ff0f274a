"""B-spline math against scipy, closed forms and finite differences."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.interpolate import BSpline

from kan_jax import splines


def scipy_basis(x, t, k):
    return np.stack(
        [np.nan_to_num(BSpline.basis_element(t[m : m + k + 2], extrapolate=False)(x)) for m in range(len(t) - k - 1)],
        axis=-1,
    )


@st.composite
def knots_and_x(draw):
    k = draw(st.integers(0, 5))
    n_knots = draw(st.integers(k + 2, k + 12))
    gaps = draw(hnp.arrays(np.float64, n_knots - 1, elements=st.floats(0.05, 2.0)))
    start = draw(st.floats(-3.0, 1.0))
    t = start + np.concatenate([[0.0], np.cumsum(gaps)])
    x = draw(hnp.arrays(np.float64, 17, elements=st.floats(t[0] - 1.0, t[-1] + 1.0)))
    # Stay off the knots themselves, where half-open intervals make the order-0 basis ambiguous.
    x = np.where(np.abs(x[:, None] - t[None]).min(1) < 1e-7, x + 1e-5, x)
    return k, t, x


@settings(max_examples=60, deadline=None)
@given(knots_and_x())
def test_basis_matches_scipy_float64(case):
    k, t, x = case
    got = splines.bspline_basis(jnp.asarray(x)[:, None], jnp.asarray(t)[None], k)[:, 0]
    np.testing.assert_allclose(np.asarray(got), scipy_basis(x, t, k), atol=1e-12, rtol=0)


@settings(max_examples=30, deadline=None)
@given(knots_and_x())
def test_basis_matches_scipy_float32(case):
    k, t, x = case
    got = splines.bspline_basis(jnp.asarray(x, jnp.float32)[:, None], jnp.asarray(t, jnp.float32)[None], k)[:, 0]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), scipy_basis(x.astype(np.float32).astype(np.float64), t, k), atol=1e-5)


def test_basis_per_input_knots_and_shape():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(-2, 2, size=(3, 11)), axis=1)
    x = rng.uniform(-2, 2, size=(4, 5, 3))
    b = splines.bspline_basis(jnp.asarray(x), jnp.asarray(t), 3)
    assert b.shape == (4, 5, 3, 11 - 3 - 1)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(b[..., i, :]).reshape(-1, 7), scipy_basis(x[..., i].ravel(), t[i], 3), atol=1e-12)


def test_uniform_knots():
    t = splines.uniform_knots(5, 3, (-1.0, 1.0))
    assert t.shape == (5 + 2 * 3 + 1,)
    np.testing.assert_allclose(np.asarray(t), -1.0 + 0.4 * np.arange(-3, 9))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("grid_size,order,grid_range", [(5, 3, (-1.0, 1.0)), (7, 2, (-2.5, 0.3)), (100, 3, (0.0, 1.0)), (13, 4, (-3.0, 7.1))])
def test_uniform_knots_host_values_equal_jnp(dtype, grid_size, order, grid_range):
    """Built on the host (no compile) with the values jnp's ``lo + arange * h`` gives, bit for bit."""
    lo, hi = grid_range
    ref = np.asarray(lo + jnp.arange(-order, grid_size + order + 1, dtype=dtype) * ((hi - lo) / grid_size))
    for got in (splines.uniform_knots_np(grid_size, order, grid_range, dtype=dtype),
                np.asarray(splines.uniform_knots(grid_size, order, grid_range, dtype=dtype))):
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_partition_of_unity_and_zero_outside(k):
    t = np.sort(np.random.default_rng(k).uniform(-1, 1, 14))
    inside = np.linspace(t[k], t[-k - 1], 200, endpoint=False)
    b = splines.bspline_basis(jnp.asarray(inside)[:, None], jnp.asarray(t)[None], k)
    np.testing.assert_allclose(np.asarray(b.sum(-1)), 1.0, atol=1e-12)
    outside = np.concatenate([np.linspace(t[0] - 3, t[0] - 1e-9, 20), np.linspace(t[-1], t[-1] + 3, 20)])
    b = splines.bspline_basis(jnp.asarray(outside)[:, None], jnp.asarray(t)[None], k)
    assert np.all(np.asarray(b) == 0.0)


def test_gradients_match_finite_differences():
    t = jnp.asarray(np.sort(np.random.default_rng(1).uniform(-1, 1, (2, 12))))
    coef = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 8)))
    x = jnp.asarray([[0.13, -0.41], [0.52, 0.07]])

    def f(x, c):
        return jnp.sum(jnp.sin(splines.spline_eval(x, t, c, 3)))

    gx, gc = jax.grad(f, argnums=(0, 1))(x, coef)
    eps = 1e-6
    for idx in [(0, 0), (1, 1), (0, 1)]:
        d = jnp.zeros_like(x).at[idx].set(eps)
        fd = (f(x + d, coef) - f(x - d, coef)) / (2 * eps)
        np.testing.assert_allclose(gx[idx], fd, rtol=1e-6, atol=1e-8)
    for idx in [(0, 1, 3), (1, 2, 5)]:
        d = jnp.zeros_like(coef).at[idx].set(eps)
        fd = (f(x, coef + d) - f(x, coef - d)) / (2 * eps)
        np.testing.assert_allclose(gc[idx], fd, rtol=1e-6, atol=1e-8)


def test_jit_vmap_safe():
    t = splines.uniform_knots(5, 3)[None].repeat(2, 0)
    x = jnp.linspace(-1, 1, 10).reshape(5, 2)
    f = jax.jit(lambda x: splines.bspline_basis(x, t, 3))
    np.testing.assert_allclose(f(x), jax.vmap(lambda r: splines.bspline_basis(r, t, 3))(x), atol=1e-14)


def test_fit_coef_recovers_spline():
    rng = np.random.default_rng(3)
    t = jnp.asarray(np.sort(rng.uniform(-1.5, 1.5, (2, 12)), axis=1))
    t = t.at[:, 3].set(-1.0).at[:, -4].set(1.0)
    coef = jnp.asarray(rng.normal(size=(2, 3, 8)))
    x = jnp.asarray(rng.uniform(-1, 1, (400, 2)))
    fitted = splines.fit_coef(x, splines.spline_eval(x, t, coef, 3), t, 3, ridge=1e-12)
    np.testing.assert_allclose(splines.spline_eval(x, t, fitted, 3), splines.spline_eval(x, t, coef, 3), atol=1e-8)


def test_adaptive_knots_mix():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(1000, 2)))
    uni = splines.adaptive_knots(x, 4, 2, grid_eps=1.0)
    lo, hi = x.min(0), x.max(0)
    np.testing.assert_allclose(uni[:, 2:7], lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, 5), atol=1e-12)
    q = splines.adaptive_knots(x, 4, 2, grid_eps=0.0)
    np.testing.assert_allclose(q[:, 2:7], np.quantile(np.asarray(x), np.linspace(0, 1, 5), axis=0).T, atol=1e-12)
    assert np.all(np.diff(np.asarray(q), axis=1) > 0)
    with pytest.raises(ValueError, match="grid_eps"):
        splines.adaptive_knots(x, 4, 2, grid_eps=1.5)


@pytest.mark.parametrize("old,new", [(5, 10), (5, 20), (3, 9), (4, 8)])
def test_refine_nested_is_exact(old, new):
    rng = np.random.default_rng(old * new)
    x = jnp.asarray(rng.uniform(-1, 1, (300, 2)))
    t = splines.adaptive_knots(x, old, 3, grid_eps=0.3)
    coef = rng.normal(size=(2, 2, old + 3))
    s = splines.refine_knots(t, 3, new)
    assert s.shape == (2, new + 7) and splines.is_nested(t, s)
    c2 = splines.insert_knots(t, coef, s, 3)
    np.testing.assert_allclose(
        splines.spline_eval(x, jnp.asarray(s), jnp.asarray(c2), 3), splines.spline_eval(x, t, coef, 3), atol=1e-12
    )


def test_refine_uniform_stays_uniform_and_non_nested_detected():
    t = splines.uniform_knots(5, 3)[None]
    s = splines.refine_knots(t, 3, 10)
    np.testing.assert_allclose(s[0], np.asarray(splines.uniform_knots(10, 3)), atol=1e-14)
    assert not splines.is_nested(t, splines.refine_knots(t, 3, 7))
    with pytest.raises(ValueError, match="nested"):
        splines.insert_knots(t, np.zeros((1, 1, 8)), splines.refine_knots(t, 3, 7), 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(grid_size=0, spline_order=3, grid_range=(-1, 1)), "grid_size"),
        (dict(grid_size=5, spline_order=-1, grid_range=(-1, 1)), "spline_order"),
        (dict(grid_size=5, spline_order=3, grid_range=(1, 1)), "grid_range"),
        (dict(grid_size=5, spline_order=3, grid_range="ab"), "grid_range"),
    ],
)
def test_grid_arg_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        splines.validate_grid_args(**kwargs)


@settings(max_examples=40, deadline=None)
@given(knots_and_x(), st.integers(0, 2**31 - 1))
def test_extrapolating_basis_matches_scipy_bspline(case, seed):
    k, t, x = case
    assume(len(t) >= 2 * k + 2)  # needs a non-empty base interval [t_k, t_{n_basis}]
    c = np.random.default_rng(seed).normal(size=len(t) - k - 1)
    b = splines.bspline_basis(jnp.asarray(x)[:, None], jnp.asarray(t)[None], k, extrapolate=True)[:, 0]
    want = BSpline(t, c, k, extrapolate=True)(x)
    np.testing.assert_allclose(np.asarray(b) @ c, want, atol=1e-9 * max(1.0, np.abs(want).max()), rtol=1e-9)
    inside = (x >= t[k]) & (x < t[len(t) - k - 1])
    plain = splines.bspline_basis(jnp.asarray(x)[:, None], jnp.asarray(t)[None], k)[:, 0]
    np.testing.assert_allclose(np.asarray(b)[inside], np.asarray(plain)[inside], atol=1e-12)
