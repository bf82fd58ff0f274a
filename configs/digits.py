"""python -m experiments.main --config=configs/digits.py --workdir=/tmp/kan_digits  (~30 s on 2 CPU cores)

A KAN classifier on scikit-learn's bundled 8x8 digits (1797 images, 10 classes; no download):
pixels scaled to [-1, 1], a seeded stratified split holding out 445 images for the test, a KAN
[64, 16, 10] (cubic B-splines, G = 5) trained full batch with AdamW (weight decay 0.3: without
it the network fits the training set exactly within 50 steps and the test loss grows) on the
softmax cross-entropy. results.json: ``test_accuracy``, ``train_accuracy``, ``test_loss``,
``confusion``; plots/confusion.png. ``--config.model.kind=mlp`` trains the MLP with the same
parameter count (``kan_jax.train.mlp_widths_matching``: [64, 158, 10]). The argument picks
another bundled set, ``breast_cancer`` (569 rows, 30 features, 2 classes) or ``wine`` (178
rows, 13 features, 3 classes), features scaled by their training-split range (about a quarter
of the rows held out each time);
``:quick`` (``:wine,quick``) is a seconds-long smoke run. Measured in docs/MODELS.md.
"""

from configs import _common, default

# The KAN's widths per dataset: the features, one hidden layer, the classes.
WIDTHS = {"digits": (64, 16, 10), "breast_cancer": (30, 4, 2), "wine": (13, 4, 3)}


def get_config(arg=None):
    name, quick = _common.split_quick(arg, "digits")
    c = default.get_config()
    c.pipeline = "classify"
    c.dtype = "float32"
    c.data = _common.classification_data(name, scale="symmetric")
    c.model.widths = WIDTHS[name]
    c.model.grid_size = 5
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-2
    c.optimizer.weight_decay = 0.3
    c.optimizer.schedule = "cosine"
    c.optimizer.end_learning_rate_factor = 0.01
    c.training.steps = 500
    c.training.batch_size = 0  # full batch
    # Pixels sit on 17 levels with most at the lowest: quantile grids would pile up there.
    c.training.grid_update_every = 0
    c.training.stop_grid_update_step = 0
    c.training.log_every = 50
    c.training.chunk_size = 100
    c.checkpoint_every = 250
    if quick:
        _common.apply_quick(c)
        _common.quick_classification_data(c.data)
        c.training.grid_update_every = 0
    return c
