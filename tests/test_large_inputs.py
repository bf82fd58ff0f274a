"""Large and odd inputs: finite outputs and gradients for every finite input up to 1e30 in every
layer path (float32, float64, bfloat16), and the documented behaviour outside the grid.

* ``extrapolate=False``: every spline is 0 outside the knot span ``[t_0, t_{-1})``, so an edge is
  ``w_base * b(x)`` there and the layer ``bias + sum_i mask * w_base * b(x_i)``.
* ``extrapolate=True``: the end pieces continue within ``splines.EXTRAPOLATION_REACH`` widths of
  the base interval (as scipy's ``BSpline(..., extrapolate=True)``); beyond, the spline holds its
  value at that bound (x-derivative 0).
* Grid updates and refinement on samples with rows at +-1e30 give finite grids and coefficients,
  and nested refinement stays exact on the other rows.

Every example of a test runs one compiled program (fixed shapes), so the file stays quick.
"""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import BSpline

import kan_jax
from kan_jax import functional as F
from kan_jax import kernels, splines
from kan_jax import linen as kl

N, O, G, K = 3, 2, 5, 3
BATCH = 8
BIG = 1e30
PATHS = ("reference", "uniform", "general", "local_uniform", "local_general", "check", "auto")
DTYPES = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}
# Values |y - y_float64| may reach, relative to the sum of the absolute terms of y (``_scale``).
RTOL = {"float32": 1e-5, "float64": 1e-10, "bfloat16": 5e-2}
# The default grid range, and a narrow one: its reciprocal knot spacings (2.5e9) times |x| = 1e30
# overflow float32 (a spline that is 0 there must not compute inf * 0).
GRID_RANGES = [(-1.0, 1.0), (-1e-9, 1e-9)]
# Inputs every grid sees: signed zeros, denormals (float32's and float64's), the largest magnitudes
# asked for, and gelu's float32 overflow range (x**3 beyond 3e38).
COMMON = {0.0, -0.0, 1e-45, -1e-45, 5e-324, -5e-324, 2.2e-308, 1e-38, BIG, -BIG, 3e29, -3e29, 1e20, -1e20, 1e13,
          -1e13, 3e5, -3e5}


@functools.cache
def strategies(grid_range):
    """``(any, outside_span, beyond_reach)`` input elements for a grid range: any finite float up
    to 1e30 or an edge case (the knots themselves, grid ends included, and the extrapolation
    bounds); floats outside the knot span (where ``extrapolate=False`` splines are 0); floats
    beyond the extrapolation bounds (where ``extrapolate=True`` splines are constant)."""
    t = splines.uniform_knots_np(G, K, grid_range, dtype=np.float64)
    lo_b, hi_b = splines.extrapolation_bounds(*grid_range)
    specials = sorted({float(v) for v in t} | {lo_b, hi_b, np.nextafter(lo_b, -np.inf), np.nextafter(hi_b, np.inf)} | COMMON)
    any_float = st.one_of(st.floats(-BIG, BIG, allow_nan=False, allow_infinity=False), st.sampled_from(specials))
    outside_span = st.one_of(st.floats(t[-1], BIG), st.floats(-BIG, np.nextafter(t[0], -np.inf)),
                             st.sampled_from(sorted({t[-1]} | {v for v in COMMON if abs(v) > 1})))
    beyond_reach = st.one_of(st.floats(hi_b + 1e-3 * abs(hi_b), BIG), st.floats(-BIG, lo_b - 1e-3 * abs(lo_b)),
                             st.sampled_from(sorted(v for v in COMMON if abs(v) > 1e5)))
    return any_float, outside_span, beyond_reach


def inputs(elements):
    return hnp.arrays(np.float64, (BATCH, N), elements=elements)


