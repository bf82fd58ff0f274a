"""Core dataset container and the generic regression sampler.

This module is pure NumPy: the dataset package never imports model code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Dataset", "make_regression", "resolve_dtype", "default_input_names", "with_label_noise"]

_DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype: Any) -> np.dtype:
  """Returns the numpy floating dtype for `dtype` (float32 or float64 only).

  Args:
    dtype: a numpy dtype / scalar type, or the strings "float32" / "float64".

  Returns:
    `np.dtype('float32')` or `np.dtype('float64')`.

  Raises:
    ValueError: for any other dtype.
  """
  try:
    dt = np.dtype(_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
  except TypeError:
    dt = None
  if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
    raise ValueError(
        f"dtype must be one of {sorted(_DTYPES)} (or the numpy types), got {dtype!r}"
    )
  return dt


def default_input_names(n_var: int) -> tuple[str, ...]:
  """Returns ("x_1", ..., "x_n")."""
  return tuple(f"x_{i + 1}" for i in range(n_var))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A dataset split into train and test sets (numpy arrays); regression unless `task` says otherwise.

  Attributes:
    x_train: inputs, shape `(n_train, n_var)`.
    y_train: targets, shape `(n_train, n_out)`.
    x_test: inputs, shape `(n_test, n_var)`.
    y_test: targets, shape `(n_test, n_out)`.
    input_names: one name per input column, length `n_var`.
    output_names: one name per target column, length `n_out`.
    target_std: standard deviation (population, ddof=0, over all entries) of
      `y_test`; `test_nrmse = test_rmse / target_std`.
    ranges: the sampling interval `(low, high)` of each input, length `n_var`.
    name: a short identifier, e.g. "I.6.2" or "ellipkinc".
    formula: the target as a sympy-parsable string in `input_names`, or None
      if unknown. Parse it with `kan_jax.data.parse_expression(formula,
      variables=input_names)` so that names such as `gamma`, `E` or `I` are
      read as variables rather than sympy functions/constants.
    task: the task kind: "regression" (every builder here), "classification"
      (`classification_dataset`: one-hot targets) or "pde" (`poisson_dataset`).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  input_names: tuple[str, ...]
  output_names: tuple[str, ...]
  target_std: float
  ranges: tuple[tuple[float, float], ...]
  name: str
  formula: str | None = None
  task: str = "regression"

  @property
  def n_var(self) -> int:
    """Number of input variables."""
    return self.x_train.shape[1]

  @property
  def n_out(self) -> int:
    """Number of target columns."""
    return self.y_train.shape[1]

  def __repr__(self) -> str:
    return (
        f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
        f"y_train={self.y_train.shape}, x_test={self.x_test.shape}, "
        f"y_test={self.y_test.shape}, dtype={self.x_train.dtype}, "
        f"input_names={self.input_names}, formula={self.formula!r})"
    )


def _normalize_ranges(ranges: Any, n_var: int) -> tuple[tuple[float, float], ...]:
  """Turns `(lo, hi)` or `[(lo, hi), ...]` into one finite pair per input."""
  arr = np.asarray(ranges, dtype=np.float64)
  if arr.shape == (2,):
    arr = np.broadcast_to(arr, (n_var, 2))
  if arr.shape != (n_var, 2):
    raise ValueError(
        f"ranges must be one (low, high) pair or {n_var} pairs, got {ranges!r}"
    )
  if not np.all(np.isfinite(arr)) or np.any(arr[:, 0] >= arr[:, 1]):
    raise ValueError(f"ranges must be finite with low < high, got {ranges!r}")
  return tuple((float(lo), float(hi)) for lo, hi in arr)


def _sample(rng: np.random.Generator, num: int, lows: np.ndarray,
            highs: np.ndarray) -> np.ndarray:
  u = rng.random((num, lows.shape[0]))
  return lows + (highs - lows) * u


def _evaluate(fn: Callable[[np.ndarray], Any], x: np.ndarray, name: str, split: str,
              dtype: np.dtype) -> np.ndarray:
  """`fn(x)` for x `(N, n_var)` (float64) as targets `(N, n_out)` in `dtype`.

  Raises a one-line ValueError when a target is not finite, or does not fit `dtype` (finite in
  float64, infinite after the cast): how many of the split's rows, which output columns, and
  the first such input.
  """
  with np.errstate(all="ignore"):  # non-finite targets are reported below
    y = np.asarray(fn(x))
  if np.iscomplexobj(y):
    if np.any(np.abs(y.imag) > 1e-12 * np.maximum(1.0, np.abs(y.real))):
      raise ValueError(f"dataset {name!r}: fn returned complex values")
    y = y.real
  y = np.asarray(y, dtype=np.float64)
  n = x.shape[0]
  if y.ndim == 0:
    y = np.full((n, 1), float(y))
  elif y.ndim == 1 and y.shape[0] == n:
    y = y[:, None]
  elif not (y.ndim == 2 and y.shape[0] == n):
    raise ValueError(
        f"dataset {name!r}: fn must return shape ({n},) or ({n}, n_out), got {y.shape}"
    )
  with np.errstate(over="ignore"):
    cast = y.astype(dtype)
  bad = ~np.isfinite(cast)
  if np.any(bad):
    rows = np.flatnonzero(bad.any(axis=1))
    cols = ", ".join(str(j + 1) for j in np.flatnonzero(bad.any(axis=0)))
    what = (f"exceed {np.dtype(dtype).name}'s range" if np.all(np.isfinite(y[bad]))
            else "are not finite")
    first = ", ".join(f"{v:.6g}" for v in x[rows[0]])
    raise ValueError(
        f"dataset {name!r}: the targets {what} in {len(rows)} of {n} {split} rows (output column {cols}; "
        f"first at x = ({first})): narrow data.ranges, change the formula or the dtype"
    )
  return cast


def make_regression(
    fn: Callable[[np.ndarray], Any],
    n_var: int,
    *,
    ranges: Any = (-1.0, 1.0),
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    dtype: Any = np.float32,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    name: str = "custom",
    formula: str | None = None,
) -> Dataset:
  """Samples a regression dataset `y = fn(x)` (pykan `create_dataset` style).

  Inputs are drawn uniformly from `ranges` with `numpy.random.default_rng(seed)`;
  train and test sets come from two independent child streams, so changing
  `train_num` leaves the test set unchanged. Inputs are sampled in float64,
  cast to `dtype`, and the targets are `fn` evaluated (in float64) on the
  stored (cast) inputs, so `y == fn(x)` holds exactly up to the final cast.

  Args:
    fn: maps x of shape `(N, n_var)` (float64) to `(N,)` or `(N, n_out)`.
    n_var: number of input variables.
    ranges: one `(low, high)` for all inputs or a sequence of `n_var` pairs.
    train_num: number of training samples `n_train`.
    test_num: number of test samples `n_test`.
    seed: seed of the sampler.
    dtype: float32 (default) or float64 (numpy type or string).
    input_names: names of the inputs; default `("x_1", ..., "x_n")`.
    output_names: names of the targets; default `("y",)` or `("y_1", ...)`.
    name: the dataset name.
    formula: sympy-parsable string of the target in `input_names`, if known.

  Returns:
    A `Dataset` with `x_train (train_num, n_var)`, `y_train (train_num, n_out)`,
    `x_test (test_num, n_var)`, `y_test (test_num, n_out)`.

  Raises:
    ValueError: for bad sizes, ranges, names or dtype, or when `fn` returns
      non-finite values on the samples, or values that overflow `dtype` (one line: how many
      rows, which output columns, the first such input).

  Example:
    >>> ds = make_regression(lambda x: x[:, 0] * x[:, 1], 2, train_num=8)
    >>> ds.x_train.shape, ds.y_train.shape
    ((8, 2), (8, 1))
  """
  n_var = int(n_var)
  if n_var < 1:
    raise ValueError(f"n_var must be >= 1, got {n_var}")
  for label, num in (("train_num", train_num), ("test_num", test_num)):
    if int(num) != num or num < 1:
      raise ValueError(f"{label} must be a positive integer, got {num!r}")
  dt = resolve_dtype(dtype)
  rng_pairs = _normalize_ranges(ranges, n_var)
  names = default_input_names(n_var) if input_names is None else tuple(input_names)
  if len(names) != n_var:
    raise ValueError(f"input_names must have {n_var} entries, got {names!r}")

  lows = np.array([lo for lo, _ in rng_pairs])
  highs = np.array([hi for _, hi in rng_pairs])
  train_rng, test_rng = np.random.default_rng(seed).spawn(2)

  def split(rng, num, split_name):
    x = _sample(rng, int(num), lows, highs).astype(dt)
    # Rounding to float32 may step just outside [low, high]; clip back in.
    x = np.clip(x, lows.astype(dt), highs.astype(dt))
    return x, _evaluate(fn, x.astype(np.float64), name, split_name, dt)

  x_train, y_train = split(train_rng, train_num, "train")
  x_test, y_test = split(test_rng, test_num, "test")
  if y_train.shape[1] != y_test.shape[1]:
    raise ValueError(f"dataset {name!r}: fn returned inconsistent n_out")
  n_out = y_train.shape[1]
  if output_names is None:
    output_names = ("y",) if n_out == 1 else tuple(f"y_{j + 1}" for j in range(n_out))
  output_names = tuple(output_names)
  if len(output_names) != n_out:
    raise ValueError(f"output_names must have {n_out} entries, got {output_names!r}")
  for arr in (x_train, y_train, x_test, y_test):
    arr.setflags(write=False)
  return Dataset(
      x_train=x_train,
      y_train=y_train,
      x_test=x_test,
      y_test=y_test,
      input_names=names,
      output_names=output_names,
      target_std=float(np.std(y_test.astype(np.float64))),
      ranges=rng_pairs,
      name=name,
      formula=formula,
      task="regression",
  )


def with_label_noise(ds: Dataset, *, noise: float, seed: int = 0) -> Dataset:
  """`ds` with Gaussian noise of standard deviation `noise * std(y_train)` added to the training
  targets; the test targets stay the clean function, so test RMSE measures how well a model
  recovers it (and a train RMSE below the noise level is fitting the noise).

  Args:
    ds: a regression dataset.
    noise: relative noise level, >= 0 (0 returns `ds` itself).
    seed: seeds the noise (its own stream, apart from the inputs' sampling).

  Raises:
    ValueError: for a negative or non-finite `noise`, or a dataset that is not regression.
  """
  noise = float(noise)
  if not np.isfinite(noise) or noise < 0:
    raise ValueError(f"data.noise must be a finite number >= 0, got {noise!r}")
  if noise == 0:
    return ds
  if ds.task != "regression":
    raise ValueError(f"data.noise applies to regression datasets, not {ds.task!r} ones")
  rng = np.random.default_rng([int(seed), 7919])
  sigma = noise * float(np.std(ds.y_train))
  y = ds.y_train + rng.normal(0.0, sigma, size=ds.y_train.shape).astype(ds.y_train.dtype)
  return dataclasses.replace(ds, y_train=y, name=f"{ds.name}+noise{noise:g}")
