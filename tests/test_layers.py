"""KAN layers and networks: fused vs per-edge math, grid update/refine, transforms, NNX vs Linen."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.interpolate import BSpline
import pytest
from flax import nnx

import kan_jax
from kan_jax import functional as F
from kan_jax import linen as kl


def _x(shape, seed=0, dtype=jnp.float32, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-scale, scale, shape), dtype)


def _randomize(model, seed=1, dtype=jnp.float32):
    """Non-trivial params (init has tiny spline noise, which would make tests weak)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers if isinstance(model, kan_jax.KAN) else [model]:
        for name in ("coef", "w_base", "w_spline", "bias"):
            v = getattr(layer, name)
            v.set_value(jnp.asarray(rng.normal(size=v.shape), dtype))
    return model


def rel_rms(a, b):
    return float(jnp.sqrt(jnp.mean((a - b) ** 2)) / jnp.sqrt(jnp.mean(b**2)))


def test_layer_shapes_and_init():
    layer = kan_jax.KANLayer(3, 4, grid_size=5, spline_order=3, rngs=nnx.Rngs(0))
    assert layer.coef.shape == (3, 4, 8) and layer.grid.shape == (3, 12) and layer.mask.shape == (3, 4)
    np.testing.assert_array_equal(layer.w_spline[...], 1.0)
    assert float(jnp.abs(layer.w_base[...]).max()) <= 1 / np.sqrt(3)
    assert float(jnp.abs(layer.coef[...]).max()) <= 0.3 / 5 / 2
    assert layer(_x((7, 3))).shape == (7, 4)
    # The grid and mask are not nnx.Param: optimizers over nnx.Param skip them. The symbolic
    # edges' affine params are (trained once edges are symbolic); their function index is not.
    params = nnx.state(layer, nnx.Param)
    assert set(params.keys()) == {"coef", "w_base", "w_spline", "bias", "symbolic"}
    assert set(params["symbolic"].keys()) == {"affine"} and params["symbolic"]["affine"].shape == (3, 4, 4)
    assert set(nnx.state(layer, kan_jax.symbolic.SymbolicIndex)["symbolic"].keys()) == {"func"}
    assert set(nnx.state(layer, kan_jax.Grid).keys()) == {"grid"}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_init_draws_and_dtypes(dtype):
    """init_layer: the documented draws from split keys, every param in ``param_dtype`` (with
    float64 enabled, float32 params stay float32: w_base once came out float64)."""
    key = jax.random.PRNGKey(7)
    params, grid, mask = F.init_layer(key, 3, 4, grid_size=6, spline_order=2, noise_scale=0.5, base_scale=2.0,
                                      param_dtype=dtype)
    assert {k: v.dtype for k, v in params.items()} == dict.fromkeys(params, jnp.dtype(dtype))
    assert grid.dtype == mask.dtype == jnp.dtype(dtype)
    k_coef, k_base = jax.random.split(key)
    u = np.asarray(jax.random.uniform(k_coef, (3, 4, 8), dtype), np.float64)
    v = np.asarray(jax.random.uniform(k_base, (3, 4), dtype, -1.0, 1.0), np.float64)
    tol = 1e-6 if dtype == jnp.float32 else 1e-15
    np.testing.assert_allclose(params["coef"], (u - 0.5) * 0.5 / 6, rtol=tol, atol=tol)
    np.testing.assert_allclose(params["w_base"], v * 2.0 / np.sqrt(3), rtol=tol, atol=tol)
    np.testing.assert_array_equal(params["w_spline"], 1.0)
    np.testing.assert_array_equal(params["bias"], 0.0)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.float64, 1e-12)])
def test_fused_equals_per_edge(dtype, tol):
    layer = _randomize(kan_jax.KANLayer(5, 3, grid_size=6, rngs=nnx.Rngs(0), param_dtype=dtype), dtype=dtype)
    layer.mask.set_value(layer.mask[...].at[1, 2].set(0.0))
    x = _x((64, 5), dtype=dtype, scale=1.3)
    y = layer(x)
    e = layer.edge_activations(x)
    assert e.shape == (64, 5, 3)
    np.testing.assert_allclose(e.sum(1) + layer.bias[...], y, atol=tol * 10, rtol=tol)
    assert np.all(np.asarray(e[:, 1, 2]) == 0.0)
    # The per-edge function on its own, for one edge, by hand.
    b = kan_jax.splines.bspline_basis(x[:, 2:3], layer.grid[...][2:3], 3)[:, 0]
    phi = layer.w_base[...][2, 0] * jax.nn.silu(x[:, 2]) + layer.w_spline[...][2, 0] * b @ layer.coef[...][2, 0]
    np.testing.assert_allclose(e[:, 2, 0], phi, atol=tol * 10, rtol=tol)


