"""Attribution scores and pruning of KANs (KAN 2.0-style backward attribution).

Scores (all from a batch ``x``):

* **Edge magnitude** ``A_l[i, j]``: the standard deviation over the batch of the masked edge
  activations (``measure="std"``, the default, as pykan's ``attribute``: an edge that is constant
  on the data scores 0, and pruning folds such constants into the next bias, so it stays exact),
  or ``mean_batch |phi_ij(x_i)|`` (``measure="mean_abs"``). ``mean_abs`` counts an edge's constant
  offset as importance, so after sparsity training dead-but-offset edges look alive and pruning
  keeps them (measured on hellokan: ``mean_abs`` keeps [2, 4, 1] where ``std`` gives [2, 1, 1]).
* **Node scores** run backward from the outputs. Output node ``j`` of the last layer scores
  ``output_scores[j]`` (default 1 each). For layer ``l`` (from the last to the first) the target
  node ``j``'s score is shared among its incoming edges in proportion to their magnitudes::

      E_l[i, j] = S_{l+1}[j] * A_l[i, j] / sum_i' A_l[i', j]      (0 where the sum is 0)
      S_l[i]    = sum_j E_l[i, j]

  so an edge's score is "the share of its target's importance that flows through it", a node's
  score is the sum of its outgoing edges' scores, and scores are conserved layer to layer: with
  every output reachable, each layer's node scores sum to ``sum(output_scores)``. With one output
  a score is a fraction of the whole network's attribution, which makes thresholds portable.
  ``S_0`` (the input nodes) is the feature importance. All-zero layers give zeros, never NaN.

Pruning never modifies its argument; every function returns a new ``kan_jax.KAN``:

* ``prune_edges``: same widths, ``EdgeMask`` set to 0 on edges scoring below a threshold.
* ``prune``: removes hidden nodes scoring below ``node_threshold`` (narrower widths, the kept
  edges' functions copied unchanged), then masks edges below ``edge_threshold``.
* ``prune_inputs``: removes input features scoring below a threshold.
* ``keep_top_nodes``: keeps the ``k`` best-scoring nodes of one hidden layer (a width, not a
  threshold: the symbolic pipeline's search for the narrowest network that still fits).
* ``masked=True`` (``prune``, ``keep_top_nodes``): the removed nodes stay, with every edge into
  and out of them masked (``mask_nodes``): the same function at the same shapes, so a training
  loop compiled for the network runs the pruned one too; ``compact`` then cuts the dead nodes out.

What changes when something is removed: the removed part's contribution to each surviving node
is replaced by its mean over the batch ``x``, folded into that node's bias (``fold_constants``,
default on). A removed hidden node ``h`` feeds node ``k`` of the next layer through
``phi_hk(h(x))``; that term becomes the constant ``mean_x phi_hk(h(x))`` (likewise a masked edge
or a removed input). When the removed contributions are exactly constant on the data (zero
edges, or nodes whose incoming edges are all zero so they only carry their bias) the pruned
network computes exactly the same function as the original on ``x``'s distribution; when they
are small it is the best constant (L2) replacement. The means are taken on the original network.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kan_jax.compilation import quick_module_fn
from kan_jax.nnx import KAN, KANLayer

__all__ = [
    "MEASURES",
    "edge_magnitudes",
    "scores_from_magnitudes",
    "attribution",
    "edge_scores",
    "node_scores",
    "prune_edges",
    "prune",
    "prune_inputs",
    "keep_top_nodes",
    "subnetwork",
    "mask_nodes",
    "live_nodes",
    "live_widths",
    "compact",
]

MEASURES = ("mean_abs", "std")  # attribution measures (``measure=``)


def _xp(*arrays):
    """``numpy`` when every array is a host numpy array (no XLA compile per shape), else ``jax.numpy``."""
    return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def edge_magnitudes(edge_acts: Sequence[jax.Array], *, measure: str = "std") -> list[jax.Array]:
    """Per layer ``(batch, n, o) -> (n, o)`` edge magnitudes (mean ``|phi|`` or std over the batch).

    Numpy inputs give numpy outputs (host-side pruning); JAX arrays / tracers give JAX arrays.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    xp = _xp(*edge_acts)
    if measure == "mean_abs":
        return [xp.mean(xp.abs(a), axis=0) for a in edge_acts]
    return [xp.std(a, axis=0) for a in edge_acts]


