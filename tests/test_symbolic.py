"""Tests for symbolic edges (kan_jax.symbolic.edges.SymbolicEdges in every KANLayer) and kan_jax.symbolic."""

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
    gd = nnx.graphdef(layer)
    assert not layer.symbolic.active().any()
    y0 = layer(x)
    layer.set_symbolic([(0, 1), (2, 0)], [SYMBOLIC_LIB["sin"], SYMBOLIC_LIB["x^2"]], [[2.0, 0.5, 1.5, -0.2], [1.0, -0.3, 3.0, 1.0]])
    assert len(jax.tree.leaves(nnx.state(layer))) == n_leaves  # values changed, not the structure
    assert nnx.graphdef(layer) == gd
    assert len(jax.tree.leaves(nnx.state(layer, nnx.Param))) == 5
    np.testing.assert_array_equal(np.asarray(layer.mask[...]), [[1, 0], [1, 1], [0, 1]])
    np.testing.assert_array_equal(layer.symbolic.active(), [[0, 1], [0, 0], [1, 0]])
    assert layer.symbolic.names() == ((None, "sin"), (None, None), ("x^2", None))
    acts = layer.edge_activations(x)
    np.testing.assert_allclose(acts[:, 0, 1], 1.5 * np.sin(2 * x[:, 0] + 0.5) - 0.2, rtol=1e-12)
    np.testing.assert_allclose(acts[:, 2, 0], 3.0 * (x[:, 2] - 0.3) ** 2 + 1.0, rtol=1e-12)
    np.testing.assert_allclose(acts.sum(1) + layer.bias[...], layer(x), rtol=1e-10, atol=1e-12)
    # Under jit the same.
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), layer(x), rtol=1e-12)
    # Back to splines: the original function.
    layer.clear_symbolic([(0, 1), (2, 0)])
    np.testing.assert_allclose(layer(x), y0, rtol=1e-12)
    assert layer.symbolic.names() == ((None, None),) * 3 and nnx.graphdef(layer) == gd


def test_all_symbolic_layer_values_and_grads_match_the_closed_form():
    """A layer whose edges are all symbolic: the masked splines contribute nothing, values and
    gradients (w.r.t. every param and the inputs) are those of the closed form."""
    from kan_jax import functional as F

    layer = kan_jax.KANLayer(2, 2, rngs=nnx.Rngs(3), param_dtype=F64)
    x = _x(40)
    edges = [(0, 0), (0, 1), (1, 0)]
    layer.set_symbolic(edges, [SYMBOLIC_LIB[k] for k in ("sin", "exp", "x^2")], [[2.0, 0.5, 1.5, -0.2]] * 3)
    assert layer.live_edges().all() and np.asarray(layer.mask[...]).sum() == 1  # edge (1, 1) is still a spline
    layer.set_symbolic([(1, 1)], [SYMBOLIC_LIB["tanh"]], [[1.0, 0.2, -0.7, 0.3]])
    assert layer.symbolic.active().all() and not np.asarray(layer.mask[...]).any()
    fns = {(0, 0): jnp.sin, (0, 1): jnp.exp, (1, 0): jnp.square, (1, 1): jnp.tanh}

    def general(p, x):  # the spline path (masked to 0 everywhere) plus the closed-form edges
        y = F.apply({k: p[k] for k in ("coef", "w_base", "w_spline", "bias")}, layer.grid[...], layer.mask[...], x,
                    **layer.spline_kwargs())
        aff = p["symbolic"]["affine"]
        cols = [sum(aff[i, j, 2] * fns[i, j](aff[i, j, 0] * x[:, i] + aff[i, j, 1]) + aff[i, j, 3] for i in range(2))
                for j in range(2)]
        return y + jnp.stack(cols, -1)

    gd, params, rest = nnx.split(layer, nnx.Param, ...)
    flat = nnx.to_pure_dict(params)
    np.testing.assert_allclose(layer(x), general(flat, x), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.edge_activations(x).sum(1) + layer.bias[...], layer(x), rtol=1e-13)
    g_fast = jax.grad(lambda p, x: jnp.sum(nnx.merge(gd, p, rest)(x) ** 2), argnums=(0, 1))(params, x)
    g_ref = jax.grad(lambda p, x: jnp.sum(general(p, x) ** 2), argnums=(0, 1))(flat, x)
    np.testing.assert_allclose(g_fast[1], g_ref[1], rtol=1e-12)
    g_fast = nnx.to_pure_dict(g_fast[0])
    for k in ("coef", "w_base", "w_spline", "bias"):
        np.testing.assert_allclose(g_fast[k], g_ref[0][k], rtol=1e-12, atol=0, err_msg=k)
    np.testing.assert_allclose(g_fast["symbolic"]["affine"], g_ref[0]["symbolic"]["affine"], rtol=1e-12, atol=1e-14)


