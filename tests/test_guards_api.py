"""Guard: public API that had no test of its values.

``kan_jax.train.make_schedule`` (every schedule against its closed form), the ``grad_clip``
option of ``make_optimizer`` (against a numpy Adam on clipped gradients),
``kan_jax.symbolic.unfix_symbolic``, ``formula_predict`` and ``edge_samples``.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from flax import nnx

import kan_jax
from kan_jax import functional as F
from kan_jax import symbolic as S
from kan_jax import train

# --------------------------------------------------------------------------- schedules


def _opt(**kw):
    from configs import default

    c = default.get_config().optimizer  # every optimizer field, as the runner gets them
    c.name = "adam"
    c.learning_rate = 0.1
    c.schedule = "constant"
    c.warmup_steps = 0
    c.end_learning_rate_factor = 0.0
    c.weight_decay = 1e-4
    c.grad_clip = 0.0
    c.b1, c.b2 = 0.9, 0.999
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _cosine(t, lr, steps, end):
    t = min(t, steps)
    return lr * ((1 - end) * 0.5 * (1 + math.cos(math.pi * t / steps)) + end)


def _warmup_cosine(t, lr, steps, warm, end):
    if t < warm:
        return lr * t / warm
    t = min(t - warm, steps - warm)
    return lr * end + (lr - lr * end) * 0.5 * (1 + math.cos(math.pi * t / (steps - warm)))


def _exponential(t, lr, steps, end):
    return lr * max(end, 1e-12) ** (t / steps)


CASES = [
    # (config fields, steps, closed form of step t)
    (dict(schedule="constant"), 50, lambda t: 0.1),
    (dict(schedule="cosine"), 50, lambda t: _cosine(t, 0.1, 50, 0.0)),
    (dict(schedule="cosine", end_learning_rate_factor=0.1), 50, lambda t: _cosine(t, 0.1, 50, 0.1)),
    (dict(schedule="warmup_cosine", warmup_steps=10), 50, lambda t: _warmup_cosine(t, 0.1, 50, 10, 0.0)),
    (dict(schedule="warmup_cosine", warmup_steps=10, end_learning_rate_factor=0.25), 50,
     lambda t: _warmup_cosine(t, 0.1, 50, 10, 0.25)),
    # No warmup: the cosine decay from step 0 (the first step is not wasted at lr 0).
    (dict(schedule="warmup_cosine", warmup_steps=0), 50, lambda t: _warmup_cosine(t, 0.1, 50, 0, 0.0)),
    # warmup_steps beyond the run are clamped to steps - 1.
    (dict(schedule="warmup_cosine", warmup_steps=500), 20, lambda t: _warmup_cosine(t, 0.1, 20, 19, 0.0)),
    (dict(schedule="exponential", end_learning_rate_factor=0.01), 40, lambda t: _exponential(t, 0.1, 40, 0.01)),
    (dict(schedule="exponential"), 40, lambda t: _exponential(t, 0.1, 40, 0.0)),
    # steps <= 0 count as one step.
    (dict(schedule="cosine", end_learning_rate_factor=0.5), 0, lambda t: _cosine(t, 0.1, 1, 0.5)),
]


def test_every_schedule_has_a_case():
    assert {case[0]["schedule"] for case in CASES} == set(train.SCHEDULES)


@pytest.mark.parametrize("fields,steps,want", CASES, ids=[f"{c[0]['schedule']}-{i}" for i, c in enumerate(CASES)])
def test_make_schedule_closed_form(fields, steps, want):
    sched = train.make_schedule(_opt(**fields), steps)
    for t in sorted({0, 1, 2, 5, 9, 10, 11, 17, 19, 20, 25, 39, 40, 49, 50, 60}):
        np.testing.assert_allclose(float(sched(t)), want(t), rtol=1e-6, atol=1e-12, err_msg=f"{fields} step {t}")
    # End factor: the last step's rate is factor * lr for the decaying schedules.
    end = fields.get("end_learning_rate_factor", 0.0)
    if fields["schedule"] in ("cosine", "warmup_cosine") or (fields["schedule"] == "exponential" and end > 0):
        np.testing.assert_allclose(float(sched(max(steps, 1))), 0.1 * end, rtol=1e-6, atol=1e-12)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        train.make_schedule(_opt(schedule="linear"), 10)


# --------------------------------------------------------------------------- grad_clip


def _np_adam(grads, lr, clip, *, wd=0.0, params=None, b1=0.9, b2=0.999, eps=1e-8):
    """Updates of Adam(W) on ``grads`` (a list of flat arrays), clipped to global norm ``clip`` first (0: off)."""
    mu = np.zeros_like(grads[0])
    nu = np.zeros_like(grads[0])
    out = []
    for t, g in enumerate(grads, start=1):
        if clip > 0:
            norm = np.sqrt(np.sum(g**2))
            g = g * min(1.0, clip / norm)
        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * g**2
        direction = (mu / (1 - b1**t)) / (np.sqrt(nu / (1 - b2**t)) + eps)
        if wd:
            direction = direction + wd * params
        out.append(-lr * direction)
    return out


def _grads():
    """Gradients of very different global norms (50, 0.2, 10, 0.5), as a pytree and flat."""
    rng = np.random.default_rng(0)
    flat = []
    for norm in (50.0, 0.2, 10.0, 0.5):
        g = rng.normal(size=7)
        flat.append(g / np.linalg.norm(g) * norm)
    return [{"a": jnp.asarray(g[:3]), "b": jnp.asarray(g[3:].reshape(2, 2))} for g in flat], flat


def _run(opt, tree_grads, params):
    state = opt.init(params)
    out = []
    for g in tree_grads:
        u, state = opt.update(g, state, params)
        out.append(np.concatenate([np.asarray(u["a"]).ravel(), np.asarray(u["b"]).ravel()]))
    return out


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_grad_clip_clips_the_global_norm(name):
    tree, flat = _grads()
    p_flat = np.linspace(-1.0, 1.0, 7)
    params = {"a": jnp.asarray(p_flat[:3]), "b": jnp.asarray(p_flat[3:].reshape(2, 2))}
    wd = 0.01 if name == "adamw" else 0.0
    runs = {}
    for clip in (0.0, 1.0):
        opt = train.make_optimizer(_opt(name=name, learning_rate=0.05, grad_clip=clip, weight_decay=wd), 10)
        got = _run(opt, tree, params)
        want = _np_adam(flat, 0.05, clip, wd=wd, params=p_flat)
        for t, (a, b) in enumerate(zip(got, want)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14, err_msg=f"{name} clip={clip} step {t}")
        runs[clip] = got
    # Clipping changes the updates here (the test would pass vacuously otherwise).
    assert max(np.max(np.abs(a - b)) for a, b in zip(runs[0.0], runs[1.0])) > 1e-3


# --------------------------------------------------------------------------- symbolic helpers


def _model(widths=(3, 3, 2), seed=0):
    model = kan_jax.KAN(list(widths), grid_size=5, param_dtype=jnp.float64, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.coef.set_value(jnp.asarray(rng.normal(size=layer.coef.shape)))
        layer.bias.set_value(jnp.asarray(rng.normal(size=layer.bias.shape)))
    return model


def _xs(n=64, d=3, seed=1):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(-1, 1, (n, d)) * np.array([0.5, 1.0, 2.0])[:d] + np.array([0.3, 0.0, -0.5])[:d])


def test_unfix_symbolic_restores_the_spline():
    model, x = _model(), _xs()
    model.update_grid(x)
    y0 = np.asarray(model(x))
    ea0 = [np.asarray(a) for a in model.edge_activations(x)]
    mask0 = [np.asarray(lay.mask[...]).copy() for lay in model.layers]
    # Two edges of layer 0 (not on the diagonal) and one of layer 1, given params and a fitted one.
    S.fix_symbolic(model, 0, 0, 2, "sin", params=[2.0, 0.1, 0.5, 0.2])
    S.fix_symbolic(model, 0, 2, 1, "x^2", params=[1.0, -0.3, 0.7, 0.0])
    S.fix_symbolic(model, 1, 1, 0, "x", x)
    assert not np.allclose(np.asarray(model(x)), y0)
    S.unfix_symbolic(model, 0, 0, 2)
    names = model.layers[0].symbolic.names()
    assert names[0][2] is None and names[2][1] == "x^2"
    S.unfix_symbolic(model, 0, 2, 1)
    S.unfix_symbolic(model, 1, 1, 0)
    for lay, m in zip(model.layers, mask0):
        np.testing.assert_array_equal(np.asarray(lay.mask[...]), m)
        assert all(nm is None for row in lay.symbolic.names() for nm in row)
        assert not lay.symbolic.active().any()
    np.testing.assert_allclose(np.asarray(model(x)), y0, rtol=1e-12, atol=1e-12)
    for a, b in zip(model.edge_activations(x), ea0):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        S.unfix_symbolic(model, 0, 3, 0)


def test_formula_predict_against_numpy():
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, (50, 3))
    x1, x2, x3 = sympy.symbols("x_1 x_2 x_3")
    formulas = [sympy.sin(x1) * x2 + sympy.exp(-x3**2), "x_2**3 - 2*x_1", "2.5", x3]
    got = S.formula_predict(formulas, ["x_1", "x_2", "x_3"], x)
    want = np.stack([np.sin(x[:, 0]) * x[:, 1] + np.exp(-x[:, 2] ** 2), x[:, 1] ** 3 - 2 * x[:, 0],
                     np.full(50, 2.5), x[:, 2]], axis=1)
    assert got.shape == (50, 4)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    # Columns follow input_names, whatever the symbols are called.
    got = S.formula_predict(["a - b**2"], ["b", "a"], x[:, :2])
    np.testing.assert_allclose(got[:, 0], x[:, 1] - x[:, 0] ** 2, rtol=1e-13, atol=1e-13)
    # NaN where the formula is undefined (not complex garbage).
    got = S.formula_predict(["sqrt(x_1)"], ["x_1"], np.array([[4.0], [-1.0]]))
    np.testing.assert_allclose(got[0, 0], 2.0)
    assert np.isnan(got[1, 0])
    with pytest.raises(ValueError, match="x_9"):
        S.formula_predict(["x_9"], ["x_1"], x[:, :1])


def test_edge_samples_are_the_unmasked_spline_edges():
    model, x = _model((3, 4, 2), seed=3), _xs(n=48, seed=4)
    model.update_grid(x)  # per-input grids
    l0, l1 = model.layers
    m = np.asarray(l0.mask[...]).copy()
    m[1, 2] = 0.0  # a pruned edge: edge_samples still gives its spline
    l0.mask.set_value(jnp.asarray(m))
    S.fix_symbolic(model, 1, 3, 1, "sin", params=[1.0, 0.5, 2.0, 0.1])  # a symbolic edge: its spline too
    samples = S.edge_samples(model, x)
    assert sorted(samples) == [0, 1]
    inputs = [x, model.layers[0](x)]
    for l, lay in enumerate(model.layers):
        xin, phi = samples[l]
        assert xin.shape == (48, lay.in_features) and phi.shape == (48, lay.in_features, lay.out_features)
        np.testing.assert_allclose(np.asarray(xin), np.asarray(inputs[l]), rtol=1e-12, atol=1e-12)
        # Per-edge reference with every edge live: the spline function of each edge.
        ones = jnp.ones_like(lay.mask[...])
        ref = F.edge_apply(lay.params(), lay.grid[...], ones, inputs[l], **F.layer_kwargs(lay))
        np.testing.assert_allclose(np.asarray(phi), np.asarray(ref), rtol=1e-12, atol=1e-12)
    assert float(np.abs(np.asarray(samples[0][1])[:, 1, 2]).max()) > 1e-3
    # On live spline edges phi is what the layer computes.
    ea = np.asarray(l0.edge_activations(x))
    live = m != 0
    np.testing.assert_allclose(np.asarray(samples[0][1])[:, live], ea[:, live], rtol=1e-12, atol=1e-12)
    only = S.edge_samples(model, x, [1])
    assert list(only) == [1]
    for a, b in zip(only[1], samples[1]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
