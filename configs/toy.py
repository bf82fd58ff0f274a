"""python -m experiments.main --config=configs/toy.py --workdir=/tmp/kan_toy  (~1.5 min on 2 CPU cores, cold compilation cache)

The KAN paper's toy grid-extension run (Liu et al. 2024, Fig. 2.3; pykan "Example 1"): fit
f(x, y) = exp(sin(pi x) + y^2) on [-1, 1]^2 (1000 train / 1000 test points) with a KAN
[2, 5, 1], cubic B-splines, L-BFGS in float64, grid sizes 3 -> 5 -> 10 -> 20 -> 50 (each stage
starts from the previous one refined to the new grid). Test RMSE reaches ~1e-5 at G = 50
(pykan: 4.0e-5 at G = 20, 1.2e-5 at G = 50); results.json has one ``stages`` entry per grid.
``:quick`` is a few-second smoke run (two small stages). ``:paper`` is the paper's scaling-law
run (Fig. 2.3): the function's exact Kolmogorov-Arnold shape [2, 1, 1] through grid sizes 3, 5,
10, 20, 50, 100, 200 (~2 min; test RMSE should fall as G^-4 until the interpolation threshold,
``scripts/sweep.py toy-scaling`` fits the slope).
"""

from configs import _common, default


def get_config(arg=None):
    options = _common.options_only(arg, "configs/toy.py", ("quick", "paper"))
    c = default.get_config()
    c.dtype = "float64"
    c.model.widths = (2, 5, 1)
    c.model.grid_size = 3
    c.optimizer.name = "lbfgs"
    c.training.grid_sizes = (3, 5, 10, 20, 50)
    # Steps are L-BFGS iterations; one pykan "step" is up to 20 torch L-BFGS iterations, so
    # pykan's 200 steps per stage are up to 4000 of ours. Measured (docs/RESULTS.md): 1000 per stage
    # ends at test RMSE 1.5e-4 (G=50), 3000 per stage at 2.6e-5. Grid updates only early in each stage.
    c.training.steps = 3000
    c.training.grid_update_every = 50
    c.training.stop_grid_update_step = 200
    c.training.log_every = 50
    c.training.chunk_size = 250
    c.checkpoint_every = 500
    if "paper" in options:
        c.model.widths = (2, 1, 1)
        c.training.grid_sizes = _common.PAPER_GRIDS
    if "quick" in options:
        _common.apply_quick(c)
    return c
