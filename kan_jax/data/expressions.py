"""Datasets from symbolic formulas (sympy strings such as "exp(sin(pi*x_1)+x_2**2)")."""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.special
import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    parse_expr,
    standard_transformations,
)

from kan_jax.data._core import Dataset, make_regression

__all__ = ["parse_expression", "lambdify_expression", "expression_dataset"]

_X_NAME = re.compile(r"^x_(\d+)$")
_TRANSFORMS = standard_transformations + (convert_xor,)

# numpy-style spellings accepted in formulas (the AI Feynman table uses them).
_FUNCTION_ALIASES = {
    "arcsin": sympy.asin,
    "arccos": sympy.acos,
    "arctan": sympy.atan,
    "arcsinh": sympy.asinh,
    "arccosh": sympy.acosh,
    "arctanh": sympy.atanh,
    "ln": sympy.log,
}


def _elliptic_e(*args):
  if len(args) == 1:
    return scipy.special.ellipe(args[0])
  return scipy.special.ellipeinc(*args)


# sympy functions lambdify does not map to scipy by itself.
_LAMBDIFY_EXTRA = {
    "elliptic_f": scipy.special.ellipkinc,
    "elliptic_e": _elliptic_e,
    "elliptic_k": scipy.special.ellipk,
}


def _allowed_text(variables: Sequence[str] | None) -> str:
  if variables is None:
    return "x_1, x_2, ... (x_<positive integer>)"
  return ", ".join(variables) if variables else "(none)"


def parse_expression(expr: str, *, variables: Sequence[str] | None = None) -> sympy.Expr:
  """Parses a formula string into a sympy expression over named variables.

  Every name in `variables` becomes a plain `sympy.Symbol`, even if it clashes
  with a sympy function or constant (`gamma`, `beta`, `E`, `I`, `pi`, ...) or a
  Python keyword (`lambda`). numpy spellings `arcsin`, `ln`, ... and `^` for
  power are accepted.

  Args:
    expr: the formula, e.g. "exp(sin(pi*x_1)+x_2**2)".
    variables: allowed variable names; default: any `x_<i>` (i >= 1).

  Returns:
    The sympy expression. Its free symbols are a subset of the variables.

  Raises:
    ValueError: (one line) if the string does not parse or uses a name that is
      not an allowed variable.
  """
  if not isinstance(expr, str) or not expr.strip():
    raise ValueError(
        f"expression {expr!r} must be a non-empty string in the variables "
        f"{_allowed_text(variables)}"
    )
  text = expr
  local: dict[str, Any] = dict(_FUNCTION_ALIASES)
  if variables is not None:
    if len(set(variables)) != len(variables):
      raise ValueError(f"variables must be distinct, got {tuple(variables)!r}")
    for v in variables:
      if not isinstance(v, str) or not v.isidentifier():
        raise ValueError(f"variable name {v!r} is not a valid identifier")
      if keyword.iskeyword(v):
        placeholder = f"__kanvar_{v}"
        text = re.sub(rf"(?<![\w.]){re.escape(v)}(?!\w)", placeholder, text)
        local[placeholder] = sympy.Symbol(v)
      else:
        local[v] = sympy.Symbol(v)
  try:
    parsed = parse_expr(text, local_dict=local, transformations=_TRANSFORMS)
    parsed = sympy.sympify(parsed)
  except Exception as err:  # sympy raises many error types.
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    raise ValueError(
        f"cannot parse expression {expr!r} ({type(err).__name__}: {msg}); "
        f"allowed variables: {_allowed_text(variables)}"
    ) from None
  if not isinstance(parsed, sympy.Expr):
    raise ValueError(
        f"expression {expr!r} is not a scalar formula (got {type(parsed).__name__}); "
        f"allowed variables: {_allowed_text(variables)}"
    )
  unknown = []
  for s in parsed.free_symbols:
    ok = (s.name in variables) if variables is not None else bool(_X_NAME.match(s.name))
    if variables is None and ok and int(_X_NAME.match(s.name).group(1)) < 1:
      ok = False
    if not ok:
      unknown.append(s.name)
  # Undefined functions (e.g. "foo(x_1)") are unknown names too.
  unknown += [str(f.func) for f in parsed.atoms(sympy.core.function.AppliedUndef)]
  if unknown:
    raise ValueError(
        f"expression {expr!r} uses unknown name(s) {', '.join(sorted(set(unknown)))}; "
        f"allowed variables: {_allowed_text(variables)}"
    )
  return parsed