def scores_from_magnitudes(
    magnitudes: Sequence[jax.Array], output_scores: jax.Array | None = None
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Backward attribution from edge magnitudes (pure, jit-safe).

    Args:
      magnitudes: per layer ``(n_l, n_{l+1})`` non-negative edge magnitudes.
      output_scores: ``(n_L,)`` scores of the output nodes (default ones).

    Returns:
      ``(edge_scores, node_scores)``: per layer ``(n_l, n_{l+1})``, and per node layer
      ``(n_l,)`` for ``l = 0..L`` (inputs first, outputs last).
    """
    xp = _xp(*magnitudes, *(() if output_scores is None else (output_scores,)))
    mags = [xp.asarray(m) for m in magnitudes]
    n_out = mags[-1].shape[1]
    s = xp.ones((n_out,), mags[-1].dtype) if output_scores is None else xp.asarray(output_scores, mags[-1].dtype)
    if s.shape != (n_out,):
        raise ValueError(f"output_scores must have shape ({n_out},), got {s.shape}")
    nodes, edges = [s], []
    for a in reversed(mags):
        total = xp.sum(a, axis=0)  # (o,)
        share = a / xp.where(total > 0, total, 1.0)
        e = share * s[None, :]
        s = xp.sum(e, axis=1)
        edges.append(e)
        nodes.append(s)
    return edges[::-1], nodes[::-1]


def attribution(
    model: KAN, x: jax.Array, *, measure: str = "std", output_scores: jax.Array | None = None
) -> tuple[list[jax.Array], list[jax.Array]]:
    """``(edge_scores, node_scores)`` of ``model`` on the batch ``x (batch, widths[0])``.

    Outside a trace the magnitudes and scores are computed on the host (numpy arrays: no XLA
    compile of each small reduction per network shape); under ``jax.jit`` they are traced.
    """
    acts = _edge_activations(model, x)
    if not any(isinstance(a, jax.core.Tracer) for a in acts):
        acts = [np.asarray(a) for a in acts]
        output_scores = None if output_scores is None else np.asarray(output_scores)
    mags = edge_magnitudes(acts, measure=measure)
    return scores_from_magnitudes(mags, output_scores)


def edge_scores(model: KAN, x: jax.Array, **kw) -> list[jax.Array]:
    """Per layer ``(n_l, n_{l+1})`` edge attribution scores (see module docstring).

    Keyword args ``measure`` and ``output_scores`` as ``attribution``.
    """
    return attribution(model, x, **kw)[0]


def node_scores(model: KAN, x: jax.Array, **kw) -> list[jax.Array]:
    """Per node layer ``(n_l,)`` attribution scores, ``len(widths)`` arrays; ``[0]`` = feature importance."""
    return attribution(model, x, **kw)[1]


# ----------------------------------------------------------------------------- building subnetworks

_EDGE_VARS = ("coef", "w_base", "w_spline", "mask")  # leading axes (n, o)


def _layer_config(layer: KANLayer) -> dict:
    return dict(
        grid_size=layer.grid_size,
        spline_order=layer.spline_order,
        basis=layer.basis,
        base_activation=layer.base_activation,
        grid_eps=layer.grid_eps,
        extrapolate=layer.extrapolate,
        path=layer.path,
        dtype=layer.dtype,
        param_dtype=layer.coef[...].dtype,
    )


def _slice_edges(value, rows, cols):
    """``value[rows][:, cols]``, sliced on the host (no XLA compile per shape)."""
    return jax.device_put(np.asarray(value)[np.ix_(np.asarray(rows), np.asarray(cols))])


def _active(layer: KANLayer) -> np.ndarray:
    """``(n, o)`` bool: live edges (spline mask or symbolic)."""
    return layer.live_edges()


def _copy_layer(old: KANLayer, new: KANLayer, rows: np.ndarray, cols: np.ndarray, bias_shift) -> None:
    """Copies ``old``'s state restricted to inputs ``rows`` and outputs ``cols`` into ``new``.

    Copies the spline state, the grid rows, the mask, the bias and symbolic edges. Any other
    ``nnx.Variable`` whose value has leading axes ``(n, o)`` (per-edge state added later) is
    sliced the same way; other extra variables are copied as they are.
    """
    n, o = old.in_features, old.out_features
    for name in _EDGE_VARS:
        getattr(new, name).set_value(_slice_edges(getattr(old, name)[...], rows, cols))
    new.grid.set_value(jax.device_put(np.asarray(old.grid[...])[np.asarray(rows)]))
    bias = np.asarray(old.bias[...])[np.asarray(cols)]
    if bias_shift is not None:
        bias = bias + np.asarray(bias_shift, bias.dtype)
    new.bias.set_value(jax.device_put(bias))
    new.symbolic = old.symbolic.take(rows, cols)
    handled = set(_EDGE_VARS) | {"grid", "bias", "symbolic"}
    for name, val in list(vars(old).items()):
        if name in handled or name.startswith("_") or not isinstance(val, nnx.Variable):
            continue
        arr = val[...]
        shape = tuple(getattr(arr, "shape", ()))
        new_val = _slice_edges(arr, rows, cols) if shape[:2] == (n, o) else arr
        if isinstance(getattr(new, name, None), nnx.Variable):
            getattr(new, name).set_value(new_val)
        else:
            setattr(new, name, type(val)(new_val))


def subnetwork(model: KAN, keep: Sequence[Sequence[int]], bias_shifts: Sequence | None = None) -> KAN:
    """A new ``KAN`` restricted to the nodes ``keep[l]`` of every node layer ``l = 0..L``.

    Kept edges keep their functions exactly (coef, weights, grid rows, mask copied). Removed
    inputs' contributions are simply dropped unless ``bias_shifts[l]`` (``(len(keep[l+1]),)``, added
    to layer ``l``'s kept biases) compensates for them.

    Args:
      model: the network.
      keep: ``len(widths)`` index lists (each non-empty, increasing).
      bias_shifts: optional per layer additions to the kept biases.

    Returns:
      The smaller network with widths ``[len(k) for k in keep]``.
    """
    keep = _check_keep(model, keep)
    layers = list(model.layers)
    cfg = _layer_config(layers[0])
    # Abstract construction (no random init to compile): every variable is set below.
    new = nnx.eval_shape(lambda: KAN([int(k.size) for k in keep], model_sharding=model.model_sharding, rngs=nnx.Rngs(0),
                                     **cfg))
    for l, (old_l, new_l) in enumerate(zip(layers, new.layers)):
        shift = None if bias_shifts is None else bias_shifts[l]
        _copy_layer(old_l, new_l, keep[l], keep[l + 1], shift)
    unset = [leaf for leaf in jax.tree_util.tree_leaves(nnx.state(new)) if isinstance(leaf, jax.ShapeDtypeStruct)]
    if unset:  # a variable _copy_layer does not know about
        raise RuntimeError(f"subnetwork: {len(unset)} variables of the new network were not copied")
    return new


def _check_keep(model: KAN, keep) -> list[np.ndarray]:
    keep = [np.asarray(k, dtype=np.int64).reshape(-1) for k in keep]
    if len(keep) != len(model.widths):
        raise ValueError(f"keep needs {len(model.widths)} index lists, got {len(keep)}")
    for l, (k, w) in enumerate(zip(keep, model.widths)):
        if k.size == 0 or k.min() < 0 or k.max() >= w or np.any(np.diff(k) <= 0):
            raise ValueError(f"keep[{l}] must be non-empty increasing indices in [0, {w}), got {k.tolist()}")
    return keep


def mask_nodes(model: KAN, keep: Sequence[Sequence[int]], bias_shifts: Sequence | None = None) -> KAN:
    """``subnetwork`` with the removed nodes masked instead of cut out: same widths, same function.

    Every edge into or out of a node not in ``keep`` gets ``mask = 0`` (and is no longer
    symbolic); ``bias_shifts[l]`` is added to layer ``l``'s kept biases. A removed hidden node
    then only carries its bias to edges that are masked, so the network computes what
    ``subnetwork(model, keep, bias_shifts)`` computes, while its arrays keep their shapes: a
    training loop compiled for ``model`` runs it without compiling again (the symbolic pipeline
    prunes this way and ``compact``s before fitting symbols). Arguments as ``subnetwork``.
    """
    keep = _check_keep(model, keep)
    new = nnx.clone(model)
    for l, layer in enumerate(new.layers):
        live = np.zeros((layer.in_features, layer.out_features), bool)
        live[np.ix_(keep[l], keep[l + 1])] = True
        _mask_edges(layer, ~live)
        if bias_shifts is not None:
            bias = np.array(layer.bias[...])
            bias[keep[l + 1]] += np.asarray(bias_shifts[l], bias.dtype)
            layer.bias.set_value(jax.device_put(bias))
    return new


def live_nodes(model: KAN) -> list[np.ndarray]:
    """Per node layer, the nodes that reach the outputs: every input and output node, and each
    hidden node with a live edge (spline or symbolic) to a live node of the next layer (at least
    one per hidden layer: its first node when none is live)."""
    layers = list(model.layers)
    live = [np.arange(model.widths[-1])]
    for layer in reversed(layers[1:]):
        out = np.zeros(layer.out_features, bool)
        out[live[0]] = True
        nodes = np.flatnonzero((_active(layer) & out[None, :]).any(axis=1))
        live.insert(0, nodes if nodes.size else np.array([0]))
    return [np.arange(model.widths[0])] + live


def live_widths(model: KAN) -> list[int]:
    """The widths ``compact(model)`` has."""
    return [int(k.size) for k in live_nodes(model)]


def compact(model: KAN) -> KAN:
    """The network without its dead hidden nodes (``live_nodes``): the same function, narrower.

    A dead node's edges to the next layer are all masked (``mask_nodes``, ``prune_edges``), so
    removing it changes nothing. Returns a new ``KAN`` (``subnetwork``).
    """
    return subnetwork(model, live_nodes(model))


# ----------------------------------------------------------------------------- pruning


@quick_module_fn
def _edge_activations(model: KAN, x: jax.Array) -> list[jax.Array]:
    """``model.edge_activations(x)`` as one compiled program per network structure (called
    eagerly, the layers' programs and the sums between them would each compile)."""
    return model.edge_activations(x)


def _np_acts(model: KAN, x) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in _edge_activations(model, x)]


def prune_edges(
    model: KAN,
    x: jax.Array,
    *,
    threshold: float,
    measure: str = "std",
    output_scores=None,
    fold_constants: bool = True,
) -> KAN:
    """A copy of ``model`` with ``EdgeMask = 0`` on every edge whose score is below ``threshold``.

    Symbolic edges (``KANLayer.set_symbolic``) below the threshold are removed too
    (cleared): a pruned edge is neither spline nor symbolic.

    Args:
      model: the network (not modified).
      x: ``(batch, widths[0])`` samples used for the scores (and the folded means).
      threshold: edge score threshold (scores as ``edge_scores``).
      measure, output_scores: as ``attribution``.
      fold_constants: add each masked edge's mean activation on ``x`` to its target's bias.

    Returns:
      A new ``KAN`` with the same widths.
    """
    acts = _np_acts(model, x)
    escores, _ = scores_from_magnitudes(edge_magnitudes(acts, measure=measure), output_scores)
    new = nnx.clone(model)
    for layer, e, a in zip(new.layers, escores, acts):
        drop = np.asarray(e) < threshold
        newly = drop & _active(layer)
        if fold_constants and newly.any():
            shift = np.sum(np.where(newly[None], a, 0.0).mean(axis=0), axis=0)
            layer.bias.set_value(jax.device_put((np.asarray(layer.bias[...], np.float64) + shift).astype(layer.bias[...].dtype)))
        _mask_edges(layer, drop)
    return new


def _mask_edges(layer: KANLayer, drop: np.ndarray) -> None:
    """Masks the edges where ``drop (n, o)`` is True: spline ``mask = 0``, symbolic edges
    cleared (``layer.symbolic.clear``)."""
    mask = np.asarray(layer.mask[...])
    layer.mask.set_value(jax.device_put(np.where(drop, 0, mask).astype(mask.dtype)))
    layer.symbolic.clear_where(np.asarray(drop, bool) & layer.symbolic.active())


def _removal_shifts(acts, keep) -> list[np.ndarray]:
    """Per layer: the mean contribution of removed inputs to each kept output (to fold into the bias)."""
    shifts = []
    for l, a in enumerate(acts):
        removed = np.setdiff1d(np.arange(a.shape[1]), keep[l])
        contrib = a.mean(axis=0)[removed][:, keep[l + 1]].sum(axis=0)  # (o_kept,)
        shifts.append(contrib)
    return shifts


def _kept(score: np.ndarray, threshold: float) -> np.ndarray:
    k = np.flatnonzero(score >= threshold)
    return k if k.size else np.array([int(np.argmax(score))])


def prune(
    model: KAN,
    x: jax.Array,
    *,
    node_threshold: float = 1e-2,
    edge_threshold: float = 3e-2,
    measure: str = "std",
    output_scores=None,
    fold_constants: bool = True,
    masked: bool = False,
) -> KAN:
    """A genuinely smaller network: low-score hidden nodes removed, then low-score edges masked.

    Hidden nodes (not inputs, not outputs) whose node score on ``x`` is below ``node_threshold``
    are removed (every hidden layer keeps at least its best node), giving narrower widths; the
    kept edges' functions are copied unchanged. Each removed node's mean contribution to the next
    layer is folded into the next layer's biases (``fold_constants``). Scores are then recomputed
    on the smaller network and edges below ``edge_threshold`` are masked (``prune_edges``;
    ``edge_threshold=None`` or ``0`` skips it).

    Args:
      model: the network (not modified).
      x: ``(batch, widths[0])`` samples.
      node_threshold: node score threshold for hidden nodes.
      edge_threshold: edge score threshold.
      measure, output_scores: as ``attribution``.
      fold_constants: fold removed parts' means into biases.
      masked: mask the removed nodes' edges instead of cutting them out (``mask_nodes``: same
        widths and function; ``compact`` gives the smaller network).

    Returns:
      A new ``KAN`` with widths ``[widths[0], kept..., widths[-1]]`` (unless ``masked``).
    """
    x = jnp.asarray(x)
    acts = _np_acts(model, x)
    _, nscores = scores_from_magnitudes(edge_magnitudes(acts, measure=measure), output_scores)
    keep = [np.arange(model.widths[0])]
    keep += [_kept(np.asarray(s), node_threshold) for s in nscores[1:-1]]
    keep.append(np.arange(model.widths[-1]))
    shifts = _removal_shifts(acts, keep) if fold_constants else None
    new = (mask_nodes if masked else subnetwork)(model, keep, shifts)
    if edge_threshold:
        new = prune_edges(
            new, x, threshold=edge_threshold, measure=measure, output_scores=output_scores, fold_constants=fold_constants
        )
    return new


def prune_inputs(
    model: KAN,
    x: jax.Array,
    *,
    threshold: float = 1e-2,
    measure: str = "std",
    output_scores=None,
    fold_constants: bool = True,
) -> tuple[KAN, np.ndarray]:
    """Removes input features whose score (feature importance) is below ``threshold``.

    Args:
      model: the network (not modified).
      x: ``(batch, widths[0])`` samples.
      threshold: input node score threshold (at least the best input is kept).
      measure, output_scores, fold_constants: as ``prune``.

    Returns:
      ``(new_model, kept)``: ``kept`` the increasing indices of the kept inputs; call the new
      model on ``x[:, kept]``.
    """
    x = jnp.asarray(x)
    acts = _np_acts(model, x)
    _, nscores = scores_from_magnitudes(edge_magnitudes(acts, measure=measure), output_scores)
    kept = _kept(np.asarray(nscores[0]), threshold)
    keep = [kept] + [np.arange(w) for w in model.widths[1:]]
    shifts = _removal_shifts(acts, keep) if fold_constants else None
    return subnetwork(model, keep, shifts), kept


def keep_top_nodes(
    model: KAN,
    x: jax.Array,
    *,
    layer: int,
    k: int,
    measure: str = "std",
    output_scores=None,
    fold_constants: bool = True,
    masked: bool = False,
) -> KAN:
    """Keeps the ``k`` highest-scoring nodes of hidden node layer ``layer`` (``1..L-1``).

    The other node layers are kept whole; removed nodes' mean contributions are folded into the
    next layer's biases (``fold_constants``), as in ``prune``.

    Args:
      model: the network (not modified).
      x: ``(batch, widths[0])`` samples.
      layer: hidden node layer index, ``1 <= layer <= len(widths) - 2``.
      k: nodes to keep, ``1 <= k <= widths[layer]``.
      measure, output_scores: as ``attribution``.
      fold_constants: fold removed nodes' means into biases.
      masked: mask the removed nodes' edges instead (``mask_nodes``), as in ``prune``.

    Returns:
      A new ``KAN`` with ``widths[layer] = k`` (kept nodes in their original order; unless ``masked``).
    """
    widths = list(model.widths)
    if not 1 <= int(layer) <= len(widths) - 2:
        raise ValueError(f"layer must be a hidden node layer in [1, {len(widths) - 2}], got {layer}")
    if not 1 <= int(k) <= widths[layer]:
        raise ValueError(f"k must be in [1, {widths[layer]}] for hidden layer {layer}, got {k}")
    x = jnp.asarray(x)
    acts = _np_acts(model, x)
    _, nscores = scores_from_magnitudes(edge_magnitudes(acts, measure=measure), output_scores)
    score = np.asarray(nscores[layer])
    top = np.sort(np.argsort(-score, kind="stable")[: int(k)])
    keep = [np.arange(w) for w in widths]
    keep[layer] = top
    shifts = _removal_shifts(acts, keep) if fold_constants else None
    return (mask_nodes if masked else subnetwork)(model, keep, shifts)
