"""python -m experiments.main --config=configs/feynman.py:I.6.2 --workdir=/tmp/kan_feynman  (~1-2 min on 2 CPU cores)

An AI Feynman equation (Udrescu & Tegmark 2020; the table ships in kan_jax/data, see
docs/DATA.md) through the symbolic pipeline of configs/symbolic.py: a KAN [n, 2n + 1, 1] on the
equation's own variables and sampling ranges, trained sparse, pruned, refined, fit symbolically
and retrained; results.json gets ``formula`` in the equation's variable names (e.g. ``sigma``,
``theta``) and ``formula_test_rmse``. Argument: ``NAME``, ``NAME,quick``, ``NAME,fit`` or ``quick``
(``quick`` alone uses I.6.2). ``fit``: accuracy only (the sweep's quick protocol, ~30 s): the fit
pipeline, KAN [n, 2n + 1, 1] through grid sizes 3, 5, 10, 20 with L-BFGS (``test_nrmse``,
no formula); ``--config.model.kind=mlp`` gives the MLP of the same parameter count.
"""

from configs import _common, symbolic, toy

DEFAULT_EQUATION = "I.6.2"


def get_config(arg=None):
    from kan_jax import data as kdata

    name, options = _common.split_options(arg, DEFAULT_EQUATION, ("quick", "fit"))
    quick = "quick" in options
    eqs = {e.name: e for e in kdata.feynman_equations()}
    if name not in eqs:
        kdata.feynman_dataset(name, train_num=1, test_num=1)  # raises the one-line error with close matches
    eq = eqs[name]
    n = len(eq.variables)
    if "fit" in options:  # the special functions' grid-extension protocol on the equation's data
        c = toy.get_config()
        c.training.grid_sizes = (3, 5, 10, 20)
        c.training.steps = 1000
    else:
        c = symbolic.make("x_1", quick)  # the pipeline's settings; data and widths are the equation's
    c.model.widths = (n, 2 * n + 1, 1)
    lows, highs = [v[1] for v in eq.variables], [v[2] for v in eq.variables]
    c.model.grid_range = (float(min(lows)), float(max(highs)))
    c.data = _common.named_data("feynman", "equation", name)
    if quick and "fit" in options:
        _common.apply_quick(c)
    elif quick:  # symbolic.make shrank the rest
        c.data.train_num = c.data.test_num = 100  # as _common.apply_quick
    return c