def test_grads_flow_to_symbolic_params():
    m = _hellokan_network()
    m.layers[0].set_symbolic([(0, 0)], [SYMBOLIC_LIB["sin"]], [[3.0, 0.1, 1.0, 0.0]])
    x = _x(64)

    def loss(p, rest):
        return jnp.mean((nnx.merge(gd, p, rest)(x)[:, 0] - _truth(x)) ** 2)

    gd, params, rest = nnx.split(m, nnx.Param, ...)
    g = jax.grad(loss)(params, rest)
    ga = np.asarray(g["layers"][0]["symbolic"]["affine"][...])
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
    from kan_jax.symbolic import network

    x = _x(400)
    together, apart = _hellokan_network(), _hellokan_network()
    sizes = []
    real = network.rank_functions_batch
    monkeypatch.setattr(network, "rank_functions_batch", lambda xs, ys, **kw: sizes.append(len(xs)) or real(xs, ys, **kw))
    rep = S.auto_symbolic(together, x, lib=LIB, **FIT)
    assert sizes == [3]  # 2 + 1 edges, one call
    sizes.clear()
    rep_apart = S.auto_symbolic(apart, x, lib=LIB, layers=[0], **FIT) + S.auto_symbolic(apart, x, lib=LIB, layers=[1], **FIT)
    assert sizes == [2, 1]
    assert [(r["layer"], r["i"], r["j"], r["name"]) for r in rep] == [(r["layer"], r["i"], r["j"], r["name"]) for r in rep_apart][:2] + [(1, 0, 0, "exp")]
    for a, b in zip(rep[:2], rep_apart[:2]):
        np.testing.assert_allclose(a["params"], b["params"], rtol=1e-9, atol=1e-12)
    assert network._fit_groups({0: 2, 1: 1}) == [[0, 1]]
    assert network._fit_groups({0: 200, 1: 56, 2: 1}) == [[0, 1], [2]]
    assert network._fit_groups({0: 300, 1: 0, 2: 4, 3: 5}) == [[0], [2, 3]]


def test_fixing_edges_keeps_the_structure_and_compiled_programs(compile_log):
    """``fix_symbolic`` / ``auto_symbolic`` / ``unfix_symbolic`` change values only: the network's
    ``nnx.graphdef`` is the same, a jitted step compiled before runs after without compiling, and
    a second network of the same structure samples its edges with the program of the first."""
    lib = {k: SYMBOLIC_LIB[k] for k in ("x", "x^2", "sin", "exp", "tanh")}
    x = _x(96)
    m = kan_jax.KAN([2, 3, 1], grid_size=4, rngs=nnx.Rngs(0), param_dtype=F64)
    gd = nnx.graphdef(m)

    @nnx.jit
    def step_fixed(model, x):
        return jnp.mean(model(x) ** 2)

    before = step_fixed(m, x)
    with compile_log.capture():
        S.fix_symbolic(m, 0, 1, 2, "sin", params=[2.0, 0.1, 1.5, 0.0])
        assert nnx.graphdef(m) == gd
        after_fix = step_fixed(m, x)
        S.auto_symbolic(m, x, lib=lib, grid_number=21, iterations=2)
        assert nnx.graphdef(m) == gd and not any(np.asarray(l.mask[...]).any() for l in m.layers)
        step_fixed(m, x)
        S.unfix_symbolic(m, 0, 1, 2)
        assert nnx.graphdef(m) == gd
        step_fixed(m, x)
    assert compile_log.compiles("step_fixed") == []
    assert float(after_fix) != float(before)  # the fixed edge did change the function
    m2 = kan_jax.KAN([2, 3, 1], grid_size=4, rngs=nnx.Rngs(1), param_dtype=F64)
    with compile_log.capture():
        S.auto_symbolic(m2, x, lib=lib, grid_number=21, iterations=2)
    assert compile_log.compiles("run") == []  # edge samples: the program of m's structure


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


