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


def test_entropy_lowest_when_one_edge_dominates():
    uniform = jnp.ones((4, 1))
    sparse = jnp.asarray([[1.0], [1e-6], [1e-6], [1e-6]])
    assert R.layer_entropy(sparse) < 0.1 * R.layer_entropy(uniform)
    np.testing.assert_allclose(R._entropy(uniform, axis=0), 2.0, rtol=1e-6)


def test_penalty_weights_and_coef_terms():
    acts = [jnp.ones((5, 2, 3)), 2 * jnp.ones((5, 3, 1))]
    params = [{"coef": jnp.arange(12.0).reshape(2, 3, 2)}, {"coef": jnp.zeros((3, 1, 2))}]
    base = R.penalty(acts, lamb_l1=1.0, lamb_entropy=0.0)
    np.testing.assert_allclose(base, 6 * 1.0 + 3 * 2.0)
    with_coef = R.penalty(acts, params, lamb_l1=1.0, lamb_entropy=0.0, lamb_coef=1.0, lamb_coefdiff=1.0)
    np.testing.assert_allclose(with_coef - base, np.mean(np.arange(12.0)) + 1.0 + 0.0)
    with pytest.raises(ValueError, match="layer_params"):
        R.penalty(acts, lamb_coef=1.0)
    g = jax.grad(lambda a: R.penalty([a]))(jnp.asarray(np.random.default_rng(1).normal(size=(8, 2, 2))))
    assert np.all(np.isfinite(np.asarray(g)))
