"""`load(data_config)`: builds a `Dataset` from an experiment's `config.data`."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from kan_jax.data._core import Dataset, resolve_dtype
from kan_jax.data.expressions import expression_dataset
from kan_jax.data.feynman import feynman_dataset
from kan_jax.data.special import special_dataset

__all__ = ["load", "KINDS"]

# kind -> the config field holding the dataset's name or formula.
KINDS = {"expression": "expr", "feynman": "equation", "special": "function"}
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

  - `kind`: "expression", "feynman" or "special".
  - `expr` (expression): a formula in `x_1..x_n`, e.g. "exp(sin(pi*x_1)+x_2**2)";
    optional `n_var` and `ranges` (one `(low, high)` or one pair per input,
    default `(-1, 1)`).
  - `equation` (feynman): an AI Feynman name, e.g. "I.6.2".
  - `function` (special): a name from `special_functions()`, e.g. "ellipkinc".
  - `train_num`, `test_num` (default 1000 each), `seed` (default 0),
    `dtype` ("float32" default, or "float64").

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
  target = _get(data_config, field)
  if target is None:
    raise ValueError(f"data.{field} is required when data.kind={kind!r} (a string)")
  common = dict(
      train_num=int(_get(data_config, "train_num", 1000)),
      test_num=int(_get(data_config, "test_num", 1000)),
      seed=int(_get(data_config, "seed", 0)),
      dtype=resolve_dtype(_get(data_config, "dtype", "float32")),
  )
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