def _layer(dtype, grid_range=(-1.0, 1.0)):
    """Random params (non-trivial splines), a uniform grid over ``grid_range`` and a mask with a
    pruned edge, in the layer's param dtype (float64 for float64 compute, float32 otherwise)."""
    pdt = jnp.float64 if dtype == jnp.float64 else jnp.float32
    params, grid, _ = F.init_layer(jax.random.key(0), N, O, grid_size=G, spline_order=K, grid_range=grid_range,
                                   param_dtype=pdt)
    rng = np.random.default_rng(1)
    params = {
        "coef": rng.uniform(-1, 1, (N, O, G + K)),
        "w_base": rng.uniform(-1, 1, (N, O)),
        "w_spline": rng.uniform(0.5, 1.5, (N, O)),
        "bias": rng.uniform(-1, 1, (O,)),
    }
    params = {k: jnp.asarray(v, pdt) for k, v in params.items()}
    mask = jnp.asarray(np.array([[1, 1], [1, 0], [1, 1]]), pdt)
    return params, grid, mask


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(jnp.asarray(a, jnp.float32) if a.dtype == jnp.bfloat16 else a, np.float64), tree)


@functools.cache
def _all_paths(dtype_name, extrapolate, base_activation):
    """One jitted program: every forward path's values, and gradients w.r.t. params and inputs."""
    dtype = DTYPES[dtype_name]
    kw = dict(order=K, base_activation=base_activation, dtype=dtype, extrapolate=extrapolate)

    def loss(fn, p, g, m, x):
        y = fn(p, g, m, x)
        return jnp.sum(jnp.sin(y.astype(jnp.float32 if dtype == jnp.bfloat16 else dtype))), y

    fns = {path: functools.partial(F.apply, path=path, uniform=True if path in ("auto", "check") else None, **kw)
           for path in PATHS}
    fns["auto_general"] = functools.partial(F.apply, path="auto", **kw)
    fns["edge_values"] = functools.partial(F.edge_values, **kw)
    fns["edge_values_uniform"] = functools.partial(F.edge_values, uniform=True, **kw)
    fns["edge_apply"] = functools.partial(F.edge_apply, **kw)

    @jax.jit
    def run(p, g, m, x):
        out = {}
        for name, fn in fns.items():
            (_, y), grads = jax.value_and_grad(functools.partial(loss, fn), argnums=(0, 3), has_aux=True)(p, g, m, x)
            out[name] = (y, grads)
        return out

    return run


def _scale(params, grid, mask, x, extrapolate, base=jax.nn.silu):
    """Per row, 1 + the sum of the absolute terms of the layer output (float64): the size that
    rounding errors scale with (sums of huge terms of both signs cancel)."""
    p = _f64(params)
    b = np.asarray(splines.bspline_basis(jnp.asarray(x), jnp.asarray(_f64(grid)), K, extrapolate=extrapolate))
    spline = np.einsum("bnm,nom->bno", np.abs(b), np.abs(p["coef"])) * np.abs(p["w_spline"])
    base_t = np.abs(np.asarray(base(jnp.asarray(x))))[..., None] * np.abs(p["w_base"])
    return 1.0 + np.abs(p["bias"]).sum() + ((spline + base_t) * _f64(mask)).sum(axis=(1, 2))


def _assert_finite(tree, what):
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64))), what


def _check_all_paths(dtype_name, extrapolate, x64, grid_range):
    """Runs every path on ``x64`` (rounded to the dtype); asserts finite values and gradients and
    agreement with the float64 reference on the same rounded inputs, params and knots."""
    dtype = DTYPES[dtype_name]
    params, grid, mask = _layer(dtype, grid_range)
    x = jnp.asarray(x64, dtype)
    out = _all_paths(dtype_name, extrapolate, "silu")(params, grid, mask, x)
    xr = _f64(x)
    want = np.asarray(F.apply(*(jax.tree.map(jnp.asarray, _f64((params, grid, mask)))), jnp.asarray(xr), order=K,
                              path="reference", extrapolate=extrapolate))
    tol = RTOL[dtype_name] * _scale(params, grid, mask, xr, extrapolate)
    for name, (y, grads) in out.items():
        tag = f"{name} {dtype_name} extrapolate={extrapolate}"
        _assert_finite(y, f"values: {tag}")
        _assert_finite(grads, f"gradients: {tag}")
        y = _f64(y)
        if name.startswith("edge"):
            y = y.sum(axis=1) + _f64(params["bias"])
        err = np.abs(y - want).max(axis=1)
        assert np.all(err <= tol), f"{tag}: off the float64 reference by {err} (tolerance {tol})"
    return out, params, mask, xr


