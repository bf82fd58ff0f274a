"""kan_jax: Kolmogorov-Arnold Networks in JAX and Flax."""

__version__ = "0.1.0"
