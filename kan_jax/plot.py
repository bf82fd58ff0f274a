"""The KAN diagram: nodes per layer, every live edge drawn as its activation curve.

``plot_kan(model, x)`` lays out the node layers bottom (inputs) to top (outputs). Between two
node layers every edge ``(i, j)`` gets a small inset showing ``phi_ij`` over the range of the
samples reaching input ``i`` (pykan's layout: node ``i``'s edges are grouped under it, so insets
never overlap); a line runs from node ``i`` to the inset and from the inset to node ``j``.
Opacity follows the edge's attribution score (``kan_jax.prune.edge_scores``) relative to the
best edge of its layer; masked edges are omitted. Symbolic edges (``layer.symbolic``) are drawn
in red and labelled with their function's name.

Training curves: ``plot_loss`` (loss and RMSEs against the step) and ``plot_rmse_vs_grid`` (RMSE
against the grid size, with the G^-4 line). Task figures: ``plot_confusion`` (a classifier's
confusion matrix), ``plot_image_grid`` (images in a grid: VAE samples and reconstructions) and
``plot_fields`` (functions on a 2-D grid side by side: a PDE's solution and error).
matplotlib is imported lazily, so ``import kan_jax`` stays light; figures never open a window (Agg).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from kan_jax.compilation import quick_module_fn


__all__ = ["plot_kan", "symbolic_label", "EDGE_LABEL_PREFIX", "plot_loss", "plot_rmse_vs_grid", "plot_confusion",
           "plot_image_grid", "plot_fields"]

EDGE_LABEL_PREFIX = "kan-edge"
_SYMBOLIC_COLOR = "tab:red"
_SPLINE_COLOR = "black"


def symbolic_label(layer, i: int, j: int) -> str | None:
    """The function name of edge ``(i, j)`` of a ``KANLayer`` if it is symbolic, else ``None``."""
    fn = layer.symbolic.function(i, j)
    return None if fn is None else fn.name


_PAD_PROBE_MAX = 65536  # larger sample batches are not used to pad the probe points


def _probe_curves(model, x, n_points: int):
    """Per layer ``(xs (m, n), phi (m, n, o))``: each input's own sample range, evaluated per edge."""
    x = x if isinstance(x, jax.Array) else jax.device_put(np.asarray(x))
    inputs = [np.asarray(a, dtype=np.float64) for a in _layer_inputs(model, x)[:-1]]
    # Each input's range, swept by column; evaluated in a batch of the samples' size (padded with
    # the last point), so one program of the samples' shapes draws every layer.
    rows = x.shape[0] if n_points <= x.shape[0] <= _PAD_PROBE_MAX else n_points
    sweeps, padded = [], []
    for a in inputs:
        lo, hi = a.min(axis=0), a.max(axis=0)
        hi = np.where(hi > lo, hi, lo + 1e-6)
        xs = np.linspace(lo, hi, n_points)  # (m, n): column i sweeps input i's range, sorted
        sweeps.append(xs)
        padded.append(jax.device_put(np.concatenate([xs, np.repeat(xs[-1:], rows - n_points, axis=0)]).astype(x.dtype)))
    phis = _edge_activations_per_layer(model, padded)
    return [(xs, np.asarray(phi, dtype=np.float64)[:n_points]) for xs, phi in zip(sweeps, phis)]


@quick_module_fn
def _layer_inputs(model, x):
    """``model.layer_inputs(x)``, one compiled program per network structure."""
    return model.layer_inputs(x)


@quick_module_fn
def _edge_activations_per_layer(model, xs):
    """``[layer.edge_activations(x_l) for each layer]`` on given per-layer inputs, one program."""
    return [layer.edge_activations(x) for layer, x in zip(model.layers, xs)]


