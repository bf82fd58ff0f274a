"""Symbolic regression on a network: fit library functions to a KAN's edges.

* :func:`edge_samples` -- per layer, the inputs reaching it and its spline edge values;
* :func:`suggest_symbolic` -- ranked candidate functions for one edge of a network;
* :func:`fix_symbolic` / :func:`unfix_symbolic` -- fix one edge to a function (fitting
  ``a, b, c, d`` or given) / turn it back into its spline;
* :func:`auto_symbolic` -- fix every active edge, one batched fit for the network's layers;
* :func:`symbolic_edges` -- list a network's symbolic edges.

The edges' state lives in each layer's ``symbolic`` (:class:`~kan_jax.symbolic.edges.SymbolicEdges`):
a function index per edge and the affine params ``[a, b, c, d]`` (an ``nnx.Param``, retrained
with the model). Fixing edges changes values only, so ``nnx.graphdef(model)`` is the same before
and after (a training loop jitted for the network does not compile again).

Example::

    model = kan_jax.KAN([2, 5, 1], rngs=nnx.Rngs(0))
    ...  # train, prune
    report = auto_symbolic(model, x)              # every active edge -> c f(a x + b) + d
    [expr] = symbolic_formula(model)              # exp(x_2**2 + sin(pi*x_1))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kan_jax.symbolic.fit import SymbolicCandidate, fit_affine, rank_functions_batch
from kan_jax.symbolic.library import SYMBOLIC_LIB, SymbolicFunction

__all__ = [
    "edge_samples",
    "suggest_symbolic",
    "fix_symbolic",
    "unfix_symbolic",
    "auto_symbolic",
    "symbolic_edges",
    "FIT_BATCH_EDGES",
]


def _lib(lib) -> Mapping[str, SymbolicFunction]:
    return SYMBOLIC_LIB if lib is None else lib


def _check_layer(model, layer):
    if not 0 <= layer < len(model.layers):
        raise ValueError(f"layer must be in [0, {len(model.layers)}), got {layer}")
    return model.layers[layer]


def _check_edge(lay, layer, i, j):
    if not (0 <= i < lay.in_features and 0 <= j < lay.out_features):
        raise ValueError(
            f"edge ({i}, {j}) out of range for layer {layer} ({lay.in_features} inputs, {lay.out_features} outputs)"
        )


def edge_samples(model, x: jax.Array, layers: Sequence[int] | None = None) -> dict[int, tuple[jax.Array, jax.Array]]:
    """Samples of the spline edges: ``{layer: (inputs (batch, n_l), phi (batch, n_l, n_{l+1}))}``.

    The inputs are those reaching each layer when the network runs on ``x (batch, widths[0])``;
    ``phi`` is each edge's spline function on them (mask not applied). One compiled program
    per network structure (``nnx.graphdef``) computes every layer's.
    """
    graphdef, state = nnx.split(model)
    samples = _edge_samples_fn(graphdef)(state, jnp.asarray(x))
    layers = range(len(model.layers)) if layers is None else layers
    return {l: samples[l] for l in layers}


def _active_edges(layer) -> np.ndarray:
    """``(E, 2)`` row-major ``(i, j)`` of the edges ``auto_symbolic`` fits (``mask > 0``)."""
    return np.argwhere(np.asarray(layer.mask[...]) > 0)


# ``auto_symbolic`` fits the edges of several layers in one call while they are at most this many
# in all (one program run instead of one per layer); larger layers are fitted one at a time, so
# the fit's memory stays that of the largest layer.
FIT_BATCH_EDGES = 256


def _fit_groups(counts: Mapping[int, int]) -> list[list[int]]:
    """The layers ``auto_symbolic`` fits together: ``counts`` maps each layer to its active edge
    count (layers without any are left out); consecutive layers share a call while their total is
    at most ``FIT_BATCH_EDGES``."""
    groups, total = [], 0
    for l, n in counts.items():
        if n <= 0:
            continue
        if groups and total + n <= FIT_BATCH_EDGES:
            groups[-1].append(l)
            total += n
        else:
            groups.append([l])
            total = n
    return groups


@functools.lru_cache(maxsize=32)
def _edge_samples_fn(graphdef):
    def run(state, x):
        model = nnx.merge(graphdef, state)
        inputs = model.layer_inputs(x)
        return [(inputs[l], lay.spline_activations(inputs[l])) for l, lay in enumerate(model.layers)]

    return jax.jit(run)


def suggest_symbolic(
    model,
    layer: int,
    i: int,
    j: int,
    x: jax.Array,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
    topk: int = 5,
    weight_simple: float = 0.8,
    **fit_kwargs,
) -> list[SymbolicCandidate]:
    """Ranked library functions for edge ``(i, j)`` of ``layer`` (samples from the inputs ``x``).

    Args:
      model: a ``kan_jax.KAN``.
      layer, i, j: the edge.
      x: ``(batch, widths[0])`` network inputs.
      lib: library (default ``SYMBOLIC_LIB``).
      topk: candidates returned.
      weight_simple: simplicity weight (``kan_jax.symbolic.fit.symbolic_scores``).
      **fit_kwargs: forwarded to ``kan_jax.symbolic.fit.fit_affine_all`` (``a_range``, ``grid_number``, ...).

    Returns:
      Up to ``topk`` ``SymbolicCandidate(name, params [a, b, c, d], r2, complexity, score)``.
    """
    lay = _check_layer(model, layer)
    _check_edge(lay, layer, i, j)
    xin, phi = edge_samples(model, x, [layer])[layer]
    return rank_functions_batch(
        xin[:, i][None], phi[:, i, j][None], lib=_lib(lib), topk=topk, weight_simple=weight_simple, **fit_kwargs
    )[0]


def fix_symbolic(
    model,
    layer: int,
    i: int,
    j: int,
    name: str,
    x: jax.Array | None = None,
    *,
    fit_params: bool = True,
    params: Sequence[float] | None = None,
    lib: Mapping[str, SymbolicFunction] | None = None,
    **fit_kwargs,
) -> tuple[np.ndarray, float | None]:
    """Fixes edge ``(i, j)`` of ``layer`` to ``c * lib[name](a x + b) + d`` (in place).

    With ``params`` given they are used as ``[a, b, c, d]``; otherwise, with ``fit_params`` and
    samples ``x``, they are fitted to the edge's spline on the inputs reaching it (and stored in
    the function's canonical form, ``SymbolicFunction.canonical``); otherwise ``[1, 0, 1, 0]``.

    Returns:
      ``(params (4,), r2)``; ``r2`` is ``None`` when nothing was fitted.
    """
    lib = _lib(lib)
    if name not in lib:
        raise ValueError(f"{name!r} is not in the symbolic library ({', '.join(lib)})")
    lay = _check_layer(model, layer)
    _check_edge(lay, layer, i, j)
    r2 = None
    if params is not None:
        p = np.asarray(params, np.float64).reshape(4)
    elif fit_params:
        if x is None:
            raise ValueError("fit_params=True needs samples x (or pass params=[a, b, c, d])")
        xin, phi = edge_samples(model, x, [layer])[layer]
        p, r2 = fit_affine(xin[:, i], phi[:, i, j], lib[name], **fit_kwargs)
        p, r2 = np.asarray(p, np.float64), float(r2)
    else:
        p = np.array([1.0, 0.0, 1.0, 0.0])
    lay.set_symbolic([(i, j)], [lib[name]], p[None])
    return p, r2


def unfix_symbolic(model, layer: int, i: int, j: int) -> None:
    """Turns edge ``(i, j)`` of ``layer`` back into its spline."""
    lay = _check_layer(model, layer)
    _check_edge(lay, layer, i, j)
    lay.clear_symbolic([(i, j)])


def auto_symbolic(
    model,
    x: jax.Array,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
    r2_threshold: float = 0.0,
    weight_simple: float = 0.8,
    layers: Sequence[int] | None = None,
    verbose: bool = False,
    **fit_kwargs,
) -> list[dict[str, Any]]:
    """Fixes every active spline edge (``mask = 1``) to its best library function, in place.

    All active edges are fitted against the whole library in one batched, chunked computation
    (``kan_jax.symbolic.fit.rank_functions_batch``; layers together up to ``FIT_BATCH_EDGES`` edges in
    all, larger layers one at a time); each edge takes its best-scoring
    candidate with ``r2 >= r2_threshold`` and keeps its spline otherwise (pykan's
    ``auto_symbolic``). The samples are the spline edge values on the inputs reaching each layer
    when the network (as it was before this call) runs on ``x``. Pruned edges (``mask = 0``,
    not symbolic) and edges already symbolic are left as they are.

    Args:
      model: a ``kan_jax.KAN``.
      x: ``(batch, widths[0])`` inputs (the training inputs, typically).
      lib: library (default ``SYMBOLIC_LIB``).
      r2_threshold: minimum ``r2`` to fix an edge.
      weight_simple: simplicity weight of the ranking.
      layers: the layers to process (default all).
      verbose: print one line per edge.
      **fit_kwargs: forwarded to ``kan_jax.symbolic.fit.fit_affine_all``.

    Returns:
      One dict per processed active edge: ``layer, i, j, name`` (``None`` if left a spline),
      ``params`` ``[a, b, c, d]``, ``r2``, ``fixed``.
    """
    lib = _lib(lib)
    samples = edge_samples(model, x, layers)
    active = {l: _active_edges(model.layers[l]) for l in samples}
    report = []
    for group in _fit_groups({l: len(a) for l, a in active.items()}):
        # Gathered on the host (no compile per shape): (E, N) inputs and spline values.
        xs = np.concatenate([np.asarray(samples[l][0])[:, active[l][:, 0]].T for l in group])
        ys = np.concatenate([np.asarray(samples[l][1])[:, active[l][:, 0], active[l][:, 1]].T for l in group])
        cands = iter(rank_functions_batch(xs, ys, lib=lib, topk=1, weight_simple=weight_simple,
                                            r2_threshold=r2_threshold, **fit_kwargs))
        for l in group:
            edges, funcs, params = [], [], []
            for i, j in active[l].tolist():
                c = next(cands)
                best = c[0] if c else None
                rec = {"layer": l, "i": i, "j": j, "name": best.name if best else None,
                       "params": best.params.tolist() if best else None, "r2": best.r2 if best else None,
                       "fixed": best is not None}
                report.append(rec)
                if verbose:
                    print(f"layer {l} edge ({i},{j}): " + (f"{best.name} r2={best.r2:.6f}" if best else "kept spline (below r2_threshold)"))
                if best is not None:
                    edges.append((i, j))
                    funcs.append(lib[best.name])
                    params.append(best.params)
            if edges:
                model.layers[l].set_symbolic(edges, funcs, np.stack(params))
    return report


def symbolic_edges(model) -> list[dict[str, Any]]:
    """The symbolic edges of a network: ``layer, i, j, name, params`` per edge."""
    out = []
    for l, lay in enumerate(model.layers):
        for i, j, fn, p in lay.symbolic.entries():
            out.append({"layer": l, "i": i, "j": j, "name": fn.name, "params": p.tolist()})
    return out


