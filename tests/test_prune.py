"""Attribution scores and pruning (kan_jax.prune)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kan_jax
from kan_jax import prune as P


def _set(var, value):
    var.set_value(jnp.asarray(value, var[...].dtype))


def _zeroed_model(key=0):
    """[3, 4, 1]: hidden node 2 has zero incoming edges and zero outgoing edge; input 2 is dead.

    Hidden node 2 also has a non-zero bias (it is constant, and its outgoing edge is zero), and
    the other biases are non-zero, so the test also covers the bias bookkeeping.
    """
    model = kan_jax.KAN([3, 4, 1], grid_size=5, param_dtype=jnp.float64, rngs=nnx.Rngs(key))
    l0, l1 = model.layers
    rng = np.random.default_rng(key)
    # Non-trivial spline functions everywhere first.
    _set(l0.coef, rng.normal(size=l0.coef.shape))
    _set(l1.coef, rng.normal(size=l1.coef.shape))
    _set(l0.bias, rng.normal(size=(4,)))
    _set(l1.bias, rng.normal(size=(1,)))
    for layer, (i, j) in ((l0, (slice(None), 2)), (l0, (2, slice(None))), (l1, (2, slice(None)))):
        c, wb = np.asarray(layer.coef[...]).copy(), np.asarray(layer.w_base[...]).copy()
        c[i, j] = 0.0
        wb[i, j] = 0.0
        _set(layer.coef, c)
        _set(layer.w_base, wb)
    return model


def _x(n=256, d=3, seed=1):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, size=(n, d)))


def test_scores_zero_edges_and_conservation():
    model, x = _zeroed_model(), _x()
    es = P.edge_scores(model, x)
    ns = P.node_scores(model, x)
    assert [e.shape for e in es] == [(3, 4), (4, 1)]
    assert [s.shape for s in ns] == [(3,), (4,), (1,)]
    es0, es1 = np.asarray(es[0]), np.asarray(es[1])
    assert np.all(es0[:, 2] == 0) and np.all(es0[2, :] == 0) and es1[2, 0] == 0
    assert np.asarray(ns[1])[2] == 0 and np.asarray(ns[0])[2] == 0
    # Everything else is live, so strictly positive.
    assert np.all(np.delete(np.delete(es0, 2, 0), 2, 1) > 0)
    # Conservation: each node layer's scores sum to the (single) output's score 1.
    for s in ns:
        np.testing.assert_allclose(np.sum(s), 1.0, rtol=1e-12)
    # Node score = sum of outgoing edge scores; edge scores of a target sum to its score.
    for l, e in enumerate(es):
        np.testing.assert_allclose(np.sum(e, axis=1), ns[l], rtol=1e-12)
        np.testing.assert_allclose(np.sum(e, axis=0), ns[l + 1], rtol=1e-12)


def test_scores_closed_form():
    """Hand-computed attribution on magnitudes."""
    a0 = jnp.array([[1.0, 0.0], [3.0, 2.0]])  # 2 -> 2
    a1 = jnp.array([[1.0], [3.0]])  # 2 -> 1
    es, ns = P.scores_from_magnitudes([a0, a1])
    np.testing.assert_allclose(ns[1], [0.25, 0.75])
    np.testing.assert_allclose(es[0], [[0.25 * 0.25, 0.0], [0.25 * 0.75, 0.75]])
    np.testing.assert_allclose(ns[0], [0.0625, 0.9375])
    es, ns = P.scores_from_magnitudes([a0, a1], output_scores=jnp.array([2.0]))
    np.testing.assert_allclose(ns[0], [0.125, 1.875])


def test_scores_nan_free_for_all_zero_layers():
    model = kan_jax.KAN([2, 3, 2], param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    for layer in model.layers:
        _set(layer.coef, np.zeros(layer.coef.shape))
        _set(layer.w_base, np.zeros(layer.w_base.shape))
    es, ns = P.attribution(model, _x(d=2))
    for a in list(es) + list(ns[:-1]):
        assert np.all(np.asarray(a) == 0)
    es, ns = P.attribution(model, _x(d=2), measure="std")
    assert all(np.all(np.isfinite(np.asarray(a))) for a in list(es) + list(ns))
    small = P.prune(model, _x(d=2))
    assert small.widths == (2, 1, 2)
    y = np.asarray(small(_x(d=2)))
    assert np.all(np.isfinite(y))


def test_prune_exact_on_zero_edges():
    model, x = _zeroed_model(), _x()
    small = P.prune(model, x, node_threshold=1e-2, edge_threshold=0.0)
    assert small.widths == (3, 3, 1)
    xt = _x(n=500, seed=7)
    np.testing.assert_allclose(np.asarray(small(xt)), np.asarray(model(xt)), rtol=1e-12, atol=1e-12)
    # Kept edges' functions are unchanged: compare edge activations of kept nodes.
    keep_h = [0, 1, 3]
    ea_old, ea_new = model.edge_activations(xt), small.edge_activations(xt)
    # Same functions; the fused contraction over basis columns may round the last bit differently
    # for a different output count (its vectorized tail).
    np.testing.assert_allclose(np.asarray(ea_new[0]), np.asarray(ea_old[0])[:, :, keep_h], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.asarray(ea_new[1]), np.asarray(ea_old[1])[:, keep_h], rtol=1e-13, atol=1e-15)
    # The original model is untouched.
    assert model.widths == (3, 4, 1) and model.layers[0].coef.shape[:2] == (3, 4)

    smaller, kept = P.prune_inputs(small, x, threshold=1e-2)
    np.testing.assert_array_equal(kept, [0, 1])
    assert smaller.widths == (2, 3, 1)
    np.testing.assert_allclose(np.asarray(smaller(xt[:, kept])), np.asarray(model(xt)), rtol=1e-12, atol=1e-12)


def test_prune_folds_constant_hidden_node():
    """A hidden node with zero incoming edges but a live outgoing edge is a constant: its
    removal folds phi(bias) into the next bias exactly (with measure='std' it scores 0)."""
    model = _zeroed_model()
    l1 = model.layers[1]
    c, wb = np.asarray(l1.coef[...]).copy(), np.asarray(l1.w_base[...]).copy()
    c[2, 0] = np.linspace(-1, 1, c.shape[-1])
    wb[2, 0] = 0.7
    _set(l1.coef, c)
    _set(l1.w_base, wb)
    x = _x()
    ns = P.node_scores(model, x, measure="std")
    assert float(ns[1][2]) < 1e-12  # std of a constant: rounding only
    assert float(P.node_scores(model, x, measure="mean_abs")[1][2]) > 0  # mean |phi| sees the constant
    small = P.prune(model, x, measure="std", edge_threshold=0.0)
    assert small.widths == (3, 3, 1)
    xt = _x(n=300, seed=3)
    np.testing.assert_allclose(np.asarray(small(xt)), np.asarray(model(xt)), rtol=1e-12, atol=1e-12)
    unfolded = P.prune(model, x, measure="std", edge_threshold=0.0, fold_constants=False)
    assert not np.allclose(np.asarray(unfolded(xt)), np.asarray(model(xt)))


def test_prune_edges_masks_and_keeps_widths():
    model, x = _zeroed_model(), _x()
    es = [np.asarray(e) for e in P.edge_scores(model, x)]
    thr = float(np.median(es[0][es[0] > 0]))
    pruned = P.prune_edges(model, x, threshold=thr)
    assert pruned.widths == model.widths
    m0 = np.asarray(pruned.layers[0].mask[...])
    np.testing.assert_array_equal(m0, (es[0] >= thr).astype(m0.dtype))
    assert np.all(np.asarray(model.layers[0].mask[...]) == 1)  # original untouched
    # Masked edges contribute nothing; kept edges unchanged.
    ea = np.asarray(pruned.edge_activations(x)[0])
    ea_old = np.asarray(model.edge_activations(x)[0])
    np.testing.assert_array_equal(ea[:, m0 == 0], 0.0)
    np.testing.assert_allclose(ea[:, m0 == 1], ea_old[:, m0 == 1], rtol=1e-12)
    # Zero edges: masking them (zero threshold just above 0) changes nothing at all.
    exact = P.prune_edges(model, x, threshold=1e-300)
    assert int(np.sum(np.asarray(exact.layers[0].mask[...]) == 0)) == 3 + 4 - 1
    np.testing.assert_allclose(np.asarray(exact(x)), np.asarray(model(x)), rtol=1e-12, atol=1e-12)


def test_prune_defaults_on_trainedlike_network():
    """Defaults on a random network: widths shrink only where scores are low, output finite,
    and the pruned network's scores still conserve."""
    model = kan_jax.KAN([2, 5, 1], rngs=nnx.Rngs(3))
    x = jax.random.uniform(jax.random.key(0), (128, 2), minval=-1, maxval=1)
    ns = [np.asarray(s) for s in P.node_scores(model, x)]
    small = P.prune(model, x, node_threshold=0.15)
    assert small.widths == (2, int(np.sum(ns[1] >= 0.15)), 1)
    assert np.all(np.isfinite(np.asarray(small(x))))
    np.testing.assert_allclose(np.sum(P.node_scores(small, x)[0]), 1.0, rtol=1e-5)


