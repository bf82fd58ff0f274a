"""The "fit" pipeline: train through the grid-extension stages, evaluate, write the workdir.

Stages come from ``config.training.grid_sizes`` (``stage_plan``): each refines the grid (the
function is kept) and trains ``training.steps`` steps with a fresh optimizer. Checkpoints
(``Checkpointer``) are written every ``checkpoint_every`` steps and at each stage's end; a rerun
of the same command resumes from the newest one, running exactly the chunks an uninterrupted run
runs (bit-equal results on CPU).

``train_stages(config, workdir, task)`` is that stage loop for any objective: a ``Task`` names
the model, the loss ``loop.fit`` minimizes, the metrics and the plots. Regression (``REGRESSION``:
MSE, RMSEs) is this pipeline's; ``classify``, ``vae`` and ``pde`` bring their own.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from kan_jax import plot as kplot
from kan_jax.train import loop, models, optim, sharding
from kan_jax.train.checkpoint import Checkpointer, load_model_state, model_state
from kan_jax.train.config import load_dataset, stage_plan
from kan_jax.train.pipelines import Preempted, register_pipeline
from kan_jax.train.workdir import MetricsWriter, Progress, is_writer, write_json

__all__ = ["run_fit", "train_stages", "Task", "REGRESSION"]

# Test hook: called as _after_checkpoint(global_step) after every periodic checkpoint save
# (tests raise from it to simulate a run killed right after a checkpoint).
_after_checkpoint: Callable[[int], None] | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """What ``train_stages`` trains and reports, besides the stage loop every pipeline shares.

    Attributes:
      pipeline: the name results.json reports under ``pipeline``.
      metric: the headline metric, a key of ``evaluate``'s dict (the progress line; a run whose
        final value is not finite is reported ``diverged``).
      stage_metrics: the keys of ``evaluate``'s dict each ``stages`` record keeps.
      evaluate: ``evaluate(model, dataset) -> dict`` of floats (logged to metrics.jsonl, merged
        into results.json).
      make_model: ``make_model(config, grid_size) -> nnx.Module``; None: ``models.make_model``.
      loss: ``loop.fit``'s ``loss`` (None: the mean squared error).
      report: ``report(model, dataset) -> dict``: what results.json adds once at the end of a
        completed run (too costly, or too large, to log at every evaluation); None: nothing.
      plots: ``plots(workdir, model, dataset, results)``, after plots/loss.png; None: none.
    """

    pipeline: str
    metric: str
    stage_metrics: tuple[str, ...]
    evaluate: Callable[[nnx.Module, Any], dict]
    make_model: Callable[[Any, int | None], nnx.Module] | None = None
    loss: Any = None
    report: Callable[[nnx.Module, Any], dict] | None = None
    plots: Callable[[str, nnx.Module, Any, dict], None] | None = None

    def build(self, config, grid_size):
        if self.make_model is None:
            return models.make_model(config, grid_size=grid_size)
        return self.make_model(config, grid_size)


REGRESSION = Task(pipeline="fit", metric="test_rmse", stage_metrics=("train_rmse", "test_rmse"), evaluate=loop.evaluate)
"""The "fit" pipeline's task: MSE on ``config.data``'s regression targets, ``loop.evaluate``'s RMSEs."""


@register_pipeline("fit")
def run_fit(config, workdir: str, *, should_stop=None) -> dict:
    """The "fit" pipeline: train the model through the grid-extension stages, evaluate, write outputs.

    ``should_stop`` (see ``register_pipeline``): polled between chunks; once True, the step reached
    is checkpointed and ``Preempted`` raised."""
    return train_stages(config, workdir, REGRESSION, should_stop=should_stop)


