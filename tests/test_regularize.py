"""Sparsity regularizer against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax import regularize as R


def test_l1_and_entropy_closed_form():
    acts = jnp.asarray(np.random.default_rng(0).normal(size=(50, 3, 2)))
    scale = np.abs(np.asarray(acts)).mean(0)
    np.testing.assert_allclose(R.edge_scale(acts), scale, rtol=1e-12)
    np.testing.assert_allclose(R.layer_l1(R.edge_scale(acts)), scale.sum(), rtol=1e-12)

    def ent(v):
        p = v / v.sum()
        return -(p * np.log2(p)).sum()

    want = np.mean([ent(scale[:, j]) for j in range(2)]) + np.mean([ent(scale[i]) for i in range(3)])
    np.testing.assert_allclose(R.layer_entropy(R.edge_scale(acts)), want, rtol=1e-6)
    np.testing.assert_allclose(
        R.penalty([acts], lamb_l1=1.0, lamb_entropy=2.0, metric="mean_abs"), scale.sum() + 2 * want, rtol=1e-6
    )


def test_pykan_metric_closed_form():
    """edge_forward_spline_n: std(phi) / (std(x_i) + 0.1), entropy of p = A / (sum A + 1)."""
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(64, 3))
    a0 = rng.normal(size=(64, 3, 2)) * np.array([1.0, 0.5, 2.0])[None, :, None]
    a1 = rng.normal(size=(64, 2, 1))
    s0 = a0.std(0) / (x.std(0)[:, None] + 0.1)
    s1 = a1.std(0) / (a0.sum(1).std(0)[:, None] + 0.1)  # layer 1's inputs: sums of layer 0's edges

    def ent(v):
        p = v / (v.sum() + 1)
        return -(p * np.log2(p + 1e-4)).sum()

    def lay(s):
        return s.sum(), np.mean([ent(s[:, j]) for j in range(s.shape[1])]) + np.mean([ent(s[i]) for i in range(s.shape[0])])

    (l0, e0), (l1, e1) = lay(s0), lay(s1)
    got = R.penalty([jnp.asarray(a0), jnp.asarray(a1)], x=jnp.asarray(x), lamb_l1=1.5, lamb_entropy=3.0)
    np.testing.assert_allclose(got, 1.5 * (l0 + l1) + 3.0 * (e0 + e1), rtol=1e-10)
    # Constant offsets do not count (unlike mean |phi|).
    shifted = R.penalty([jnp.asarray(a0 + 5.0), jnp.asarray(a1 - 3.0)], x=jnp.asarray(x), lamb_l1=1.5, lamb_entropy=3.0)
    np.testing.assert_allclose(shifted, got, rtol=1e-10)
    with pytest.raises(ValueError, match="metric"):
        R.penalty([jnp.asarray(a0)], metric="max")


def test_pykan_metric_gradient_finite_on_dead_edges():
    """A dead (all-zero or constant) edge has std 0: the penalty's gradient stays finite there."""
    a = np.random.default_rng(3).normal(size=(16, 2, 2))
    a[:, 0, 1] = 0.0
    a[:, 1, 0] = 0.7
    x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, size=(16, 2)))
    g = jax.grad(lambda v: R.penalty([v], x=x))(jnp.asarray(a))
    assert np.all(np.isfinite(np.asarray(g)))


def test_entropy_lowest_when_one_edge_dominates():
    uniform = jnp.ones((4, 1))
    sparse = jnp.asarray([[1.0], [1e-6], [1e-6], [1e-6]])
    assert R.layer_entropy(sparse) < 0.1 * R.layer_entropy(uniform)
    np.testing.assert_allclose(R._entropy(uniform, axis=0), 2.0, rtol=1e-6)


def test_penalty_weights_and_coef_terms():
    acts = [jnp.ones((5, 2, 3)), 2 * jnp.ones((5, 3, 1))]
    params = [{"coef": jnp.arange(12.0).reshape(2, 3, 2)}, {"coef": jnp.zeros((3, 1, 2))}]
    base = R.penalty(acts, lamb_l1=1.0, lamb_entropy=0.0, metric="mean_abs")
    np.testing.assert_allclose(base, 6 * 1.0 + 3 * 2.0)
    with_coef = R.penalty(acts, params, lamb_l1=1.0, lamb_entropy=0.0, lamb_coef=1.0, lamb_coefdiff=1.0, metric="mean_abs")
    np.testing.assert_allclose(with_coef - base, np.mean(np.arange(12.0)) + 1.0 + 0.0)
    with pytest.raises(ValueError, match="layer_params"):
        R.penalty(acts, lamb_coef=1.0)
    g = jax.grad(lambda a: R.penalty([a]))(jnp.asarray(np.random.default_rng(1).normal(size=(8, 2, 2))))
    assert np.all(np.isfinite(np.asarray(g)))