@pytest.mark.parametrize("extrapolate", [False, True])
@pytest.mark.parametrize("dtype_name", ["float32", "float64", "bfloat16"])
@settings(max_examples=12, deadline=None)
@given(data=st.data(), grid_range=st.sampled_from(GRID_RANGES))
def test_every_path_finite_and_exact_at_any_magnitude(dtype_name, extrapolate, data, grid_range):
    """Every forward path (fused kernels, ``check``/``auto`` dispatch, reference, per-edge views)
    gives finite values and finite gradients w.r.t. params and inputs for any finite input up to
    1e30, equal to the float64 reference up to rounding."""
    x = data.draw(inputs(strategies(grid_range)[0]), label="x")
    _check_all_paths(dtype_name, extrapolate, x, grid_range)


@pytest.mark.parametrize("dtype_name", ["float32", "float64", "bfloat16"])
@settings(max_examples=8, deadline=None)
@given(data=st.data(), grid_range=st.sampled_from(GRID_RANGES))
def test_outside_the_knot_span_is_the_base_term_plus_bias(dtype_name, data, grid_range):
    """``extrapolate=False``: outside ``[t_0, t_{-1})`` the spline is 0 in every path, at any
    magnitude: the output is ``bias + sum_i mask * w_base * silu(x_i)`` (closed form)."""
    x = data.draw(inputs(strategies(grid_range)[1]), label="x")
    out, params, mask, xr = _check_all_paths(dtype_name, False, x, grid_range)
    p, mask = _f64(params), _f64(mask)
    # Outside the span as every path sees it (rounded inputs; float32 knots, bfloat16 in bfloat16's reference).
    t = _f64(_layer(DTYPES[dtype_name], grid_range)[1])[0]
    t16 = _f64(jnp.asarray(t, jnp.bfloat16)) if dtype_name == "bfloat16" else t
    out_i = (xr >= max(t[-1], t16[-1])) | (xr < min(t[0], t16[0]))  # (batch, n)
    base = np.asarray(jax.nn.silu(jnp.asarray(xr)))
    edges = base[..., None] * p["w_base"] * mask
    want = p["bias"] + edges.sum(axis=1)
    scale = 1.0 + np.abs(edges).sum(axis=(1, 2))[:, None]
    rtol = {"float32": 1e-6, "float64": 1e-14, "bfloat16": 2e-2}[dtype_name]
    for name, (y, _) in out.items():
        y = _f64(y)
        if name.startswith("edge"):
            np.testing.assert_allclose(y[out_i], edges[out_i], rtol=rtol, atol=0, err_msg=name)
            y = y.sum(axis=1) + p["bias"]
        rows = out_i.all(axis=1)
        assert np.all(np.abs(y - want)[rows] <= rtol * scale[rows]), name


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@settings(max_examples=8, deadline=None)
@given(data=st.data(), grid_range=st.sampled_from(GRID_RANGES), frac=st.floats(0.0, 1.0))
def test_extrapolation_holds_its_value_beyond_the_reach(dtype_name, data, grid_range, frac):
    """``extrapolate=True``: beyond ``splines.extrapolation_bounds`` every path's spline equals its
    value at the bound (x-derivative 0), so a cubic at 1e30 (1e90) cannot overflow; within the
    bounds it is scipy's polynomial continuation."""
    dtype = DTYPES[dtype_name]
    x = data.draw(inputs(strategies(grid_range)[2]), label="x")
    params, grid, mask = _layer(dtype, grid_range)
    run = _all_paths(dtype_name, True, "zero")  # no base term: the output is the spline part
    lo_b, hi_b = splines.extrapolation_bounds(*grid_range)
    clamped = np.clip(x, lo_b, hi_b)
    far, at_bound = run(params, grid, mask, jnp.asarray(x, dtype)), run(params, grid, mask, jnp.asarray(clamped, dtype))
    scale = _scale(params, grid, mask, clamped, True, base=jnp.zeros_like)
    for name in far:
        (y, (gp, gx)), (y_b, _) = far[name], at_bound[name]
        _assert_finite((y, gp, gx), name)
        y, y_b = _f64(y), _f64(y_b)
        if name.startswith("edge"):
            y, y_b = y.sum(axis=1), y_b.sum(axis=1)
        err = np.abs(y - y_b).max(axis=1)
        assert np.all(err <= (1e-5 if dtype == jnp.float32 else 1e-12) * scale), (name, err, scale)
        np.testing.assert_array_equal(gx, 0.0, err_msg=name)
    # Inside the reach (a point `frac` of the way out to the bound): scipy's continuation.
    hi = grid_range[1]
    xin = jnp.full((BATCH, N), hi + frac * (hi_b - hi), jnp.float64)
    y64 = np.asarray(F.edge_values(*(jax.tree.map(jnp.asarray, _f64((params, grid, mask)))), xin, order=K,
                                   base_activation="zero", extrapolate=True))
    p = _f64(params)
    for i in range(N):
        for o in range(O):
            s = BSpline(_f64(grid)[i], p["coef"][i, o], K, extrapolate=True)(np.asarray(xin[:, i]))
            want = p["w_spline"][i, o] * s * _f64(mask)[i, o]
            # rtol 1e-6: the continued cubic is evaluated 1000 base widths out, where its terms
            # (~1000^3 times the coefficients) cancel; float64 rounding there reached 8.5e-8
            # (grid_range 1e-9, frac 1). A clamped or zeroed spline is off by far more.
            np.testing.assert_allclose(y64[:, i, o], want, rtol=1e-6, atol=1e-9 * (1 + np.abs(s).max()))


