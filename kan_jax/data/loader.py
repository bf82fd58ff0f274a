"""`load(data_config)`: builds a `Dataset` from an experiment's `config.data`."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from kan_jax.data._core import Dataset, resolve_dtype, with_label_noise
from kan_jax.data.classification import classification_dataset
from kan_jax.data.expressions import expression_dataset
from kan_jax.data.feynman import feynman_dataset
from kan_jax.data.poisson import poisson_dataset
from kan_jax.data.special import special_dataset

__all__ = ["load", "KINDS"]

# kind -> the config field holding the dataset's name or formula (None: the kind is one dataset).
KINDS = {"expression": "expr", "feynman": "equation", "special": "function", "sklearn": "name", "poisson": None}
_MISSING = object()


def _get(config: Any, key: str, default: Any = None) -> Any:
  """Reads `key` from a Mapping or an ml_collections ConfigDict."""
  try:
    value = config[key]
  except (KeyError, AttributeError, TypeError):
    value = getattr(config, key, _MISSING) if not isinstance(config, Mapping) else _MISSING
  if value is _MISSING or value is None:
    return default
  return value


def load(data_config: Any) -> Dataset:
  """Builds the dataset described by a data config.

  Fields of `data_config` (a mapping or `ml_collections.ConfigDict`):

  - `kind`: "expression", "feynman", "special", "sklearn" or "poisson".
  - `expr` (expression): a formula in `x_1..x_n`, e.g. "exp(sin(pi*x_1)+x_2**2)";
    optional `n_var` and `ranges` (one `(low, high)` or one pair per input,
    default `(-1, 1)`).
  - `equation` (feynman): an AI Feynman name, e.g. "I.6.2".
  - `function` (special): a name from `special_functions()`, e.g. "ellipkinc".
  - `name` (sklearn): "digits", "breast_cancer" or "wine" (`classification_dataset`);
    `test_num` rows held out, `train_num` rows of the rest (None: all of it), `scale`
    ("symmetric" default, "unit" or "binary").
  - poisson (`poisson_dataset`): `train_num` interior points, `boundary_num` (default 200)
    boundary points, `test_grid` (default 101) points per side of the test grid.
  - `train_num`, `test_num` (default 1000 each), `seed` (default 0),
    `dtype` ("float32" default, or "float64").
  - `noise` (expression, feynman, special; default 0): Gaussian noise of `noise` times the
    training targets' std added to them (`with_label_noise`); test targets stay clean.

  Args:
    data_config: the config described above.

  Returns:
    The `Dataset` (arrays `(N, n_var)` / `(N, n_out)`).

  Raises:
    ValueError: (one line) for an unknown kind, a missing field or a bad value.
  """
  kind = _get(data_config, "kind")
  if kind not in KINDS:
    raise ValueError(
        f"data.kind must be one of {', '.join(repr(k) for k in KINDS)}, got {kind!r}"
    )
  field = KINDS[kind]
  target = None if field is None else _get(data_config, field)
  if field is not None and target is None:
    raise ValueError(f"data.{field} is required when data.kind={kind!r} (a string)")
  seed = int(_get(data_config, "seed", 0))
  try:
    noise = float(_get(data_config, "noise", 0.0))
  except (TypeError, ValueError):
    raise ValueError(f"data.noise must be a number >= 0, got {_get(data_config, 'noise')!r}") from None
  if noise and kind in ("sklearn", "poisson"):
    raise ValueError(f"data.noise applies to the regression kinds (expression, feynman, special), not {kind!r}")
  dtype = resolve_dtype(_get(data_config, "dtype", "float32"))
  if kind == "sklearn":
    train_num = _get(data_config, "train_num")
    return classification_dataset(
        str(target), test_num=int(_get(data_config, "test_num", 1000)),
        train_num=None if train_num is None else int(train_num), seed=seed,
        scale=str(_get(data_config, "scale", "symmetric")), dtype=dtype)
  if kind == "poisson":
    return poisson_dataset(
        train_num=int(_get(data_config, "train_num", 1000)), boundary_num=int(_get(data_config, "boundary_num", 200)),
        test_grid=int(_get(data_config, "test_grid", 101)), seed=seed, dtype=dtype)
  common = dict(
      train_num=int(_get(data_config, "train_num", 1000)),
      test_num=int(_get(data_config, "test_num", 1000)),
      seed=seed,
      dtype=dtype,
  )
  return with_label_noise(_regression(kind, target, data_config, common), noise=noise, seed=seed)


def _regression(kind: str, target: Any, data_config: Any, common: dict) -> Dataset:
  if kind == "expression":
    ranges = _get(data_config, "ranges", (-1.0, 1.0))
    if isinstance(ranges, str):  # e.g. --config.data.ranges="(-2, 2)"
      try:
        ranges = ast.literal_eval(ranges)
      except (ValueError, SyntaxError):
        raise ValueError(f"data.ranges must be (low, high) or a list of pairs, got {ranges!r}") from None
    n_var = _get(data_config, "n_var")
    return expression_dataset(
        str(target), n_var=None if n_var is None else int(n_var), ranges=ranges, **common
    )
  if kind == "feynman":
    return feynman_dataset(str(target), **common)
  return special_dataset(str(target), **common)
