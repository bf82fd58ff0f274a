"""The "pde" pipeline: a physics-informed KAN (or MLP) solving the KAN paper's 2-D Poisson problem.

``laplacian(u) = f`` on ``[-1, 1]^2`` with ``u = 0`` on the boundary, whose solution is
``u = sin(pi x_1) sin(pi x_2)`` (``kan_jax.data.poisson_dataset``: interior and boundary
collocation points; the test set is the exact solution on a grid). The network ``u_theta`` is
trained on ``PoissonLoss``: the mean squared residual ``laplacian(u_theta) - f`` over the interior
points plus ``pde.boundary_weight`` times the mean squared ``u_theta`` over the boundary points.
The Laplacian is forward-over-reverse autodiff (``laplacian``: ``jax.jvp`` of ``jax.grad``), so
the KAN is built with ``path="reference"``: the layer's fast kernels are ``jax.custom_vjp``
functions, reverse mode only.

It trains through ``fit.train_stages`` (grid-extension stages, checkpoints, resume as the fit
pipeline). results.json adds ``test_rel_l2`` (``||u_theta - u|| / ||u||`` over the test grid),
``test_max_error``, and at the end ``train_residual_rmse`` and ``train_boundary_rmse`` (the
two terms of the loss, as RMSEs). ``plots/solution.png``: ``u_theta``, the exact ``u`` and
``|u_theta - u|`` on the test grid.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kan_jax import plot as kplot
from kan_jax.compilation import quick_jit
from kan_jax.train import loop, models
from kan_jax.train.config import ConfigError, check_number, require_fields
from kan_jax.train.pipelines import register_pipeline
from kan_jax.train.pipelines.fit import Task, train_stages

__all__ = ["laplacian", "PoissonLoss", "poisson_terms", "relative_l2", "run_pde", "check_pde", "PDE_FIELDS",
           "SMOOTH_ACTIVATIONS"]

PDE_FIELDS = ("boundary_weight",)
"""The ``pde`` section's fields (configs/pde.py defines them)."""

SMOOTH_ACTIVATIONS = ("silu", "tanh", "gelu")
"""MLP activations with a useful second derivative (relu's is zero wherever it is defined)."""


