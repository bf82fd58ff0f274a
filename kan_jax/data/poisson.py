"""The 2-D Poisson problem of the KAN paper (Liu et al. 2024, Sec. 3.4) as collocation points.

    laplacian(u) = f  on  [-1, 1]^2,   u = 0  on the boundary,
    u(x, y) = sin(pi x) sin(pi y),     f(x, y) = -2 pi^2 sin(pi x) sin(pi y).

`poisson_dataset` samples interior and boundary points for a physics-informed loss and puts
the exact solution on a regular grid for the test.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kan_jax.data._core import Dataset, resolve_dtype

__all__ = ["poisson_dataset", "poisson_solution", "poisson_source", "POISSON_COLUMNS"]

POISSON_COLUMNS = ("f", "u", "boundary")
"""The target columns: the source `f(x)`, the exact solution `u(x)` (on the boundary the
Dirichlet data, 0), and 1.0 on boundary points, 0.0 inside."""


def poisson_solution(x: np.ndarray) -> np.ndarray:
  """`u(x) = sin(pi x_1) sin(pi x_2)` for `x (n, 2)` -> `(n,)`."""
  x = np.asarray(x, np.float64)
  return np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1])


def poisson_source(x: np.ndarray) -> np.ndarray:
  """`f(x) = laplacian(u)(x) = -2 pi^2 sin(pi x_1) sin(pi x_2)` for `x (n, 2)` -> `(n,)`."""
  return -2.0 * np.pi**2 * poisson_solution(x)


def _boundary_points(rng: np.random.Generator, num: int) -> np.ndarray:
  """`num` points uniform on the square's perimeter: a random side, a uniform position on it."""
  side = rng.integers(0, 4, num)
  t = rng.uniform(-1.0, 1.0, num)
  fixed = np.where(side % 2 == 0, -1.0, 1.0)
  return np.where((side < 2)[:, None], np.stack([t, fixed], 1), np.stack([fixed, t], 1))


def _targets(x: np.ndarray, boundary: np.ndarray) -> np.ndarray:
  u = np.where(boundary, 0.0, poisson_solution(x))  # exact zeros on the boundary (sin(pi) is 1e-16)
  return np.stack([poisson_source(x), u, boundary.astype(np.float64)], 1)


def poisson_dataset(
    *,
    train_num: int = 1000,
    boundary_num: int = 200,
    test_grid: int = 101,
    seed: int = 0,
    dtype: Any = np.float32,
) -> Dataset:
  """Collocation points for the Poisson problem, and the exact solution on a test grid.

  Args:
    train_num: interior points, uniform in the open square (`numpy.random.default_rng(seed)`).
    boundary_num: boundary points, uniform on the perimeter (the same generator, after them).
    test_grid: the test set is the `test_grid x test_grid` grid `linspace(-1, 1)^2`, boundary
      included.
    seed: the sampler's seed.
    dtype: float32 (default) or float64.

  Returns:
    A `Dataset` (`task` "pde", `name` "poisson"): `x_train (train_num + boundary_num, 2)`, the
    interior points first; `x_test (test_grid**2, 2)` row-major over the grid (`x_1` fastest);
    targets `(n, 3)` with columns `POISSON_COLUMNS`; `formula` the exact solution.

  Raises:
    ValueError: for sizes below 1 (or a test grid below 2).
  """
  for label, num, low in (("train_num", train_num, 1), ("boundary_num", boundary_num, 1), ("test_grid", test_grid, 2)):
    if int(num) != num or num < low:
      raise ValueError(f"data.{label} must be an integer >= {low}, got {num!r}")
  dt = resolve_dtype(dtype)
  rng = np.random.default_rng(int(seed))
  interior = rng.uniform(-1.0, 1.0, (int(train_num), 2))
  edge = _boundary_points(rng, int(boundary_num))
  x_train = np.concatenate([interior, edge])
  on_edge = np.arange(len(x_train)) >= len(interior)
  g = np.linspace(-1.0, 1.0, int(test_grid))
  xx, yy = np.meshgrid(g, g)
  x_test = np.stack([xx.ravel(), yy.ravel()], 1)
  test_edge = np.any(np.abs(x_test) == 1.0, axis=1)
  arrays = [x_train, _targets(x_train, on_edge), x_test, _targets(x_test, test_edge)]
  arrays = [a.astype(dt) for a in arrays]
  for a in arrays:
    a.setflags(write=False)
  return Dataset(
      x_train=arrays[0],
      y_train=arrays[1],
      x_test=arrays[2],
      y_test=arrays[3],
      input_names=("x_1", "x_2"),
      output_names=POISSON_COLUMNS,
      target_std=float(np.std(arrays[3][:, 1].astype(np.float64))),
      ranges=((-1.0, 1.0), (-1.0, 1.0)),
      name="poisson",
      formula="sin(pi*x_1)*sin(pi*x_2)",
      task="pde",
  )