def train_stages(config, workdir: str, task: Task, *, should_stop=None) -> dict:
    """Trains ``task``'s model on ``config.data`` through the grid-extension stages (``stage_plan``;
    one stage for an MLP), evaluates, writes metrics.jsonl, checkpoints, plots and results.json.

    Resumes from the newest checkpoint in ``workdir``; ``should_stop`` as in ``run_fit``. Returns
    the results dict: status, steps, wall time, parameter count, the run's layout, ``task``'s
    metrics and, for a KAN, ``stages`` (grid size, steps, params and ``task.stage_metrics`` each)."""
    t_start = time.time()
    ds = load_dataset(config)
    plan = stage_plan(config)
    total_steps = sum(s for _, s in plan)
    tr = config.training
    key = jax.random.PRNGKey(int(config.seed))
    mesh = sharding.mesh_for(config)  # None on one device
    with Checkpointer(workdir, max_to_keep=int(config.checkpoint_max_to_keep)) as ckpt:  # closed on failure too
        checkpoint_every = int(config.checkpoint_every)
        # The grid extension's samples: on a mesh, replicated on it (every process holds them).
        x_train = loop.device_array(ds.x_train) if mesh is None else sharding.put_replicated(ds.x_train, mesh)

        # ---- resume
        stage, stage_step, stage_records, prev_wall = 0, 0, [], 0.0
        opt_state = None
        lbfgs = optim.is_lbfgs(config.optimizer)

        def fresh_model(stage):  # on a mesh, in this run's layout (any device count saved the checkpoint)
            model = task.build(config, plan[stage][0])
            return model if mesh is None else sharding.place_model(model, mesh)

        def like(meta):  # the arrays a checkpoint of stage ``meta["stage"]`` restores into
            model = fresh_model(meta["stage"])
            optimizer = optim.make_optimizer(config.optimizer, plan[meta["stage"]][1])
            return model_state(model, loop.init_opt_state(optimizer, nnx.state(model, nnx.Param), lbfgs=lbfgs), key)

        restored = ckpt.restore_latest(like)  # the newest that restores (damaged ones are set aside)
        latest = None if restored is None else restored[0]
        if restored is not None:
            _, meta, state = restored
            stage, stage_step, stage_records = meta["stage"], meta["stage_step"], meta["stages"]
            prev_wall = float(meta.get("wall_time_s", 0.0))
            model = load_model_state(fresh_model(stage), state)
            opt_state = state["opt_state"]
            key = jax.random.wrap_key_data(state["key"]) if _is_typed(key) else jnp.asarray(state["key"])
            logging.info("resumed from step %d (stage %d, stage step %d)", latest, stage, stage_step)
            if stage_step >= plan[stage][1]:  # that stage was finished
                stage, stage_step, opt_state = stage + 1, 0, None
                if stage < len(plan):
                    model.refine(plan[stage][0], x_train)
        else:
            model = task.build(config, plan[0][0])
        metrics = MetricsWriter(workdir, resume_step=latest if latest is not None else -1)
        n_params = models.count_params(model)
        progress = Progress(total_steps)
        diverged = None  # {"diverged_step", "diverged_stage", "diverged_grid_size"} once a loss is not finite
        log_every = int(tr.log_every)

        for s in range(stage, len(plan)):
            grid_size, steps = plan[s]
            base = sum(st for _, st in plan[:s])
            if s > stage:
                # Grid extension: refine to the new grid (function kept) and start a fresh optimizer.
                # L-BFGS's curvature history is in the coordinates of the old basis and the params
                # change shape, so it cannot carry over; Adam's moments are reset for the same reason.
                model.refine(grid_size, x_train)
                opt_state = None
                stage_step = 0
            optimizer = optim.make_optimizer(config.optimizer, steps)

            def log_fn(step, live_model, info, s=s, base=base, grid_size=grid_size):
                ev = task.evaluate(live_model, ds)
                rec = {"step": base + step, "stage": s, "grid_size": grid_size, "train_loss": info["train_loss"], **ev}
                rec["wall_time_s"] = prev_wall + time.time() - t_start
                metrics.write(rec)
                progress.update(base + step, {"G": grid_size, "loss": info["train_loss"], task.metric: ev[task.metric]})

            def checkpoint_fn(fs, s=s, base=base, grid_size=grid_size):
                meta = {"stage": s, "stage_step": fs.step, "stages": stage_records, "grid_size": grid_size,
                        "wall_time_s": prev_wall + time.time() - t_start}
                ckpt.save(base + fs.step, model_state(fs.model, fs.opt_state, key), meta)
                if _after_checkpoint is not None:
                    ckpt.wait()  # the hook (a test's kill) sees the checkpoint on disk
                    _after_checkpoint(base + fs.step)

            model, hist = loop.fit(
                model,
                ds,
                steps=steps,
                optimizer=optimizer,
                lbfgs=lbfgs,
                batch_size=int(tr.batch_size),
                grid_update_every=int(tr.grid_update_every),
                stop_grid_update_step=int(tr.stop_grid_update_step),
                regularization=config.regularization,
                key=jax.random.fold_in(key, s),
                start_step=stage_step,
                opt_state=opt_state,
                log_every=log_every,
                log_fn=log_fn,
                checkpoint_every=checkpoint_every,
                checkpoint_fn=checkpoint_fn,
                chunk_size=int(tr.chunk_size),
                mesh=mesh,
                should_stop=should_stop,
                loss=task.loss,
            )
            stage_step = 0
            if hist["preempted"]:  # asked to stop: checkpoint the step reached, then stop
                checkpoint_fn(hist["state"])
                metrics.close()
                raise Preempted(step=base + int(hist["state"].step), stage=s)
            if hist["diverged"]:  # stop at the first bad chunk; the last checkpoint is the last good state
                diverged = {"diverged_step": base + hist["diverged_step"], "diverged_stage": s,
                            "diverged_grid_size": grid_size}
                break
            ev = task.evaluate(model, ds)
            n_params = models.count_params(model)
            stage_records = stage_records + [
                {"grid_size": grid_size, "steps": steps, "n_params": n_params, **{k: ev[k] for k in task.stage_metrics}}
            ]
            logging.info("stage %d/%d G=%s: %s", s + 1, len(plan), grid_size,
                         " ".join(f"{k} {ev[k]:.3g}" for k in task.stage_metrics))
            meta = {"stage": s, "stage_step": steps, "stages": stage_records, "grid_size": grid_size,
                    "wall_time_s": prev_wall + time.time() - t_start}
            ckpt.save(base + steps, model_state(model, hist["state"].opt_state, key), meta)
            if should_stop is not None and s + 1 < len(plan) and loop.stop_requested(should_stop):
                metrics.close()
                raise Preempted(step=base + steps, stage=s)
        progress.close()

    ev = task.evaluate(model, ds)
    status = "completed"
    if diverged is not None or not np.isfinite(ev[task.metric]):
        status = "diverged"
    results = {
        "status": status,
        "steps": total_steps if status == "completed" else int(hist["state"].step + sum(st for _, st in plan[:s])),
        "wall_time_s": prev_wall + time.time() - t_start,
        "n_params": n_params,
        **sharding.run_layout(config),
        **ev,
        "model": config.model.kind,
        "pipeline": task.pipeline,
        "dataset": ds.name,
        **(diverged or {}),
    }
    if task.report is not None and status == "completed":
        results.update(task.report(model, ds))
    if config.model.kind == "kan":
        results["stages"] = stage_records
        results["grid_size"] = int(model.grid_size)
        if stage_records and "test_rmse" in stage_records[0]:
            # The KAN paper's tables report each run's best grid-extension stage (chosen on the
            # test set, as there); test_rmse above stays the final model's.
            best = min(stage_records, key=lambda r: r["test_rmse"])
            results["best_test_rmse"], results["best_grid_size"] = best["test_rmse"], best["grid_size"]
    records = metrics.read()
    metrics.close()
    if is_writer():
        _plots(workdir, records, stage_records, plan)
        if task.plots is not None:
            _plot_safely(task.plots, workdir, model, ds, results)
    write_json(os.path.join(workdir, "results.json"), results)
    logging.info("%s: %s %.4g (%s) in %.1fs", workdir, task.metric, results[task.metric], status, results["wall_time_s"])
    return results


def _plots(workdir: str, records: list, stage_records: list, plan) -> None:
    """plots/loss.png and (regression with grid extension) plots/rmse_vs_grid.png; a failure only warns."""
    try:
        os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
        bounds = np.cumsum([st for _, st in plan])[:-1].tolist()
        if records:
            kplot.plot_loss(os.path.join(workdir, "plots", "loss.png"), records, stage_bounds=bounds)
        if len(stage_records) > 1 and "test_rmse" in stage_records[0]:
            kplot.plot_rmse_vs_grid(os.path.join(workdir, "plots", "rmse_vs_grid.png"), stage_records)
    except Exception as err:  # noqa: BLE001 - plots never fail a finished run
        logging.warning("plotting failed: %s", err)


def _plot_safely(fn, workdir: str, *args) -> None:
    """``fn(workdir, *args)`` with ``workdir/plots`` made; a failure only warns (plots never fail a run)."""
    try:
        os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
        fn(workdir, *args)
    except Exception as err:  # noqa: BLE001
        logging.warning("plotting failed: %s", err)


def _is_typed(key) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


