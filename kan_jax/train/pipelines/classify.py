"""The "classify" pipeline: a KAN (or MLP) classifier trained with softmax cross-entropy.

The data are one of scikit-learn's bundled sets (``config.data.kind = "sklearn"``,
``kan_jax.data.classification_dataset``: features scaled, labels one-hot); the network maps the
features to one logit per class (``model.widths`` from the feature count to the class count).
It trains through ``fit.train_stages`` (checkpoints, resume, preemption as the fit pipeline) on
``cross_entropy_loss``. results.json adds ``train_accuracy``, ``test_accuracy``, ``test_loss``
(mean cross-entropy in nats on the test split), ``confusion`` (test split; rows true class,
columns predicted) and ``classes``; ``plots/confusion.png`` draws that matrix.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kan_jax import plot as kplot
from kan_jax.data import CLASSIFICATION_SETS, labels_of
from kan_jax.train import loop
from kan_jax.train.config import ConfigError
from kan_jax.train.pipelines import register_pipeline
from kan_jax.train.pipelines.fit import Task, train_stages

__all__ = ["run_classify", "cross_entropy_loss", "softmax_cross_entropy", "accuracy", "confusion_matrix",
           "check_classify"]


def cross_entropy_loss(model, x: jax.Array, y: jax.Array, key=None) -> jax.Array:
    """Mean softmax cross-entropy of ``model(x)`` (logits ``(batch, n_classes)``) against one-hot
    ``y (batch, n_classes)`` (``loop.fit``'s ``loss``; ``key`` unused)."""
    del key
    return jnp.mean(optax.softmax_cross_entropy(model(x), y))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy in nats, in float64 on the host: ``logits (n, n_classes)``, integer
    ``labels (n,)``."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(z)), np.asarray(labels)]))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest logit is the label's: ``logits (n, n_classes)``, ``labels (n,)``."""
    return float(np.mean(np.argmax(np.asarray(logits), axis=1) == np.asarray(labels)))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)``: entry ``[i, j]`` is the number of rows of true class ``i``
    predicted as ``j`` (``labels``, ``predicted``: integer ``(n,)``)."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predicted)), 1)
    return m


def _evaluate(model, ds) -> dict:
    """``train_accuracy``, ``test_accuracy`` and ``test_loss`` (the forward quick-compiled, the
    metrics in float64 on the host)."""
    out = {}
    for split in ("train", "test"):
        logits = loop.predict(model, getattr(ds, f"x_{split}"), quick=True)
        labels = labels_of(getattr(ds, f"y_{split}"))
        out[f"{split}_accuracy"] = accuracy(logits, labels)
        if split == "test":
            out["test_loss"] = softmax_cross_entropy(logits, labels)
    return out


def _report(model, ds) -> dict:
    predicted = np.argmax(loop.predict(model, ds.x_test, quick=True), axis=1)
    labels = labels_of(ds.y_test)
    return {"confusion": confusion_matrix(labels, predicted, len(ds.output_names)).tolist(),
            "classes": list(ds.output_names)}


def _plots(workdir: str, model, ds, results: dict) -> None:
    """plots/confusion.png: the test split's confusion matrix."""
    matrix = results.get("confusion") or _report(model, ds)["confusion"]
    kplot.plot_confusion(os.path.join(workdir, "plots", "confusion.png"), matrix, ds.output_names,
                         title=f"{ds.name} {results.get('model')}: test accuracy {results['test_accuracy']:.4f}")


CLASSIFY = Task(pipeline="classify", metric="test_accuracy", stage_metrics=("train_accuracy", "test_accuracy", "test_loss"),
                evaluate=_evaluate, loss=cross_entropy_loss, report=_report, plots=_plots)


def check_classify(config) -> None:
    """The classify pipeline's fields (run by ``validate_config``): ``ConfigError`` naming the field."""
    d = config.data
    if d.get("kind") != "sklearn":
        raise ConfigError(f"the classify pipeline needs data.kind='sklearn', got {d.get('kind')!r}")
    name = d.get("name")
    if name not in CLASSIFICATION_SETS:
        raise ConfigError(f"data.name must be one of {list(CLASSIFICATION_SETS)}, got {name!r}")
    spec = CLASSIFICATION_SETS[name]
    widths = list(config.model.widths)
    if widths[0] != spec.n_features or widths[-1] != spec.n_classes:
        raise ConfigError(f"model.widths must go from {spec.n_features} features to {spec.n_classes} classes for "
                          f"data.name={name!r}, e.g. ({spec.n_features}, 16, {spec.n_classes}); got {tuple(widths)}")


@register_pipeline("classify", check=check_classify)
def run_classify(config, workdir: str, *, should_stop=None) -> dict:
    """Trains and evaluates the classifier of ``config`` (see the module docstring)."""
    return train_stages(config, workdir, CLASSIFY, should_stop=should_stop)