def test_network_edge_activations_sum_to_layer_outputs():
    model = _randomize(kan_jax.KAN([2, 4, 3], rngs=nnx.Rngs(0)))
    x = _x((32, 2))
    acts = model.layer_inputs(x)
    for layer, a, e, out in zip(model.layers, acts[:-1], model.edge_activations(x), acts[1:]):
        np.testing.assert_allclose(e.sum(1) + layer.bias[...], out, atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(acts[-1], model(x), atol=0)
    # The one-pass forward (the regularized loss) gives the same output and edge activations.
    y, edges = model.forward_with_edges(x)
    np.testing.assert_allclose(y, model(x), atol=1e-5, rtol=1e-6)
    for e, e_ref in zip(edges, model.edge_activations(x)):
        np.testing.assert_array_equal(e, e_ref)


def _smooth_model(dtype=jnp.float64, grid_size=5):
    """A [2, 3, 1] KAN whose splines are smooth functions (fit by least squares)."""
    model = kan_jax.KAN([2, 3, 1], grid_size=grid_size, rngs=nnx.Rngs(0), param_dtype=dtype)
    for l, layer in enumerate(model.layers):
        xs = jnp.linspace(-1, 1, 200, dtype=dtype)[:, None].repeat(layer.in_features, 1)
        freq = jnp.arange(1, layer.in_features * layer.out_features + 1, dtype=dtype).reshape(
            layer.in_features, layer.out_features
        )
        ys = 0.5 * jnp.sin(freq[None] * xs[:, :, None] * 0.35 + l)
        layer.coef.set_value(kan_jax.splines.fit_coef(xs, ys, layer.grid[...], 3))
    return model


def test_update_grid_keeps_function():
    model = _smooth_model(dtype=jnp.float32)
    x = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.4, (1000, 2)).clip(-1, 1), jnp.float32)
    before = model(x)
    grid0 = model.layers[0].grid[...]
    model.update_grid(x)
    assert not np.allclose(model.layers[0].grid[...], grid0)
    # The first layer's new base grid spans the samples.
    np.testing.assert_allclose(model.layers[0].grid[...][:, 3], x.min(0), rtol=1e-5)
    assert rel_rms(model(x), before) < 1e-2


def test_refine_nested_exact_float64():
    model = _smooth_model(dtype=jnp.float64)
    x = _x((500, 2), seed=3, dtype=jnp.float64)
    model.update_grid(x)  # non-uniform grids
    before = model(x)
    model.refine(10, x)
    assert model.grid_size == 10 and model.layers[0].coef.shape == (2, 3, 13)
    assert rel_rms(model(x), before) < 1e-6
    model.refine(20, x)
    assert rel_rms(model(x), before) < 1e-6


def test_refine_non_nested():
    model = _smooth_model(dtype=jnp.float64, grid_size=5)
    x = _x((1000, 2), seed=4, dtype=jnp.float64)
    before = model(x)
    model.refine(7, x)
    assert model.grid_size == 7
    assert rel_rms(model(x), before) < 1e-3
    model2 = _smooth_model(dtype=jnp.float64, grid_size=5)
    model2.update_grid(x)  # grids cover the samples reaching each layer
    before = model2(x)
    model2.refine(8)  # no samples: fit on points spread over each base interval
    assert rel_rms(model2(x), before) < 1e-3


def test_grid_fits_with_fewer_samples_than_coefficients_stay_well_posed():
    """update_grid with fewer samples than coefficients per edge keeps the layer (and says so);
    a non-nested refine fits on dense points instead of the few samples. No NaN, function kept."""
    model = _smooth_model(dtype=jnp.float64, grid_size=20)
    few = _x((12, 2), seed=5, dtype=jnp.float64)  # 12 samples < 23 coefficients
    probe = _x((500, 2), seed=6, dtype=jnp.float64)
    model.update_grid(probe)  # well-posed: grids now cover the inputs reaching each layer
    before = model(probe)
    grids = [layer.grid[...] for layer in model.layers]
    with pytest.warns(UserWarning, match="12 samples cannot place a grid of 20 intervals"):
        model.update_grid(few)
    assert all(np.array_equal(layer.grid[...], g) for layer, g in zip(model.layers, grids))
    np.testing.assert_array_equal(model(probe), before)
    with pytest.warns(UserWarning, match="ill-posed"):
        model.refine(30, few)  # 30 is not a multiple of 20: a fit, on dense points
    after = model(probe)
    assert np.all(np.isfinite(after)) and rel_rms(after, before) < 1e-3


