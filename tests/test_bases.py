"""Basis families (kan_jax.bases): closed-form oracles, and the same layer contract for each family.

Every test below the oracles is parametrized over ``FAMILIES``: shapes, gradients, jit, NNX ==
Linen, grid extension and adaptation, a checkpoint round trip and the issue's 1-D fit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from jax.test_util import check_grads

import kan_jax
from kan_jax import bases, splines
from kan_jax import functional as F
from kan_jax import linen as kl
from kan_jax.train import models
from kan_jax.train.checkpoint import Checkpointer

FAMILIES = sorted(bases.BASES)
G, K = 6, 3


def _knots(grid_range=(-2.0, 1.0), n=2, g=G):
    return jnp.broadcast_to(splines.uniform_knots(g, K, grid_range), (n, g + 2 * K + 1))


def _x(shape=(50, 2), seed=0, scale=1.5, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(seed).uniform(-scale, scale, shape).astype(dtype))


def test_chebyshev_is_numpy_chebval_of_tanh():
    x, knots = _x(dtype=np.float64), _knots()
    u = np.tanh((2 * np.asarray(x) + 1.0) / 3.0)  # base interval [-2, 1] -> [-1, 1]
    got = np.asarray(bases.chebyshev_basis(x, knots, K))
    assert got.shape == (50, 2, G + 1)
    for m in range(G + 1):
        np.testing.assert_allclose(got[..., m], np.polynomial.chebyshev.chebval(u, np.eye(G + 1)[m]), atol=1e-12)


def test_fourier_is_half_period_harmonics():
    x, knots = _x(dtype=np.float64), _knots()
    u = (2 * np.asarray(x) + 1.0) / 3.0
    got = np.asarray(bases.fourier_basis(x, knots, K))
    assert got.shape == (50, 2, 2 * G)
    for m in range(1, G + 1):
        np.testing.assert_allclose(got[..., m - 1], np.cos(m * np.pi * u / 2), atol=1e-12)
        np.testing.assert_allclose(got[..., G + m - 1], np.sin(m * np.pi * u / 2), atol=1e-12)


def test_rbf_bumps_sit_on_the_knots_with_the_local_spacing():
    knots = jnp.asarray(np.array([[-3.0, -2.0, -1.5, -1.0, 0.0, 0.5, 2.0, 4.0, 5.0]]))  # order 2, G = 4
    x = jnp.asarray(np.linspace(-2, 3, 40))[:, None]
    got = np.asarray(bases.rbf_basis(x, knots, 2))
    k = np.asarray(knots[0])
    for m in range(5):
        c, h = k[2 + m], 0.5 * (k[3 + m] - k[1 + m])
        np.testing.assert_allclose(got[:, 0, m], np.exp(-(((np.asarray(x[:, 0]) - c) / h) ** 2)), atol=1e-12)
    # On a uniform grid the width is the spacing.
    got = np.asarray(bases.rbf_basis(jnp.asarray([[0.25]]), _knots((-1.0, 1.0), n=1, g=4), K))[0, 0]
    np.testing.assert_allclose(got, np.exp(-(((0.25 - np.linspace(-1, 1, 5)) / 0.5) ** 2)), atol=1e-12)


@pytest.mark.parametrize("basis", FAMILIES)
def test_layer_shapes_params_and_edge_views(basis):
    model = kan_jax.KAN([3, 4, 2], grid_size=G, basis=basis, rngs=nnx.Rngs(0))
    m = bases.get_basis(basis).n_basis(G, K)
    assert model.layers[0].coef.shape == (3, 4, m)
    assert models.count_params(model) == models.kan_param_count([3, 4, 2], G, K, basis=basis)
    x = _x((20, 3))
    y = model(x)
    assert y.shape == (20, 2) and y.dtype == jnp.float32
    # Fused edge view == per-edge reference (vmapped scalar edge function) == layer output.
    layer = model.layers[0]
    fused = layer.edge_activations(x)
    ref = F.edge_apply(layer.params(), layer.grid[...], layer.mask[...], x, order=K, basis=basis)
    np.testing.assert_allclose(fused, ref, atol=1e-5)
    np.testing.assert_allclose(fused.sum(1) + layer.bias[...], layer(x), atol=1e-5)


@pytest.mark.parametrize("basis", FAMILIES)
def test_gradients_match_finite_differences(basis):
    params, grid, mask = F.init_layer(jax.random.key(1), 2, 3, grid_size=G, spline_order=K, basis=basis,
                                      noise_scale=3.0, param_dtype=jnp.float64)
    x = _x((7, 2), seed=3, scale=0.9, dtype=np.float64)
    f = lambda p, x: F.apply(p, grid, mask, x, order=K, basis=basis)
    check_grads(f, (params, x), order=2, modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("basis", FAMILIES)
def test_jit_and_nnx_equals_linen(basis):
    nnx_model = kan_jax.KAN([2, 3, 1], grid_size=G, basis=basis, noise_scale=2.0, rngs=nnx.Rngs(0))
    x = _x((30, 2))
    lin = kl.KAN([2, 3, 1], grid_size=G, basis=basis)
    variables = {
        "params": {f"layers_{l}": layer.params() for l, layer in enumerate(nnx_model.layers)},
        "grid": {f"layers_{l}": {"knots": layer.grid[...], "mask": layer.mask[...]} for l, layer in enumerate(nnx_model.layers)},
    }
    init = nn.meta.unbox(lin.init(jax.random.key(0), x)["params"])
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, variables["params"])
    np.testing.assert_allclose(jax.jit(lin.apply)(variables, x), nnx.jit(lambda m, x: m(x))(nnx_model, x), atol=1e-5)
    xs = _x((300, 2), seed=2, scale=0.8)
    if bases.get_basis(basis).adaptive:
        nnx_model.update_grid(xs)
        variables = kl.update_grid(lin, variables, xs)
        np.testing.assert_allclose(lin.apply(variables, x), nnx_model(x), atol=1e-4)
    nnx_model.refine(9, xs)
    lin, variables = kl.refine(lin, variables, 9, xs)
    np.testing.assert_allclose(lin.apply(variables, x), nnx_model(x), atol=1e-4)


@pytest.mark.parametrize("basis", FAMILIES)
def test_refine_keeps_the_function_and_update_grid_adapts_or_refuses(basis):
    model = kan_jax.KAN([2, 2], grid_size=5, basis=basis, noise_scale=2.0, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = _x((400, 2), seed=1, scale=1.0, dtype=np.float64)
    before = model(x)
    model.refine(10, x)
    assert model.layers[0].coef.shape[-1] == bases.get_basis(basis).n_basis(10, K)
    # Chebyshev and Fourier spaces are nested (exact); B-splines on a nested grid likewise; RBF
    # bumps are not nested: a least-squares fit, close.
    # bumps are not nested: a least-squares fit of Gaussians on a finer grid (ill-conditioned,
    # held by the fit's ridge), close in the mean.
    if basis == "rbf":
        assert float(jnp.sqrt(jnp.mean((model(x) - before) ** 2) / jnp.mean(before**2))) < 5e-2
    else:
        np.testing.assert_allclose(model(x), before, atol=1e-5 * float(jnp.abs(before).max()))
    if bases.get_basis(basis).adaptive:
        xs = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.3, (400, 2)))
        before = model(xs)
        model.update_grid(xs)
        assert not np.allclose(model.layers[0].grid[...], splines.uniform_knots(10, K, (-1.0, 1.0)))
        # A least-squares refit on the new knots (exact for B-splines up to the fit; RBF bumps
        # on quantile knots: 6% relative RMS measured here).
        assert float(jnp.sqrt(jnp.mean((model(xs) - before) ** 2) / jnp.mean(before**2))) < 0.1
    else:
        with pytest.raises(ValueError, match=f"basis '{basis}' has no knots to adapt"):
            model.update_grid(x)


@pytest.mark.parametrize("basis", FAMILIES)
def test_checkpoint_round_trip(basis, tmp_path):
    model = kan_jax.KAN([2, 3, 1], grid_size=G, basis=basis, noise_scale=2.0, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    ckpt = Checkpointer(str(tmp_path), max_to_keep=None)
    ckpt.save(1, {"model": state}, {"basis": basis})
    ckpt.wait()
    fresh = kan_jax.KAN([2, 3, 1], grid_size=G, basis=basis, rngs=nnx.Rngs(5))
    restored = ckpt.restore_state(1, {"model": nnx.state(fresh)})
    ckpt.close()
    nnx.update(fresh, restored["model"])
    x = _x((10, 2))
    np.testing.assert_array_equal(fresh(x), model(x))


@pytest.mark.parametrize("basis", FAMILIES)
def test_each_family_fits_sin_3x_plus_half_x_squared(basis):
    """The issue's check: a [1, 4, 1] KAN, grid 8, Adam, fits sin(3x) + 0.5 x^2 on [-1, 1] to RMSE < 2e-2."""
    x = jnp.linspace(-1, 1, 256, dtype=jnp.float32)[:, None]
    y = jnp.sin(3 * x) + 0.5 * x**2
    model = kan_jax.KAN([1, 4, 1], grid_size=8, basis=basis, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        opt.update(model, grads)
        return loss

    for _ in range(1500):
        step(model, opt)
    rmse = float(jnp.sqrt(jnp.mean((model(x) - y) ** 2)))
    assert rmse < 2e-2, rmse


def test_non_adaptive_basis_with_grid_updates_is_a_config_error():
    from configs import toy
    from kan_jax.train.config import ConfigError, validate_config

    config = toy.get_config("quick")
    config.model.basis = "chebyshev"
    with pytest.raises(ConfigError, match="training.stop_grid_update_step=0"):
        validate_config(config)
    config.training.stop_grid_update_step = 0
    validate_config(config)


@pytest.mark.parametrize("basis", FAMILIES)
def test_regularize_prune_symbolic_and_plot_are_family_blind(basis, tmp_path):
    """What sits above the basis is written once: the penalty, pruning to a subnetwork, the
    symbolic fit (an edge trained to x^2 is recognized) and the diagram run for every family."""
    from kan_jax import plot, prune, regularize, symbolic

    model = kan_jax.KAN([2, 3, 1], grid_size=G, basis=basis, noise_scale=1.0, rngs=nnx.Rngs(0))
    x = _x((64, 2), scale=1.0)
    out, acts = model.forward_with_edges(x)
    np.testing.assert_allclose(out, model(x), atol=1e-5)
    assert np.isfinite(float(regularize.penalty(acts, x=x)))
    pruned = prune.prune(model, x, node_threshold=0.0, edge_threshold=0.0)
    np.testing.assert_allclose(pruned(x), model(x), atol=1e-5)
    # One edge fitted to x^2 by least squares on the family's functions: auto_symbolic names it.
    layer = kan_jax.KAN([1, 1], grid_size=8, basis=basis, param_dtype=jnp.float64, rngs=nnx.Rngs(1)).layers[0]
    xs = jnp.linspace(-1, 1, 200, dtype=jnp.float64)[:, None]
    target = (xs**2 - layer.w_base[...][0, 0] * jax.nn.silu(xs))[:, :, None]
    layer.coef.set_value(bases.fit_coef(basis, xs, target, layer.grid[...], K))
    net = kan_jax.KAN([1, 1], grid_size=8, basis=basis, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    net.layers[0] = layer
    fixed = symbolic.auto_symbolic(net, xs, lib={n: symbolic.SYMBOLIC_LIB[n] for n in ("x", "x^2", "sin", "exp")})
    assert [f["name"] for f in fixed] == ["x^2"], fixed
    plot.plot_kan(model, x, str(tmp_path / "kan.png"))
    assert (tmp_path / "kan.png").stat().st_size > 0
