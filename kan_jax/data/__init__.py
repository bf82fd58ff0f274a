"""Datasets for KAN experiments (numpy only; imports no model code).

- `make_regression(fn, n_var, ...)`: sample `y = fn(x)` on a box (pykan's
  `create_dataset`).
- `expression_dataset("exp(sin(pi*x_1)+x_2**2)", ...)`: the same from a formula.
- `feynman_dataset("I.6.2", ...)`: the 100 AI Feynman equations
  (Udrescu & Tegmark 2020).
- `special_dataset("ellipkinc", ...)`: two-variable scipy.special functions
  (KAN paper, Liu et al. 2024).
- `classification_dataset("digits", test_num=450)`: scikit-learn's bundled digits,
  breast-cancer and wine sets, split, scaled, one-hot labels.
- `poisson_dataset()`: collocation points of the KAN paper's 2-D Poisson problem.
- `load(config.data)`: the dispatcher the experiment runner calls.

Example:
  >>> from kan_jax import data
  >>> ds = data.expression_dataset("x_1*x_2", train_num=100, test_num=50)
  >>> ds.x_train.shape, ds.y_test.shape
  ((100, 2), (50, 1))
"""

from kan_jax.data._core import Dataset, make_regression, resolve_dtype, with_label_noise
from kan_jax.data.classification import CLASSIFICATION_SETS, classification_dataset, labels_of
from kan_jax.data.expressions import expression_dataset, lambdify_expression, parse_expression
from kan_jax.data.feynman import FeynmanEquation, feynman_dataset, feynman_equations, feynman_names
from kan_jax.data.loader import load
from kan_jax.data.poisson import POISSON_COLUMNS, poisson_dataset, poisson_solution, poisson_source
from kan_jax.data.special import SpecialFunction, special_dataset, special_function, special_functions

__all__ = [
    "CLASSIFICATION_SETS",
    "POISSON_COLUMNS",
    "classification_dataset",
    "labels_of",
    "poisson_dataset",
    "poisson_solution",
    "poisson_source",
    "Dataset",
    "FeynmanEquation",
    "SpecialFunction",
    "expression_dataset",
    "feynman_dataset",
    "feynman_equations",
    "feynman_names",
    "lambdify_expression",
    "load",
    "make_regression",
    "parse_expression",
    "resolve_dtype",
    "special_dataset",
    "with_label_noise",
    "special_function",
    "special_functions",
]