def laplacian(u: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """The Laplacian of a pointwise function at every row of ``x``: forward-over-reverse autodiff.

    ``u`` maps points ``(n, d)`` to values ``(n,)``, each row's value depending on that row only
    (a network applied row by row). The gradient of ``sum(u(x))`` is then every row's gradient
    ``(n, d)``, and one ``jax.jvp`` of it along the unit vector ``e_i`` (the same for every row)
    gives every row's Hessian column ``i``; the Laplacian sums the diagonal entries. Cost: one
    reverse pass and ``d`` forward-over-reverse passes over all rows, no per-row ``vmap``.

    Args:
      u: ``(n, d) -> (n,)``, row-wise, twice differentiable, forward-mode differentiable
        (a KAN built with ``path="reference"``).
      x: points ``(n, d)``.

    Returns:
      ``(n,)``: ``sum_i d^2 u / dx_i^2`` at each row.
    """
    grad = jax.grad(lambda p: jnp.sum(u(p)))
    out = jnp.zeros(x.shape[:1], x.dtype)
    for i in range(x.shape[1]):
        e = jnp.zeros_like(x).at[:, i].set(1.0)
        out = out + jax.jvp(grad, (x,), (e,))[1][:, i]
    return out


def poisson_terms(model, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The loss's two terms: mean squared residual ``laplacian(u) - f`` over the interior rows and
    mean squared error ``u - u_boundary`` over the boundary rows. ``x (n, 2)``; ``y (n, 3)``, the
    columns of ``kan_jax.data.POISSON_COLUMNS`` (``f``, ``u``, ``boundary`` 0/1)."""
    u = lambda p: model(p)[:, 0]  # noqa: E731
    boundary = y[:, 2]
    interior = 1.0 - boundary
    residual = laplacian(u, x) - y[:, 0]
    bc = u(x) - y[:, 1]
    pde = jnp.sum(interior * jnp.square(residual)) / jnp.maximum(jnp.sum(interior), 1.0)
    return pde, jnp.sum(boundary * jnp.square(bc)) / jnp.maximum(jnp.sum(boundary), 1.0)


@dataclasses.dataclass(frozen=True)
class PoissonLoss:
    """``loop.fit``'s loss: interior residual MSE + ``boundary_weight`` x boundary MSE (``poisson_terms``)."""

    boundary_weight: float

    def __call__(self, model, x, y, key=None):
        del key
        pde, bc = poisson_terms(model, x, y)
        return pde + self.boundary_weight * bc


def relative_l2(predicted: np.ndarray, exact: np.ndarray) -> float:
    """``||predicted - exact|| / ||exact||`` (Euclidean norms over all entries, float64)."""
    p, e = np.asarray(predicted, np.float64), np.asarray(exact, np.float64)
    return float(np.linalg.norm(p - e) / np.linalg.norm(e))


def _evaluate(model, ds) -> dict:
    u = loop.predict(model, ds.x_test, quick=True)[:, 0]
    exact = np.asarray(ds.y_test[:, 1], np.float64)
    return {"test_rel_l2": relative_l2(u, exact), "test_max_error": float(np.max(np.abs(u - exact)))}


@functools.lru_cache(maxsize=8)
def _terms_fn(graphdef):
    return quick_jit(lambda state, x, y: poisson_terms(nnx.merge(graphdef, state), x, y))


def _report(model, ds) -> dict:
    graphdef, state = nnx.split(model)
    pde, bc = _terms_fn(graphdef)(state, loop.device_array(ds.x_train), loop.device_array(ds.y_train))
    return {"train_residual_rmse": float(np.sqrt(pde)), "train_boundary_rmse": float(np.sqrt(bc))}


def _plots(workdir: str, model, ds, results: dict) -> None:
    """plots/solution.png: the network's solution, the exact one and the error on the test grid."""
    n = int(round(np.sqrt(ds.x_test.shape[0])))
    x1 = np.asarray(ds.x_test[:, 0], np.float64).reshape(n, n)
    x2 = np.asarray(ds.x_test[:, 1], np.float64).reshape(n, n)
    u = loop.predict(model, ds.x_test, quick=True)[:, 0].astype(np.float64).reshape(n, n)
    exact = np.asarray(ds.y_test[:, 1], np.float64).reshape(n, n)
    kplot.plot_fields(os.path.join(workdir, "plots", "solution.png"), x1, x2,
                      {f"{results.get('model')} solution": u, "exact sin(pi x_1) sin(pi x_2)": exact,
                       "|error|": np.abs(u - exact)},
                      title=f"Poisson on [-1, 1]^2: test relative L2 error {results['test_rel_l2']:.2e}")


def _make_model(config, grid_size):
    return models.make_model(config, grid_size=grid_size, path="reference")


def check_pde(config) -> None:
    """The pde pipeline's fields (run by ``validate_config``): ``ConfigError`` naming the field."""
    require_fields(config, [f"pde.{f}" for f in PDE_FIELDS])
    if config.data.get("kind") != "poisson":
        raise ConfigError(f"the pde pipeline needs data.kind='poisson', got {config.data.get('kind')!r}")
    widths = list(config.model.widths)
    if widths[0] != 2 or widths[-1] != 1:
        raise ConfigError(f"model.widths must go from 2 inputs to 1 output for the pde pipeline, e.g. (2, 10, 1); "
                          f"got {tuple(widths)}")
    if config.model.kind == "mlp" and config.model.activation not in SMOOTH_ACTIVATIONS:
        raise ConfigError(f"model.activation must be one of {list(SMOOTH_ACTIVATIONS)} for the pde pipeline (the loss "
                          f"takes second derivatives), got {config.model.activation!r}")
    check_number("pde.boundary_weight", config.pde.boundary_weight, lo=0.0, lo_inclusive=False)


def _task(config) -> Task:
    return Task(pipeline="pde", metric="test_rel_l2", stage_metrics=("test_rel_l2",), evaluate=_evaluate,
                make_model=_make_model, loss=PoissonLoss(float(config.pde.boundary_weight)), report=_report,
                plots=_plots)


@register_pipeline("pde", check=check_pde)
def run_pde(config, workdir: str, *, should_stop=None) -> dict:
    """Trains and evaluates the Poisson solver of ``config`` (see the module docstring)."""
    return train_stages(config, workdir, _task(config), should_stop=should_stop)