def test_subnetwork_validates_and_keeps_config():
    model = kan_jax.KAN([3, 4, 2], grid_size=7, spline_order=2, base_activation="tanh", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        P.subnetwork(model, [[0, 1], [], [0, 1]])
    with pytest.raises(ValueError):
        P.subnetwork(model, [[0, 1], [1, 0], [0, 1]])
    sub = P.subnetwork(model, [[0, 2], [1, 3], [0, 1]])
    assert sub.widths == (2, 2, 2)
    for layer in sub.layers:
        assert (layer.grid_size, layer.spline_order, layer.base_activation) == (7, 2, "tanh")
    x = _x(d=3).astype(jnp.float32)
    ea_old, ea_new = model.edge_activations(x), sub.edge_activations(x[:, [0, 2]])
    np.testing.assert_allclose(np.asarray(ea_new[0]), np.asarray(ea_old[0])[:, [0, 2]][:, :, [1, 3]], rtol=1e-5, atol=1e-7)


def test_measure_validated():
    with pytest.raises(ValueError, match="measure"):
        P.edge_magnitudes([jnp.zeros((2, 2, 2))], measure="max")


def test_prune_carries_symbolic_edges():
    from kan_jax.symbolic import SYMBOLIC_LIB

    model, x = _zeroed_model(), _x()
    lib = SYMBOLIC_LIB
    model.layers[0].set_symbolic([(0, 3), (1, 1)], [lib["sin"], lib["x^2"]], [[2.0, 0.1, 0.5, 0.2], [1.0, 0.0, -1.0, 0.0]])
    model.layers[1].set_symbolic([(3, 0)], [lib["exp"]], [[0.5, 0.0, 0.3, 0.0]])
    small = P.prune(model, x, edge_threshold=0.0)
    assert small.widths == (3, 3, 1)
    l0, l1 = small.layers
    n0, n1 = l0.symbolic.names(), l1.symbolic.names()
    assert n0[0][2] == "sin" and n0[1][1] == "x^2" and n1[2][0] == "exp"
    assert sum(nm is not None for row in n0 for nm in row) == 2
    np.testing.assert_allclose(np.asarray(l0.symbolic.affine[...])[0, 2], [2.0, 0.1, 0.5, 0.2])
    assert {nm for row in n1 for nm in row if nm is not None} == {"exp"}
    # The pruned network has the structure of a fresh network of its widths (same function table).
    fresh = kan_jax.KAN(small.widths, grid_size=small.grid_size, rngs=nnx.Rngs(0), param_dtype=l0.coef[...].dtype)
    assert nnx.graphdef(small) == nnx.graphdef(fresh)
    xt = _x(n=200, seed=5)
    np.testing.assert_allclose(np.asarray(small(xt)), np.asarray(model(xt)), rtol=1e-12, atol=1e-12)
    # Pruning a symbolic edge by score removes it entirely (not spline, not symbolic).
    es = np.asarray(P.edge_scores(small, x)[0])
    thr = float(es[0, 2]) * (1 + 1e-9)
    masked = P.prune_edges(small, x, threshold=thr)
    m0 = masked.layers[0]
    assert m0.symbolic.names()[0][2] is None and not m0.symbolic.active()[0, 2] and float(m0.mask[...][0, 2]) == 0
    assert np.all(np.asarray(masked.edge_activations(x)[0])[:, 0, 2] == 0)


def test_keep_top_nodes_exact_and_ranked():
    """Keeping the 3 best of [3, 4, 1]'s hidden nodes drops the dead node 2: same function."""
    model, x = _zeroed_model(), _x()
    small = P.keep_top_nodes(model, x, layer=1, k=3)
    assert small.widths == (3, 3, 1)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(model(x)), rtol=0, atol=1e-12)
    # k = 1 keeps the highest node score, with the dropped nodes' means folded into the bias.
    best = int(np.argmax(np.asarray(P.node_scores(model, x)[1])))
    one = P.keep_top_nodes(model, x, layer=1, k=1)
    assert one.widths == (3, 1, 1)
    np.testing.assert_array_equal(np.asarray(one.layers[0].coef[...])[:, 0], np.asarray(model.layers[0].coef[...])[:, best])
    full, y1 = np.asarray(model(x))[:, 0], np.asarray(one(x))[:, 0]
    assert abs(np.mean(y1) - np.mean(full)) < 1e-12  # the removed nodes' mean is kept


