"""``train_and_evaluate``: the runner behind ``experiments/main.py``.

Checks the config (``config.validate_config``) and its dataset before anything is written, writes
or checks ``config.json``, then runs the pipeline ``config.pipeline`` names (``pipelines``) under
the run's own precision (``config.dtype``: float64 runs enable x64 for their duration only, so a
later float32 run in the same process stays float32).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable

import jax
from absl import logging

from kan_jax.train.config import PRECISIONS, ConfigError, load_dataset, validate_config
from kan_jax.train import sharding
from kan_jax.train.pipelines import PIPELINES, Preempted
from kan_jax.train.workdir import check_or_write_config, clear_run, read_json, setup_compilation_cache, write_json

__all__ = ["train_and_evaluate", "summary_line"]


def train_and_evaluate(config, workdir: str, *, restart: bool = False, should_stop: Callable[[], bool] | None = None) -> dict:
    """Runs the experiment ``config`` in ``workdir`` and returns the results dict (also results.json).

    Dispatches on ``config.pipeline``. Resumes from ``workdir/checkpoints`` when a run
    of the same config is there; a completed run is not retrained (its results are returned).
    ``restart``: once the config has passed its checks, delete the workdir's run files
    (``workdir.clear_run``: config.json, metrics, results, checkpoints, plots) and start over,
    whatever config they were from.
    ``should_stop``: polled between training chunks and stages (the command line sets it from
    SIGTERM and SIGINT); once it returns True the run checkpoints where it is, writes results.json
    with ``status: "preempted"`` and where (``preempted_step``, ``preempted_stage``), and raises
    ``Preempted``. Rerunning resumes from that checkpoint.

    Raises:
      ConfigError: bad config values or a workdir holding a different config (nothing written).
      Preempted: ``should_stop`` asked the run to stop (results.json status "preempted").
      Exception: whatever stopped the run (results.json then has status "failed" and the error).
    """
    if not workdir:
        raise ConfigError("--workdir is required (a directory for config.json, metrics, checkpoints, results)")
    dtype = config.get("dtype", None)
    if dtype not in PRECISIONS:
        raise ConfigError(f"dtype must be one of {list(PRECISIONS)}, got {dtype!r}")
    with jax.enable_x64(dtype == "float64"):
        return _run(config, os.path.abspath(workdir), restart, should_stop)


def _run(config, workdir: str, restart: bool, should_stop) -> dict:
    setup_compilation_cache(config)
    try:
        validate_config(config)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(f"bad config: {err}") from None
    n_data = sharding.mesh_sizes(config).get("data", 1)  # a bad mesh spec, likewise
    rows = load_dataset(config).x_train.shape[0]  # a bad data spec stops here, before anything is written
    if rows % n_data:
        raise ConfigError(f"data.train_num={rows} rows do not split evenly over the mesh's data axis ({n_data} devices): "
                          f"use a multiple of {n_data}, or a config.mesh with a smaller data axis")
    if restart:
        gone = clear_run(workdir)
        if gone:
            logging.info("%s: --restart deleted %s", workdir, ", ".join(gone))
    check_or_write_config(workdir, config)
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        prev = read_json(results_path)
        if prev.get("status") == "completed":
            logging.info("%s: run already completed; not retraining", workdir)
            return prev
    start = time.time()
    try:
        return PIPELINES[config.pipeline](config, workdir, should_stop=should_stop)
    except (Preempted, KeyboardInterrupt) as err:
        _write_failure(results_path, {**_failure(config, "preempted", err, start), **getattr(err, "where", {})})
        raise
    except Exception as err:
        _write_failure(results_path, {**_failure(config, "failed", err, start), "traceback": traceback.format_exc(limit=20)})
        raise


def summary_line(results: dict, workdir: str) -> str:
    """The run's closing line: status, the headline test metric (test RMSE; a classifier's
    accuracy, a VAE's ELBO, a PDE solution's relative L2 error), the formula (or why there is
    none), where outputs are."""

    def num(key):
        v = results.get(key)
        return "n/a" if v is None else f"{v:.4g}" if key in ("test_accuracy", "test_elbo") else f"{v:.3g}"

    metric = next((k for k in _HEADLINE_METRICS if k in results), "test_rmse")
    msg = f"{results.get('status')}: {metric} {num(metric)}"
    if results.get("diverged_step") is not None:
        msg = f"diverged at step {results['diverged_step']} (stage {results.get('diverged_stage')}): the loss turned non-finite"
    if results.get("formula") is not None:
        msg += f"; formula {results['formula']} (formula_test_rmse {num('formula_test_rmse')})"
    elif "formula" in results:
        msg += f"; no formula ({results.get('formula_error') or 'see results.json'})"
    if (results.get("n_devices") or 1) > 1 or (results.get("n_processes") or 1) > 1:
        mesh = ",".join(f"{a}:{n}" for a, n in (results.get("mesh") or {}).items())
        msg += f"; {results.get('n_devices')} devices (mesh {mesh}), {results.get('n_processes')} process(es)"
    return msg + f"; results, metrics and plots/ in {workdir}"


# The headline metric of the task pipelines (classify, vae, pde); regression runs report test_rmse.
_HEADLINE_METRICS = ("test_accuracy", "test_elbo", "test_rel_l2")


def _write_failure(path: str, results: dict) -> None:
    """results.json of a run that did not complete; when the workdir cannot take it (read-only,
    disk full), the error that stopped the run is what the caller sees, not this one."""
    try:
        write_json(path, results)
    except OSError as err:
        logging.warning("could not write %s: %s", path, err)


def _layout(config) -> dict:
    try:
        return sharding.run_layout(config)
    except ConfigError:  # a bad mesh spec is what failed
        return {"n_devices": jax.device_count(), "n_processes": jax.process_count()}


def _failure(config, status, err, start):
    return {
        "status": status,
        "error": f"{type(err).__name__}: {err}",
        "wall_time_s": time.time() - start,
        **_layout(config),
        "pipeline": config.get("pipeline", None),
    }


