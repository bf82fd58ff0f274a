"""The "vae" pipeline: a variational autoencoder with KAN (or MLP) encoder and decoder.

Model (``VAE``): the encoder maps an image ``x`` (``n`` pixels) to the mean and log-variance of
a diagonal Gaussian posterior ``q(z | x)`` over ``d`` latents, the decoder maps ``z`` to one
logit per pixel. ``config.model.widths = (n, hidden..., d)``: the encoder is that network with
its last width doubled (mean and log-variance), the decoder its mirror ``(d, ..., hidden, n)``.
With ``model.kind = "mlp"`` each is the MLP of the matching KAN's parameter count
(``models.mlp_widths_matching``).

Likelihood: the pixels are scaled to [0, 1] and thresholded at 1/2 (``data.scale = "binary"``,
a fixed binarization), and ``p(x | z)`` is a product of Bernoullis, a proper distribution; so
the ELBO ``E_q[log p(x | z)] - KL(q(z | x) || N(0, I))`` is a lower bound of ``log p(x)`` in
nats. (Gray-level pixels under a Bernoulli "likelihood" are not a distribution, and a continuous
Bernoulli or Gaussian density grows without bound on the digits' many exactly-zero pixels.)

Training minimizes the negative ELBO (one reparameterized sample per example and step, the
step's own key: ``loop.fit(loss=ELBOLoss())``) through ``fit.train_stages``. results.json adds
``test_elbo`` and ``train_elbo`` (nats per example, averaged over ``vae.eval_samples`` posterior
samples per example), ``test_kl``, ``test_reconstruction`` (the two terms), and
``test_iw_elbo``, the importance-weighted bound (Burda et al. 2016) with ``vae.iw_samples``
samples (tighter; 0 skips it). Evaluation draws from a fixed key, so a run's numbers are
reproducible. Plots: ``plots/samples.png`` (decoder means of ``z ~ N(0, I)``) and
``plots/reconstructions.png`` (test images above the decoder means at their posterior means).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from kan_jax import plot as kplot
from kan_jax.compilation import quick_jit
from kan_jax.data import CLASSIFICATION_SETS
from kan_jax.train import loop, models
from kan_jax.train.config import ConfigError, check_number, require_fields
from kan_jax.train.pipelines import register_pipeline
from kan_jax.train.pipelines.fit import Task, train_stages

__all__ = ["VAE", "ELBOLoss", "make_vae", "gaussian_kl", "bernoulli_log_likelihood", "elbo_terms",
           "importance_weighted_elbo", "run_vae", "check_vae", "VAE_FIELDS"]

VAE_FIELDS = ("eval_samples", "iw_samples")
"""The ``vae`` section's fields (configs/vae.py defines them)."""

_EVAL_SEED = 0  # the fixed key of every evaluation's samples


# ----------------------------------------------------------------------------- math


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``KL(N(mean, exp(log_var)) || N(0, I))`` in nats, summed over the last axis:
    ``(..., d), (..., d) -> (...)``."""
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var, axis=-1)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """``log p(x | logits)`` of independent Bernoullis, summed over the last axis:
    ``x (..., n)`` in {0, 1}, ``logits (..., n)`` -> ``(...)``."""
    return -jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)


def _gaussian_log_density(z, mean, log_var):
    """``log N(z; mean, exp(log_var))`` summed over the last axis."""
    return -0.5 * jnp.sum(jnp.log(2.0 * jnp.pi) + log_var + jnp.square(z - mean) / jnp.exp(log_var), axis=-1)


def elbo_terms(model: "VAE", x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One reparameterized sample of the ELBO's terms per example: ``x (batch, n)`` ->
    ``(reconstruction, kl)``, each ``(batch,)``; the ELBO is ``reconstruction - kl``."""
    mean, log_var = model.encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)
    return bernoulli_log_likelihood(x, model.decode(z)), gaussian_kl(mean, log_var)


def importance_weighted_elbo(model: "VAE", x: jax.Array, key: jax.Array, *, samples: int) -> jax.Array:
    """The importance-weighted bound ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q(z | x)``,
    ``K = samples`` (Burda et al. 2016; ``K = 1`` is the ELBO): ``x (batch, n)`` -> ``(batch,)``."""
    mean, log_var = model.encode(x)
    eps = jax.random.normal(key, (samples,) + mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * log_var) * eps  # (K, batch, d)
    logits = model.decode(z.reshape(-1, z.shape[-1])).reshape(samples, x.shape[0], -1)
    log_w = (bernoulli_log_likelihood(x, logits) + _gaussian_log_density(z, 0.0, jnp.zeros_like(z))
             - _gaussian_log_density(z, mean, log_var))
    return jax.scipy.special.logsumexp(log_w, axis=0) - math.log(samples)


