"""The pipelines ``train_and_evaluate`` dispatches on (``config.pipeline``).

``fit`` (``pipelines/fit.py``): train through the grid-extension stages, checkpoint, resume.
``symbolic`` (``pipelines/symbolic.py``): pykan's hellokan protocol, from sparse training to a
formula. ``classify``, ``vae``, ``pde`` (``pipelines/classify.py``, ``vae.py``, ``pde.py``): KAN
layers inside task models (a classifier, a variational autoencoder, a physics-informed Poisson
solver), trained through ``fit.train_stages`` with their own loss, metrics and plots. Add one with ``@register_pipeline("name", check=fn)``: ``fn(config)`` runs in
``validate_config`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PIPELINES", "PIPELINE_CHECKS", "Preempted", "register_pipeline"]

PIPELINES: dict[str, Callable] = {}
PIPELINE_CHECKS: dict[str, Callable] = {}  # pipeline name -> check(config), run by validate_config



class Preempted(Exception):
    """A run stopped on request (``should_stop``) after checkpointing where it was; rerunning the
    same command resumes there.

    Attributes:
      where: what results.json reports: ``preempted_step`` (the global step of the checkpoint),
        ``preempted_stage`` and, in the symbolic pipeline, ``preempted_attempt``.
    """

    def __init__(self, **where):
        self.where = {f"preempted_{k}": v for k, v in where.items()}
        super().__init__(f"stopped on request at step {where.get('step')} (stage {where.get('stage')}); "
                         "a checkpoint holds that step")


def register_pipeline(name: str, *, check: Callable[[Any], None] | None = None):
    """Decorator: ``@register_pipeline("symbolic") def run(config, workdir, *, should_stop) -> results dict``.

    ``should_stop``: None or a callable the pipeline passes to ``loop.fit`` and checks between
    stages; when it returns True the pipeline checkpoints where it is and raises ``Preempted``.

    ``check(config)``, if given, is run by ``validate_config`` before anything is written or
    trained; it raises ``ConfigError`` naming the field and the allowed values.
    """

    def deco(fn):
        PIPELINES[name] = fn
        if check is not None:
            PIPELINE_CHECKS[name] = check
        return fn

    return deco


from kan_jax.train.pipelines import classify, fit, pde, symbolic, vae  # noqa: E402,F401  (register the built-in pipelines)
