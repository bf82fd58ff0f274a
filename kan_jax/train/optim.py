"""Optimizers by config name: ``adam`` / ``adamw`` (with schedules) and ``lbfgs`` (zoom line search)."""

from __future__ import annotations

import optax

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_optimizer", "make_schedule"]

OPTIMIZERS = ("adam", "adamw", "lbfgs")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential")
LINESEARCHES = ("zoom", "backtracking")


def make_schedule(opt_config, steps: int):
    """The learning-rate schedule of ``opt_config`` over ``steps`` steps.

    Fields (all required, as in configs/default.py): ``learning_rate``, ``schedule`` (one of
    ``SCHEDULES``), ``warmup_steps``, ``end_learning_rate_factor`` (final lr = factor * lr for
    cosine/exponential).
    """
    lr = float(opt_config.learning_rate)
    name = opt_config.schedule
    end = float(opt_config.end_learning_rate_factor)
    steps = max(int(steps), 1)
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, steps, alpha=end)
    if name == "warmup_cosine":
        warm = min(int(opt_config.warmup_steps), steps - 1)
        if warm <= 0:  # no warmup: the cosine decay from the first step (not lr 0 at step 0)
            return optax.cosine_decay_schedule(lr, steps, alpha=end)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, steps, end_value=lr * end)
    if name == "exponential":
        return optax.exponential_decay(lr, steps, max(end, 1e-12))
    raise ValueError(f"optimizer.schedule must be one of {list(SCHEDULES)}, got {name!r}")


def make_optimizer(opt_config, steps: int) -> optax.GradientTransformation:
    """Builds the optax optimizer named by ``opt_config.name``.

    Args:
      opt_config: ``config.optimizer`` with every field of configs/default.py's (no defaults
        here): ``name`` in ``OPTIMIZERS``, ``learning_rate``; adam/adamw:
        ``schedule``, ``warmup_steps``, ``end_learning_rate_factor``, ``weight_decay`` (adamw),
        ``b1``, ``b2``, ``grad_clip`` (global norm, 0 = off); lbfgs: ``memory_size``,
        ``linesearch`` (``"zoom"``: strong Wolfe, the default, as pykan's torch L-BFGS;
        ``"backtracking"``: Armijo, a smaller program to compile), ``max_linesearch_steps``. For lbfgs ``learning_rate`` is ignored unless ``use_learning_rate``
        (the zoom line search picks the step).
      steps: the number of steps the optimizer will run (for schedules).

    Returns:
      An ``optax.GradientTransformation``; for lbfgs a ``GradientTransformationExtraArgs`` whose
      ``update`` needs ``value``, ``grad`` and ``value_fn`` (see ``kan_jax.train.loop``).

    Raises:
      ValueError: for an unknown ``optimizer.name`` or ``optimizer.schedule``.
    """
    name = opt_config.name
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {list(OPTIMIZERS)}, got {name!r}")
    if name == "lbfgs":
        ls = opt_config.linesearch
        steps_ls = int(opt_config.max_linesearch_steps)
        if ls == "zoom":
            linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=steps_ls, verbose=False)
        elif ls == "backtracking":
            linesearch = optax.scale_by_backtracking_linesearch(max_backtracking_steps=steps_ls, store_grad=True)
        else:
            raise ValueError(f"optimizer.linesearch must be one of {list(LINESEARCHES)}, got {ls!r}")
        lr = float(opt_config.learning_rate) if opt_config.use_learning_rate else None
        return optax.lbfgs(
            learning_rate=lr, memory_size=int(opt_config.memory_size), linesearch=linesearch
        )
    sched = make_schedule(opt_config, steps)
    b1 = float(opt_config.b1)
    b2 = float(opt_config.b2)
    if name == "adam":
        opt = optax.adam(sched, b1=b1, b2=b2)
    else:
        opt = optax.adamw(sched, b1=b1, b2=b2, weight_decay=float(opt_config.weight_decay))
    clip = float(opt_config.grad_clip)
    if clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(clip), opt)
    return opt


def is_lbfgs(opt_config) -> bool:
    return opt_config.name == "lbfgs"
