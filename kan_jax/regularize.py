"""Sparsity regularization of KANs (Liu et al. 2024, section 2.5.1), as pure functions.

Each layer's edges get a non-negative **magnitude** ``A[i, j]`` on a batch, and the penalty is

* the L1 term ``sum_ij A[i, j]``;
* the entropy term, per node, of its edges' normalized magnitudes, averaged over the layer's
  output nodes (incoming edges) plus over its input nodes (outgoing edges). Low entropy = few
  dominant edges per node, which is what pruning needs.

Two magnitude metrics (``metric=``):

* ``"edge_forward_spline_n"`` (default; pykan's default ``reg_metric``): the standard deviation
  over the batch of the edge activation ``phi_ij(x_i)`` (base + spline branches, masked) divided
  by ``std(x_i) + 0.1``, the spread of the edge's input. A constant edge has magnitude 0 (it is
  folded into a bias by pruning), and the magnitude is a slope-like quantity, comparable across
  layers whatever the scale of their inputs. The entropy normalizes with ``p = A / (sum A + 1)``
  (pykan): a node whose edges are all small has near-zero entropy, so the entropy term never
  pushes a dying node to keep several edges alive.
* ``"mean_abs"``: the paper's ``|phi_ij|_1 = mean_batch |phi_ij(x_i)|`` with the entropy of
  ``p = A / sum A``.

The input spread of layer ``l > 0`` is the spread of the sum of the previous layer's edges
(the bias is a constant and does not change it); layer 0 needs the network input ``x`` (without
it, its denominator is 1). ``penalty`` adds the optional coefficient L1 (``mean |coef|``) and
smoothness (``mean |coef[m+1] - coef[m]|``) terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["METRICS", "edge_scale", "input_spreads", "layer_l1", "layer_entropy", "penalty"]

METRICS = ("edge_forward_spline_n", "mean_abs")
INPUT_SPREAD_EPS = 0.1  # pykan: std(x_i) + 0.1
_EPS = 1e-8
_LOG_EPS = 1e-4  # pykan: log2(p + 1e-4)


def _safe_std(a: jax.Array, axis: int = 0) -> jax.Array:
    """Standard deviation with a finite (zero) gradient where it is 0 (dead edges)."""
    var = jnp.var(a, axis=axis)
    pos = var > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, var, 1.0)), 0.0)


def input_spreads(edge_acts: Sequence[jax.Array], x: jax.Array | None = None) -> list[jax.Array]:
    """Per layer ``(n_l,)``: the std over the batch of each layer input (layer 0 from ``x``; 1 if None)."""
    out = []
    for l, acts in enumerate(edge_acts):
        if l == 0:
            out.append(jnp.ones(acts.shape[1], acts.dtype) if x is None else _safe_std(jnp.asarray(x, acts.dtype)))
        else:
            out.append(_safe_std(jnp.sum(edge_acts[l - 1], axis=1)))
    return out


def edge_scale(edge_acts: jax.Array, spread: jax.Array | None = None, *, metric: str = "mean_abs") -> jax.Array:
    """``(batch, n, o) -> (n, o)`` edge magnitudes.

    Args:
      edge_acts: one layer's ``(batch, n, o)`` edge activations.
      spread: ``(n,)`` std of the layer's inputs (``edge_forward_spline_n`` only; default 1).
      metric: ``"mean_abs"`` (``mean |phi|``, the default here for backward compatibility) or
        ``"edge_forward_spline_n"`` (``std(phi) / (spread + 0.1)``).
    """
    if metric == "mean_abs":
        return jnp.mean(jnp.abs(edge_acts), axis=0)
    if metric == "edge_forward_spline_n":
        s = _safe_std(edge_acts, axis=0)
        spread = jnp.ones(edge_acts.shape[1], s.dtype) if spread is None else spread
        return s / (spread[:, None] + INPUT_SPREAD_EPS)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def layer_l1(scale: jax.Array) -> jax.Array:
    """Sum of the edge magnitudes ``scale (n, o)``."""
    return jnp.sum(scale)


def _entropy(p_unnorm: jax.Array, axis: int, offset: float = 0.0) -> jax.Array:
    total = jnp.sum(p_unnorm, axis=axis, keepdims=True)
    if offset:
        p = p_unnorm / (total + offset)
        return -jnp.sum(p * jnp.log2(p + _LOG_EPS), axis=axis)
    p = p_unnorm / (total + _EPS)
    return -jnp.sum(p * jnp.log2(p + _EPS), axis=axis)


def layer_entropy(scale: jax.Array, *, offset: float = 0.0) -> jax.Array:
    """Mean node entropy of ``scale (n, o)``: over output nodes (incoming) plus input nodes (outgoing).

    ``offset=0``: ``p = A / sum A`` (the paper); ``offset=1``: ``p = A / (sum A + 1)`` (pykan).
    """
    return jnp.mean(_entropy(scale, 0, offset)) + jnp.mean(_entropy(scale, 1, offset))


def penalty(
    edge_acts: Sequence[jax.Array],
    layer_params: Sequence[dict] | None = None,
    *,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
    x: jax.Array | None = None,
    metric: str = "edge_forward_spline_n",
) -> jax.Array:
    """The regularizer to add, times an overall ``lamb``, to the training loss.

    Args:
      edge_acts: per layer ``(batch, n_l, n_{l+1})`` edge activations (``KAN.edge_activations``).
      layer_params: per layer params dicts with ``coef (n, o, m)``; needed only when
        ``lamb_coef`` or ``lamb_coefdiff`` is non-zero.
      lamb_l1: weight of the L1 of edge magnitudes.
      lamb_entropy: weight of the node entropy.
      lamb_coef: weight of the mean absolute spline coefficient.
      lamb_coefdiff: weight of the mean absolute difference of neighbouring coefficients.
      x: ``(batch, n_0)`` the network input (spread of layer 0's inputs, ``edge_forward_spline_n``).
      metric: ``"edge_forward_spline_n"`` (pykan's default) or ``"mean_abs"`` (module docstring).

    Returns:
      Scalar penalty.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    total = jnp.zeros((), jnp.result_type(*edge_acts))
    spreads = input_spreads(edge_acts, x) if metric == "edge_forward_spline_n" else [None] * len(edge_acts)
    offset = 1.0 if metric == "edge_forward_spline_n" else 0.0
    for acts, spread in zip(edge_acts, spreads):
        scale = edge_scale(acts, spread, metric=metric)
        total = total + lamb_l1 * layer_l1(scale) + lamb_entropy * layer_entropy(scale, offset=offset)
    if lamb_coef or lamb_coefdiff:
        if layer_params is None:
            raise ValueError("penalty: layer_params is required when lamb_coef or lamb_coefdiff is non-zero")
        for p in layer_params:
            coef = p["coef"]
            total = total + lamb_coef * jnp.mean(jnp.abs(coef))
            total = total + lamb_coefdiff * jnp.mean(jnp.abs(jnp.diff(coef, axis=-1)))
    return total