def test_transforms():
    model = _randomize(kan_jax.KAN([3, 4, 2], rngs=nnx.Rngs(0)))
    x = _x((16, 3))
    y = model(x)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(model, x), y, atol=1e-6)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, x):
        return jnp.mean(nnx.merge(graphdef, p, rest)(x) ** 2)

    grads = jax.jit(jax.grad(loss))(params, x)
    g = grads["layers"][0]["coef"][...]
    assert g.shape == (3, 4, 8) and float(jnp.abs(g).max()) > 0
    # vmap over a batch of models (stacked params from different seeds).
    stacked = jax.tree.map(
        lambda *a: jnp.stack(a), *[nnx.state(kan_jax.KAN([3, 4, 2], rngs=nnx.Rngs(s)), nnx.Param) for s in range(3)]
    )
    ys = jax.vmap(lambda p: nnx.merge(graphdef, p, rest)(x))(stacked)
    assert ys.shape == (3, 16, 2)
    np.testing.assert_allclose(ys[1], nnx.merge(graphdef, jax.tree.map(lambda a: a[1], stacked), rest)(x), atol=1e-6)
    # A jitted optimizer step with nnx.Optimizer over params only.
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x):
        l, g = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, g)
        return l

    grid_before = model.layers[0].grid[...]
    l0 = step(model, opt, x)
    for _ in range(20):
        l1 = step(model, opt, x)
    assert l1 < l0
    np.testing.assert_array_equal(model.layers[0].grid[...], grid_before)


def test_bfloat16_and_float64_compute():
    layer = _randomize(kan_jax.KANLayer(4, 3, rngs=nnx.Rngs(0)))
    x = _x((32, 4))
    y32 = layer(x)
    layer.dtype = jnp.bfloat16
    y16 = layer(x)
    assert y16.dtype == jnp.bfloat16
    assert rel_rms(y16.astype(jnp.float32), y32) < 3e-2
    l64 = _randomize(kan_jax.KANLayer(4, 3, rngs=nnx.Rngs(0), param_dtype=jnp.float64), dtype=jnp.float64)
    assert l64(x.astype(jnp.float64)).dtype == jnp.float64


