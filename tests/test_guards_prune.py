"""Guard: pruning on networks whose knot rows differ from input to input.

Every kept layer must carry the original's grid rows of its kept inputs (not, say, the first
rows), and compute what the original computes on the kept nodes. The oracle for the cut-out
networks is the original network with the removed nodes' edges masked by hand (a removed hidden
node then only carries its bias into masked edges; a removed input contributes nothing).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kan_jax
from kan_jax import prune as kprune

TOL = dict(rtol=1e-12, atol=1e-12)


def _set(var, value):
    var.set_value(jnp.asarray(value, var[...].dtype))


def _x(n=256, seed=0):
    """Three inputs on very different ranges (and distributions): adapted knot rows all differ."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.stack([
        rng.uniform(-0.2, 0.1, n),
        rng.normal(size=n) * 2.0 + 1.0,
        rng.uniform(0.0, 1.0, n) ** 3 * 5.0 - 4.0,
    ], axis=1))


def _adapted_model(widths=(3, 5, 2), seed=0, x=None):
    """A float64 KAN with random splines and biases, grids adapted to ``_x`` layer by layer."""
    model = kan_jax.KAN(list(widths), grid_size=5, param_dtype=jnp.float64, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed + 100)
    for layer in model.layers:
        _set(layer.coef, rng.normal(size=layer.coef.shape))
        _set(layer.w_base, rng.normal(size=layer.w_base.shape))
        _set(layer.bias, rng.normal(size=layer.bias.shape))
    model.update_grid(_x() if x is None else x)
    for layer in model.layers:
        g = np.asarray(layer.grid[...])
        # Precondition of every test here: no two inputs of a layer share a knot row.
        for a in range(g.shape[0]):
            for b in range(a + 1, g.shape[0]):
                assert not np.allclose(g[a], g[b]), "grid rows must differ for this test to mean anything"
    return model


def _kill(model, layer, *, rows=(), cols=()):
    """Zeroes (coef and w_base of) the edges out of inputs ``rows`` / into outputs ``cols`` of a layer."""
    lay = model.layers[layer]
    c, wb = np.asarray(lay.coef[...]).copy(), np.asarray(lay.w_base[...]).copy()
    for i in rows:
        c[i], wb[i] = 0.0, 0.0
    for j in cols:
        c[:, j], wb[:, j] = 0.0, 0.0
    _set(lay.coef, c)
    _set(lay.w_base, wb)


def _masked_by_hand(model, keep):
    """The original with every edge out of or into a removed node masked (the oracle)."""
    new = nnx.clone(model)
    for l, lay in enumerate(new.layers):
        live = np.zeros((lay.in_features, lay.out_features), bool)
        live[np.ix_(keep[l], keep[l + 1])] = True
        _set(lay.mask, np.where(live, np.asarray(lay.mask[...]), 0.0))
    return new


def _assert_grid_rows(small, model, keep):
    """Each kept layer's knots are the original's rows of its kept inputs, exactly."""
    for l, (new_l, old_l) in enumerate(zip(small.layers, model.layers)):
        np.testing.assert_array_equal(np.asarray(new_l.grid[...]), np.asarray(old_l.grid[...])[np.asarray(keep[l])],
                                      err_msg=f"layer {l} grid rows")


def _assert_same_on_kept(small, model, keep, x, bias_shifts=None):
    """``small`` (cut to ``keep``) computes the original's (hand-masked) function on the kept nodes,
    edge by edge and at the outputs."""
    oracle = _masked_by_hand(model, keep)
    if bias_shifts is not None:
        for l, lay in enumerate(oracle.layers):
            b = np.asarray(lay.bias[...]).copy()
            b[np.asarray(keep[l + 1])] += bias_shifts[l]
            _set(lay.bias, b)
    ea_small = small.edge_activations(x[:, np.asarray(keep[0])])
    ea_full = oracle.edge_activations(x)
    for l, (a, b) in enumerate(zip(ea_small, ea_full)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[:, keep[l]][:, :, keep[l + 1]], **TOL,
                                   err_msg=f"layer {l} edge activations")
    np.testing.assert_allclose(np.asarray(small(x[:, np.asarray(keep[0])])), np.asarray(oracle(x))[:, keep[-1]], **TOL)


@pytest.mark.parametrize("keep", [
    [[0, 2], [1, 3, 4], [0, 1]],  # an input and hidden nodes removed (not just the last ones)
    [[1, 2], [0, 2], [1]],
    [[0, 1, 2], [4], [0, 1]],
])
def test_subnetwork_keeps_grid_rows_and_function(keep):
    model, x = _adapted_model(), _x(seed=1)
    shifts = [np.linspace(-0.5, 0.5, len(keep[1])), np.linspace(0.3, 0.9, len(keep[2]))]
    for bs in (None, shifts):
        sub = kprune.subnetwork(model, keep, bs)
        assert sub.widths == tuple(len(k) for k in keep)
        _assert_grid_rows(sub, model, keep)
        _assert_same_on_kept(sub, model, keep, x, bs)


