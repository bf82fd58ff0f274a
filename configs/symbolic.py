"""python -m experiments.main --config=configs/symbolic.py:'x_1*x_2' --workdir=/tmp/kan_sym  (~1-3 min on 2 CPU cores)

pykan's symbolic pipeline for any formula EXPR in x_1..x_n on [-1, 1]^n: train a KAN [n, h, 1]
with sparsity regularization, prune (attribution scores, then the narrowest hidden width that
still fits), refine the grid, fix symbolic functions layer by layer, retrain the affine params,
and write ``formula`` / ``formula_test_rmse`` (re-evaluated against the model) to results.json;
a second symbolic pass preferring simpler functions and up to 3 seeds, until the formula is
exact on the training data.
Argument: ``EXPR``, ``EXPR,quick`` or ``quick`` (a few-second smoke run; ``quick`` alone
uses ``x_1*x_2``). The hidden width defaults to
``2n + 1`` (override with ``--config.model.widths``).
"""

import ml_collections

from configs import _common, default


FULL_LIB = ("x", "x^2", "x^3", "x^4", "x^5", "1/x", "1/x^2", "sqrt", "exp", "log", "sin", "cos", "tan", "tanh",
            "abs", "sgn", "arcsin", "arctan", "arctanh", "gaussian")  # kan_jax.symbolic_lib.SYMBOLIC_LIB but "0"

DEFAULT_EXPR = "x_1*x_2"  # used when no EXPR is given (e.g. the bare "quick" argument)


def _n_vars(expr: str) -> int:
    import re

    idx = [int(k) for k in re.findall(r"x_(\d+)", expr)]
    if not idx:
        raise ValueError(f"EXPR must use variables x_1..x_n, got {expr!r}")
    return max(idx)


def get_config(arg=None):
    return make(*_common.split_quick(arg, DEFAULT_EXPR))


def make(expr: str, quick: bool = False):
    """The symbolic pipeline's config for ``expr`` (``quick``: the smoke run); the other symbolic
    configs (hellokan.py, feynman.py) start from it."""
    n = _n_vars(expr)
    c = default.get_config()
    c.pipeline = "symbolic"
    c.dtype = "float64"
    c.data.expr = expr
    c.data.ranges = (-1.0, 1.0)
    c.model.widths = (n, 2 * n + 1, 1)
    c.model.extrapolate = True
    c.model.grid_size = 5
    c.optimizer.name = "lbfgs"
    # pykan's LBFGS "steps=50" runs up to 20 iterations per step: ~1000 optax L-BFGS iterations.
    c.training.steps = 1000
    # pykan's grid schedule: "steps=50, update every 5 steps until step 50" of up to 20 L-BFGS
    # iterations each is every ~100 iterations until 1000.
    c.training.grid_update_every = 100
    c.training.stop_grid_update_step = 1000
    c.training.log_every = 100  # metrics.jsonl: train/test RMSE every 100 iterations of each stage
    # Every stage ends with a checkpoint; mid-stage ones every 500 iterations. Each orbax save
    # costs ~50 ms of host time, about what 100 iterations of a small network take: at 100, the
    # saves were 2.4 s of hellokan's 18.7 s warm run (docs/PERFORMANCE.md).
    c.checkpoint_every = 500
    # A stage whose loss stayed bit-equal for a whole chunk (100 iterations; L-BFGS stuck at float
    # rounding, as an exact symbolic fit is) ends there: the remaining iterations change nothing.
    c.training.stop_on_stall = True
    # On standardized targets (below); hellokan (raw targets) uses pykan's 0.001. A function left
    # spread over several hidden nodes is narrowed by the prune search.
    c.regularization.lamb = 0.01
    c.regularization.metric = "edge_forward_spline_n"  # pykan's default reg_metric
    c.regularization.lamb_l1 = 1.0
    c.regularization.lamb_entropy = 2.0
    c.symbolic = ml_collections.ConfigDict()
    c.symbolic.prune = True
    # Sparsity stages fit standardized targets, so lamb means the same for any target scale
    # (a fixed lamb = 0.01 flattened low-variance targets such as sqrt(1+x_1**2+x_2**2) to a constant).
    c.symbolic.standardize = True
    c.symbolic.prune_measure = "std"  # pykan's attribute: std of the edge activations
    c.symbolic.node_threshold = 1e-2
    c.symbolic.edge_threshold = 3e-2
    c.symbolic.prune_steps = 1000
    # Then the narrowest hidden widths whose retrained fit stays within 2x of the pruned one's or
    # below 1% of the target's std.
    c.symbolic.prune_search = True
    c.symbolic.prune_search_tol = 2.0
    c.symbolic.prune_search_rtol = 1e-2
    c.symbolic.refine_grid = 10
    c.symbolic.refine_steps = 1000
    # The whole library but "0" (dead edges are pruned, and "0" would beat any imperfect fit).
    c.symbolic.lib = list(FULL_LIB)
    c.symbolic.r2_threshold = 0.0
    # Fix one layer at a time (inputs first), retraining the rest in between.
    c.symbolic.progressive = True
    # One unit of complexity is worth one bit of fit (2x smaller 1 - r^2); pykan's 0.8 makes it
    # 4 bits, and then sin (complexity 2, r^2 0.9991) beat the exact arctan (4) on arctan(2*x_1).
    c.symbolic.weight_simple = 0.5
    # While the formula is not exact, the same spline network is fixed again preferring simpler
    # functions (pykan's 0.8: an almost linear hidden edge becomes x, not a slightly better tan).
    c.symbolic.weight_simple_retry = [0.8]
    c.symbolic.retrain_steps = 1000
    c.symbolic.digits = 4
    # Up to 3 seeds, stopping at the first formula exact on the training data (~1e-9 x std).
    c.symbolic.restarts = 3
    c.symbolic.exact_rtol = 1e-9
    c.symbolic.agreement_rtol = 1e-3
    # A formula that is not exact and longer than this (sympy's count_ops) is not reported: the
    # AI Feynman formulas have at most ~30 operations, a rounded 5-layer spline reading thousands.
    c.symbolic.max_formula_ops = 80
    # No exact formula: a fresh network is trained for accuracy alone through these grid sizes
    # (no penalty, refine_steps each), so the run ends with an accurate model (results.json
    # reports the lowest train RMSE of it, the symbolic model, the spline network and the formula).
    c.symbolic.accuracy_grids = [5, 10, 20]
    if quick:
        _common.apply_quick(c)
        c.symbolic.prune_steps = 10
        c.symbolic.refine_steps = 10
        c.symbolic.retrain_steps = 10
        c.symbolic.restarts = 1
        c.symbolic.weight_simple_retry = []
        c.symbolic.lib = ["x", "x^2", "sin", "exp", "0"]
        c.symbolic.accuracy_grids = [10]
    return c
