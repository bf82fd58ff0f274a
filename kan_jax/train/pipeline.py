"""``train_and_evaluate``: the runner behind ``experiments/main.py`` (pipelines dispatched by name)."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from kan_jax.train import loop, models, optim
from kan_jax.train.workdir import (
    Checkpointer,
    ConfigError,
    MetricsWriter,
    Progress,
    check_or_write_config,
    plot_loss,
    plot_rmse_vs_grid,
    read_json,
    setup_compilation_cache,
    write_json,
)

__all__ = ["train_and_evaluate", "PIPELINES", "register_pipeline", "validate_config", "stage_plan", "Preempted",
           "load_dataset", "summary_line", "check_number"]

PIPELINES: dict[str, Callable] = {}
PIPELINE_CHECKS: dict[str, Callable] = {}  # pipeline name -> check(config), run by validate_config

# Test hook: called as _after_checkpoint(global_step) after every periodic checkpoint save
# (tests raise from it to simulate a run killed right after a checkpoint).
_after_checkpoint: Callable[[int], None] | None = None


class Preempted(Exception):
    """Raised to stop a run that was asked to stop (results.json status "preempted")."""


def register_pipeline(name: str, *, check: Callable[[Any], None] | None = None):
    """Decorator: ``@register_pipeline("symbolic") def run(config, workdir) -> results dict``.

    ``check(config)``, if given, is run by ``validate_config`` before anything is written or
    trained; it raises ``ConfigError`` naming the field and the allowed values.
    """

    def deco(fn):
        PIPELINES[name] = fn
        if check is not None:
            PIPELINE_CHECKS[name] = check
        return fn

    return deco


def _enable_dtype(config) -> None:
    dtype = config.get("dtype", None) or "float32"
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be one of ['float32', 'float64'], got {dtype!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def stage_plan(config) -> list[tuple[int | None, int]]:
    """``[(grid_size, steps), ...]`` of a config: one entry per grid-extension stage.

    ``config.training.grid_sizes`` (empty: one stage at ``config.model.grid_size``) and
    ``config.training.steps`` (an int: steps per stage, or a list with one entry per stage).
    MLP runs have one stage (grid size None).
    """
    t = config.training
    steps = t.steps
    sizes = list(t.get("grid_sizes", None) or [])
    if config.model.get("kind", "kan") == "mlp":
        total = int(sum(steps)) if isinstance(steps, (list, tuple)) else int(steps) * max(len(sizes), 1)
        return [(None, total)]
    if not sizes:
        sizes = [int(config.model.grid_size)]
    if isinstance(steps, (list, tuple)):
        if len(steps) != len(sizes):
            raise ConfigError(f"training.steps has {len(steps)} entries but training.grid_sizes has {len(sizes)}")
        st = [int(s) for s in steps]
    else:
        st = [int(steps)] * len(sizes)
    if any(s < 0 for s in st) or any(int(g) < 1 for g in sizes):
        raise ConfigError(f"training.steps must be >= 0 and training.grid_sizes >= 1, got {steps!r}, {sizes!r}")
    return [(int(g), s) for g, s in zip(sizes, st)]


def validate_config(config) -> None:
    """Checks the fields the runner reads; ConfigError naming the field and the allowed values."""
    for field in ("seed", "model", "optimizer", "data", "training"):
        if field not in config:
            raise ConfigError(f"config.{field} is required (see SPEC.md)")
    if config.model.get("kind", None) not in models.MODEL_KINDS:
        raise ConfigError(f"model.kind must be one of {list(models.MODEL_KINDS)}, got {config.model.get('kind', None)!r}")
    if config.optimizer.get("name", None) not in optim.OPTIMIZERS:
        raise ConfigError(f"optimizer.name must be one of {list(optim.OPTIMIZERS)}, got {config.optimizer.get('name', None)!r}")
    sched = config.optimizer.get("schedule", "constant") or "constant"
    if sched not in optim.SCHEDULES:
        raise ConfigError(f"optimizer.schedule must be one of {list(optim.SCHEDULES)}, got {sched!r}")
    ls = config.optimizer.get("linesearch", "zoom") or "zoom"
    if ls not in optim.LINESEARCHES:
        raise ConfigError(f"optimizer.linesearch must be one of {list(optim.LINESEARCHES)}, got {ls!r}")
    pipeline = config.get("pipeline", "fit")
    if pipeline not in PIPELINES:
        raise ConfigError(f"pipeline must be one of {sorted(PIPELINES)}, got {pipeline!r}")
    if config.training.get("stop_on_stall", False) and pipeline != "symbolic":
        raise ConfigError(f"training.stop_on_stall is supported by the symbolic pipeline only (pipeline={pipeline!r}); set it to False")
    bs = int(config.training.get("batch_size", 0) or 0)
    if bs < -1:
        raise ConfigError(f"training.batch_size must be >= 1, or 0 / -1 for full batch, got {bs}")
    plan = stage_plan(config)
    _check_numbers(config)
    # model.grid_size is checked even when training.grid_sizes overrides it.
    check_number("model.grid_size", config.model.get("grid_size", 5), lo=1, integer=True)
    act = config.model.get("activation", "silu")
    if act not in models.MLP_ACTIVATIONS:  # MLP only, but a typo is reported whatever the kind
        raise ConfigError(f"model.activation must be one of {sorted(models.MLP_ACTIVATIONS)}, got {act!r}")
    metric = config.get("regularization", {}).get("metric", None)
    if metric is not None:
        from kan_jax import regularize

        if metric not in regularize.METRICS:
            raise ConfigError(f"regularization.metric must be one of {list(regularize.METRICS)}, got {metric!r}")
    try:  # every constructor check (widths, grid, order, basis, range), without allocating anything
        nnx.eval_shape(lambda: models.make_model(config, grid_size=plan[0][0]))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config.model: {err}") from None
    if pipeline in PIPELINE_CHECKS:
        PIPELINE_CHECKS[pipeline](config)


# (section, field, default, lowest allowed, whether the lowest value itself is allowed)
_NUMBER_FIELDS = (
    ("optimizer", "learning_rate", 1e-3, 0.0, False),
    ("optimizer", "warmup_steps", 0, 0, True),
    ("optimizer", "end_learning_rate_factor", 0.0, 0.0, True),
    ("optimizer", "weight_decay", 0.0, 0.0, True),
    ("optimizer", "grad_clip", 0.0, 0.0, True),
    ("optimizer", "memory_size", 10, 1, True),
    ("optimizer", "max_linesearch_steps", 20, 1, True),
    ("training", "grid_update_every", 0, 0, True),
    ("training", "stop_grid_update_step", 0, 0, True),
    ("training", "log_every", 0, 0, True),
    ("training", "chunk_size", 100, 0, True),
    ("regularization", "lamb", 0.0, 0.0, True),
    ("regularization", "lamb_l1", 1.0, 0.0, True),
    ("regularization", "lamb_entropy", 2.0, 0.0, True),
    ("regularization", "lamb_coef", 0.0, 0.0, True),
    ("regularization", "lamb_coefdiff", 0.0, 0.0, True),
    (None, "checkpoint_every", 0, 0, True),
    (None, "checkpoint_max_to_keep", 3, 1, True),
)


def _check_numbers(config) -> None:
    """Finite numbers at or above their lowest allowed value (a negative learning rate or grid-update
    period would otherwise run silently as something else)."""
    for section, field, default, lo, inclusive in _NUMBER_FIELDS:
        sec = config if section is None else config.get(section, None)
        if sec is not None:
            check_number(field if section is None else f"{section}.{field}", sec.get(field, default), lo=lo,
                         lo_inclusive=inclusive, none_ok=True)


def check_number(name: str, v, *, lo=None, hi=None, lo_inclusive: bool = True, integer: bool = False,
                 none_ok: bool = False) -> None:
    """``ConfigError`` naming the field ``name`` unless ``v`` is a finite number (an int when
    ``integer``) in ``[lo, hi]`` (``(lo, ...`` without ``lo_inclusive``), or None with ``none_ok``."""
    if v is None and none_ok:
        return
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float)) and bool(np.isfinite(v))
    ok = ok and (lo is None or (v >= lo if lo_inclusive else v > lo)) and (hi is None or v <= hi)
    if not ok:
        rng = f"in [{lo}, {hi}]" if hi is not None else f"{'>=' if lo_inclusive else '>'} {lo}"
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'} {rng}"
                          f"{' or None' if none_ok else ''}, got {v!r}")


def train_and_evaluate(config, workdir: str) -> dict:
    """Runs the experiment ``config`` in ``workdir`` and returns the results dict (also results.json).

    Dispatches on ``config.get("pipeline", "fit")``. Resumes from ``workdir/checkpoints`` when a run
    of the same config is there; a completed run is not retrained (its results are returned).

    Raises:
      ConfigError: bad config values or a workdir holding a different config (nothing written).
      Exception: whatever stopped the run (results.json then has status "failed" and the error).
    """
    if not workdir:
        raise ConfigError("--workdir is required (a directory for config.json, metrics, checkpoints, results)")
    _enable_dtype(config)
    setup_compilation_cache(config)
    try:
        validate_config(config)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(f"bad config: {err}") from None
    load_dataset(config)  # a bad data spec stops here, before anything is written
    workdir = os.path.abspath(workdir)
    check_or_write_config(workdir, config)
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        prev = read_json(results_path)
        if prev.get("status") == "completed":
            logging.info("%s: run already completed; not retraining", workdir)
            return prev
    pipeline = PIPELINES[config.get("pipeline", "fit")]
    start = time.time()
    try:
        return pipeline(config, workdir)
    except (Preempted, KeyboardInterrupt) as err:
        write_json(results_path, _failure(config, "preempted", err, start))
        raise
    except Exception as err:
        res = _failure(config, "failed", err, start)
        res["traceback"] = traceback.format_exc(limit=20)
        write_json(results_path, res)
        raise


def summary_line(results: dict, workdir: str) -> str:
    """The run's closing line: status, test RMSE, the formula (or why there is none), where outputs are."""

    def num(key):
        v = results.get(key)
        return "n/a" if v is None else f"{v:.3g}"

    msg = f"{results.get('status')}: test_rmse {num('test_rmse')}"
    if results.get("formula") is not None:
        msg += f"; formula {results['formula']} (formula_test_rmse {num('formula_test_rmse')})"
    elif "formula" in results:
        msg += f"; no formula ({results.get('formula_error') or 'see results.json'})"
    return msg + f"; results, metrics and plots/ in {workdir}"


def _failure(config, status, err, start):
    return {
        "status": status,
        "error": f"{type(err).__name__}: {err}",
        "wall_time_s": time.time() - start,
        "n_devices": jax.device_count(),
        "pipeline": config.get("pipeline", "fit"),
    }


def _ckpt_state(model, opt_state, key):
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return {"params": nnx.to_pure_dict(params), "rest": nnx.to_pure_dict(rest), "opt_state": opt_state, "key": jax.random.key_data(key)}


def _load_into(model, state_dict):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    nnx.replace_by_pure_dict(params, state_dict["params"])
    nnx.replace_by_pure_dict(rest, state_dict["rest"])
    return nnx.merge(graphdef, params, rest)


@register_pipeline("fit")
def run_fit(config, workdir: str) -> dict:
    """The "fit" pipeline: train the model through the grid-extension stages, evaluate, write outputs."""
    t_start = time.time()
    ds = load_dataset(config)
    plan = stage_plan(config)
    total_steps = sum(s for _, s in plan)
    tr = config.training
    key = jax.random.PRNGKey(int(config.seed))
    ckpt = Checkpointer(workdir, max_to_keep=int(config.get("checkpoint_max_to_keep", 3) or 3))
    checkpoint_every = int(config.get("checkpoint_every", 0) or 0)
    x_train = jnp.asarray(ds.x_train)

    # ---- resume
    stage, stage_step, stage_records, prev_wall = 0, 0, [], 0.0
    opt_state = None
    latest = ckpt.latest_step()
    if latest is not None:
        meta = ckpt.restore_meta(latest)
        stage, stage_step, stage_records = meta["stage"], meta["stage_step"], meta["stages"]
        prev_wall = float(meta.get("wall_time_s", 0.0))
        model = models.make_model(config, grid_size=plan[stage][0])
        optimizer = optim.make_optimizer(config.optimizer, plan[stage][1])
        like = _ckpt_state(model, loop.init_opt_state(optimizer, nnx.state(model, nnx.Param), lbfgs=optim.is_lbfgs(config.optimizer)), key)
        restored = ckpt.restore_state(latest, like)
        model = _load_into(model, restored)
        opt_state = restored["opt_state"]
        key = jax.random.wrap_key_data(restored["key"]) if _is_typed(key) else jnp.asarray(restored["key"])
        logging.info("resumed from step %d (stage %d, stage step %d)", latest, stage, stage_step)
        if stage_step >= plan[stage][1]:  # that stage was finished
            stage, stage_step, opt_state = stage + 1, 0, None
            if stage < len(plan):
                model.refine(plan[stage][0], x_train)
    else:
        model = models.make_model(config, grid_size=plan[0][0])
    metrics = MetricsWriter(workdir, resume_step=latest if latest is not None else -1)
    n_params = models.count_params(model)
    progress = Progress(total_steps)
    diverged = False
    log_every = int(tr.get("log_every", 10) or 0)

    for s in range(stage, len(plan)):
        grid_size, steps = plan[s]
        base = sum(st for _, st in plan[:s])
        if s > stage or (s == stage and stage_step == 0 and s > 0 and latest is None):
            # Grid extension: refine to the new grid (function kept) and start a fresh optimizer.
            # L-BFGS's curvature history is in the coordinates of the old basis and the params
            # change shape, so it cannot carry over; Adam's moments are reset for the same reason.
            model.refine(grid_size, x_train)
            opt_state = None
            stage_step = 0
        optimizer = optim.make_optimizer(config.optimizer, steps)

        def log_fn(step, live_model, info, s=s, base=base, grid_size=grid_size):
            ev = loop.evaluate(live_model, ds)
            rec = {"step": base + step, "stage": s, "grid_size": grid_size, "train_loss": info["train_loss"], **ev}
            rec["wall_time_s"] = prev_wall + time.time() - t_start
            metrics.write(rec)
            progress.update(base + step, {"G": grid_size, "loss": info["train_loss"], "test_rmse": ev["test_rmse"]})

        def checkpoint_fn(fs, s=s, base=base, grid_size=grid_size):
            meta = {"stage": s, "stage_step": fs.step, "stages": stage_records, "grid_size": grid_size,
                    "wall_time_s": prev_wall + time.time() - t_start}
            ckpt.save(base + fs.step, _ckpt_state(fs.model, fs.opt_state, key), meta)
            if _after_checkpoint is not None:
                _after_checkpoint(base + fs.step)

        model, hist = loop.fit(
            model,
            ds,
            steps=steps,
            optimizer=optimizer,
            lbfgs=optim.is_lbfgs(config.optimizer),
            batch_size=int(tr.get("batch_size", 0) or 0),
            grid_update_every=int(tr.get("grid_update_every", 0) or 0),
            stop_grid_update_step=int(tr.get("stop_grid_update_step", 0) or 0),
            regularization=config.get("regularization", None),
            key=jax.random.fold_in(key, s),
            start_step=stage_step,
            opt_state=opt_state,
            log_every=log_every,
            log_fn=log_fn,
            checkpoint_every=checkpoint_every,
            checkpoint_fn=checkpoint_fn,
            chunk_size=int(tr.get("chunk_size", 100) or 100),
        )
        stage_step = 0
        if hist["diverged"]:
            diverged = True
            break
        ev = loop.evaluate(model, ds)
        n_params = models.count_params(model)
        stage_records = stage_records + [
            {"grid_size": grid_size, "steps": steps, "n_params": n_params, "train_rmse": ev["train_rmse"], "test_rmse": ev["test_rmse"]}
        ]
        logging.info("stage %d/%d G=%s: train_rmse %.3g test_rmse %.3g", s + 1, len(plan), grid_size, ev["train_rmse"], ev["test_rmse"])
        meta = {"stage": s, "stage_step": steps, "stages": stage_records, "grid_size": grid_size,
                "wall_time_s": prev_wall + time.time() - t_start}
        ckpt.save(base + steps, _ckpt_state(model, hist["state"].opt_state, key), meta)
    progress.close()
    ckpt.close()

    ev = loop.evaluate(model, ds)
    status = "completed"
    if diverged or not np.isfinite(ev["test_rmse"]):
        status = "diverged"
    results = {
        "status": status,
        "steps": total_steps if status == "completed" else int(hist["state"].step + sum(st for _, st in plan[:s])),
        "wall_time_s": prev_wall + time.time() - t_start,
        "n_params": n_params,
        "n_devices": jax.device_count(),
        **ev,
        "model": config.model.kind,
        "pipeline": "fit",
        "dataset": ds.name,
    }
    if config.model.kind == "kan":
        results["stages"] = stage_records
        results["grid_size"] = int(model.grid_size)
    records = metrics.read()
    metrics.close()
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    try:
        bounds = np.cumsum([st for _, st in plan])[:-1].tolist()
        if records:
            plot_loss(os.path.join(workdir, "plots", "loss.png"), records, stage_bounds=bounds)
        if len(stage_records) > 1:
            plot_rmse_vs_grid(os.path.join(workdir, "plots", "rmse_vs_grid.png"), stage_records)
    except Exception as err:  # noqa: BLE001 - plots never fail a finished run
        logging.warning("plotting failed: %s", err)
    write_json(os.path.join(workdir, "results.json"), results)
    logging.info("%s: test_rmse %.4g (%s) in %.1fs", workdir, results["test_rmse"], status, results["wall_time_s"])
    return results


def _is_typed(key) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _with_default_dtype(data_cfg, dtype):
    d = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
    if not d.get("dtype"):
        d["dtype"] = dtype
    return d


_LAST_DATASET: list = [None, None]  # [spec key, Dataset]: the runner's check and the pipeline share one load


def load_dataset(config):
    """``config.data`` as a ``kan_jax.data.Dataset`` (``dtype`` defaulting to ``config.dtype``).

    A data spec the loader rejects (an unknown dataset, an expression that does not parse or is
    not finite on its sampling range, ...) is a ``ConfigError`` naming ``config.data``. The last
    dataset loaded is reused for the same spec: ``train_and_evaluate`` loads it to check the
    config before writing anything, and the pipeline then gets the same object (do not modify it).
    """
    from kan_jax import data as kdata

    spec = _with_default_dtype(config.data, config.get("dtype", None) or "float32")
    key = json.dumps(spec, sort_keys=True, default=repr)
    if _LAST_DATASET[0] != key:
        try:
            ds = kdata.load(spec)
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"config.data: {err}") from None
        _LAST_DATASET[:] = [key, ds]
    return _LAST_DATASET[1]
