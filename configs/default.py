"""python -m experiments.main --config=configs/default.py --workdir=/tmp/kan_default  (~30 s on 2 CPU cores)

The base config every experiment config starts from: a KAN [2, 5, 1] fitted with L-BFGS to
f(x_1, x_2) = exp(sin(pi*x_1) + x_2**2) at one grid size. ``:quick`` is a few-second smoke run.
Fields (docs/DESIGN.md): seed, model.*, optimizer.*, training.*, regularization.*, data.*, mesh, dtype,
pipeline. Every field the runner (kan_jax.train) reads is defined here with its value: the
defaults live in the configs, not in the library. The symbolic pipeline's ``symbolic`` section is
added by configs/symbolic.py.
"""

import ml_collections

from configs import _common


def get_config(arg=None):
    """Returns the default config; ``arg="quick"`` shrinks it to a smoke run."""
    quick = _common.quick_only(arg, "configs/default.py")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.pipeline = "fit"  # "fit"; other pipelines register in kan_jax.train.PIPELINES
    c.dtype = "float64"  # "float32" or "float64" (sets jax_enable_x64 before anything is built)
    c.mesh = ml_collections.config_dict.placeholder(str)  # "data:-1" (None), "data:2,model:2": docs/SCALING.md
    c.compilation_cache_dir = ml_collections.config_dict.placeholder(str)  # None: ~/.cache/kan_jax/jax; "": off

    c.model = ml_collections.ConfigDict()
    c.model.kind = "kan"  # "kan" or "mlp"
    c.model.widths = (2, 5, 1)
    c.model.grid_size = 5
    c.model.spline_order = 3
    c.model.basis = "bspline"
    c.model.grid_range = (-1.0, 1.0)
    c.model.extrapolate = True  # continue splines' end pieces beyond the grid (KANLayer(extrapolate=...))
    # KAN layers on a mesh's model axis (docs/SCALING.md): "alternate" (pairs of layers split
    # outputs then inputs: a third of the memory per device on a 4-way axis) or "outputs" (every
    # layer on its outputs, kan_jax.KAN's own default). KAN only: an MLP's weights are replicated.
    c.model.sharding = "alternate"
    c.model.activation = "silu"  # MLP only
    c.model.mlp_widths = ml_collections.config_dict.placeholder(tuple)  # MLP only; None: match the KAN's params

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "lbfgs"  # "adam", "adamw" or "lbfgs"
    c.optimizer.learning_rate = 1e-2  # adam/adamw (L-BFGS: line search picks the step)
    c.optimizer.schedule = "constant"  # "constant", "cosine", "warmup_cosine", "exponential"
    c.optimizer.warmup_steps = 0
    c.optimizer.end_learning_rate_factor = 0.0
    c.optimizer.b1 = 0.9  # adam/adamw
    c.optimizer.b2 = 0.999  # adam/adamw
    c.optimizer.weight_decay = 1e-4  # adamw
    c.optimizer.grad_clip = 0.0
    c.optimizer.memory_size = 10  # lbfgs history
    c.optimizer.linesearch = "zoom"  # lbfgs: "zoom" (strong Wolfe, pykan's) or "backtracking" (Armijo)
    c.optimizer.max_linesearch_steps = 20  # lbfgs line search
    c.optimizer.use_learning_rate = False  # lbfgs: True scales the direction by learning_rate before the line search

    c.training = ml_collections.ConfigDict()
    c.training.steps = 200  # per stage (or a list, one per stage)
    c.training.grid_sizes = ()  # grid extension stages; () = one stage at model.grid_size
    c.training.batch_size = 0  # 0 / -1 = full batch
    c.training.grid_update_every = 5  # pykan fit: update_grid every 5 steps ...
    c.training.stop_grid_update_step = 50  # ... until step 50
    c.training.log_every = 20
    c.training.chunk_size = 100  # steps per jitted call
    # Symbolic pipeline only: end a stage early once a whole chunk of steps left the loss bit-equal
    # (L-BFGS stuck at float rounding) and no grid update is left (kan_jax.train.loop.fit).
    c.training.stop_on_stall = False

    c.regularization = ml_collections.ConfigDict()
    c.regularization.lamb = 0.0  # > 0 adds lamb * kan_jax.regularize.penalty(...)
    c.regularization.metric = "edge_forward_spline_n"  # pykan's reg_metric (kan_jax.regularize.METRICS)
    c.regularization.lamb_l1 = 1.0
    c.regularization.lamb_entropy = 2.0
    c.regularization.lamb_coef = 0.0
    c.regularization.lamb_coefdiff = 0.0

    c.checkpoint_every = 100  # steps (0 = only at stage ends)
    c.checkpoint_max_to_keep = 3

    c.data = ml_collections.ConfigDict()
    c.data.kind = "expression"  # "expression", "feynman" or "special"
    c.data.expr = "exp(sin(pi*x_1)+x_2**2)"
    c.data.ranges = (-1.0, 1.0)
    c.data.n_var = ml_collections.config_dict.placeholder(int)  # None: the largest k of the x_k in expr
    c.data.train_num = 1000
    c.data.test_num = 1000
    c.data.seed = 0
    c.data.noise = 0.0  # Gaussian noise on the training targets, relative to their std (test stays clean)
    c.data.dtype = ml_collections.config_dict.placeholder(str)  # None: follow c.dtype

    if quick:
        _common.apply_quick(c)
    return c
