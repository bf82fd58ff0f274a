"""python -m experiments.main --config=configs/special.py:ellipkinc --workdir=/tmp/kan_special  (~1-2 min on 2 CPU cores)

Fit a special function of two variables (scipy.special; the KAN paper's Table 2 set, see
docs/DATA.md for names and input ranges) with a KAN [2, 5, 1] through grid extension
3 -> 5 -> 10 -> 20 with L-BFGS in float64; results.json has ``test_rmse``, ``test_nrmse`` and one
``stages`` entry per grid size. Argument: ``NAME``, ``NAME,quick`` or ``quick`` (``quick`` alone
uses ellipkinc). Compare with an MLP of the same size: ``--config.model.kind=mlp``.
"""

from configs import _common, toy

DEFAULT_FUNCTION = "ellipkinc"


def get_config(arg=None):
    from kan_jax import data as kdata

    name, quick = _common.split_quick(arg, DEFAULT_FUNCTION)
    spec = kdata.special_function(name)  # unknown names: one-line ValueError listing the allowed ones
    c = toy.get_config()  # the toy's grid-extension protocol (L-BFGS, float64, grid schedule)
    c.model.widths = (len(spec.ranges), 5, 1)
    c.model.grid_range = (float(min(r[0] for r in spec.ranges)), float(max(r[1] for r in spec.ranges)))
    c.training.grid_sizes = (3, 5, 10, 20)
    c.training.steps = 1000
    c.data = _common.named_data("special", "function", name)
    if quick:
        _common.apply_quick(c)
    return c
