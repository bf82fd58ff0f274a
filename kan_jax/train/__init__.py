"""Training: the experiment runner and its building blocks, one module per job.

=====================  ==========================================================================
``runner``             ``train_and_evaluate(config, workdir)`` (what ``experiments/main.py`` calls),
                       ``summary_line``
``config``             ``validate_config``, ``ConfigError``, ``stage_plan``, ``load_dataset``
``pipelines``          ``fit`` (grid-extension stages) and ``symbolic`` (sparse fit to formula);
                       ``classify``, ``vae``, ``pde`` (KAN layers in task models, through
                       ``fit.train_stages``); ``register_pipeline`` adds one
``loop``               ``fit`` (jitted chunks of optimizer steps), ``evaluate``, ``predict``
``models``, ``optim``  ``make_model`` (KAN or MLP from ``config.model``), ``make_optimizer``
``checkpoint``         ``Checkpointer`` (orbax, ``workdir/checkpoints``)
``workdir``            config.json, metrics.jsonl, results.json, progress, compilation cache
=====================  ==========================================================================

Building blocks for a pipeline of your own::

    model = make_model(config)                           # kan_jax.KAN or MLP from config.model
    opt = make_optimizer(config.optimizer, steps)        # optax: adam / adamw / lbfgs
    model, history = fit(model, dataset, steps=steps, optimizer=opt,
                         grid_update_every=5, stop_grid_update_step=50,
                         regularization=config.regularization)
    metrics = evaluate(model, dataset)                   # train_rmse, test_rmse, test_nrmse

``fit`` returns the trained model and leaves its argument as it was: always use the returned
model. ``fit(..., loss=fn)`` trains on another objective, ``fn(model, x, y, key) -> scalar``
(a classifier's cross-entropy, a VAE's negative ELBO, a PDE residual).
"""

from kan_jax.train.checkpoint import Checkpointer
from kan_jax.train.config import ConfigError, load_dataset, stage_plan, validate_config
from kan_jax.train.loop import FitState, evaluate, fit, predict
from kan_jax.train.models import MLP, count_params, make_model, mlp_widths_matching
from kan_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from kan_jax.train.pipelines import PIPELINES, Preempted, register_pipeline
from kan_jax.train.runner import summary_line, train_and_evaluate
from kan_jax.train.workdir import MetricsWriter, read_json, write_json

__all__ = [
    "Checkpointer", "ConfigError", "FitState", "MLP", "MetricsWriter", "OPTIMIZERS", "PIPELINES", "Preempted",
    "SCHEDULES", "count_params", "evaluate", "fit", "load_dataset", "make_model", "make_optimizer",
    "make_schedule", "mlp_widths_matching", "predict", "read_json", "register_pipeline", "stage_plan",
    "summary_line", "train_and_evaluate", "validate_config", "write_json",
]