@pytest.mark.parametrize("kw, field", [({"layer": 0, "k": 1}, "layer"), ({"layer": 2, "k": 1}, "layer"),
                                        ({"layer": 1, "k": 0}, "k"), ({"layer": 1, "k": 5}, "k")])
def test_keep_top_nodes_validates(kw, field):
    with pytest.raises(ValueError, match=field):
        P.keep_top_nodes(_zeroed_model(), _x(), **kw)


@pytest.mark.parametrize("measure", ["std", "mean_abs"])
def test_attribution_on_the_host_equals_the_traced_one(measure):
    model, x = _zeroed_model(), _x()
    es, ns = P.attribution(model, x, measure=measure)
    assert all(isinstance(a, np.ndarray) for a in es + ns)  # concrete inputs: host numpy
    es_t, ns_t = nnx.jit(lambda m, x: P.attribution(m, x, measure=measure))(model, x)
    for a, b in zip(es + ns, es_t + ns_t):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12, atol=1e-15)


def _random_model(widths=(3, 4, 2), key=4):
    model = kan_jax.KAN(list(widths), grid_size=5, param_dtype=jnp.float64, rngs=nnx.Rngs(key))
    rng = np.random.default_rng(key)
    for layer in model.layers:
        _set(layer.coef, rng.normal(size=layer.coef.shape))
        _set(layer.bias, rng.normal(size=layer.bias.shape))
    return model


