"""Classification datasets bundled with scikit-learn (no download): 8x8 digits, breast cancer, wine.

`classification_dataset("digits", test_num=450)` splits the rows with a seeded, stratified shuffle
(`sklearn.model_selection.train_test_split`), scales the features and one-hot encodes the labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from kan_jax.data._core import Dataset, resolve_dtype

__all__ = ["CLASSIFICATION_SETS", "SCALES", "ClassificationSet", "classification_dataset", "labels_of"]


@dataclasses.dataclass(frozen=True)
class ClassificationSet:
  """One bundled dataset: its loader, sizes, and the value range its features are scaled from.

  Attributes:
    loader: the name of the `sklearn.datasets` function.
    n_rows, n_features, n_classes: the dataset's size.
    pixel_range: `(low, high)` shared by every feature (images: the pixels' range), or None
      to scale each feature by its own range on the training split.
  """

  loader: str
  n_rows: int
  n_features: int
  n_classes: int
  pixel_range: tuple[float, float] | None = None


CLASSIFICATION_SETS = {
    "digits": ClassificationSet("load_digits", 1797, 64, 10, pixel_range=(0.0, 16.0)),
    "breast_cancer": ClassificationSet("load_breast_cancer", 569, 30, 2),
    "wine": ClassificationSet("load_wine", 178, 13, 3),
}
"""name -> `ClassificationSet` (digits: 8x8 images, integer pixels 0..16)."""

SCALES = ("symmetric", "unit", "binary")
"""How `classification_dataset` maps each feature's range `[low, high]`: to `[-1, 1]`
("symmetric"), to `[0, 1]` ("unit"), or to `{0, 1}` thresholded at the middle ("binary")."""


def _split(n_rows: int, labels: np.ndarray, train_num: int | None, test_num: int, seed: int):
  """Row indices `(train, test)`: a seeded shuffle, stratified by label."""
  from sklearn.model_selection import train_test_split

  rows = np.arange(n_rows)
  train, test = train_test_split(rows, test_size=test_num, train_size=train_num, random_state=seed,
                                 stratify=labels)
  return np.sort(train), np.sort(test)


def classification_dataset(
    name: str = "digits",
    *,
    test_num: int,
    train_num: int | None = None,
    seed: int = 0,
    scale: str = "symmetric",
    dtype: Any = np.float32,
) -> Dataset:
  """A scikit-learn bundled classification set, split, scaled and one-hot encoded.

  Args:
    name: a key of `CLASSIFICATION_SETS` ("digits", "breast_cancer", "wine").
    test_num: rows held out for the test split.
    train_num: rows of the training split, drawn from the rest; None: all the rest.
    seed: the split's seed (the same seed gives the same split).
    scale: one of `SCALES`. The range scaled from is the pixels' range for images (digits:
      0..16, every pixel alike) and otherwise each feature's min and max on the training
      split, so test features may fall slightly outside the target range. A constant feature
      maps to the middle of the range.
    dtype: float32 (default) or float64.

  Returns:
    A `Dataset` with `x_* (n, n_features)` and one-hot `y_* (n, n_classes)`, `task`
    "classification", `output_names` the class names; `labels_of(y)` gives the integer labels.

  Raises:
    ValueError: an unknown name or scale, or split sizes the dataset cannot give (one line).
  """
  if name not in CLASSIFICATION_SETS:
    raise ValueError(f"data.name must be one of {list(CLASSIFICATION_SETS)}, got {name!r}")
  if scale not in SCALES:
    raise ValueError(f"data.scale must be one of {list(SCALES)}, got {scale!r}")
  spec = CLASSIFICATION_SETS[name]
  dt = resolve_dtype(dtype)
  n_train = spec.n_rows - int(test_num) if train_num is None else int(train_num)
  if int(test_num) < spec.n_classes or n_train < spec.n_classes or n_train + int(test_num) > spec.n_rows:
    raise ValueError(
        f"data.train_num={train_num} and data.test_num={test_num}: {name!r} has {spec.n_rows} rows and "
        f"{spec.n_classes} classes; each split needs at least one row per class and together at most {spec.n_rows}")
  import sklearn.datasets

  bunch = getattr(sklearn.datasets, spec.loader)()
  x = np.asarray(bunch.data, np.float64)
  labels = np.asarray(bunch.target, np.int64)
  train, test = _split(spec.n_rows, labels, train_num, int(test_num), int(seed))
  if spec.pixel_range is not None:
    lo = np.full(spec.n_features, spec.pixel_range[0])
    hi = np.full(spec.n_features, spec.pixel_range[1])
  else:
    lo, hi = x[train].min(axis=0), x[train].max(axis=0)
  width = np.where(hi > lo, hi - lo, 1.0)
  u = (x - lo) / width + np.where(hi > lo, 0.0, 0.5)  # [0, 1] on the range scaled from
  if scale == "symmetric":
    u = 2.0 * u - 1.0
  elif scale == "binary":
    u = (u >= 0.5).astype(np.float64)
  onehot = np.eye(spec.n_classes)[labels]
  arrays = [a.astype(dt) for a in (u[train], onehot[train], u[test], onehot[test])]
  for a in arrays:
    a.setflags(write=False)
  names = getattr(bunch, "feature_names", None)
  input_names = tuple(str(n) for n in names) if names is not None and len(names) == spec.n_features else tuple(
      f"x_{i + 1}" for i in range(spec.n_features))
  out_lo, out_hi = {"symmetric": (-1.0, 1.0), "unit": (0.0, 1.0), "binary": (0.0, 1.0)}[scale]
  return Dataset(
      x_train=arrays[0],
      y_train=arrays[1],
      x_test=arrays[2],
      y_test=arrays[3],
      input_names=input_names,
      output_names=tuple(str(n) for n in bunch.target_names),
      target_std=float(np.std(arrays[3].astype(np.float64))),
      ranges=((out_lo, out_hi),) * spec.n_features,
      name=name,
      formula=None,
      task="classification",
  )


def labels_of(y: np.ndarray) -> np.ndarray:
  """Integer labels `(n,)` of one-hot targets `y (n, n_classes)`."""
  return np.argmax(np.asarray(y), axis=-1)