def lambdify_expression(expr: sympy.Expr, variables: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
  """Compiles a sympy expression into `f(x) -> y` for numpy arrays.

  Args:
    expr: a sympy expression whose free symbols are named in `variables`.
    variables: the input names, in column order.

  Returns:
    A function mapping x of shape `(N, len(variables))` to y of shape `(N,)`
    (constants are broadcast), evaluated with numpy/scipy in float64.
  """
  symbols = [sympy.Symbol(v) for v in variables]
  f = sympy.lambdify(symbols, expr, modules=[_LAMBDIFY_EXTRA, "scipy", "numpy"])

  def fn(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
      y = np.asarray(f(*(x[:, i] for i in range(x.shape[1]))))
    return np.broadcast_to(y, (x.shape[0],))

  return fn


def _infer_variables(expr: str, n_var: int | None) -> tuple[str, ...]:
  parsed = parse_expression(expr)
  indices = [int(_X_NAME.match(s.name).group(1)) for s in parsed.free_symbols]
  largest = max(indices, default=0)
  if n_var is None:
    n_var = largest
    if n_var == 0:
      raise ValueError(
          f"expression {expr!r} uses no variable x_1, x_2, ...; pass n_var to "
          "build a dataset of a constant"
      )
  elif n_var < largest:
    raise ValueError(
        f"expression {expr!r} uses x_{largest} but n_var={n_var}; allowed "
        f"variables: {', '.join(f'x_{i}' for i in range(1, n_var + 1))}"
    )
  return tuple(f"x_{i}" for i in range(1, int(n_var) + 1))


def expression_dataset(
    expr: str,
    *,
    n_var: int | None = None,
    variables: Sequence[str] | None = None,
    ranges: Any = (-1.0, 1.0),
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    dtype: Any = np.float32,
    name: str | None = None,
) -> Dataset:
  """Samples a regression dataset from a formula string.

  Args:
    expr: a sympy formula, e.g. "exp(sin(pi*x_1)+x_2**2)".
    n_var: number of inputs when using `x_1..x_n` (default: the largest index
      used; an expression may ignore some of its inputs).
    variables: explicit input names (in column order) instead of `x_i`.
    ranges: one `(low, high)` for all inputs or one pair per input.
    train_num: number of training samples.
    test_num: number of test samples.
    seed: sampling seed.
    dtype: float32 (default) or float64.
    name: dataset name (default: the expression string).

  Returns:
    A `Dataset` with `x_* (N, n_var)`, `y_* (N, 1)` and `formula` the
    canonical sympy string of `expr`.

  Raises:
    ValueError: if the expression does not parse, uses unknown names, or is
      not finite on the sampled inputs.
  """
  if variables is not None:
    variables = tuple(variables)
    if n_var is not None and n_var != len(variables):
      raise ValueError(f"n_var={n_var} disagrees with {len(variables)} variables")
  else:
    variables = _infer_variables(expr, n_var)
  parsed = parse_expression(expr, variables=variables)
  return make_regression(
      lambdify_expression(parsed, variables),
      len(variables),
      ranges=ranges,
      train_num=train_num,
      test_num=test_num,
      seed=seed,
      dtype=dtype,
      input_names=variables,
      name=expr if name is None else name,
      formula=str(parsed),
  )
