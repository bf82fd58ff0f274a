"""Symbolic regression with KANs: library functions on edges, formulas out.

Modules:

* :mod:`~kan_jax.symbolic.library` -- the function table (:class:`SymbolicFunction`,
  :data:`SYMBOLIC_LIB`, :func:`register_symbolic`);
* :mod:`~kan_jax.symbolic.fit` -- affine fits ``c f(a x + b) + d`` of library functions to 1-D
  samples and their ranking (:func:`fit_affine`, :func:`rank_functions`, ...);
* :mod:`~kan_jax.symbolic.edges` -- :class:`SymbolicEdges`, the symbolic edges every
  ``KANLayer`` owns (a function index and affine params per edge: data, not structure);
* :mod:`~kan_jax.symbolic.network` -- on a network: :func:`edge_samples`,
  :func:`suggest_symbolic`, :func:`fix_symbolic`, :func:`unfix_symbolic`, :func:`auto_symbolic`;
* :mod:`~kan_jax.symbolic.formula` -- sympy: :func:`symbolic_formula`, :func:`formula_predict`,
  :func:`formula_rmse`, :func:`refit_constants`, :func:`shorten_formula`, :func:`check_formula`.

Example::

    from kan_jax import symbolic as S
    S.auto_symbolic(model, x)            # every active edge -> c f(a x + b) + d
    [expr] = S.symbolic_formula(model)   # exp(x_2**2 + sin(pi*x_1))
    S.check_formula(model, [expr], x_test, y=y_test)
"""

from kan_jax.symbolic.edges import IDENTITY_PARAMS, NO_FUNCTION, SymbolicEdges, SymbolicIndex, symbolic_edge_values
from kan_jax.symbolic.fit import (
    SymbolicCandidate,
    fit_affine,
    fit_affine_all,
    rank_functions,
    rank_functions_batch,
    symbolic_scores,
)
from kan_jax.symbolic.formula import (
    NotSymbolicError,
    check_formula,
    formula_predict,
    formula_rmse,
    refit_constants,
    round_constants,
    shorten_formula,
    symbolic_formula,
    to_sympy,
)
from kan_jax.symbolic.library import GUARD_EPS, SYMBOLIC_LIB, SymbolicFunction, register_symbolic
from kan_jax.symbolic.network import (
    FIT_BATCH_EDGES,
    auto_symbolic,
    edge_samples,
    fix_symbolic,
    suggest_symbolic,
    symbolic_edges,
    unfix_symbolic,
)

__all__ = [
    # library
    "SymbolicFunction", "SYMBOLIC_LIB", "register_symbolic", "GUARD_EPS",
    # fit
    "fit_affine", "fit_affine_all", "symbolic_scores", "SymbolicCandidate", "rank_functions", "rank_functions_batch",
    # edges
    "SymbolicEdges", "SymbolicIndex", "symbolic_edge_values", "IDENTITY_PARAMS", "NO_FUNCTION",
    # network
    "edge_samples", "suggest_symbolic", "fix_symbolic", "unfix_symbolic", "auto_symbolic", "symbolic_edges",
    "FIT_BATCH_EDGES",
    # formula
    "NotSymbolicError", "to_sympy", "round_constants", "symbolic_formula", "formula_predict", "formula_rmse",
    "refit_constants", "shorten_formula", "check_formula",
]
