"""python -m experiments.main --config=configs/vae.py --workdir=/tmp/kan_vae  (~40 s on 2 CPU cores)

A variational autoencoder on scikit-learn's bundled 8x8 digits (no download) with a KAN encoder
[64, 32, 2 x 4] (mean and log-variance of 4 Gaussian latents) and a KAN decoder [4, 32, 64]
(pixel logits), cubic B-splines, G = 5. Pixels are scaled to [0, 1] and thresholded at 1/2, and
the likelihood is Bernoulli, so ``test_elbo`` (nats per example, higher is better) bounds
log p(x) of the binarized test images; ``test_iw_elbo`` is the tighter importance-weighted bound
(1000 samples). AdamW on the negative ELBO (one reparameterized sample per example and step),
full batch over the 1352 training images (445 held out). ``--config.model.kind=mlp``: MLP encoder and decoder
of the KANs' parameter counts. Plots: plots/samples.png, plots/reconstructions.png.
``:quick`` is a seconds-long smoke run. Measured in docs/MODELS.md.
"""

import ml_collections

from configs import _common, default


def get_config(arg=None):
    quick = _common.quick_only(arg, "configs/vae.py")
    c = default.get_config()
    c.pipeline = "vae"
    c.dtype = "float32"
    c.data = _common.classification_data("digits", scale="binary")
    c.model.widths = (64, 32, 4)  # (pixels, hidden, latents): encoder (64, 32, 8), decoder (4, 32, 64)
    c.model.grid_size = 5
    c.optimizer.name = "adamw"  # weight decay 0.1: without it the KAN VAE's test ELBO peaks at step ~1000, then falls
    c.optimizer.learning_rate = 3e-3
    c.optimizer.weight_decay = 0.1
    c.optimizer.schedule = "cosine"
    c.optimizer.end_learning_rate_factor = 0.1
    c.training.steps = 2000
    c.training.batch_size = 0  # full batch
    c.training.grid_update_every = 0
    c.training.stop_grid_update_step = 0
    c.training.log_every = 200
    c.training.chunk_size = 200
    c.checkpoint_every = 1000

    c.vae = ml_collections.ConfigDict()
    c.vae.eval_samples = 10  # posterior samples per example in the reported ELBOs
    c.vae.iw_samples = 1000  # test_iw_elbo's importance samples (0: skip it)
    if quick:
        _common.apply_quick(c)
        _common.quick_classification_data(c.data)
        c.training.grid_update_every = 0
        c.vae.iw_samples = 10
    return c