@pytest.mark.parametrize("base_activation", sorted(F.BASE_ACTIVATIONS))
@settings(max_examples=6, deadline=None)
@given(x=inputs(strategies(GRID_RANGES[0])[0]))
def test_every_base_activation_finite_in_float32(base_activation, x):
    """Each base activation's values and derivatives stay finite at any magnitude in float32
    (``jax.nn.gelu``'s derivative is NaN from |x| ~ 1e19: ``sech^2 = 0`` times ``x^2 = inf``)."""
    params, grid, mask = _layer(jnp.float32)
    for extrapolate in (False, True):
        out = _all_paths("float32", extrapolate, base_activation)(params, grid, mask, jnp.asarray(x, jnp.float32))
        for name, value in out.items():
            _assert_finite(value, f"{name} {base_activation} extrapolate={extrapolate}")


def test_gelu_keeps_jax_values():
    """``kernels.gelu`` (the ``"gelu"`` base) has ``jax.nn.gelu``'s values bit for bit, and
    derivatives equal to it where that one is finite."""
    for dtype in (jnp.float32, jnp.float64, jnp.bfloat16):
        x = jnp.concatenate([jnp.linspace(-60.0, 60.0, 20001), jnp.asarray([-BIG, -1e19, 1e19, BIG, 0.0])]).astype(dtype)
        np.testing.assert_array_equal(kernels.gelu(x), jax.nn.gelu(x))
        d_ours = jax.vmap(jax.grad(kernels.gelu))(x)
        d_jax = jax.vmap(jax.grad(jax.nn.gelu))(x)
        _assert_finite(d_ours, dtype)
        ok = np.isfinite(np.asarray(d_jax, np.float64))
        np.testing.assert_allclose(np.asarray(d_ours, np.float64)[ok], np.asarray(d_jax, np.float64)[ok],
                                   rtol=1e-2 if dtype == jnp.bfloat16 else 1e-6, atol=1e-6)


@functools.cache
def _nnx_program(dtype_name, extrapolate):
    """Output, fused edge pass and param gradients of a loss on both (as a regularized fit)."""

    @nnx.jit
    def run(model, x):
        def loss(m):
            y = m(x)
            y_edges, acts = m.forward_with_edges(x)
            f32 = lambda a: a.astype(jnp.float32)
            penalty = sum(jnp.mean(jnp.tanh(jnp.abs(f32(a)))) for a in acts)
            return jnp.sum(jnp.sin(f32(y))) + jnp.sum(jnp.sin(f32(y_edges))) + penalty, (y, y_edges, acts)

        (_, aux), grads = nnx.value_and_grad(loss, has_aux=True)(model)
        return aux, grads

    return run


@functools.cache
def _linen_program(dtype_name, extrapolate):
    lin = kl.KAN([N, 4, O], grid_size=G, extrapolate=extrapolate, dtype=DTYPES[dtype_name])

    @jax.jit
    def run(variables, x):
        def loss(params):
            y = lin.apply({**variables, "params": params}, x)
            return jnp.sum(jnp.sin(y.astype(jnp.float32))), y

        (_, y), g = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return y, g

    return run