def test_nnx_and_linen_agree():
    nnx_model = _randomize(kan_jax.KAN([3, 5, 2], grid_size=4, rngs=nnx.Rngs(0)))
    x = _x((20, 3))
    lin = kl.KAN([3, 5, 2], grid_size=4)
    variables = lin.init(jax.random.key(1), x)
    assert set(variables) == {"params", "grid"}
    params = {f"layers_{l}": layer.params() for l, layer in enumerate(nnx_model.layers)}
    grid = {f"layers_{l}": {"knots": layer.grid[...], "mask": layer.mask[...]} for l, layer in enumerate(nnx_model.layers)}
    variables = {"params": params, "grid": grid}
    np.testing.assert_allclose(lin.apply(variables, x), nnx_model(x), atol=1e-6)
    # Same grid update and refinement on both sides.
    xs = _x((300, 3), seed=2, scale=0.8)
    nnx_model.update_grid(xs)
    variables = kl.update_grid(lin, variables, xs)
    np.testing.assert_allclose(lin.apply(variables, x), nnx_model(x), atol=1e-5)
    nnx_model.refine(8, xs)
    lin, variables = kl.refine(lin, variables, 8, xs)
    assert lin.grid_size == 8
    np.testing.assert_allclose(lin.apply(variables, x), nnx_model(x), atol=1e-5)
    dense = kl.KANDense(2)
    v = dense.init(jax.random.key(0), x)
    np.testing.assert_allclose(dense.apply(v, x, method=kl.KANDense.edge_activations).sum(1), dense.apply(v, x), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(widths=[2]), "widths"),
        (dict(widths=[2, 0, 1]), "widths"),
        (dict(widths=[2, 5, 1], grid_size=0), "grid_size"),
        (dict(widths=[2, 5, 1], spline_order=-1), "spline_order"),
        (dict(widths=[2, 5, 1], grid_range=(1.0, -1.0)), "grid_range"),
        (dict(widths=[2, 5, 1], basis="legendre"), r"basis must be one of \[.bspline., .chebyshev., .fourier., .rbf.\]"),
        (dict(widths=[2, 5, 1], base_activation="relu6"), "base_activation"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kan_jax.KAN(**kwargs, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=match):
        kl.KAN(**kwargs).init(jax.random.key(0), jnp.zeros((1, 2)))


def test_wrong_input_features():
    layer = kan_jax.KANLayer(3, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"in_features=3.*\(4 features\)"):
        layer(jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match="in_features=2"):
        kl.KAN([2, 3]).init(jax.random.key(0), jnp.zeros((5, 4)))


@pytest.mark.parametrize("path", ["auto", "uniform", "general", "local_uniform", "local_general", "reference"])
def test_extrapolate_all_paths_agree_with_per_edge(path):
    layer = _randomize(kan_jax.KANLayer(3, 2, grid_size=4, extrapolate=True, rngs=nnx.Rngs(0), param_dtype=jnp.float64), dtype=jnp.float64)
    x = _x((40, 3), seed=5, dtype=jnp.float64, scale=1.6)  # a third of the points beyond the grid
    p, g, m = layer.params(), layer.grid[...], layer.mask[...]
    want = layer.edge_activations(x).sum(1) + layer.bias[...]
    y = F.apply(p, g, m, x, order=3, path=path, uniform=True, extrapolate=True)
    np.testing.assert_allclose(y, want, atol=1e-10)
    # Gradients w.r.t. inputs of the fast paths match the reference's autodiff.
    gref = jax.grad(lambda x: F.apply(p, g, m, x, order=3, path="reference", extrapolate=True).sum())(x)
    gx = jax.grad(lambda x: F.apply(p, g, m, x, order=3, path=path, uniform=True, extrapolate=True).sum())(x)
    np.testing.assert_allclose(gx, gref, atol=1e-9)


def test_extrapolation_continues_end_pieces_and_refine_stays_exact():
    model = _smooth_model(dtype=jnp.float64)
    for layer in model.layers:
        layer.extrapolate = True
    x_out = jnp.asarray(np.linspace(1.0, 1.3, 30)[:, None].repeat(2, 1))
    layer = model.layers[0]
    vals = layer.edge_activations(x_out)[:, 0, 0]
    # Beyond the grid the spline part is the cubic piece of the last interval, continued.
    t = np.asarray(layer.grid[...][0])
    c = np.asarray(layer.coef[...][0, 0])
    spline = BSpline(t, c, 3, extrapolate=True)(np.asarray(x_out[:, 0]))
    want = layer.w_base[...][0, 0] * jax.nn.silu(x_out[:, 0]) + layer.w_spline[...][0, 0] * spline
    np.testing.assert_allclose(vals, want, atol=1e-10)
    before = model(x_out)
    model.refine(10)
    np.testing.assert_allclose(model(x_out), before, atol=1e-10)


@pytest.mark.parametrize("path", ["general", "uniform", "local_general", "local_uniform"])
def test_chunked_batch_matches_reference(monkeypatch, path):
    """Large batches run in batch chunks (padded to whole chunks); same values and gradients."""
    from kan_jax import kernels

    monkeypatch.setattr(kernels, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(kernels, "LOCAL_CHUNK_ELEMENTS", {jax.default_backend(): 64})
    n, o, batch = 3, 2, 43  # shapes used by no other test (jit caches are keyed on shapes)
    n_chunks, size = kernels._chunks(batch, n * (1 + 4 + 3), 64)
    assert n_chunks > 1 and n_chunks * size > batch  # several chunks, the last one padded
    layer = _randomize(kan_jax.KANLayer(n, o, grid_size=4, rngs=nnx.Rngs(0), param_dtype=jnp.float64), dtype=jnp.float64)
    p, g, m = layer.params(), layer.grid[...], layer.mask[...]
    x = _x((batch, n), seed=7, dtype=jnp.float64, scale=1.5)  # some inputs beyond the grid

    def loss(p, x, path):
        return jnp.sum(jnp.sin(F.apply(p, g, m, x, order=3, path=path, uniform=True)))

    np.testing.assert_allclose(
        F.apply(p, g, m, x, order=3, path=path, uniform=True), F.apply(p, g, m, x, order=3, path="reference"), atol=1e-12
    )
    got = jax.grad(loss, argnums=(0, 1))(p, x, path)
    want = jax.grad(loss, argnums=(0, 1))(p, x, "reference")
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_reference_path_gives_forward_mode_derivatives_nnx_and_linen():
    """``path="reference"``: a Laplacian as ``jax.jvp`` of ``jax.grad`` (what a PDE residual
    needs) equals the Hessian's trace; the kernel paths (custom_vjp) refuse forward mode."""
    x = jnp.array([0.3, -0.2])
    model = kan_jax.KAN([2, 3, 1], grid_size=5, path="reference", rngs=nnx.Rngs(0))
    fast = kan_jax.KAN([2, 3, 1], grid_size=5, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(model(x[None]), fast(x[None]), rtol=1e-5)
    lin = kl.KAN([2, 3, 1], grid_size=5, path="reference")
    variables = lin.init(jax.random.key(0), x[None])

    for f in (lambda p: model(p[None])[0, 0], lambda p: lin.apply(variables, p[None])[0, 0]):
        lap = sum(jax.jvp(jax.grad(f), (x,), (jnp.eye(2)[i],))[1][i] for i in range(2))
        np.testing.assert_allclose(lap, jnp.trace(jax.hessian(f)(x)), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="path must be one of"):
        kan_jax.KAN([2, 1], path="fast", rngs=nnx.Rngs(0))