def test_simplification_recombines_and_matches_the_composed_formula():
    """The simplified formula is short where it can be (x_1 x_2 from ((x_1 + x_2)^2 - (x_1 - x_2)^2) / 4)
    and always equal in value to the composed one."""
    m = kan_jax.KAN([2, 2, 1], grid_size=3, rngs=nnx.Rngs(0), param_dtype=F64)
    for i, j, c in ((0, 0, 1.0), (1, 0, 1.0), (0, 1, 1.0), (1, 1, -1.0)):
        S.fix_symbolic(m, 0, i, j, "x", params=[1.0, 0.0, c, 0.0])
    for i, c in ((0, 0.25), (1, -0.25)):
        S.fix_symbolic(m, 1, i, 0, "x^2", params=[1.0, 0.0, c, 0.0])
    x1, x2 = sympy.symbols("x_1 x_2")
    assert S.symbolic_formula(m) == [x1 * x2]
    assert S.symbolic_formula(m, simplify=False) != [x1 * x2]
    # A non-exact mix of sin, log, 1/x and powers (as a formula fitted to AI Feynman I.6.2 can be,
    # on which sympy.simplify runs for minutes): simplified quickly, the same values.
    import time

    m = kan_jax.KAN([2, 2, 1], grid_size=3, rngs=nnx.Rngs(0), param_dtype=F64)
    for (i, j, name), p in zip(
        [(0, 0, "sin"), (1, 0, "log"), (0, 1, "1/x"), (1, 1, "x^2")],
        [[1.0372, 0.2113, 0.8731, 0.0412], [0.9123, 2.1771, -1.3313, 0.2], [0.7712, 3.1, 2.0313, -0.1], [1.0, 0.3313, 0.5127, 0.0]],
    ):
        S.fix_symbolic(m, 0, i, j, name, params=p)
    S.fix_symbolic(m, 1, 0, 0, "exp", params=[-0.5123, 0.0, 0.3989, 0.0])
    S.fix_symbolic(m, 1, 1, 0, "1/x", params=[1.0, 1.7731, 0.6173, 0.0])
    t0 = time.perf_counter()
    [simple] = S.symbolic_formula(m)
    assert time.perf_counter() - t0 < 20.0
    [plain] = S.symbolic_formula(m, simplify=False)
    xt = np.asarray(_x(200, seed=3))
    np.testing.assert_allclose(S.formula_predict([simple], ["x_1", "x_2"], xt), S.formula_predict([plain], ["x_1", "x_2"], xt),
                               rtol=2e-3)
    np.testing.assert_allclose(S.formula_predict([simple], ["x_1", "x_2"], xt)[:, 0], np.asarray(m(jnp.asarray(xt)))[:, 0],
                               rtol=2e-3)


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
    assert r2 > 0.9999 and m.layers[1].symbolic.names() == (("exp",),)
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


def test_shorten_formula_keeps_the_dominant_terms_within_the_bound():
    """A long inexact reading ``f + small corrections`` shortens to the sub-sum whose refit fits
    best within ``max_ops``: here exactly the true function (sympy-equal), then the best single
    term; its RMSE is the sub-sum's own."""
    x1, x2 = sympy.symbols("x_1 x_2")
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(400, 2))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] ** 2
    long = (1.0007 * sympy.sin(x1) + 0.2994 * x2**2 + 0.0012 * sympy.exp(x1 * x2) + 0.0004 * x1**3 * x2**2
            + 0.002 * sympy.tanh(x2**3) - 0.0031)
    assert sympy.count_ops(long) > 12
    short, rmse = S.shorten_formula(long, ["x_1", "x_2"], X, y, max_ops=6)
    assert sympy.count_ops(short) <= 6 and sympy.simplify(short - (sympy.sin(x1) + sympy.Rational(3, 10) * x2**2)) == 0
    assert rmse < 1e-12
    one, rmse1 = S.shorten_formula(long, ["x_1", "x_2"], X, y, max_ops=4)  # room for one term and an offset
    assert one.has(sympy.sin) and not one.has(x2), one  # sin(x_1) explains more variance than 0.3 x_2^2
    resid = y - (np.sin(X[:, 0]) * np.cov(np.sin(X[:, 0]), y)[0, 1] / np.var(np.sin(X[:, 0]), ddof=1))
    np.testing.assert_allclose(rmse1, np.std(resid), rtol=1e-3)  # the least-squares fit of one term + offset
    assert S.shorten_formula(long, ["x_1", "x_2"], X, y, max_ops=1) == (None, float("inf"))


