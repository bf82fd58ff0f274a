"""The AI Feynman equations (Udrescu & Tegmark, Science Advances 2020).

The table `FeynmanEquations.csv` ships with the package: 100 physics formulas,
each with named variables and the sampling range of each variable.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import importlib.resources
import io
from typing import Any

import numpy as np

from kan_jax.data._core import Dataset, make_regression
from kan_jax.data.expressions import lambdify_expression, parse_expression

__all__ = ["FeynmanEquation", "feynman_equations", "feynman_names", "feynman_dataset"]

_CSV = "FeynmanEquations.csv"
_MAX_VARS = 10


@dataclasses.dataclass(frozen=True)
class FeynmanEquation:
  """One row of the AI Feynman table.

  Attributes:
    name: the equation id, e.g. "I.6.2" (the table's `Filename`).
    output: the name of the output quantity, e.g. "f".
    formula: the formula as written in the table (numpy spellings such as
      `arcsin`, `ln` may appear; parse with `kan_jax.data.parse_expression`).
    variables: `(name, low, high)` per input, in the table's order.
    number: the table's `Number` column.
  """

  name: str
  output: str
  formula: str
  variables: tuple[tuple[str, float, float], ...]
  number: int = 0

  @property
  def variable_names(self) -> tuple[str, ...]:
    return tuple(v[0] for v in self.variables)

  @property
  def ranges(self) -> tuple[tuple[float, float], ...]:
    return tuple((lo, hi) for _, lo, hi in self.variables)


@functools.cache
def feynman_equations() -> tuple[FeynmanEquation, ...]:
  """Returns all equations of the AI Feynman table, in table order (cached)."""
  text = importlib.resources.files("kan_jax.data").joinpath(_CSV).read_text(
      encoding="utf-8"
  )
  rows = []
  for row in csv.DictReader(io.StringIO(text)):
    if not (row.get("Filename") or "").strip():
      continue
    n = int(float(row["# variables"]))
    variables = []
    for i in range(1, _MAX_VARS + 1):
      vname = (row.get(f"v{i}_name") or "").strip()
      if not vname:
        break
      variables.append((vname, float(row[f"v{i}_low"]), float(row[f"v{i}_high"])))
    if len(variables) != n:
      raise RuntimeError(
          f"{_CSV}: row {row['Filename']} declares {n} variables but lists {len(variables)}"
      )
    rows.append(
        FeynmanEquation(
            name=row["Filename"].strip(),
            output=row["Output"].strip(),
            formula=row["Formula"].strip(),
            variables=tuple(variables),
            number=int(float(row["Number"])),
        )
    )
  return tuple(rows)


def feynman_names() -> tuple[str, ...]:
  """Returns the equation names ("I.6.2a", "I.6.2", ...)."""
  return tuple(eq.name for eq in feynman_equations())


def _lookup(name: str) -> FeynmanEquation:
  by_name = {eq.name: eq for eq in feynman_equations()}
  if name in by_name:
    return by_name[name]
  key = str(name).strip()
  for candidate in (key, key.removeprefix("feynman_"), key.removeprefix("Feynman_")):
    if candidate in by_name:
      return by_name[candidate]
  close = difflib.get_close_matches(key, list(by_name), n=5, cutoff=0.5)
  hint = ", ".join(close) if close else ", ".join(list(by_name)[:5]) + ", ..."
  raise ValueError(
      f"unknown AI Feynman equation {name!r}; close matches: {hint} "
      f"(see kan_jax.data.feynman_names() for all {len(by_name)})"
  )


def feynman_dataset(
    name: str,
    *,
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    dtype: Any = np.float32,
) -> Dataset:
  """Samples a dataset for one AI Feynman equation.

  Inputs are drawn uniformly in the table's ranges and named as in the table;
  the target is the table's formula, evaluated in float64.

  Args:
    name: the equation id, e.g. "I.6.2" or "II.6.15a".
    train_num: number of training samples.
    test_num: number of test samples.
    seed: sampling seed.
    dtype: float32 (default) or float64.

  Returns:
    A `Dataset` with `x_* (N, n_var)`, `y_* (N, 1)`, `input_names` the table's
    variable names, `output_names=(output,)` and `formula` a sympy string in
    the input names.

  Raises:
    ValueError: for an unknown name (listing close matches).
  """
  eq = _lookup(name)
  names = eq.variable_names
  expr = parse_expression(eq.formula, variables=names)
  return make_regression(
      lambdify_expression(expr, names),
      len(names),
      ranges=eq.ranges,
      train_num=train_num,
      test_num=test_num,
      seed=seed,
      dtype=dtype,
      input_names=names,
      output_names=(eq.output,),
      name=eq.name,
      formula=str(expr),
  )