@dataclasses.dataclass(frozen=True)
class ELBOLoss:
    """``loop.fit``'s loss: the negative ELBO per example, one posterior sample each (``key``);
    ``y`` (the labels) unused."""

    def __call__(self, model, x, y, key):
        del y
        rec, kl = elbo_terms(model, x, key)
        return -jnp.mean(rec - kl)


# ----------------------------------------------------------------------------- model


class VAE(nnx.Module):
    """Encoder and decoder networks (``kan_jax.KAN`` or ``MLP``) of a VAE with ``latent_dim`` latents.

    ``encoder``: ``(batch, n) -> (batch, 2 * latent_dim)`` (mean, then log-variance);
    ``decoder``: ``(batch, latent_dim) -> (batch, n)`` logits.
    """

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module, *, latent_dim: int):
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = int(latent_dim)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(batch, n)`` -> the posterior's mean and log-variance, each ``(batch, latent_dim)``."""
        h = self.encoder(x)
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode(self, z: jax.Array) -> jax.Array:
        """``(batch, latent_dim)`` -> pixel logits ``(batch, n)``."""
        return self.decoder(z)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The reconstruction's logits at the posterior mean: ``(batch, n) -> (batch, n)``."""
        return self.decode(self.encode(x)[0])

    @property
    def grid_size(self) -> int:
        return self.encoder.grid_size

    def update_grid(self, x: jax.Array) -> None:
        """Adapts the KAN grids: the encoder's to the images ``x``, the decoder's to their posterior
        means (an MLP part has no grid and is left as it is)."""
        if hasattr(self.encoder, "update_grid"):
            self.encoder.update_grid(x)
        if hasattr(self.decoder, "update_grid"):
            self.decoder.update_grid(self.encode(x)[0])

    def refine(self, new_grid_size: int, x: jax.Array | None = None) -> None:
        """Grid extension of both KANs (the decoder's samples: the posterior means of ``x``)."""
        z = None if x is None else self.encode(x)[0]
        self.encoder.refine(new_grid_size, x)
        self.decoder.refine(new_grid_size, z)


def vae_widths(widths) -> tuple[list[int], list[int]]:
    """``(n, hidden..., d)`` -> the encoder's ``(n, hidden..., 2 d)`` and the decoder's ``(d, ..., hidden, n)``."""
    w = [int(v) for v in widths]
    return w[:-1] + [2 * w[-1]], w[::-1]


def make_vae(config, grid_size: int | None = None) -> VAE:
    """The VAE of ``config.model`` (``make_model`` for each part; the encoder seeded ``2 seed``,
    the decoder ``2 seed + 1``)."""
    enc, dec = vae_widths(config.model.widths)
    seed = int(config.seed)
    return VAE(models.make_model(config, grid_size=grid_size, widths=enc, seed=2 * seed),
               models.make_model(config, grid_size=grid_size, widths=dec, seed=2 * seed + 1),
               latent_dim=int(config.model.widths[-1]))


# ----------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=16)
def _elbo_fn(graphdef, samples: int):
    """Quick-compiled ``(state, x, key) -> (reconstruction, kl)``, each averaged over ``samples``
    posterior samples per example, ``(batch,)``."""

    def run(state, x, key):
        model = nnx.merge(graphdef, state)
        rec, kl = jax.vmap(lambda k: elbo_terms(model, x, k))(jax.random.split(key, samples))
        return rec.mean(0), kl.mean(0)

    return quick_jit(run)


@functools.lru_cache(maxsize=16)
def _iw_fn(graphdef, samples: int):
    return quick_jit(lambda state, x, key: importance_weighted_elbo(nnx.merge(graphdef, state), x, key, samples=samples))


def _vae_evaluate(samples: int):
    def evaluate(model, ds) -> dict:
        graphdef, state = nnx.split(model)
        key = jax.random.PRNGKey(_EVAL_SEED)
        out = {}
        for split in ("train", "test"):
            rec, kl = _elbo_fn(graphdef, samples)(state, loop.device_array(getattr(ds, f"x_{split}")), key)
            rec, kl = np.asarray(rec, np.float64), np.asarray(kl, np.float64)
            out[f"{split}_elbo"] = float(np.mean(rec - kl))
            if split == "test":
                out["test_reconstruction"] = float(np.mean(rec))
                out["test_kl"] = float(np.mean(kl))
        return out

    return evaluate