# --- SymbolicEdges (kan_jax.symbolic.edges) ---


def _closed_form_edges():
    """Edges of a (2, 3) SymbolicEdges, each with its function as plain jnp math: domains are
    kept inside log / sqrt / 1/x on x in [-1, 1] (b shifts them), so no guard is active."""
    return {
        (0, 0): ("sin", jnp.sin, [np.pi, 0.0, 1.0, 0.0]),
        (0, 1): ("log", jnp.log, [0.8, 2.0, 1.3, -0.4]),
        (0, 2): ("exp", jnp.exp, [1.1, -0.2, 0.7, 0.1]),
        (1, 0): ("x^2", jnp.square, [1.0, 0.0, 1.0, 0.0]),
        (1, 2): ("1/x", lambda u: 1.0 / u, [0.9, 2.5, -0.6, 0.3]),
    }  # (1, 1) stays non-symbolic


def test_symbolic_edge_values_and_grads_match_the_closed_form():
    edges = _closed_form_edges()
    se = S.SymbolicEdges(2, 3, param_dtype=F64)
    se.set(list(edges), [SYMBOLIC_LIB[v[0]] for v in edges.values()], [v[2] for v in edges.values()])
    x = _x(70)

    def closed(aff, x):
        out = jnp.zeros((x.shape[0], 2, 3), F64)
        for (i, j), (_, fn, _) in edges.items():
            a, b, c, d = aff[i, j]
            out = out.at[:, i, j].set(c * fn(a * x[:, i] + b) + d)
        return out

    aff = se.affine[...]
    np.testing.assert_allclose(se.edge_values(x), closed(aff, x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(se(x), closed(aff, x).sum(1), rtol=1e-13, atol=1e-14)
    # Gradients w.r.t. the affine params and the inputs: those of the closed form (the branches of
    # log / sqrt / 1/x that other edges do not select put no NaN into them), zero off the edges.
    w = jax.random.normal(jax.random.key(1), (70, 2, 3), F64)

    def loss_module(aff, x):
        return jnp.sum(w * S.symbolic_edge_values(se.func[...], aff, x, se.table))

    g_mod = jax.grad(loss_module, argnums=(0, 1))(aff, x)
    g_ref = jax.grad(lambda aff, x: jnp.sum(w * closed(aff, x)), argnums=(0, 1))(aff, x)
    for gm, gr in zip(g_mod, g_ref):
        assert np.all(np.isfinite(gm))
        np.testing.assert_allclose(gm, gr, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(g_mod[0][1, 1], 0.0)
    assert np.all(np.abs(np.asarray(g_mod[0])[0, 1]) > 0)


def test_hellokan_symbolic_network_values_and_grads_match_the_closed_form():
    """[2, 1, 1] with sin(pi x_1), x_2^2 -> exp fixed symbolically: the network is
    c' exp(a' h + b') + d' with h = c sin(a x_1 + b) + d + c'' (a'' x_2 + b'')^2 + d'', checked against
    the closed form (and the truth exp(sin(pi x_1) + x_2^2)) in values and in gradients w.r.t. all
    affine params."""
    m = _hellokan_network()
    p1, p2, p3 = [np.pi, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]
    S.fix_symbolic(m, 0, 0, 0, "sin", params=p1)
    S.fix_symbolic(m, 0, 1, 0, "x^2", params=p2)
    S.fix_symbolic(m, 1, 0, 0, "exp", params=p3)
    x = _x(128)
    b0, b1 = float(m.layers[0].bias[...][0]), float(m.layers[1].bias[...][0])

    def closed(a0, a1, x):
        h = a0[0, 0, 2] * jnp.sin(a0[0, 0, 0] * x[:, 0] + a0[0, 0, 1]) + a0[0, 0, 3]
        h = h + a0[1, 0, 2] * (a0[1, 0, 0] * x[:, 1] + a0[1, 0, 1]) ** 2 + a0[1, 0, 3] + b0
        return (a1[0, 0, 2] * jnp.exp(a1[0, 0, 0] * h + a1[0, 0, 1]) + a1[0, 0, 3] + b1)[:, None]

    a0, a1 = m.layers[0].symbolic.affine[...], m.layers[1].symbolic.affine[...]
    np.testing.assert_allclose(m(x), closed(a0, a1, x), rtol=1e-13)
    assert b0 == b1 == 0.0
    np.testing.assert_allclose(m(x)[:, 0], _truth(x), rtol=1e-12)
    gd, params, rest = nnx.split(m, nnx.Param, ...)
    g = nnx.to_pure_dict(jax.grad(lambda p: jnp.sum(nnx.merge(gd, p, rest)(x) ** 2))(params))
    g0, g1 = jax.grad(lambda a0, a1: jnp.sum(closed(a0, a1, x) ** 2), argnums=(0, 1))(a0, a1)
    np.testing.assert_allclose(g["layers"][0]["symbolic"]["affine"], g0, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(g["layers"][1]["symbolic"]["affine"], g1, rtol=1e-11, atol=1e-12)


def test_symbolic_edges_evaluate_nothing_without_a_symbolic_edge():
    """No table function runs, forward or backward, while no edge is symbolic (a probe function
    records when it actually runs, under jit); once one is, the values are right."""
    calls = []

    def probe(u):
        jax.debug.callback(lambda: calls.append(1))
        return u

    lib = S.register_symbolic("probe", probe, lambda u: u, 1)
    se = S.SymbolicEdges(2, 2, library=lib, param_dtype=F64)
    run = jax.jit(lambda f, a, x: S.symbolic_edge_values(f, a, x, se.table))
    grad = jax.jit(jax.grad(lambda a, f, x: jnp.sum(S.symbolic_edge_values(f, a, x, se.table) ** 2)))
    x = _x(8)
    out = run(se.func[...], se.affine[...], x)
    g = grad(se.affine[...], se.func[...], x)
    jax.effects_barrier()
    assert calls == [] and np.all(np.asarray(out) == 0)
    np.testing.assert_array_equal(g, 0.0)  # no symbolic edge: zero gradient for the affine params
    se.set([(1, 0)], ["probe"], [[2.0, 1.0, 3.0, 0.5]])
    out = run(se.func[...], se.affine[...], x)
    jax.effects_barrier()
    assert calls  # now it runs
    np.testing.assert_allclose(out[:, 1, 0], 3.0 * (2.0 * x[:, 1] + 1.0) + 0.5, rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(out)[:, [0, 0, 1], [0, 1, 1]], 0.0)


def test_symbolic_edges_table_and_structure():
    """Functions of the table are data; a function outside it extends the (static) table."""
    layer = kan_jax.KANLayer(2, 2, rngs=nnx.Rngs(0), param_dtype=F64)
    gd = nnx.graphdef(layer)
    assert tuple(f.name for f in layer.symbolic.table) == tuple(SYMBOLIC_LIB)
    layer.set_symbolic([(0, 0)], ["tanh"], [[1.0, 0.0, 2.0, 0.0]])  # by name
    layer.set_symbolic([(1, 1)], [SYMBOLIC_LIB["gaussian"]])
    assert nnx.graphdef(layer) == gd and layer.symbolic.function(0, 0) is SYMBOLIC_LIB["tanh"]
    np.testing.assert_array_equal(layer.symbolic.func[...], [[list(SYMBOLIC_LIB).index("tanh"), -1],
                                                             [-1, list(SYMBOLIC_LIB).index("gaussian")]])
    with pytest.raises(ValueError, match="not in this layer's symbolic table"):
        layer.set_symbolic([(0, 1)], ["softplus"])
    with pytest.raises(ValueError, match="out of range"):
        layer.set_symbolic([(2, 0)], ["sin"])
    lib = S.register_symbolic("softplus", jax.nn.softplus, lambda u: sympy.log(1 + sympy.exp(u)), 3)
    layer.set_symbolic([(0, 1)], [lib["softplus"]])  # outside the table: it grows
    assert nnx.graphdef(layer) != gd and layer.symbolic.names()[0] == ("tanh", "softplus")
    x = _x(20)
    np.testing.assert_allclose(layer.edge_activations(x)[:, 0, 1], jax.nn.softplus(x[:, 0]), rtol=1e-13)
    # Built with that library, the same edit keeps the structure.
    layer2 = kan_jax.KANLayer(2, 2, rngs=nnx.Rngs(0), param_dtype=F64, symbolic_lib=lib)
    gd2 = nnx.graphdef(layer2)
    layer2.set_symbolic([(0, 1)], [lib["softplus"]])
    assert nnx.graphdef(layer2) == gd2


def test_symbolic_edges_take_slices_for_pruning():
    se = S.SymbolicEdges(3, 4, param_dtype=F64)
    rng = np.random.default_rng(0)
    edges = [(0, 1), (2, 3), (1, 0), (2, 1)]
    se.set(edges, ["sin", "x^2", "exp", "tanh"], rng.normal(size=(4, 4)))
    rows, cols = [2, 0], [3, 1]
    sub = se.take(rows, cols)
    assert (sub.in_features, sub.out_features) == (2, 2) and sub.table == se.table
    assert sub.names() == (("x^2", "tanh"), (None, "sin"))
    x = _x(30, d=3)
    np.testing.assert_allclose(sub.edge_values(x[:, rows]), se.edge_values(x)[:, rows][:, :, cols], rtol=1e-14)
    assert nnx.graphdef(sub) == nnx.graphdef(S.SymbolicEdges(2, 2, param_dtype=F64))
    # Clearing by a boolean (n, o) selection, as pruning does.
    se.clear_where(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool))
    assert [(i, j, f.name) for i, j, f, _ in se.entries()] == [(1, 0, "exp"), (2, 1, "tanh")]
    np.testing.assert_array_equal(np.asarray(se.affine[...])[0, 1], [1.0, 0.0, 1.0, 0.0])


def _key(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def test_symbolic_network_checkpoint_round_trip(tmp_path):
    """A network with symbolic edges saved as a pure dict of arrays (npz) and restored into a
    fresh network of the same widths: the same function, the same symbolic edges."""
    m = _hellokan_network()
    S.fix_symbolic(m, 0, 0, 0, "sin", params=[np.pi, 0.0, 1.0, 0.0])
    S.fix_symbolic(m, 1, 0, 0, "exp", params=[1.0, 0.0, 1.0, 0.0])
    pure = nnx.to_pure_dict(nnx.state(m))
    flat = {_key(path): np.asarray(v) for path, v in jax.tree_util.tree_flatten_with_path(pure)[0]}
    np.savez(tmp_path / "ckpt.npz", **flat)
    loaded = dict(np.load(tmp_path / "ckpt.npz"))
    assert loaded["layers/0/symbolic/func"].dtype == np.int32

    fresh = kan_jax.KAN([2, 1, 1], grid_size=20, rngs=nnx.Rngs(5), param_dtype=F64)
    state = nnx.state(fresh)
    restored = jax.tree_util.tree_map_with_path(lambda path, v: jnp.asarray(loaded[_key(path)]), nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(fresh, state)
    x = _x(50)
    np.testing.assert_array_equal(fresh(x), m(x))
    assert S.symbolic_edges(fresh) == S.symbolic_edges(m)
    assert nnx.graphdef(fresh) == nnx.graphdef(m)


def test_simplify_cancels_a_constant_shared_by_numerator_and_denominator():
    """The recovery set's ``1/(2+x_1)+x_2**2`` came back as ``0.4542/(0.4542 x_1 + 0.9083)``:
    the bounded rewrites now scale the denominator monic when that shortens the formula, and
    leave other quotients as they were."""
    import sympy

    from kan_jax.symbolic import formula

    x1, x2 = sympy.symbols("x_1 x_2")
    e = x2**2 + sympy.Float("0.45415841") / (sympy.Float("0.45415841") * x1 + sympy.Float("0.90831682"))
    assert formula._simplify(e, 4) == x2**2 + 1 / (x1 + 2)
    assert formula._simplify(x1 * x2 / (2.0 * x1 + 1.0), 4) == x1 * x2 / (2 * x1 + 1)
