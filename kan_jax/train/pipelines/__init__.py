"""The pipelines ``train_and_evaluate`` dispatches on (``config.pipeline``).

``fit`` (``pipelines/fit.py``): train through the grid-extension stages, checkpoint, resume.
``symbolic`` (``pipelines/symbolic.py``): pykan's hellokan protocol, from sparse training to a
formula. Add one with ``@register_pipeline("name", check=fn)``: ``fn(config)`` runs in
``validate_config`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PIPELINES", "PIPELINE_CHECKS", "register_pipeline"]

PIPELINES: dict[str, Callable] = {}
PIPELINE_CHECKS: dict[str, Callable] = {}  # pipeline name -> check(config), run by validate_config



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


from kan_jax.train.pipelines import fit, symbolic  # noqa: E402,F401  (register the built-in pipelines)