def test_mask_nodes_and_compact_on_adapted_grids():
    """``mask_nodes`` keeps shapes and grids and computes the hand-masked function; ``compact``
    cuts out the dead nodes and carries the kept inputs' grid rows."""
    model, x = _adapted_model(), _x(seed=2)
    keep = [[0, 1, 2], [1, 3], [0, 1]]
    shifts = [np.array([0.25, -1.0]), np.array([0.5, 2.0])]
    masked = kprune.mask_nodes(model, keep, shifts)
    assert masked.widths == model.widths
    for new_l, old_l in zip(masked.layers, model.layers):
        np.testing.assert_array_equal(np.asarray(new_l.grid[...]), np.asarray(old_l.grid[...]))
    oracle = _masked_by_hand(model, keep)
    for l, lay in enumerate(oracle.layers):
        b = np.asarray(lay.bias[...]).copy()
        b[keep[l + 1]] += shifts[l]
        _set(lay.bias, b)
    np.testing.assert_allclose(np.asarray(masked(x)), np.asarray(oracle(x)), **TOL)
    assert kprune.live_widths(masked) == [3, 2, 2]
    small = kprune.compact(masked)
    assert small.widths == (3, 2, 2)
    _assert_grid_rows(small, model, keep)
    _assert_same_on_kept(small, model, keep, x, shifts)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(masked(x)), **TOL)


def test_compact_drops_a_middle_node_that_reaches_no_output():
    model, x = _adapted_model((3, 4, 3, 1), seed=3), _x(seed=3)
    m = np.asarray(model.layers[2].mask[...]).copy()
    m[1, :] = 0.0  # node 1 of the second hidden layer feeds nothing
    _set(model.layers[2].mask, m)
    m = np.asarray(model.layers[1].mask[...]).copy()
    m[0, :] = 0.0  # node 0 of the first hidden layer neither
    _set(model.layers[1].mask, m)
    keep = [[0, 1, 2], [1, 2, 3], [0, 2], [0]]
    assert kprune.live_widths(model) == [len(k) for k in keep]
    small = kprune.compact(model)
    _assert_grid_rows(small, model, keep)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(model(x)), **TOL)


def _dead_model():
    """[3, 5, 2] on adapted grids; input 0 and hidden node 1 are dead (all their edges zero) and
    hidden node 3 is a constant (zero incoming edges), so removing them is exact."""
    model = _adapted_model()
    _kill(model, 0, rows=[0], cols=[1, 3])
    _kill(model, 1, rows=[1])
    return model


def test_prune_on_adapted_grids_is_exact_and_keeps_grid_rows():
    model, x = _dead_model(), _x(seed=4)
    ns = kprune.node_scores(model, x)
    assert float(ns[1][1]) < 1e-12 and float(ns[1][3]) < 1e-12 and float(ns[0][0]) < 1e-12
    for masked in (False, True):
        pruned = kprune.prune(model, x, node_threshold=1e-6, edge_threshold=0.0, masked=masked)
        small = kprune.compact(pruned) if masked else pruned
        keep = [[0, 1, 2], [0, 2, 4], [0, 1]]
        assert small.widths == (3, 3, 2), masked
        _assert_grid_rows(small, model, keep)
        # Hidden node 3 is a constant: folding its mean into the next bias keeps the function exactly.
        np.testing.assert_allclose(np.asarray(small(x)), np.asarray(model(x)), **TOL)
        xt = _x(n=100, seed=5)
        np.testing.assert_allclose(np.asarray(pruned(xt)), np.asarray(model(xt)), **TOL)
        # Kept edges are the same functions (the layer-0 inputs are the same samples).
        ea_new, ea_old = small.edge_activations(xt), model.edge_activations(xt)
        np.testing.assert_allclose(np.asarray(ea_new[0]), np.asarray(ea_old[0])[:, :, keep[1]], **TOL)


def test_prune_inputs_on_adapted_grids():
    model, x = _dead_model(), _x(seed=6)
    smaller, kept = kprune.prune_inputs(model, x, threshold=1e-6)
    np.testing.assert_array_equal(kept, [1, 2])  # input 0 (the first, not the last) is dead
    assert smaller.widths == (2, 5, 2)
    keep = [[1, 2], [0, 1, 2, 3, 4], [0, 1]]
    _assert_grid_rows(smaller, model, keep)
    xt = _x(n=100, seed=7)
    np.testing.assert_allclose(np.asarray(smaller(xt[:, kept])), np.asarray(model(xt)), **TOL)
    ea_new, ea_old = smaller.edge_activations(xt[:, kept]), model.edge_activations(xt)
    np.testing.assert_allclose(np.asarray(ea_new[0]), np.asarray(ea_old[0])[:, kept], **TOL)
    np.testing.assert_allclose(np.asarray(ea_new[1]), np.asarray(ea_old[1]), **TOL)


@pytest.mark.parametrize("masked", [False, True])
def test_keep_top_nodes_on_adapted_grids(masked):
    model, x = _dead_model(), _x(seed=8)
    top = kprune.keep_top_nodes(model, x, layer=1, k=3, masked=masked)
    small = kprune.compact(top) if masked else top
    keep = [[0, 1, 2], [0, 2, 4], [0, 1]]
    assert small.widths == (3, 3, 2)
    _assert_grid_rows(small, model, keep)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(model(x)), **TOL)
    # Keeping one node: its incoming edges and its outgoing edge functions are the original's.
    best = int(np.argmax(np.asarray(kprune.node_scores(model, x)[1])))
    one = kprune.keep_top_nodes(model, x, layer=1, k=1, masked=masked)
    one = kprune.compact(one) if masked else one
    _assert_grid_rows(one, model, [[0, 1, 2], [best], [0, 1]])
    ea_new, ea_old = one.edge_activations(x), model.edge_activations(x)
    np.testing.assert_allclose(np.asarray(ea_new[0]), np.asarray(ea_old[0])[:, :, [best]], **TOL)
    np.testing.assert_allclose(np.asarray(ea_new[1]), np.asarray(ea_old[1])[:, [best]], **TOL)
