"""Config checks, the stage plan and the dataset a config names.

Everything here reads a config and decides before anything is written or trained: a bad value
is a ``ConfigError`` whose message names the field and what it allows (the command line prints
it as one line and exits 2). Defaults live in ``configs/`` only: this module reads fields and
checks them, it does not supply values of its own.
"""

from __future__ import annotations

import json

import numpy as np
from flax import nnx

from kan_jax.bases import BASES, get_basis
from kan_jax.nnx import MODEL_SHARDINGS
from kan_jax.train import models, optim

__all__ = ["ConfigError", "validate_config", "require_fields", "stage_plan", "check_number", "load_dataset", "PRECISIONS", "REQUIRED_FIELDS"]


class ConfigError(ValueError):
    """A runner error the command line reports as one line (bad config value, workdir clash)."""


PRECISIONS = ("float32", "float64")


def stage_plan(config) -> list[tuple[int | None, int]]:
    """``[(grid_size, steps), ...]`` of a config: one entry per grid-extension stage.

    ``config.training.grid_sizes`` (empty: one stage at ``config.model.grid_size``) and
    ``config.training.steps`` (an int: steps per stage, or a list with one entry per stage).
    MLP runs have one stage (grid size None).
    """
    t = config.training
    steps = t.steps
    sizes = list(t.grid_sizes or [])
    if config.model.kind == "mlp":
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


# Every field the runner reads (configs/default.py defines them all). A config without one of
# them is a ConfigError naming it: there is no second table of defaults in the library.
REQUIRED_FIELDS = (
    "seed", "pipeline", "dtype", "compilation_cache_dir", "checkpoint_every", "checkpoint_max_to_keep",
    "model.kind", "model.widths", "model.grid_size", "model.spline_order", "model.basis", "model.grid_range",
    "model.extrapolate", "model.activation", "model.mlp_widths", "model.sharding",
    "optimizer.name", "optimizer.learning_rate", "optimizer.schedule", "optimizer.warmup_steps",
    "optimizer.end_learning_rate_factor", "optimizer.b1", "optimizer.b2", "optimizer.weight_decay",
    "optimizer.grad_clip", "optimizer.memory_size", "optimizer.linesearch", "optimizer.max_linesearch_steps",
    "optimizer.use_learning_rate",
    "training.steps", "training.grid_sizes", "training.batch_size", "training.grid_update_every",
    "training.stop_grid_update_step", "training.log_every", "training.chunk_size", "training.stop_on_stall",
    "regularization.lamb", "regularization.metric", "regularization.lamb_l1", "regularization.lamb_entropy",
    "regularization.lamb_coef", "regularization.lamb_coefdiff",
    "data",
)


def require_fields(config, fields) -> None:
    """``ConfigError`` naming the first of the dotted ``fields`` that ``config`` lacks."""
    for field in fields:
        node = config
        for part in field.split("."):
            if not hasattr(node, "keys") or part not in node:
                raise ConfigError(f"config.{field} is required (configs/default.py defines every field)")
            node = node[part]


def validate_config(config) -> None:
    """Checks the fields the runner reads; ConfigError naming the field and the allowed values."""
    from kan_jax import regularize
    from kan_jax.train.pipelines import PIPELINE_CHECKS, PIPELINES

    require_fields(config, REQUIRED_FIELDS)
    m, opt, tr = config.model, config.optimizer, config.training
    for field, value, allowed in (
        ("model.kind", m.kind, models.MODEL_KINDS),
        ("optimizer.name", opt.name, optim.OPTIMIZERS),
        ("optimizer.schedule", opt.schedule, optim.SCHEDULES),
        ("optimizer.linesearch", opt.linesearch, optim.LINESEARCHES),
        ("pipeline", config.pipeline, sorted(PIPELINES)),
        ("model.activation", m.activation, sorted(models.MLP_ACTIVATIONS)),  # MLP only; a typo is reported anyway
        ("regularization.metric", config.regularization.metric, regularize.METRICS),
        ("dtype", config.dtype, PRECISIONS),
        ("model.sharding", m.sharding, MODEL_SHARDINGS),
    ):
        if value not in allowed:
            raise ConfigError(f"{field} must be one of {list(allowed)}, got {value!r}")
    if tr.stop_on_stall and config.pipeline != "symbolic":
        raise ConfigError(f"training.stop_on_stall is supported by the symbolic pipeline only (pipeline={config.pipeline!r}); set it to False")
    check_number("training.batch_size", tr.batch_size, integer=True)
    if tr.batch_size < -1:
        raise ConfigError(f"training.batch_size must be >= 1, or 0 / -1 for full batch, got {tr.batch_size}")
    plan = stage_plan(config)
    _check_numbers(config)
    # model.grid_size is checked even when training.grid_sizes overrides it.
    check_number("model.grid_size", m.grid_size, lo=1, integer=True)
    try:  # every constructor check (widths, grid, order, basis, range), without allocating anything
        nnx.eval_shape(lambda: models.make_model(config, grid_size=plan[0][0]))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config.model: {err}") from None
    if m.kind == "kan" and not get_basis(m.basis).adaptive and tr.grid_update_every > 0 and tr.stop_grid_update_step > 0:
        raise ConfigError(f"model.basis={m.basis!r} has no knots to adapt: set training.stop_grid_update_step=0 "
                          f"(or training.grid_update_every=0), or use a basis that adapts: "
                          f"{sorted(b for b in BASES if BASES[b].adaptive)}")
    if config.pipeline in PIPELINE_CHECKS:
        PIPELINE_CHECKS[config.pipeline](config)


# (section, field, lowest allowed, whether the lowest value itself is allowed)
_NUMBER_FIELDS = (
    ("optimizer", "learning_rate", 0.0, False),
    ("optimizer", "warmup_steps", 0, True),
    ("optimizer", "end_learning_rate_factor", 0.0, True),
    ("optimizer", "weight_decay", 0.0, True),
    ("optimizer", "grad_clip", 0.0, True),
    ("optimizer", "memory_size", 1, True),
    ("optimizer", "max_linesearch_steps", 1, True),
    ("training", "grid_update_every", 0, True),
    ("training", "stop_grid_update_step", 0, True),
    ("training", "log_every", 0, True),
    ("training", "chunk_size", 1, True),
    ("regularization", "lamb", 0.0, True),
    ("regularization", "lamb_l1", 0.0, True),
    ("regularization", "lamb_entropy", 0.0, True),
    ("regularization", "lamb_coef", 0.0, True),
    ("regularization", "lamb_coefdiff", 0.0, True),
    (None, "checkpoint_every", 0, True),
    (None, "checkpoint_max_to_keep", 1, True),
)


def _check_numbers(config) -> None:
    """Finite numbers at or above their lowest allowed value (a negative learning rate or grid-update
    period would otherwise run silently as something else)."""
    for section, field, lo, inclusive in _NUMBER_FIELDS:
        sec = config if section is None else config[section]
        check_number(field if section is None else f"{section}.{field}", sec[field], lo=lo, lo_inclusive=inclusive)


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

    spec = _with_default_dtype(config.data, config.dtype)
    key = json.dumps(spec, sort_keys=True, default=repr)
    if _LAST_DATASET[0] != key:
        try:
            ds = kdata.load(spec)
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"config.data: {err}") from None
        _LAST_DATASET[:] = [key, ds]
    return _LAST_DATASET[1]
