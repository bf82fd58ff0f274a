"""Formulas from a symbolic KAN: compose, round, simplify, evaluate and verify (sympy).

* :func:`to_sympy` -- one fitted edge ``c f(a x + b) + d`` as a sympy expression;
* :func:`round_constants` -- round floats, snapping integers, small rationals and multiples of pi;
* :func:`symbolic_formula` -- one sympy expression per output of a network whose active edges are
  all symbolic (else :class:`NotSymbolicError`);
* :func:`formula_predict`, :func:`formula_rmse`, :func:`check_formula` -- evaluate formulas on
  data and compare them with the model, so a pipeline reports a formula worse than the model
  instead of hiding it;
* :func:`refit_constants` -- least-squares refit of a formula's linear constants.

Simplification is a fixed sequence of targeted sympy rewrites (the shortest result kept), never
an open-ended ``sympy.simplify``: its time is bounded by the expression, with no timers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import sympy

from kan_jax.compilation import quick_module_fn
from kan_jax.symbolic.library import SYMBOLIC_LIB, SymbolicFunction

__all__ = [
    "NotSymbolicError",
    "to_sympy",
    "round_constants",
    "symbolic_formula",
    "formula_predict",
    "formula_rmse",
    "refit_constants",
    "shorten_formula",
    "check_formula",
]


class NotSymbolicError(ValueError):
    """Raised by :func:`symbolic_formula` when active spline edges remain; ``.edges`` lists them."""

    def __init__(self, edges):
        self.edges = list(edges)
        shown = ", ".join(f"(layer {l}, {i}, {j})" for l, i, j in self.edges[:20])
        more = f" and {len(self.edges) - 20} more" if len(self.edges) > 20 else ""
        super().__init__(
            f"{len(self.edges)} active edge(s) are still splines, not symbolic: {shown}{more}. "
            "Fix them (auto_symbolic / fix_symbolic) or prune them first."
        )




def _non_symbolic_edges(model) -> list[tuple[int, int, int]]:
    bad = []
    for l, lay in enumerate(model.layers):
        m = np.asarray(lay.mask[...])
        for i, j in np.argwhere(m != 0).tolist():
            bad.append((l, i, j))
    return bad


def _pull_constants(expr):
    """``(k * B)^p -> k^p * B^p`` for non-integer powers of sums, ``k > 0`` the constant term of the
    sum (else its first coefficient), so ``0.5 * sqrt(4 + 4 x^2)`` meets its factor ``2`` and
    rounds to ``sqrt(x^2 + 1)`` instead of ``1.0 * sqrt(...)`` with both halves rounded apart."""

    def is_target(e):
        return isinstance(e, sympy.Pow) and isinstance(e.base, sympy.Add) and not e.exp.is_integer

    def pull(e):
        terms = e.base.as_ordered_terms()
        consts = [t for t in terms if t.is_number]
        k = consts[0] if consts else terms[0].as_coeff_Mul()[0]
        if not (k.is_number and k.is_positive) or k == 1:
            return e
        return sympy.Pow(k, e.exp) * sympy.Pow(sympy.expand(e.base / k), e.exp)

    return expr.replace(is_target, pull)


def _snap_tol(digits: int) -> float:
    """Relative snapping tolerance that matches the rounding: 1e-4 at 4 digits, 1e-12 at 12."""
    return 10.0 ** -max(int(digits), 4)


def _simplify(expr, digits: int):
    """Expands sums out of exponents (so constant factors meet and round), rounds, recombines;
    the shorter (``count_ops``) of that with and without ``_monic_denominators`` (which cancels a
    constant shared by a numerator and a denominator, and only lengthens other quotients)."""
    return min((_simplify_with(expr, digits, monic) for monic in (False, True)), key=sympy.count_ops)


def _simplify_with(expr, digits: int, monic: bool):
    expr = round_constants(expr, digits=max(digits, 12), snap_tol=1e-12)
    try:
        e = sympy.expand(expr, power_exp=True, mul=True, multinomial=True, log=False, trig=False)
    except Exception:  # pragma: no cover - sympy corner cases
        e = expr
    e = _pull_constants(e)
    if monic:
        e = _monic_denominators(e)
    e = round_constants(e, digits=digits, snap_tol=_snap_tol(digits))
    e = sympy.powsimp(e, combine="exp")
    e = _targeted_simplify(e)
    return round_constants(_shorter_factored(e), digits=digits, snap_tol=_snap_tol(digits))


def _monic_denominators(expr):
    """Scales each reciprocal of a sum, ``(a x + b)**-n``, to ``a**-n (x + b/a)**-n``: the sum's
    first non-constant term gets coefficient 1 and the factor moves out, where it meets (and
    cancels against) the numerator's constants, e.g. ``0.4542/(0.4542 x + 0.9083)`` ->
    ``1.0/(x + 2.0)``, which rounding then snaps."""

    def is_reciprocal_of_sum(e):
        return e.is_Pow and e.base.is_Add and e.exp.is_Integer and e.exp.is_negative

    def monic(e):
        lead = next((t for t in e.base.as_ordered_terms() if t.free_symbols), None)
        if lead is None:
            return e
        c = lead.as_coeff_Mul()[0]
        if not c.is_Number or c == 0 or c == 1:
            return e
        return c**e.exp * sympy.expand(e.base / c) ** e.exp

    try:
        return expr.replace(is_reciprocal_of_sum, monic)
    except Exception:  # pragma: no cover - sympy corner cases
        return expr


# Above this many operations only the linear-time rewrites run (``trigsimp`` and ``cancel`` can
# take long on big expressions).
_SIMPLIFY_MAX_OPS = 200


def _targeted_simplify(expr):
    """The shortest (``count_ops``) of ``expr`` and a fixed, bounded sequence of targeted sympy
    rewrites: ``together``, ``powsimp``, ``expand_log``, ``factor_terms``, ``cancel``,
    ``trigsimp`` (each also applied to the best so far). No full ``sympy.simplify``, whose
    heuristics can run for minutes on a moderately sized expression."""
    small = sympy.count_ops(expr) <= _SIMPLIFY_MAX_OPS
    steps = [
        sympy.factor_terms,
        lambda e: sympy.powsimp(e, combine="all"),
        lambda e: sympy.expand_log(e, force=False),
        sympy.together,
    ]
    if small:
        steps.append(sympy.cancel)
    if small and _has_trig_pairs(expr):
        steps.append(sympy.trigsimp)
    best, best_ops = expr, sympy.count_ops(expr)
    for step in steps:
        for start in (expr,) if best is expr else (expr, best):
            try:
                cand = step(start)
            except Exception:  # pragma: no cover - sympy corner cases
                continue
            ops = sympy.count_ops(cand)
            if ops < best_ops:
                best, best_ops = cand, ops
    return best


def _has_trig_pairs(expr) -> bool:
    """Whether ``expr`` has two or more distinct trigonometric or hyperbolic terms (``sin(u)`` and
    ``cos(u)``, ``sin(u)`` and ``sin(v)``, ...): every identity ``trigsimp`` shortens with
    (``sin^2 + cos^2 = 1``, double angles, sums to products) needs two. Powers of a single one,
    as in an expanded ``(a + b sin(u))**4``, it cannot shorten, and there it can take tens of
    seconds (factoring the polynomial in ``sin(u)``: 33 s for that expansion at 4 digits)."""
    trig = expr.atoms(sympy.functions.elementary.trigonometric.TrigonometricFunction,
                      sympy.functions.elementary.hyperbolic.HyperbolicFunction)
    return len(trig) >= 2


def _shorter_factored(expr):
    """A polynomial's factored form when it has fewer operations (the expansion above undoes
    ``(x_1 + x_2)**3`` into four terms); anything else unchanged."""
    syms = sorted(expr.free_symbols, key=str)
    if not syms or not expr.is_polynomial(*syms) or sympy.count_ops(expr) > 80:
        return expr
    try:
        factored = sympy.factor(expr)
    except Exception:  # pragma: no cover - sympy corner cases
        return expr
    return factored if sympy.count_ops(factored) < sympy.count_ops(expr) else expr


def symbolic_formula(
    model,
    *,
    input_names: Sequence[str] | None = None,
    digits: int = 4,
    simplify: bool = True,
) -> list[sympy.Expr]:
    """The network as sympy expressions, one per output.

    Every active edge must be symbolic (pruned edges count as 0). Layer ``l`` node ``j`` is
    ``bias_j + sum_i (c f(a x_i + b) + d)`` over its symbolic edges. Constants are rounded with
    :func:`round_constants` (integers, small rationals and rational multiples of pi,
    1/pi and 1/sqrt(2 pi) within a relative ``10**-digits`` are snapped; others rounded to ``digits`` decimals). With ``simplify``, sums inside ``exp`` are expanded
    first, so that constant factors combine (and snap, e.g. ``0.5 e^{0.6931}`` -> 1) before the
    rewrites.

    Args:
      model: a ``kan_jax.KAN``.
      input_names: names of the inputs (default ``x_1 .. x_n``).
      digits: decimals kept for constants that do not snap.
      simplify: simplify the expressions (a fixed sequence of targeted sympy rewrites, the
        shortest kept; no open-ended ``sympy.simplify``).

    Returns:
      ``widths[-1]`` sympy expressions.

    Raises:
      NotSymbolicError: listing the active edges that are still splines.
    """
    bad = _non_symbolic_edges(model)
    if bad:
        raise NotSymbolicError(bad)
    n_in = model.layers[0].in_features
    names = [f"x_{k + 1}" for k in range(n_in)] if input_names is None else list(input_names)
    if len(names) != n_in:
        raise ValueError(f"need {n_in} input names, got {len(names)}")
    nodes: list[Any] = [sympy.Symbol(nm) for nm in names]
    for lay in model.layers:
        bias = np.asarray(lay.bias[...], np.float64)
        outs: list[Any] = [sympy.Float(float(b)) for b in bias]
        for i, j, fn, p in lay.symbolic.entries():
            a, b, c, d = (sympy.Float(float(v)) for v in p)
            outs[j] = outs[j] + (c * fn.sympy_fn(a * nodes[i] + b) + d)
        nodes = outs
    def rounded(e):
        return round_constants(e, digits=digits, snap_tol=_snap_tol(digits))

    if not simplify:
        return [rounded(e) for e in nodes]
    return [_simplify(e, digits) for e in nodes]


def _symbols_for(exprs, names):
    by_name = {}
    for e in exprs:
        for s in sympy.sympify(e).free_symbols:
            by_name[s.name] = s
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise ValueError(f"formula uses {unknown}, not among the input names {list(names)}")
    return [by_name.get(nm, sympy.Symbol(nm)) for nm in names]


def formula_predict(formulas: Sequence[Any], input_names: Sequence[str], x) -> np.ndarray:
    """Evaluates sympy formulas (or strings) with numpy: ``x (N, n)`` -> ``(N, len(formulas))``."""
    exprs = [sympy.sympify(f) if isinstance(f, str) else f for f in formulas]
    x = np.asarray(x, np.float64)
    syms = _symbols_for(exprs, input_names)
    cols = [x[:, k] for k in range(x.shape[1])]
    out = np.empty((x.shape[0], len(exprs)))
    for k, e in enumerate(exprs):
        out[:, k] = _evaluate(e, syms, cols, x.shape[0])
    return out


def _evaluate(expr, syms, cols, n: int) -> np.ndarray:
    """``expr`` on the columns ``cols`` with numpy: ``(n,)`` float64, NaN where complex or undefined."""
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return np.full((n,), np.nan)
    with np.errstate(all="ignore"):
        v = np.asarray(sympy.lambdify(syms, expr, modules="numpy")(*cols))
        if np.iscomplexobj(v):
            v = np.where(np.abs(v.imag) < 1e-12, v.real, np.nan)
    return np.broadcast_to(np.asarray(v, np.float64), (n,))


def formula_rmse(formulas: Sequence[Any], input_names: Sequence[str], x, y) -> float:
    """RMSE of the formulas against targets ``y (N,)`` or ``(N, n_out)``; ``inf`` if non-finite."""
    pred = formula_predict(formulas, input_names, x)
    y = np.asarray(y, np.float64).reshape(pred.shape[0], -1)
    err = float(np.sqrt(np.mean((pred - y) ** 2)))
    return err if np.isfinite(err) else float("inf")


def refit_constants(formulas: Sequence[Any], input_names: Sequence[str], x, y, *, digits: int = 4) -> list[sympy.Expr]:
    """The formulas with their linear constants refit to the data, then rounded and snapped.

    Each formula is read as ``c_0 + sum_i c_i m_i(x)`` (its top-level terms; a term's numeric
    factor is its coefficient, a term without symbols is ``c_0``), and the ``c_i`` are the least
    squares fit to ``y`` on ``x``, rounded as ``symbolic_formula`` rounds (``digits``). After the
    network's small offsets are rounded away (a log edge's ``log(q + 3e-5)`` becomes ``log(q)``)
    the overall factor that absorbed them is off by more than the snapping tolerance
    (``0.07960 q/(epsilon r^2)``); refit, it is ``1/(4 pi)`` again.

    Args:
      formulas: sympy expressions (or strings), one per output.
      input_names: names of the columns of ``x``.
      x: ``(N, n)`` inputs; y: ``(N,)`` or ``(N, len(formulas))`` targets.
      digits: decimals kept for constants that do not snap.

    Returns:
      One expression per formula; a formula whose terms cannot be evaluated finitely (or has
      none to refit) comes back unchanged.
    """
    exprs = [sympy.sympify(f) if isinstance(f, str) else f for f in formulas]
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(x.shape[0], -1)
    syms = _symbols_for(exprs, input_names)
    cols = [x[:, k] for k in range(x.shape[1])]

    def refit(expr, target):
        if not expr.free_symbols:
            return expr
        parts = _terms(expr, constant=True)
        design = np.stack([_evaluate(m, syms, cols, x.shape[0]) for m in parts], axis=1)
        if not np.all(np.isfinite(design)):
            return expr
        c, *_ = np.linalg.lstsq(design, target, rcond=None)
        if not np.all(np.isfinite(c)):
            return expr
        new = sympy.Add(*(sympy.Float(float(ci)) * m for ci, m in zip(c, parts)))
        return round_constants(new, digits=digits, snap_tol=_snap_tol(digits))

    return [refit(e, y[:, k]) for k, e in enumerate(exprs)]


def _terms(expr, *, constant: bool = False) -> list:
    """``expr``'s top-level terms as monomials ``m_i``: a term's numeric factors, also those inside
    it (``1/(1.0083 chi + 1.0083)``), are its coefficient. A constant term is the monomial ``1``
    (``constant``) or left out."""
    return [sympy.factor_terms(t.as_coeff_Mul()[1]).as_coeff_Mul()[1] for t in sympy.Add.make_args(expr)
            if constant or t.free_symbols]


def shorten_formula(formula: Any, input_names: Sequence[str], x, y, *, max_ops: int, digits: int = 4):
    """The best sub-sum of a long formula with at most ``max_ops`` operations, and its RMSE.

    ``formula`` is read as ``c_0 + sum_i c_i m_i(x)`` (its top-level terms, as in
    :func:`refit_constants`); terms are dropped one at a time, each time the one whose removal
    leaves the lowest least-squares RMSE on ``(x, y)`` with the remaining ``c`` refit (backward
    elimination), until the formula, constants rounded to ``digits``, has at most ``max_ops``
    operations (sympy's ``count_ops``). A reading of an inexact network as a long sum of small
    corrections thus becomes its few dominant terms, with an honest error.

    Args:
      formula: a sympy expression or string (one output).
      input_names: names of the columns of ``x``.
      x: ``(N, n)`` inputs; y: ``(N,)`` targets.
      max_ops: the size bound.
      digits: decimals kept for constants that do not snap.

    Returns:
      ``(expr, rmse)``, or ``(None, inf)`` when no sub-sum is short enough (one term alone is
      longer than ``max_ops``, or the terms cannot be evaluated finitely on ``x``).
    """
    expr = sympy.sympify(formula) if isinstance(formula, str) else formula
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(-1)
    syms = _symbols_for([expr], input_names)
    cols = [x[:, k] for k in range(x.shape[1])]
    terms = list(dict.fromkeys(_terms(expr)))
    if not terms:
        return None, float("inf")
    design = np.stack([_evaluate(m, syms, cols, x.shape[0]) for m in terms], axis=1)
    usable = np.all(np.isfinite(design), axis=0)
    terms, design = [t for t, ok in zip(terms, usable) if ok], design[:, usable]
    ones = np.ones((x.shape[0], 1))

    def fit(keep):
        a = np.concatenate([ones, design[:, keep]], axis=1)
        c, *_ = np.linalg.lstsq(a, y, rcond=None)
        return c, float(np.sqrt(np.mean((a @ c - y) ** 2)))

    def build(keep, c):
        new = sympy.Float(float(c[0])) + sympy.Add(*(sympy.Float(float(ci)) * terms[k] for ci, k in zip(c[1:], keep)))
        return round_constants(new, digits=digits, snap_tol=_snap_tol(digits))

    keep = list(range(len(terms)))
    while keep:
        c, _ = fit(keep)
        short = build(keep, c)
        if sympy.count_ops(short) <= max_ops:
            rmse = float(formula_rmse([short], input_names, x, y))
            return short, (rmse if np.isfinite(rmse) else float("inf"))
        if len(keep) == 1:
            break
        drop = min(keep, key=lambda k: fit([j for j in keep if j != k])[1])
        keep.remove(drop)
    return None, float("inf")


def check_formula(
    model,
    formulas: Sequence[Any],
    x,
    *,
    y=None,
    input_names: Sequence[str] | None = None,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Compares formulas with the model on inputs ``x``, and both with targets ``y`` if given.

    Returns:
      ``model_rmse`` and ``formula_rmse`` (vs ``y``; ``None`` without it),
      ``formula_vs_model_rmse``, ``agreement`` (``formula_vs_model_rmse <= rtol * max(std of the
      model outputs, 1e-12)``, with a finite formula), and ``far_worse`` (the formula's error vs
      ``y`` exceeds ten times the model's plus ``rtol * std(y)``), so a caller can report a formula
      much worse than the model instead of hiding it.
    """
    x_np = np.asarray(x, np.float64)
    names = [f"x_{k + 1}" for k in range(x_np.shape[1])] if input_names is None else list(input_names)
    pred_f = formula_predict(formulas, names, x_np)
    pred_m = np.asarray(_forward(model, x if isinstance(x, jax.Array) else jax.device_put(np.asarray(x))), np.float64).reshape(pred_f.shape[0], -1)
    with np.errstate(all="ignore"):
        vs_model = float(np.sqrt(np.mean((pred_f - pred_m) ** 2)))
    vs_model = vs_model if np.isfinite(vs_model) else float("inf")
    scale = max(float(np.std(pred_m)), 1e-12)
    out = {
        "formula_vs_model_rmse": vs_model,
        "agreement": bool(vs_model <= rtol * scale),
        "model_rmse": None,
        "formula_rmse": None,
        "far_worse": None,
    }
    if y is not None:
        yy = np.asarray(y, np.float64).reshape(pred_f.shape[0], -1)
        m_rmse = float(np.sqrt(np.mean((pred_m - yy) ** 2)))
        with np.errstate(all="ignore"):
            f_rmse = float(np.sqrt(np.mean((pred_f - yy) ** 2)))
        f_rmse = f_rmse if np.isfinite(f_rmse) else float("inf")
        out.update(model_rmse=m_rmse, formula_rmse=f_rmse, far_worse=bool(f_rmse > 10 * m_rmse + rtol * float(np.std(yy))))
    return out


def to_sympy(
    name: str,
    params: Sequence[float] | np.ndarray,
    x_sym: Any,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
) -> sympy.Expr:
    """The sympy expression ``c * f(a * x + b) + d`` of a fitted edge.

    Args:
      name: Library key of ``f``.
      params: ``(4,)`` ``[a, b, c, d]``.
      x_sym: A sympy expression (usually a Symbol) to substitute for ``x``.
      lib: Library (default :data:`SYMBOLIC_LIB`).

    Returns:
      A sympy expression with float coefficients (see :func:`round_constants`).
    """
    lib = SYMBOLIC_LIB if lib is None else lib
    a, b, c, d = (sympy.Float(float(v)) for v in np.asarray(params, np.float64))
    return c * lib[name].sympy_fn(a * x_sym + b) + d


# Irrational units a constant may be a small rational multiple of, with the denominators tried:
# pi (2*pi*f, pi/2), 1/pi (Coulomb's 1/(4*pi*epsilon), hbar = h/(2*pi)) and 1/sqrt(2*pi) (the
# Gaussian's normalization). A snap that costs accuracy is undone by the callers' digit
# escalation (``symbolic_formula`` at more digits snaps with a tighter tolerance).
_SNAP_UNITS = tuple((unit, float(unit), qs) for unit, qs in (
    (sympy.pi, (1, 2, 3, 4, 6)),
    (1 / sympy.pi, (1, 2, 3, 4, 6, 8, 12, 16, 20)),
    (1 / sympy.sqrt(2 * sympy.pi), (1, 2, 4)),
))


# Largest |p| of a snapped fraction p/q or multiple p/q * unit. The candidates are then few (each
# is a hypothesis that the constant is exact): with any p, a constant near 6384 would "snap" to
# 2032*pi and one near 0.61 to 23/(12*pi) (tolerance 1e-4: a few percent of all constants).
_SNAP_MAX_NUMERATOR = 12


def _snap_float(v: float, digits: int, snap_tol: float) -> sympy.Expr:
    tol = snap_tol * max(1.0, abs(v))
    r = round(v)
    if abs(v - r) <= tol:
        return sympy.Integer(r)
    for q in range(2, 13):
        p = round(v * q)
        if abs(p) <= _SNAP_MAX_NUMERATOR and abs(v - p / q) <= tol:
            return sympy.Rational(p, q)
    for unit, u, qs in _SNAP_UNITS:
        for q in qs:
            p = round(v * q / u)
            if p != 0 and abs(p) <= _SNAP_MAX_NUMERATOR and abs(v - p * u / q) <= tol:
                return sympy.Rational(p, q) * unit
    rounded = round(v, digits)
    if rounded == 0:
        return sympy.Integer(0)
    return sympy.Float(rounded)


def round_constants(expr: sympy.Expr, *, digits: int = 4, snap_tol: float = 1e-4) -> sympy.Expr:
    """Rounds the float constants of an expression, snapping simple values.

    Each float ``v`` is replaced by the first of these within
    ``snap_tol * max(1, |v|)``: an integer, a rational ``p/q`` with
    ``q <= 12``, a multiple ``p*pi/q`` with ``q in {1, 2, 3, 4, 6}``, ``p/(q*pi)``
    with ``q in {1, 2, 3, 4, 6, 8, 12, 16, 20}``, ``p/(q*sqrt(2*pi))`` with
    ``q in {1, 2, 4}`` (``|p| <= 12`` in all but the integer); otherwise it is
    rounded to ``digits`` decimal places (0 if that rounds to zero). E.g. ``3.14159 -> pi``, ``2.0000001 -> 2``,
    ``0.4999999 -> 1/2``, ``0.0795775 -> 1/(4*pi)``, ``0.3989423 -> 1/sqrt(2*pi)``.

    Args:
      expr: A sympy expression.
      digits: Decimal places kept for floats that are not snapped.
      snap_tol: Relative snapping tolerance.

    Returns:
      The expression with constants replaced (sympy re-simplifies products
      such as ``1*x`` automatically).
    """
    expr = sympy.sympify(expr)
    repl = {f: _snap_float(float(f), digits, snap_tol) for f in expr.atoms(sympy.Float)}
    return expr.xreplace(repl)


@quick_module_fn
def _forward(model, x: jax.Array) -> jax.Array:
    """``model(x)``, one compiled program per network structure."""
    return model(x)