def _vae_report(samples: int):
    def report(model, ds) -> dict:
        if samples <= 0:
            return {}
        graphdef, state = nnx.split(model)
        x = loop.device_array(ds.x_test)
        iw = [np.asarray(_iw_fn(graphdef, samples)(state, x[i : i + 256], jax.random.PRNGKey(_EVAL_SEED)), np.float64)
              for i in range(0, x.shape[0], 256)]
        return {"test_iw_elbo": float(np.mean(np.concatenate(iw))), "iw_samples": samples}

    return report


def _side(n: int) -> int | None:
    s = int(round(math.sqrt(n)))
    return s if s * s == n else None


def _vae_plots(workdir: str, model, ds, results: dict) -> None:
    """plots/samples.png (decoder means of 64 draws of ``z ~ N(0, I)``) and plots/reconstructions.png
    (16 test images, each row above its reconstruction); square images only."""
    side = _side(ds.x_test.shape[1])
    if side is None:
        return
    z = jax.random.normal(jax.random.PRNGKey(_EVAL_SEED), (64, model.latent_dim))
    means = jax.nn.sigmoid(loop.predict(_Decoder(model), np.asarray(z)))
    title = f"{ds.name} VAE ({results.get('model')}): test ELBO {results['test_elbo']:.2f} nats"
    kplot.plot_image_grid(os.path.join(workdir, "plots", "samples.png"), np.asarray(means).reshape(-1, side, side),
                          ncols=8, title=f"samples, {title}")
    x = np.asarray(ds.x_test[:16])
    rec = np.asarray(jax.nn.sigmoid(loop.predict(model, x)))
    rows = np.concatenate([x[:8], rec[:8], x[8:], rec[8:]]).reshape(-1, side, side)
    kplot.plot_image_grid(os.path.join(workdir, "plots", "reconstructions.png"), rows, ncols=8,
                          title=f"test images and reconstructions, {title}",
                          row_labels=["data", "recon.", "data", "recon."])


class _Decoder(nnx.Module):
    """``model.decode`` as a module ``loop.predict`` can run."""

    def __init__(self, vae: VAE):
        self.vae = vae

    def __call__(self, z):
        return self.vae.decode(z)


# ----------------------------------------------------------------------------- pipeline


def check_vae(config) -> None:
    """The vae pipeline's fields (run by ``validate_config``): ``ConfigError`` naming the field."""
    require_fields(config, [f"vae.{f}" for f in VAE_FIELDS])
    d = config.data
    if d.get("kind") != "sklearn" or d.get("name") not in CLASSIFICATION_SETS:
        raise ConfigError(f"the vae pipeline needs data.kind='sklearn' with data.name one of {list(CLASSIFICATION_SETS)}, "
                          f"got kind {d.get('kind')!r}, name {d.get('name')!r}")
    if d.get("scale") != "binary":
        raise ConfigError(f"data.scale must be 'binary' for the vae pipeline (its Bernoulli likelihood needs "
                          f"0/1 pixels), got {d.get('scale')!r}")
    n = CLASSIFICATION_SETS[d.name].n_features
    widths = list(config.model.widths)
    if widths[0] != n or len(widths) < 2:
        raise ConfigError(f"model.widths must be ({n}, hidden..., latent) for data.name={d.name!r}, got {tuple(widths)}")
    if config.model.mlp_widths:
        raise ConfigError("model.mlp_widths must be None for the vae pipeline (each MLP part is sized to its KAN's "
                          "parameter count)")
    check_number("vae.eval_samples", config.vae.eval_samples, lo=1, integer=True)
    check_number("vae.iw_samples", config.vae.iw_samples, lo=0, integer=True)


def _task(config) -> Task:
    return Task(pipeline="vae", metric="test_elbo", stage_metrics=("train_elbo", "test_elbo"),
                evaluate=_vae_evaluate(int(config.vae.eval_samples)), make_model=make_vae, loss=ELBOLoss(),
                report=_vae_report(int(config.vae.iw_samples)), plots=_vae_plots)


@register_pipeline("vae", check=check_vae)
def run_vae(config, workdir: str, *, should_stop=None) -> dict:
    """Trains and evaluates the VAE of ``config`` (see the module docstring)."""
    return train_stages(config, workdir, _task(config), should_stop=should_stop)
