"""Tests for symbolic edges (kan_jax.nnx + kan_jax.symbolic_edges) and kan_jax.symbolic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from flax import nnx

import kan_jax
from kan_jax import splines
from kan_jax import symbolic as S
from kan_jax.symbolic import SYMBOLIC_LIB

# A small library keeps compile times low; it still holds distractors for every true function.
LIB = {k: SYMBOLIC_LIB[k] for k in ("x", "x^2", "x^3", "sin", "tanh", "exp", "gaussian", "1/x", "0")}
FIT = dict(grid_number=61, iterations=3)
F64 = jnp.float64


def _set_edge_functions(layer, fns, lo, hi):
    """Makes every edge (i, j) of ``layer`` the spline fit of ``fns[i][j]`` on [lo, hi]."""
    n, o, g = layer.in_features, layer.out_features, layer.grid_size
    knots = jnp.broadcast_to(splines.uniform_knots(g, 3, (lo, hi), dtype=F64), (n, g + 7))
    xs = jnp.linspace(lo, hi, 600, dtype=F64)
    X = jnp.broadcast_to(xs[:, None], (600, n))
    Y = jnp.stack([jnp.stack([fns[i][j](xs) for j in range(o)], -1) for i in range(n)], 1)
    layer.grid.set_value(knots)
    layer.coef.set_value(splines.fit_coef(X, Y, knots, 3))
    layer.w_base.set_value(jnp.zeros((n, o), F64))
    layer.w_spline.set_value(jnp.ones((n, o), F64))


def _truth(x):
    return jnp.exp(jnp.sin(jnp.pi * x[:, 0]) + x[:, 1] ** 2)


def _hellokan_network():
    """[2, 1, 1] with edges sin(pi x_1), x_2^2 -> exp: computes exp(sin(pi x_1) + x_2^2)."""
    m = kan_jax.KAN([2, 1, 1], grid_size=20, rngs=nnx.Rngs(0), param_dtype=F64)
    _set_edge_functions(m.layers[0], [[lambda t: jnp.sin(jnp.pi * t)], [lambda t: t**2]], -1.0, 1.0)
    _set_edge_functions(m.layers[1], [[jnp.exp]], -1.1, 2.1)
    return m


def _x(n, seed=0, d=2):
    return jax.random.uniform(jax.random.key(seed), (n, d), F64, -1.0, 1.0)


def test_symbolic_edges_in_layer_outputs_and_edge_activations():
    layer = kan_jax.KANLayer(3, 2, rngs=nnx.Rngs(1), param_dtype=F64)
    x = _x(50, d=3)
    n_leaves = len(jax.tree.leaves(nnx.state(layer)))
    assert not layer.has_symbolic  # no symbolic state, no extra params until the first fix
    y0 = layer(x)
    layer.set_symbolic([(0, 1), (2, 0)], [SYMBOLIC_LIB["sin"], SYMBOLIC_LIB["x^2"]], [[2.0, 0.5, 1.5, -0.2], [1.0, -0.3, 3.0, 1.0]])
    assert len(jax.tree.leaves(nnx.state(layer))) == n_leaves + 2  # sym_affine + sym_mask
    assert len(jax.tree.leaves(nnx.state(layer, nnx.Param))) == 5
    np.testing.assert_array_equal(np.asarray(layer.mask[...]), [[1, 0], [1, 1], [0, 1]])
    np.testing.assert_array_equal(np.asarray(layer.sym_mask[...]), [[0, 1], [0, 0], [1, 0]])
    acts = layer.edge_activations(x)
    np.testing.assert_allclose(acts[:, 0, 1], 1.5 * np.sin(2 * x[:, 0] + 0.5) - 0.2, rtol=1e-12)
    np.testing.assert_allclose(acts[:, 2, 0], 3.0 * (x[:, 2] - 0.3) ** 2 + 1.0, rtol=1e-12)
    np.testing.assert_allclose(acts.sum(1) + layer.bias[...], layer(x), rtol=1e-10, atol=1e-12)
    # Under jit (static names in the graphdef) the same.
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), layer(x), rtol=1e-12)
    # Back to splines: the original function.
    layer.clear_symbolic([(0, 1), (2, 0)])
    np.testing.assert_allclose(layer(x), y0, rtol=1e-12)
    assert layer.sym_funcs == ()


def test_all_symbolic_layer_skips_splines_with_the_same_values_and_grads():
    from kan_jax import functional as F
    from kan_jax import symbolic_edges as SE

    layer = kan_jax.KANLayer(2, 2, rngs=nnx.Rngs(3), param_dtype=F64)
    x = _x(40)
    edges = [(0, 0), (0, 1), (1, 0)]
    layer.set_symbolic(edges, [SYMBOLIC_LIB[k] for k in ("sin", "exp", "x^2")], [[2.0, 0.5, 1.5, -0.2]] * 3)
    assert not layer.all_symbolic  # edge (1, 1) is still a spline
    layer.set_symbolic([(1, 1)], [SYMBOLIC_LIB["tanh"]], [[1.0, 0.2, -0.7, 0.3]])
    assert layer.all_symbolic

    def general(p, x):  # the spline path (masked to 0 everywhere) plus the symbolic edges
        y = F.apply({k: p[k] for k in ("coef", "w_base", "w_spline", "bias")}, layer.grid[...], layer.mask[...], x,
                    **F.layer_kwargs(layer))
        return y + SE.layer_output(p["sym_affine"], layer.sym_mask[...], x, layer.sym_names, layer.sym_funcs)

    gd, params, rest = nnx.split(layer, nnx.Param, ...)
    flat = {k: v[...] for k, v in params.items()}
    np.testing.assert_array_equal(layer(x), general(flat, x))
    np.testing.assert_array_equal(layer.edge_activations(x).sum(1) + layer.bias[...], layer(x))
    g_fast = jax.grad(lambda p, x: jnp.sum(nnx.merge(gd, p, rest)(x) ** 2), argnums=(0, 1))(params, x)
    g_ref = jax.grad(lambda p, x: jnp.sum(general(p, x) ** 2), argnums=(0, 1))(flat, x)
    np.testing.assert_allclose(g_fast[1], g_ref[1], rtol=1e-13)
    for k, v in g_ref[0].items():
        np.testing.assert_allclose(g_fast[0][k][...], v, rtol=1e-13, atol=0, err_msg=k)


def test_grads_flow_to_symbolic_params():
    m = _hellokan_network()
    m.layers[0].set_symbolic([(0, 0)], [SYMBOLIC_LIB["sin"]], [[3.0, 0.1, 1.0, 0.0]])
    x = _x(64)

    def loss(p, rest):
        return jnp.mean((nnx.merge(gd, p, rest)(x)[:, 0] - _truth(x)) ** 2)

    gd, params, rest = nnx.split(m, nnx.Param, ...)
    g = jax.grad(loss)(params, rest)
    ga = np.asarray(g["layers"][0]["sym_affine"][...])
    assert np.all(np.abs(ga[0, 0]) > 1e-6)  # a, b, c, d of the symbolic edge all get gradient
    np.testing.assert_array_equal(ga[1, 0], 0.0)  # not a symbolic edge
    np.testing.assert_array_equal(np.asarray(g["layers"][0]["coef"][...])[0, 0], 0.0)  # masked spline


def test_auto_symbolic_recovers_functions_and_formula():
    m = _hellokan_network()
    x = _x(400)
    report = S.auto_symbolic(m, x, lib=LIB, **FIT)
    names = {(r["layer"], r["i"], r["j"]): r["name"] for r in report}
    assert names == {(0, 0, 0): "sin", (0, 1, 0): "x^2", (1, 0, 0): "exp"}
    assert all(r["r2"] > 0.9999 for r in report)
    assert {(e["layer"], e["i"], e["j"]) for e in S.symbolic_edges(m)} == set(names)
    [expr] = S.symbolic_formula(m)
    assert {s.name for s in expr.free_symbols} == {"x_1", "x_2"}
    assert expr.has(sympy.exp) and expr.has(sympy.sin)
    xt = np.asarray(_x(300, seed=7))
    truth = np.asarray(_truth(jnp.asarray(xt)))
    got = sympy.lambdify(sorted(expr.free_symbols, key=lambda s: s.name), expr, "numpy")(xt[:, 0], xt[:, 1])
    np.testing.assert_allclose(got, truth, rtol=5e-3)
    chk = S.check_formula(m, [expr], xt, y=truth, rtol=1e-2)
    assert chk["agreement"] and not chk["far_worse"]
    assert chk["formula_rmse"] < 5e-3
    assert S.formula_rmse([expr], ["x_1", "x_2"], xt, truth) == pytest.approx(chk["formula_rmse"])


def test_auto_symbolic_fits_layers_together_as_one_at_a_time(monkeypatch):
    """Layers fitted in one batched call choose what layer-by-layer calls choose (params to
    rounding); past ``FIT_BATCH_EDGES`` edges in all, the layers go one call each."""
    from kan_jax import symbolic_fit

    x = _x(400)
    together, apart = _hellokan_network(), _hellokan_network()
    sizes = []
    real = symbolic_fit.suggest_symbolic_batch
    monkeypatch.setattr(S, "suggest_symbolic_batch", lambda xs, ys, **kw: sizes.append(len(xs)) or real(xs, ys, **kw))
    rep = S.auto_symbolic(together, x, lib=LIB, **FIT)
    assert sizes == [3]  # 2 + 1 edges, one call
    sizes.clear()
    rep_apart = S.auto_symbolic(apart, x, lib=LIB, layers=[0], **FIT) + S.auto_symbolic(apart, x, lib=LIB, layers=[1], **FIT)
    assert sizes == [2, 1]
    assert [(r["layer"], r["i"], r["j"], r["name"]) for r in rep] == [(r["layer"], r["i"], r["j"], r["name"]) for r in rep_apart][:2] + [(1, 0, 0, "exp")]
    for a, b in zip(rep[:2], rep_apart[:2]):
        np.testing.assert_allclose(a["params"], b["params"], rtol=1e-9, atol=1e-12)
    assert S._fit_groups({0: 2, 1: 1}) == [[0, 1]]
    assert S._fit_groups({0: 200, 1: 56, 2: 1}) == [[0, 1], [2]]
    assert S._fit_groups({0: 300, 1: 0, 2: 4, 3: 5}) == [[0], [2, 3]]


def test_precompile_auto_symbolic_compiles_what_auto_symbolic_runs(compile_log):
    """After ``precompile_auto_symbolic`` (one call on every layer, or one per layer) the matching
    ``auto_symbolic`` calls compile no library fit, and the first call not its edge samples (a
    later call samples a network whose fixed edges changed its structure)."""
    lib = {k: SYMBOLIC_LIB[k] for k in ("x", "x^2", "sin", "exp", "tanh")}  # a library no other test fits
    x = _x(96)
    for calls in ([None], [[0], [1]]):
        m = kan_jax.KAN([2, 3, 1], grid_size=4, rngs=nnx.Rngs(len(calls)), param_dtype=F64)
        S.precompile_auto_symbolic(m, x, lib=lib, calls=calls, grid_number=21, iterations=2)
        with compile_log.capture():
            for layers in calls:
                S.auto_symbolic(m, x, lib=lib, layers=layers, grid_number=21, iterations=2)
        assert compile_log.compiles("_fit_affine_all_jit") == [], calls
        assert len(compile_log.compiles("run")) == len(calls) - 1, calls


def test_symbolic_formula_exact_constants():
    """Given exact affine params, the composed, simplified formula is the true one (sympy-equal)."""
    m = _hellokan_network()
    # Deliberately non-canonical parametrizations whose composition is exactly the truth.
    S.fix_symbolic(m, 0, 0, 0, "sin", params=[np.pi, 0.0, 2.0, 0.3])
    S.fix_symbolic(m, 0, 1, 0, "x^2", params=[2.0, 0.0, 0.5, -0.3])
    S.fix_symbolic(m, 1, 0, 0, "exp", params=[0.5, np.log(3.0), 1 / 3, 0.0])
    [expr] = S.symbolic_formula(m)
    x1, x2 = sympy.symbols("x_1 x_2")
    assert sympy.simplify(expr - sympy.exp(sympy.sin(sympy.pi * x1) + x2**2)) == 0, expr
    [expr] = S.symbolic_formula(m, input_names=["u", "v"])
    assert {s.name for s in expr.free_symbols} == {"u", "v"}


def test_simplification_is_bounded_in_time():
    import time

    from kan_jax.symbolic import _within

    t0 = time.time()
    assert _within(0.2, lambda: time.sleep(30) or "slow", lambda: "fallback") == "fallback"
    assert time.time() - t0 < 5
    assert _within(5.0, lambda: "fast", lambda: "fallback") == "fast"

    def swallows_the_first():  # as a gc callback does: the alarm repeats until one lands
        try:
            time.sleep(30)
        except Exception:  # noqa: BLE001
            pass
        time.sleep(30)
        return "slow"

    t0 = time.time()
    assert _within(0.2, swallows_the_first, lambda: "fallback") == "fallback"
    assert time.time() - t0 < 5

    # A caller's own timer (a test timeout, say) survives, or wins when it is due first.
    import signal

    class Outer(Exception):
        pass

    def outer(signum, frame):
        raise Outer

    before = signal.signal(signal.SIGALRM, outer)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert _within(0.2, lambda: time.sleep(30), lambda: "fallback") == "fallback"
        assert signal.getsignal(signal.SIGALRM) is outer and 25.0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30.0
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Outer):
            _within(5.0, lambda: time.sleep(30), lambda: "fallback")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, before)
    assert _within(None, lambda: "unbounded", lambda: "fallback") == "unbounded"
    # Out of time, symbolic_formula returns the composed formula (as with simplify=False):
    # x_1 x_2 as ((x_1 + x_2)^2 - (x_1 - x_2)^2) / 4.
    m = kan_jax.KAN([2, 2, 1], grid_size=3, rngs=nnx.Rngs(0), param_dtype=F64)
    for i, j, c in ((0, 0, 1.0), (1, 0, 1.0), (0, 1, 1.0), (1, 1, -1.0)):
        S.fix_symbolic(m, 0, i, j, "x", params=[1.0, 0.0, c, 0.0])
    for i, c in ((0, 0.25), (1, -0.25)):
        S.fix_symbolic(m, 1, i, 0, "x^2", params=[1.0, 0.0, c, 0.0])
    x1, x2 = sympy.symbols("x_1 x_2")
    assert S.symbolic_formula(m) == [x1 * x2]
    assert S.symbolic_formula(m, simplify_seconds=1e-6) == S.symbolic_formula(m, simplify=False) != [x1 * x2]


def test_symbolic_formula_keeps_polynomials_factored():
    """The simplifier expands sums out of powers; a polynomial comes back factored when shorter."""
    m = kan_jax.KAN([2, 1, 1], rngs=nnx.Rngs(0), param_dtype=F64)
    S.fix_symbolic(m, 0, 0, 0, "x", params=[1.0, 0.0, 1.0, 0.0])
    S.fix_symbolic(m, 0, 1, 0, "x", params=[2.0, 0.0, 1.5, 0.0])
    S.fix_symbolic(m, 1, 0, 0, "x^3", params=[1.0, 0.5, 2.0, 0.0])
    x1, x2 = sympy.symbols("x_1 x_2")
    truth = 2 * (x1 + 3 * x2 + sympy.Rational(1, 2)) ** 3
    [expr] = S.symbolic_formula(m)
    assert sympy.expand(expr - truth) == 0, expr
    assert sympy.count_ops(expr) < sympy.count_ops(sympy.expand(truth)), expr
    # Not shorter factored: left expanded.
    S.fix_symbolic(m, 1, 0, 0, "x", params=[1.0, 0.0, 1.0, 0.0])
    [expr] = S.symbolic_formula(m)
    assert expr == x1 + 3 * x2, expr


def test_non_symbolic_edges_are_named():
    m = _hellokan_network()
    S.fix_symbolic(m, 0, 0, 0, "sin", params=[np.pi, 0.0, 1.0, 0.0])
    with pytest.raises(S.NotSymbolicError, match=r"\(layer 0, 1, 0\).*\(layer 1, 0, 0\)") as e:
        S.symbolic_formula(m)
    assert e.value.edges == [(0, 1, 0), (1, 0, 0)]
    # A pruned edge (mask 0, not symbolic) counts as zero, not as an error.
    m.layers[0].mask.set_value(m.layers[0].mask[...].at[1, 0].set(0.0))
    S.fix_symbolic(m, 1, 0, 0, "exp", params=[1.0, 0.0, 1.0, 0.0])
    x1 = sympy.Symbol("x_1")
    [expr] = S.symbolic_formula(m)
    assert sympy.simplify(expr - sympy.exp(sympy.sin(sympy.pi * x1))) == 0


def test_singular_functions_stay_finite():
    layer = kan_jax.KANLayer(1, 3, rngs=nnx.Rngs(0), param_dtype=F64)
    lib = SYMBOLIC_LIB
    # Each function is singular (or out of domain) at x = 0, which is in the data.
    layer.set_symbolic([(0, 0), (0, 1), (0, 2)], [lib["1/x"], lib["log"], lib["sqrt"]], [[1.0, 0, 1, 0]] * 3)
    x = jnp.linspace(-1, 1, 101, dtype=F64)[:, None]
    assert np.all(np.isfinite(layer(x)))

    def loss(p):
        return jnp.sum(nnx.merge(gd, p, rest)(x) ** 2)

    gd, p, rest = nnx.split(layer, nnx.Param, ...)
    g = jax.grad(loss)(p)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))


def test_suggest_and_fix_symbolic_fit():
    m = _hellokan_network()
    x = _x(300)
    cands = S.suggest_symbolic(m, 0, 1, 0, x, lib=LIB, topk=3, **FIT)
    assert cands[0].name == "x^2" and cands[0].r2 > 0.9999
    assert len(cands) == 3 and cands[0].score >= cands[1].score >= cands[2].score
    p, r2 = S.fix_symbolic(m, 1, 0, 0, "exp", x, lib=LIB, **FIT)
    assert r2 > 0.9999 and m.layers[1].sym_names == (("exp",),)
    h = np.linspace(-1, 2, 50)
    np.testing.assert_allclose(p[2] * np.exp(p[0] * h + p[1]) + p[3], np.exp(h), rtol=2e-3)
    with pytest.raises(ValueError, match="not in the symbolic library"):
        S.fix_symbolic(m, 0, 0, 0, "nope", params=[1, 0, 1, 0])
    with pytest.raises(ValueError, match="needs samples"):
        S.fix_symbolic(m, 0, 0, 0, "sin")


def test_check_formula_reports_a_bad_formula():
    m = _hellokan_network()
    x = np.asarray(_x(200))
    y = np.asarray(_truth(jnp.asarray(x)))
    good = S.check_formula(m, ["exp(sin(pi*x_1) + x_2**2)"], x, y=y)
    assert good["agreement"] and not good["far_worse"] and good["formula_rmse"] < 1e-12
    bad = S.check_formula(m, ["exp(x_1 + x_2**2)"], x, y=y)
    assert not bad["agreement"] and bad["far_worse"]
    assert bad["formula_rmse"] > 10 * bad["model_rmse"]
    assert S.formula_rmse(["1/(x_1 - x_1)"], ["x_1", "x_2"], x, y) == float("inf")
    with pytest.raises(ValueError, match="not among the input names"):
        S.formula_rmse(["z + x_1"], ["x_1", "x_2"], x, y)


def test_refit_constants_recovers_constants_that_absorbed_rounded_offsets():
    q, eps, r, x = sympy.symbols("q epsilon r x")
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 5, size=(200, 3))
    y = X[:, 0] / (4 * np.pi * X[:, 1] * X[:, 2] ** 2)
    # The network's log-edge offsets were rounded away; the factor that absorbed them is 2.6e-4 off.
    [out] = S.refit_constants([0.0795978577 * q / (eps * r**2)], ["q", "epsilon", "r"], X, y)
    assert sympy.simplify(out - q / (4 * sympy.pi * eps * r**2)) == 0
    # Numeric factors inside a term belong to its coefficient (they cancel once refit).
    y2 = X[:, 0] / (X[:, 1] * (X[:, 2] + 1))
    [out] = S.refit_constants([1.0083 * q / (eps * (1.0083 * r + 1.0083))], ["q", "epsilon", "r"], X, y2)
    assert sympy.simplify(out - q / (eps * (r + 1))) == 0
    # A constant term and several terms; refit coefficients snap (or round to `digits`).
    X1 = rng.uniform(-1, 1, size=(100, 1))
    y1 = 3 * X1[:, 0] ** 2 - 0.5 + 1.2345678 * np.sin(X1[:, 0])
    [out] = S.refit_constants([2.9991 * x**2 - 0.5004 + 1.23 * sympy.sin(x)], ["x"], X1, y1, digits=4)
    assert out == 3 * x**2 - sympy.Rational(1, 2) + sympy.Float(1.2346) * sympy.sin(x)
    # Terms that cannot be evaluated on the data (log of negatives): the formula is left as it is.
    f = 1.01 * sympy.log(x) + 2
    assert S.refit_constants([f], ["x"], X1, y1) == [f]
    # No symbols: nothing to refit.
    assert S.refit_constants([sympy.Float(1.5)], ["x"], X1, y1) == [sympy.Float(1.5)]
