"""python -m experiments.main --config=configs/pde.py --workdir=/tmp/kan_pde  (~1.5 min on 2 CPU cores, cold compilation cache)

The KAN paper's physics-informed 2-D Poisson solver (Liu et al. 2024, Sec. 3.4): laplacian(u) =
f on [-1, 1]^2 with u = 0 on the boundary, f = -2 pi^2 sin(pi x_1) sin(pi x_2), whose solution is
u = sin(pi x_1) sin(pi x_2). A KAN [2, 10, 1] (cubic B-splines, built with path="reference":
the Laplacian is jax.jvp of jax.grad, forward-over-reverse) is trained with L-BFGS in float64 on
1000 interior and 200 boundary collocation points, 300 iterations at each grid size 5, 10, 20; loss = interior residual MSE + 100 x boundary
MSE. results.json: ``test_rel_l2``, the relative L2 error against the exact solution on a
101 x 101 grid; plots/solution.png. ``--config.model.kind=mlp`` trains a tanh MLP with the
parameter count of the final KAN. ``:quick`` is a seconds-long smoke run. Measured in
docs/MODELS.md.
"""

import ml_collections

from configs import _common, default


def get_config(arg=None):
    quick = _common.quick_only(arg, "configs/pde.py")
    c = default.get_config()
    c.pipeline = "pde"
    c.dtype = "float64"
    c.model.widths = (2, 10, 1)
    c.model.grid_size = 20  # the last grid: the MLP (kind=mlp) is sized to the KAN at this grid (761 params)
    c.model.activation = "tanh"  # MLP only
    c.optimizer.name = "lbfgs"
    c.training.grid_sizes = (5, 10, 20)  # grid extension: each stage starts from the previous one refined
    c.training.steps = 300  # L-BFGS iterations per grid
    c.training.grid_update_every = 50
    c.training.stop_grid_update_step = 100
    c.training.log_every = 50
    c.training.chunk_size = 50
    c.checkpoint_every = 100

    c.data = ml_collections.ConfigDict()
    c.data.kind = "poisson"
    c.data.train_num = 1000  # interior collocation points
    c.data.boundary_num = 200
    c.data.test_grid = 101  # the test set: the exact solution on a 101 x 101 grid
    c.data.test_num = ml_collections.config_dict.placeholder(int)  # unused: test_grid**2 points
    c.data.seed = 0
    c.data.dtype = ml_collections.config_dict.placeholder(str)  # None: follow c.dtype

    c.pde = ml_collections.ConfigDict()
    c.pde.boundary_weight = 100.0  # pykan's PDE example: alpha = 0.01 on the residual, i.e. 100 here
    if quick:
        _common.apply_quick(c)
        c.training.grid_sizes = (5,)  # each grid size compiles its own training loop
        c.data.boundary_num = 40
        c.data.test_grid = 10
        c.data.test_num = None
    return c