def test_mask_nodes_is_subnetwork_at_the_same_shapes():
    """Masking the removed nodes computes what cutting them out computes (bias shifts included);
    ``compact`` then gives that very subnetwork, ``live_widths`` its widths."""
    model, x = _random_model(), _x(seed=3)
    keep, shifts = [[0, 1, 2], [0, 2], [0, 1]], [np.array([0.3, -0.2]), np.array([0.5, 1.5])]
    sub = P.subnetwork(model, keep, shifts)
    masked = P.mask_nodes(model, keep, shifts)
    assert masked.widths == model.widths and P.live_widths(masked) == [3, 2, 2]
    np.testing.assert_allclose(np.asarray(masked(x)), np.asarray(sub(x)), rtol=1e-12, atol=1e-12)
    small = P.compact(masked)
    assert small.widths == sub.widths
    for a, b in zip(jax.tree_util.tree_leaves(nnx.state(small)), jax.tree_util.tree_leaves(nnx.state(sub))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.asarray(model.layers[0].mask[...]) == 1)  # the argument is not modified


def test_compact_drops_nodes_that_reach_no_output():
    """A hidden node whose outgoing edges are all masked contributes nothing: compact removes it
    (its incoming edges may be live) and the function does not change."""
    model, x = _random_model((2, 3, 3, 1)), _x(d=2, seed=4)
    mask = np.asarray(model.layers[2].mask[...]).copy()
    mask[1, 0] = 0  # node 1 of the second hidden layer feeds nothing...
    _set(model.layers[2].mask, mask)
    mask = np.asarray(model.layers[1].mask[...]).copy()
    mask[2, :] = 0  # ...and node 2 of the first hidden layer neither
    _set(model.layers[1].mask, mask)
    assert P.live_widths(model) == [2, 2, 2, 1]
    small = P.compact(model)
    assert small.widths == (2, 2, 2, 1)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(model(x)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["prune", "keep_top_nodes"])
def test_masked_pruning_equals_cut_pruning(how):
    """``masked=True`` keeps the widths and computes the cut network's function; compacted, it
    is that network."""
    model, x = _random_model((2, 5, 1), key=6), _x(d=2, seed=6)
    if how == "prune":
        run = lambda **kw: P.prune(model, x, node_threshold=0.15, edge_threshold=0.05, **kw)  # noqa: E731
    else:
        run = lambda **kw: P.keep_top_nodes(model, x, layer=1, k=2, **kw)  # noqa: E731
    cut, masked = run(), run(masked=True)
    assert masked.widths == model.widths and cut.widths[1] < 5
    assert P.live_widths(masked) == list(cut.widths)
    np.testing.assert_allclose(np.asarray(masked(x)), np.asarray(cut(x)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(P.compact(masked)(x)), np.asarray(cut(x)), rtol=1e-12, atol=1e-12)