@pytest.mark.parametrize("extrapolate", [False, True])
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@settings(max_examples=6, deadline=None)
@given(x=inputs(strategies(GRID_RANGES[0])[0]))
def test_nnx_and_linen_networks_finite(dtype_name, extrapolate, x):
    """Two-layer NNX and Linen KANs (the first layer's outputs reach 1e30 too, so the second
    layer's input gradient feeds the first layer's param gradients): finite outputs, edge
    activations and param gradients; NNX and Linen agree."""
    dtype = DTYPES[dtype_name]
    model = kan_jax.KAN([N, 4, O], grid_size=G, extrapolate=extrapolate, dtype=dtype, rngs=nnx.Rngs(0))
    xj = jnp.asarray(x, jnp.float32)
    (y, y_edges, acts), grads = _nnx_program(dtype_name, extrapolate)(model, xj)
    _assert_finite((y, y_edges, acts), "NNX values")
    _assert_finite(nnx.state(grads, nnx.Param), "NNX param gradients")

    variables = {
        "params": {f"layers_{l}": layer.params() for l, layer in enumerate(model.layers)},
        "grid": {f"layers_{l}": {"knots": layer.grid[...], "mask": layer.mask[...]} for l, layer in enumerate(model.layers)},
    }
    y_lin, g_lin = _linen_program(dtype_name, extrapolate)(variables, xj)
    _assert_finite((y_lin, g_lin), "Linen")
    y32, y_lin32 = np.asarray(y, np.float32), np.asarray(y_lin, np.float32)
    rtol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
    assert np.all(np.abs(y_lin32 - y32) <= rtol * (1 + np.abs(y32).max(axis=1, keepdims=True)))


@pytest.mark.parametrize("extrapolate", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@settings(max_examples=3, deadline=None)
@given(grid_eps=st.sampled_from([0.0, 0.02, 1.0]), huge=st.lists(st.sampled_from([BIG, -BIG, 3e29, -1e20]), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_grid_update_and_refine_with_huge_samples(dtype, extrapolate, grid_eps, huge, seed):
    """``update_grid`` on samples with rows at up to 1e30 gives finite, non-decreasing grids and
    finite coefficients (NNX and Linen); so does ``refine`` after it, and in float64 the nested
    refine keeps the function on the ordinary rows to rounding (a knot tolerance relative to the
    row's largest knot, 1e21 here, once merged every knot near 0: errors of 2e-2)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (64, N))
    for r, v in enumerate(huge):
        x[3 + 7 * r, r % N] = v
    x = jnp.asarray(x, dtype)
    ordinary = np.abs(np.asarray(x)).max(axis=1) <= 1

    model = kan_jax.KAN([N, 4, O], grid_size=G, extrapolate=extrapolate, grid_eps=grid_eps, param_dtype=dtype,
                        rngs=nnx.Rngs(0))
    model.update_grid(x)

    def check(m, what):
        for layer in m.layers:
            t = np.asarray(layer.grid[...], np.float64)
            _assert_finite((t, layer.coef[...]), what)
            assert np.all(np.diff(t, axis=1) >= 0), what
        _assert_finite(m(x), what)

    check(model, "update_grid")
    before = np.asarray(model(x), np.float64)
    # Rounding scales with the coefficients (the fit to an extrapolated outlier can make them 1e9).
    coef_size = max(float(jnp.abs(layer.coef[...]).max()) for layer in model.layers)
    model.refine(2 * G)  # float64: nested, knot insertion (exact); float32: a fit on points over the grid
    check(model, "refine")
    if dtype == jnp.float64:
        after = np.asarray(model(x), np.float64)
        atol = 1e-9 * (1 + np.abs(before[ordinary]).max()) + 1e-13 * coef_size
        np.testing.assert_allclose(after[ordinary], before[ordinary], rtol=1e-9, atol=atol)
    model.refine(2 * G + 3, x)  # not nested: least squares on the samples
    check(model, "refine on samples")

    lin = kl.KAN([N, 4, O], grid_size=G, extrapolate=extrapolate, param_dtype=dtype)
    variables = kl.update_grid(lin, lin.init(jax.random.key(0), x), x, grid_eps=grid_eps)
    lin, variables = kl.refine(lin, variables, 2 * G + 3, x)
    _assert_finite((variables, lin.apply(variables, x)), "Linen update_grid / refine")