def plot_kan(
    model,
    x,
    path: str | None = None,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    title: str | None = None,
    scores: Sequence | None = None,
    n_points: int = 64,
    dpi: int = 100,
):
    """Draws the KAN diagram of ``model`` on samples ``x``; saves a PNG when ``path`` is given.

    Args:
      model: a ``kan_jax.KAN``.
      x: ``(batch, widths[0])`` samples: they set each edge's plotted range and the scores.
      path: where to save the PNG (optional): a file path or a binary file object.
      input_names: names of the inputs (default ``x_1, x_2, ...``).
      output_names: names of the outputs (default ``y_1, ...``, or ``y`` for one output).
      title: figure title.
      scores: per layer ``(n_l, n_{l+1})`` edge scores (default ``kan_jax.prune.edge_scores``).
      n_points: points per activation curve.
      dpi: resolution of the saved PNG.

    Returns:
      The ``matplotlib.figure.Figure``. Each drawn edge is one inset axes labelled
      ``f"{EDGE_LABEL_PREFIX} {l} {i} {j}"``.
    """
    from matplotlib.figure import Figure

    from kan_jax import prune

    widths = tuple(int(w) for w in model.widths)
    n_layers = len(widths) - 1
    if input_names is None:
        input_names = [f"x_{i + 1}" for i in range(widths[0])]
    if output_names is None:
        output_names = ["y"] if widths[-1] == 1 else [f"y_{j + 1}" for j in range(widths[-1])]
    if len(input_names) != widths[0] or len(output_names) != widths[-1]:
        raise ValueError(f"input_names/output_names must have {widths[0]}/{widths[-1]} entries")
    if scores is None:
        scores = prune.edge_scores(model, x)
    scores = [np.asarray(s, dtype=np.float64) for s in scores]
    curves = _probe_curves(model, x, n_points)

    max_edges = max(a * b for a, b in zip(widths[:-1], widths[1:]))
    fig_w = float(np.clip(0.55 * max_edges, 4.0, 24.0))
    fig_h = 1.0 + 2.0 * n_layers
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")

    bottom, top = 0.6 / fig_h, 1.0 - (0.8 if title else 0.5) / fig_h
    ys = np.linspace(bottom, top, n_layers + 1)
    node_x = [(np.arange(w) + 0.5) / w for w in widths]

    for l, layer in enumerate(model.layers):
        n, o = widths[l], widths[l + 1]
        mask = layer.live_edges()  # spline or symbolic edges that are not pruned
        sc = np.where(mask, np.maximum(scores[l], 0.0), 0.0)
        best = sc.max()
        rel = sc / best if best > 0 else np.zeros_like(sc)
        gap = ys[l + 1] - ys[l]
        h = 0.42 * gap
        w = min(0.75 / (n * o), h * fig_h / fig_w)
        yc = 0.5 * (ys[l] + ys[l + 1])
        xs, phi = curves[l]
        for i in range(n):
            for j in range(o):
                if not mask[i, j]:
                    continue
                alpha = float(np.clip(rel[i, j], 0.08, 1.0))
                name = symbolic_label(layer, i, j)
                color = _SYMBOLIC_COLOR if name else _SPLINE_COLOR
                xc = (i * o + j + 0.5) / (n * o)
                ax.plot([node_x[l][i], xc], [ys[l], yc - h / 2], color=color, alpha=alpha, lw=0.8)
                ax.plot([xc, node_x[l + 1][j]], [yc + h / 2, ys[l + 1]], color=color, alpha=alpha, lw=0.8)
                inset = fig.add_axes((xc - w / 2, yc - h / 2, w, h), label=f"{EDGE_LABEL_PREFIX} {l} {i} {j}")
                inset.plot(xs[:, i], phi[:, i, j], color=color, alpha=alpha, lw=1.2)
                inset.set_xticks([])
                inset.set_yticks([])
                for sp in inset.spines.values():
                    sp.set_alpha(alpha)
                    sp.set_edgecolor(color)
                inset.patch.set_alpha(0.0)
                if name:
                    inset.set_title(name, color=_SYMBOLIC_COLOR, fontsize=7, pad=1.5, alpha=max(alpha, 0.5))

    for l, w_l in enumerate(widths):
        ax.scatter(node_x[l], np.full(w_l, ys[l]), s=30, color="black", zorder=3)
    for i, name in enumerate(input_names):
        ax.text(node_x[0][i], ys[0] - 0.25 / fig_h, str(name), ha="center", va="top", fontsize=10)
    for j, name in enumerate(output_names):
        ax.text(node_x[-1][j], ys[-1] + 0.2 / fig_h, str(name), ha="center", va="bottom", fontsize=10)
    if title:
        ax.text(0.5, 1.0 - 0.15 / fig_h, title, ha="center", va="top", fontsize=12)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


