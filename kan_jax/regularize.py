"""Sparsity regularization of KANs (Liu et al. 2024, section 2.5.1), as pure functions.

For a layer with edge activations ``phi_ij`` on a batch, the edge magnitude is
``|phi_ij|_1 = mean_batch |phi_ij(x_i)|`` and

* the L1 term is ``sum_ij |phi_ij|_1``;
* the entropy term is, per node, the entropy of the normalized magnitudes of its edges:
  ``p_ij = |phi_ij|_1 / (sum of that node's edge magnitudes)``, averaged over the layer's output
  nodes (incoming edges) plus over its input nodes (outgoing edges). Low entropy = few dominant
  edges per node, which is what pruning needs.

``penalty`` adds the optional coefficient L1 (``mean |coef|``) and smoothness
(``mean |coef[m+1] - coef[m]|``) terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = ["edge_scale", "layer_l1", "layer_entropy", "penalty"]

_EPS = 1e-8


def edge_scale(edge_acts: jax.Array) -> jax.Array:
    """``(batch, n, o) -> (n, o)``: mean absolute activation of each edge."""
    return jnp.mean(jnp.abs(edge_acts), axis=0)


def layer_l1(scale: jax.Array) -> jax.Array:
    """Sum of the edge magnitudes ``scale (n, o)``."""
    return jnp.sum(scale)


def _entropy(p_unnorm: jax.Array, axis: int) -> jax.Array:
    total = jnp.sum(p_unnorm, axis=axis, keepdims=True)
    p = p_unnorm / (total + _EPS)
    return -jnp.sum(p * jnp.log2(p + _EPS), axis=axis)


def layer_entropy(scale: jax.Array) -> jax.Array:
    """Mean node entropy of ``scale (n, o)``: over output nodes (incoming) plus input nodes (outgoing)."""
    return jnp.mean(_entropy(scale, axis=0)) + jnp.mean(_entropy(scale, axis=1))


def penalty(
    edge_acts: Sequence[jax.Array],
    layer_params: Sequence[dict] | None = None,
    *,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
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

    Returns:
      Scalar penalty.
    """
    total = jnp.zeros((), jnp.result_type(*edge_acts))
    for acts in edge_acts:
        scale = edge_scale(acts)
        total = total + lamb_l1 * layer_l1(scale) + lamb_entropy * layer_entropy(scale)
    if lamb_coef or lamb_coefdiff:
        if layer_params is None:
            raise ValueError("penalty: layer_params is required when lamb_coef or lamb_coefdiff is non-zero")
        for p in layer_params:
            coef = p["coef"]
            total = total + lamb_coef * jnp.mean(jnp.abs(coef))
            total = total + lamb_coefdiff * jnp.mean(jnp.abs(jnp.diff(coef, axis=-1)))
    return total
