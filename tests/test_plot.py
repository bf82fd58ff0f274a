"""KAN diagram (kan_jax.plot)."""


import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from flax import nnx

import kan_jax
from kan_jax import plot, prune


def _edge_axes(fig):
    return [a for a in fig.axes if a.get_label().startswith(plot.EDGE_LABEL_PREFIX)]


def _check_png(path, min_bytes=5000):
    assert path.exists() and path.stat().st_size > min_bytes
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    flat = img[..., :3].reshape(-1, 3)
    # Not one colour: mostly white background, but with a real amount of dark ink.
    assert np.ptp(flat, axis=0).max() > 0.5
    dark = np.mean(flat.mean(axis=1) < 0.5)
    assert 0.002 < dark < 0.5


@pytest.fixture(scope="module")
def data():
    return jax.random.uniform(jax.random.key(0), (128, 2), minval=-1, maxval=1)


def test_plot_kan_png_and_masked_edge_not_drawn(tmp_path, data):
    model = kan_jax.KAN([2, 5, 1], rngs=nnx.Rngs(0))
    model.layers[0].mask.set_value(model.layers[0].mask[...].at[1, 3].set(0))
    path = tmp_path / "kan.png"
    fig = plot.plot_kan(model, data, str(path), title="test", input_names=["a", "b"], n_points=32)
    _check_png(path)
    labels = {a.get_label() for a in _edge_axes(fig)}
    assert len(labels) == 2 * 5 - 1 + 5
    assert f"{plot.EDGE_LABEL_PREFIX} 0 1 3" not in labels
    assert f"{plot.EDGE_LABEL_PREFIX} 0 0 3" in labels
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"a", "b", "y", "test"} <= texts
    # Each inset shows that edge's activation on its input's sample range.
    ax = next(a for a in _edge_axes(fig) if a.get_label() == f"{plot.EDGE_LABEL_PREFIX} 0 1 2")
    xs, ys = ax.lines[0].get_data()
    np.testing.assert_allclose([xs.min(), xs.max()], [float(data[:, 1].min()), float(data[:, 1].max())], rtol=1e-5)
    np.testing.assert_allclose(ys, np.asarray(model.layers[0].edge_activations(jnp.stack([xs, xs], 1).astype(jnp.float32)))[:, 1, 2], rtol=1e-4, atol=1e-6)


def test_plot_kan_pruned_network(tmp_path, data):
    model = kan_jax.KAN([2, 5, 1], rngs=nnx.Rngs(1))
    small = prune.prune(model, data, node_threshold=0.15, edge_threshold=0.05)
    assert small.widths[1] < 5
    path = tmp_path / "pruned.png"
    fig = plot.plot_kan(small, data, str(path), n_points=32)
    _check_png(path)
    n_active = sum(int(np.sum(np.asarray(l.mask[...]) != 0)) for l in small.layers)
    assert len(_edge_axes(fig)) == n_active


def test_opacity_follows_scores(data):
    model = kan_jax.KAN([2, 2, 1], rngs=nnx.Rngs(0))
    scores = [np.array([[1.0, 0.5], [0.25, 0.0]]), np.array([[1.0], [0.5]])]
    fig = plot.plot_kan(model, data, scores=scores, n_points=8)
    alpha = {a.get_label().split(" ", 1)[1]: a.lines[0].get_alpha() for a in _edge_axes(fig)}
    assert alpha["0 0 0"] == 1.0 and alpha["0 0 1"] == 0.5 and alpha["0 1 0"] == 0.25
    assert alpha["0 1 1"] == pytest.approx(0.08)  # floor: still visible
    assert alpha["1 1 0"] == 0.5


def test_symbolic_label_reads_the_layer_symbolic_edges():
    from kan_jax.symbolic import SYMBOLIC_LIB

    layer = kan_jax.KANLayer(2, 2, rngs=nnx.Rngs(0))
    layer.set_symbolic([(0, 0), (1, 1)], [SYMBOLIC_LIB["sin"], SYMBOLIC_LIB["exp"]])
    assert plot.symbolic_label(layer, 0, 0) == "sin"
    assert plot.symbolic_label(layer, 0, 1) is None
    assert plot.symbolic_label(layer, 1, 0) is None
    assert plot.symbolic_label(layer, 1, 1) == "exp"
    layer.clear_symbolic([(0, 0)])
    assert plot.symbolic_label(layer, 0, 0) is None


def test_plot_kan_symbolic_edges_labelled(monkeypatch, data):
    model = kan_jax.KAN([2, 2, 1], rngs=nnx.Rngs(0))
    monkeypatch.setattr(plot, "symbolic_label", lambda layer, i, j: "sin" if (layer is model.layers[0] and i == j == 0) else None)
    fig = plot.plot_kan(model, data, n_points=8)
    titled = [a for a in _edge_axes(fig) if a.get_title()]
    assert [a.get_label() for a in titled] == [f"{plot.EDGE_LABEL_PREFIX} 0 0 0"]
    assert titled[0].get_title() == "sin"


def test_names_validated(data):
    model = kan_jax.KAN([2, 2, 1], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        plot.plot_kan(model, data, input_names=["a"])


def test_plot_kan_real_symbolic_edge(tmp_path, data):
    from kan_jax.symbolic import SYMBOLIC_LIB

    model = kan_jax.KAN([2, 3, 1], rngs=nnx.Rngs(0))
    model.layers[0].set_symbolic([(1, 2)], [SYMBOLIC_LIB["sin"]])
    fig = plot.plot_kan(model, data, str(tmp_path / "sym.png"), n_points=16)
    axes = {a.get_label().split(" ", 1)[1]: a for a in _edge_axes(fig)}
    assert len(axes) == 2 * 3 + 3  # the symbolic edge (spline mask 0) is still drawn
    assert axes["0 1 2"].get_title() == "sin"
    assert sum(bool(a.get_title()) for a in axes.values()) == 1
    xs, ys = axes["0 1 2"].lines[0].get_data()
    np.testing.assert_allclose(ys, np.sin(xs), rtol=1e-5, atol=1e-6)