# ----------------------------------------------------------------------------- training curves


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_loss(path: str, records: list[dict], *, stage_bounds: list[int] = ()) -> None:
    """Train loss and train/test RMSE vs step (log scale), stage boundaries as dotted lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in records]
    for key, style in (("train_loss", "-"), ("train_rmse", "--"), ("test_rmse", ":")):
        vals = [r.get(key) for r in records]
        pts = [(s, v) for s, v in zip(steps, vals) if v is not None and v > 0 and math.isfinite(v)]
        if pts:
            ax.plot(*zip(*pts), style, label=key)
    for b in stage_bounds:
        ax.axvline(b, color="gray", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend()
    ax.set_title("training")
    _save(fig, path)


def plot_rmse_vs_grid(path: str, stages: list[dict]) -> None:
    """Train/test RMSE vs grid size G (log-log) with the G^-4 scaling line of cubic splines."""
    plt = _pyplot()
    g = np.array([s["grid_size"] for s in stages], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4))
    for key, marker in (("train_rmse", "o"), ("test_rmse", "s")):
        ax.plot(g, [s[key] for s in stages], marker=marker, label=key)
    ref_i = len(g) // 2
    ref = stages[ref_i]["test_rmse"] * (g / g[ref_i]) ** -4.0
    ax.plot(g, ref, "k--", lw=1, label=r"$\propto G^{-4}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(g, [str(int(v)) for v in g])  # the grid sizes themselves, no minor-tick labels
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("grid size G")
    ax.set_ylabel("RMSE")
    ax.legend()
    _save(fig, path)


# ----------------------------------------------------------------------------- task figures


def plot_confusion(path: str, matrix, class_names: Sequence[str], *, title: str = "") -> None:
    """A confusion matrix ``(n_classes, n_classes)`` (rows: true class, columns: predicted) as a
    heat map with the counts written in the cells."""
    plt = _pyplot()
    m = np.asarray(matrix)
    n = m.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n) if n > 4 else (3.5, 3.2))
    ax.imshow(m, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > 0.5 * m.max() else "black")
    labels = [str(c)[:12] for c in class_names]
    ax.set_xticks(range(n), labels, rotation=90 if max(map(len, labels)) > 2 else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def plot_image_grid(path: str, images, *, ncols: int, title: str = "", row_labels: Sequence[str] = ()) -> None:
    """Gray-scale images ``(n, height, width)`` with values in [0, 1] in rows of ``ncols``
    (``row_labels``: one label per row, written on its left)."""
    plt = _pyplot()
    imgs = np.asarray(images, np.float64)
    nrows = -(-imgs.shape[0] // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.7 * ncols + (0.9 if row_labels else 0.2), 0.7 * nrows + 0.4),
                             squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < imgs.shape[0]:
            ax.imshow(imgs[k], cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.axis("off")
    for r, label in enumerate(row_labels):
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def plot_fields(path: str, x1, x2, fields: dict, *, title: str = "") -> None:
    """Functions sampled on one 2-D grid, side by side: ``x1``, ``x2`` the grid's coordinates
    ``(n2, n1)`` (``numpy.meshgrid``), ``fields`` name -> values ``(n2, n1)``, each with its color bar."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(fields), figsize=(3.6 * len(fields), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], fields.items()):
        mesh = ax.pcolormesh(np.asarray(x1), np.asarray(x2), np.asarray(values), shading="auto", cmap="viridis")
        fig.colorbar(mesh, ax=ax)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x_1")
        ax.set_ylabel("x_2")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _save(fig, path: str) -> None:
    """Lays out, writes (100 dpi) and closes ``fig``: the last step of every plot here."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
