"""Training: the experiment runner and its building blocks.

``train_and_evaluate(config, workdir) -> results`` is what ``experiments/main.py`` calls; it
dispatches on ``config.get("pipeline", "fit")`` (``PIPELINES``; add one with
``@register_pipeline("name", check=fn)``, ``fn(config)`` running in ``validate_config`` before
anything is written). ``load_dataset(config)`` loads ``config.data`` (a bad spec is a
``ConfigError``); ``summary_line(results, workdir)`` is the runner's closing line. The "fit"
pipeline trains through the grid-extension stages
(``config.training.grid_sizes``), checkpoints with orbax, resumes from the workdir, and writes
``config.json``, ``metrics.jsonl``, ``results.json`` and ``plots/`` (see SPEC.md).

Building blocks (for other pipelines, e.g. a symbolic one: train with regularization, prune,
refine, fit symbols, retrain)::

    model = make_model(config, grid_size=None)          # kan_jax.KAN or MLP from config.model
    opt = make_optimizer(config.optimizer, steps)        # optax: adam / adamw / lbfgs
    model, history = fit(model, dataset, steps=..., optimizer=opt, batch_size=0,
                         grid_update_every=5, stop_grid_update_step=50,
                         regularization=config.regularization,   # lamb, lamb_l1, lamb_entropy, ...
                         key=None, start_step=0, opt_state=None,
                         log_every=0, log_fn=None,               # log_fn(step, model, {"train_loss"})
                         checkpoint_every=0, checkpoint_fn=None, # checkpoint_fn(FitState)
                         chunk_size=100)
    # history: {"step": [...], "train_loss": [...], "diverged": bool, "state": FitState}
    metrics = evaluate(model, dataset)                   # train_rmse, test_rmse, test_nrmse
    count_params(model); mlp_widths_matching(kan_widths, grid_size, spline_order)
    stage_plan(config)                                   # [(grid_size, steps), ...]

Workdir writers: ``check_or_write_config(workdir, config)``, ``MetricsWriter(workdir)``,
``write_json(path, obj)``, ``Checkpointer(workdir)``, ``plot_loss``, ``plot_rmse_vs_grid``,
``Progress``; ``ConfigError`` is the one-line runner error.

``fit`` modifies nothing outside the model it returns: always use the returned model (NNX
split/merge builds a fresh module object).
"""

from kan_jax.train.loop import FitState, chunk_boundaries, evaluate, fit, make_loss_fn, predict
from kan_jax.train.models import (
    MLP,
    MODEL_KINDS,
    count_params,
    kan_param_count,
    make_model,
    mlp_param_count,
    mlp_widths_matching,
)
from kan_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from kan_jax.train.pipeline import (
    PIPELINES,
    Preempted,
    load_dataset,
    register_pipeline,
    stage_plan,
    summary_line,
    train_and_evaluate,
    validate_config,
)
from kan_jax.train import symbolic_pipeline  # noqa: E402,F401  (registers the "symbolic" pipeline)
from kan_jax.train.workdir import (
    Checkpointer,
    ConfigError,
    MetricsWriter,
    Progress,
    check_or_write_config,
    config_to_dict,
    plot_loss,
    plot_rmse_vs_grid,
    read_json,
    setup_compilation_cache,
    write_json,
)

__all__ = [
    "MLP", "MODEL_KINDS", "OPTIMIZERS", "SCHEDULES", "PIPELINES",
    "Checkpointer", "ConfigError", "FitState", "MetricsWriter", "Preempted", "Progress",
    "check_or_write_config", "chunk_boundaries", "config_to_dict", "count_params", "evaluate", "fit",
    "kan_param_count", "make_loss_fn", "make_model", "make_optimizer", "make_schedule", "mlp_param_count",
    "mlp_widths_matching", "plot_loss", "plot_rmse_vs_grid", "predict", "read_json", "register_pipeline",
    "load_dataset", "setup_compilation_cache", "stage_plan", "summary_line", "train_and_evaluate", "validate_config",
    "write_json",
]
