"""kan_jax: Kolmogorov-Arnold Networks in JAX and Flax.

``kan_jax.KANLayer`` and ``kan_jax.KAN`` are the Flax NNX modules (the primary API);
``kan_jax.linen`` has the Linen equivalents; ``kan_jax.splines`` and ``kan_jax.functional`` are
the pure math underneath.
"""

from kan_jax import bases, functional, splines
from kan_jax.nnx import KAN, EdgeMask, Grid, KANLayer

__version__ = "0.1.0"

__all__ = ["KAN", "KANLayer", "Grid", "EdgeMask", "bases", "functional", "splines"]
