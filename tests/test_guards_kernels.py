"""Guard: every base activation on every fast path has the reference's gradients.

The fast paths (``kernels.PATHS``, ``"auto"``, ``"check"`` and the fused ``edge_values``) carry
their own custom backward with a hand-written derivative of each base activation; the reference
(``path="reference"`` / ``edge_apply``) is plain autodiff through ``functional.BASE_ACTIVATIONS``.
A wrong derivative of any one activation on any one path must show up here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax import functional as F
from kan_jax import kernels as K

ACTIVATIONS = tuple(F.BASE_ACTIVATIONS)


def test_every_base_activation_is_covered():
    # The parametrization below follows the public table: a new activation is tested automatically.
    assert set(ACTIVATIONS) >= {"silu", "gelu", "tanh", "identity", "zero"}
    assert set(K.PATHS) == {"uniform", "general", "local_uniform", "local_general"}


def _layer(n=3, o=2, grid=5, order=3, adaptive=False, seed=0):
    rng = np.random.default_rng(seed)
    params, knots, mask = F.init_layer(jax.random.key(seed), n, o, grid_size=grid, spline_order=order,
                                       param_dtype=jnp.float64)
    # Every weight non-zero and O(1): the base branch's derivative enters the gradients with weight
    # w_base, the spline branch's with w_spline * coef.
    params = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float64) for k, v in params.items()}
    mask = mask.at[0, 1].set(0.0)
    if adaptive:
        # Per-input sample ranges that differ: the adapted knot rows differ from input to input.
        xs = np.stack([rng.normal(size=200) * 0.3, rng.uniform(-1.5, 0.5, 200), rng.normal(size=200) ** 3 * 0.5], 1)
        params, knots = F.update_grid(params, knots, jnp.asarray(xs[:, :n]), order=order, grid_eps=0.02)
        assert not bool(K.is_uniform(knots))
    # Inputs inside, on the extension intervals and beyond the knot span on both sides.
    x = jnp.asarray(rng.uniform(-2.4, 2.4, (24, n)), jnp.float64)
    return params, knots, mask, x


def _paths(adaptive):
    # The closed-form uniform paths are only valid on uniform knots.
    fast = tuple(K.PATHS) if not adaptive else tuple(p for p in K.PATHS if "uniform" not in p)
    return fast + ("auto", "check")


def _assert_trees_close(got, want, msg, atol=1e-10):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, (msg, path)
        assert np.all(np.isfinite(a)), (msg, path)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=atol, err_msg=f"{msg} {jax.tree_util.keystr(path)}")


def _grad_fn(act, knots, mask, c, adaptive, extrapolate):
    """``jit(grad)`` of a nonlinear loss of the layer output w.r.t. (params, x), one per path."""

    def layer(path):
        return lambda p, xx: F.apply(p, knots, mask, xx, order=3, base_activation=act, path=path,
                                     uniform=not adaptive, extrapolate=extrapolate)

    @jax.jit
    def run(p, xx):
        out = {}
        for path in ("reference",) + _paths(adaptive):
            f = layer(path)
            out[path] = (f(p, xx), jax.grad(lambda p, xx: jnp.sum(jnp.sin(f(p, xx)) * c), (0, 1))(p, xx))
        return out

    return run


@pytest.mark.parametrize("adaptive", [False, True], ids=["uniform_grid", "adapted_grid"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_apply_gradients_equal_reference(act, adaptive):
    """Values and d/d(params), d/dx of a nonlinear loss: every fast path = autodiff of the reference.

    (Uniform grids without, adapted grids with ``extrapolate``: both modes of every kernel.)"""
    params, knots, mask, x = _layer(adaptive=adaptive)
    extrapolate = adaptive
    c = jnp.asarray(np.random.default_rng(7).normal(size=(x.shape[0], 2)))
    out = _grad_fn(act, knots, mask, c, adaptive, extrapolate)(params, x)
    ref_y, ref_g = out["reference"]
    for path in _paths(adaptive):
        tag = f"{act} {path} adaptive={adaptive} extrapolate={extrapolate}"
        y, g = out[path]
        np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-12, err_msg=tag)
        _assert_trees_close(g, ref_g, tag)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_auto_local_path_gradients_equal_reference(act):
    """From ``LOCAL_MIN_GRID`` on, ``"auto"`` runs the local-support kernels: same gradients."""
    g = K.LOCAL_MIN_GRID
    for adaptive in (False, True):
        params, knots, mask, x = _layer(n=2, o=2, grid=g, adaptive=adaptive, seed=1)
        assert K.choose_path(g, not adaptive).startswith("local")

        @jax.jit
        def grads(p, xx):
            def loss(path):
                return lambda p, xx: jnp.sum(jnp.cos(F.apply(p, knots, mask, xx, order=3, base_activation=act, path=path,
                                                             uniform=not adaptive)) * jnp.arange(1.0, 3.0))

            return {path: jax.grad(loss(path), (0, 1))(p, xx) for path in ("auto", "reference")}

        out = grads(params, x)
        _assert_trees_close(out["auto"], out["reference"], f"{act} auto G={g} adaptive={adaptive}")


@pytest.mark.parametrize("adaptive", [False, True], ids=["uniform_grid", "adapted_grid"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_edge_values_gradients_equal_per_edge_reference(act, adaptive):
    """The fused per-edge values (``kernels.dense_features``' custom backward) = the vmapped
    per-edge reference ``edge_apply``, values and gradients, for every base activation."""
    params, knots, mask, x = _layer(o=3, adaptive=adaptive, seed=2)
    w = jnp.asarray(np.random.default_rng(5).normal(size=(x.shape[0], 3, 3)))
    kw = dict(order=3, base_activation=act, extrapolate=adaptive)
    variants = {"edge_apply": (F.edge_apply, {})}
    for uniform in ([None, True] if not adaptive else [None]):
        variants[f"edge_values uniform={uniform}"] = (F.edge_values, {"uniform": uniform})

    @jax.jit
    def run(p, xx):
        out = {}
        for name, (fn, extra) in variants.items():
            f = lambda p, xx, fn=fn, extra=extra: fn(p, knots, mask, xx, **kw, **extra)  # noqa: E731
            # A nonlinear statistic of the edge values, as the sparsity penalty uses them.
            loss = lambda p, xx, f=f: jnp.sum(jnp.var(f(p, xx) * w, axis=0)) + jnp.sum(jnp.tanh(f(p, xx)) * w)  # noqa: E731
            out[name] = (f(p, xx), jax.grad(loss, (0, 1))(p, xx))
        return out

    out = run(params, x)
    ref_v, ref_g = out.pop("edge_apply")
    for name, (v, g) in out.items():
        tag = f"{act} {name} adaptive={adaptive}"
        np.testing.assert_allclose(v, ref_v, rtol=1e-12, atol=1e-12, err_msg=tag)
        _assert_trees_close(g, ref_g, tag)


def _np_gelu(x):  # jax.nn.gelu's default (tanh approximation)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


NUMPY_ACTIVATIONS = {
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "gelu": _np_gelu,
    "tanh": np.tanh,
    "identity": lambda x: x,
    "zero": np.zeros_like,
}


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_base_activation_derivative_against_finite_differences(act):
    """Independent of the reference: the x-gradient of a pure base-branch layer (coef = 0,
    w_base = 1) on each fast path equals central differences of the activation's numpy closed form."""
    params, knots, mask, _ = _layer(n=2, o=1, seed=3)
    params = {**params, "coef": jnp.zeros_like(params["coef"]), "w_base": jnp.ones_like(params["w_base"]),
              "bias": jnp.zeros_like(params["bias"])}
    mask = jnp.ones_like(mask)
    xn = np.random.default_rng(4).uniform(-2.5, 2.5, (16, 2))
    fn = NUMPY_ACTIVATIONS[act]
    paths = tuple(K.PATHS) + ("auto",)

    @jax.jit
    def run(xx):
        out = {}
        for path in paths:
            f = lambda xx, path=path: F.apply(params, knots, mask, xx, order=3, base_activation=act, path=path,  # noqa: E731
                                              uniform=True)
            out[path] = (f(xx), jax.grad(lambda xx, f=f: jnp.sum(f(xx)))(xx))
        return out

    out = run(jnp.asarray(xn))
    eps = 1e-6
    fd = (fn(xn + eps) - fn(xn - eps)) / (2 * eps)
    for path in paths:
        y, g = out[path]
        np.testing.assert_allclose(np.asarray(y)[:, 0], fn(xn).sum(1), rtol=1e-12, atol=1e-12, err_msg=f"{act} {path}")
        np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-8, err_msg=f"{act} {path}")
