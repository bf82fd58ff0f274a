"""Special functions of two variables (KAN paper, Liu et al. 2024, Table 2).

Each dataset is `y = f(x_1, x_2)` for a `scipy.special` function, sampled on a
box where the function is finite and smooth (see `SpecialFunction.ranges` and
docs/DATA.md).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.special as sp

from kan_jax.data._core import Dataset, make_regression

__all__ = ["SpecialFunction", "special_functions", "special_function", "special_dataset",
           "sph_harm_real"]


@dataclasses.dataclass(frozen=True)
class SpecialFunction:
  """A two-input special function and its sampling box.

  Attributes:
    name: dataset name, e.g. "ellipkinc" or "sph_harm_12" (m = 1, n = 2).
    fn: maps `(x_1, x_2)` arrays (float64, same shape) to real values.
    ranges: `((low_1, high_1), (low_2, high_2))`.
    description: what `x_1`, `x_2` and `y` are, in scipy's terms.
    formula: a sympy-parsable formula in `x_1, x_2`, or None when sympy has
      no matching function with the same convention.
  """

  name: str
  fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
  ranges: tuple[tuple[float, float], tuple[float, float]]
  description: str
  formula: str | None = None


def sph_harm_real(m: int, n: int, polar: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
  """Real part of the spherical harmonic `Y_n^m(polar, azimuth)` via scipy.

  Uses `scipy.special.sph_harm_y(n, m, polar, azimuth)` (SciPy >= 1.15) and
  falls back to the older `sph_harm(m, n, azimuth, polar)`.

  Args:
    m: order, `|m| <= n`.
    n: degree.
    polar: polar (colatitude) angle in [0, pi], any shape.
    azimuth: azimuthal angle in [0, 2 pi], same shape.

  Returns:
    `Re Y_n^m`, same shape as the inputs.
  """
  if hasattr(sp, "sph_harm_y"):
    return np.real(sp.sph_harm_y(n, m, polar, azimuth))
  return np.real(sp.sph_harm(m, n, azimuth, polar))  # pragma: no cover (SciPy < 1.15)


def _ellipj_sn(u, m):
  return sp.ellipj(u, m)[0]


def _lpmv(m):
  return lambda v, x: sp.lpmv(m, v, x)


def _sph(m, n):
  return lambda polar, azimuth: sph_harm_real(m, n, polar, azimuth)


def _build() -> dict[str, SpecialFunction]:
  table = [
      SpecialFunction("ellipj", _ellipj_sn, ((-2.0, 2.0), (0.0, 1.0)),
                      "y = sn(x_1 | x_2): Jacobi elliptic sn, scipy.special.ellipj(u=x_1, m=x_2)[0]"),
      SpecialFunction("ellipkinc", sp.ellipkinc, ((-1.0, 1.0), (0.0, 1.0)),
                      "y = F(x_1 | x_2): incomplete elliptic integral of the first kind, amplitude x_1, parameter m=x_2",
                      "elliptic_f(x_1, x_2)"),
      SpecialFunction("ellipeinc", sp.ellipeinc, ((-1.0, 1.0), (0.0, 1.0)),
                      "y = E(x_1 | x_2): incomplete elliptic integral of the second kind, amplitude x_1, parameter m=x_2",
                      "elliptic_e(x_1, x_2)"),
      SpecialFunction("jv", sp.jv, ((0.0, 2.0), (0.0, 5.0)),
                      "y = J_{x_1}(x_2): Bessel function of the first kind, order x_1",
                      "besselj(x_1, x_2)"),
      SpecialFunction("yv", sp.yv, ((0.0, 2.0), (1.0, 5.0)),
                      "y = Y_{x_1}(x_2): Bessel function of the second kind, order x_1",
                      "bessely(x_1, x_2)"),
      SpecialFunction("kv", sp.kv, ((0.0, 2.0), (1.0, 5.0)),
                      "y = K_{x_1}(x_2): modified Bessel function of the second kind, order x_1",
                      "besselk(x_1, x_2)"),
      SpecialFunction("iv", sp.iv, ((0.0, 2.0), (0.0, 3.0)),
                      "y = I_{x_1}(x_2): modified Bessel function of the first kind, order x_1",
                      "besseli(x_1, x_2)"),
  ]
  for m in (0, 1, 2):
    table.append(SpecialFunction(
        f"lpmv_m{m}", _lpmv(m), ((0.0, 4.0), (0.0, 0.9)),
        f"y = P_{{x_1}}^{m}(x_2): associated Legendre function, order m={m}, "
        "real degree x_1, scipy.special.lpmv(m, x_1, x_2)"))
  for m, n in ((0, 1), (1, 1), (0, 2), (1, 2), (2, 2)):
    table.append(SpecialFunction(
        f"sph_harm_{m}{n}", _sph(m, n), ((0.0, float(np.pi)), (0.0, float(2 * np.pi))),
        f"y = Re Y_{n}^{m}(x_1, x_2): real part of the spherical harmonic, "
        "polar angle x_1, azimuth x_2"))
  return {f.name: f for f in table}


_TABLE = _build()
# Earlier names, still accepted: lpmv_m_0 -> lpmv_m0, sph_harm_m_1_n_2 -> sph_harm_12.
_ALIASES = {**{f"lpmv_m_{m}": f"lpmv_m{m}" for m in (0, 1, 2)},
            **{f"sph_harm_m_{n[-2]}_n_{n[-1]}": n for n in _TABLE if n.startswith("sph_harm_")}}


def special_functions() -> tuple[str, ...]:
  """Returns the names accepted by `special_dataset`."""
  return tuple(_TABLE)


def special_function(name: str) -> SpecialFunction:
  """Returns the `SpecialFunction` record for `name`.

  Raises:
    ValueError: for an unknown name, listing close matches.
  """
  name = _ALIASES.get(name, name)
  if name in _TABLE:
    return _TABLE[name]
  close = difflib.get_close_matches(str(name), list(_TABLE), n=5, cutoff=0.4)
  raise ValueError(
      f"unknown special function {name!r}; close matches: "
      f"{', '.join(close) if close else '(none)'}; allowed: {', '.join(_TABLE)}"
  )


def special_dataset(
    name: str,
    *,
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    dtype: Any = np.float32,
    ranges: Any = None,
) -> Dataset:
  """Samples `y = f(x_1, x_2)` for a special function of `special_functions()`.

  Args:
    name: e.g. "ellipj", "jv", "lpmv_m1", "sph_harm_02" (earlier names such as
      "lpmv_m_1" and "sph_harm_m_0_n_2" are aliases).
    train_num: number of training samples.
    test_num: number of test samples.
    seed: sampling seed.
    dtype: float32 (default) or float64.
    ranges: optional override of the default sampling box (one pair for both
      inputs or two pairs); the function must stay finite there.

  Returns:
    A `Dataset` with `x_* (N, 2)` named `("x_1", "x_2")` and `y_* (N, 1)`.

  Raises:
    ValueError: for an unknown name.
  """
  spec = special_function(name)
  return make_regression(
      lambda x: spec.fn(x[:, 0], x[:, 1]),
      2,
      ranges=spec.ranges if ranges is None else ranges,
      train_num=train_num,
      test_num=test_num,
      seed=seed,
      dtype=dtype,
      name=spec.name,
      formula=spec.formula,
  )
