"""KAN layers inside task models: the classify, vae and pde pipelines (configs/digits.py, vae.py,
pde.py), their math against closed forms and numerical integration, their datasets, and
``loop.fit``'s custom loss."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from flax import nnx

import kan_jax
from kan_jax import data, train
from kan_jax.train import loop, models
from kan_jax.train.pipelines import classify, pde, vae
from kan_jax.train.pipelines import fit as fit_pipeline


def _config(name, arg="quick"):
    import importlib

    return importlib.import_module(f"configs.{name}").get_config(arg)


def _plots(workdir):
    return sorted(os.listdir(os.path.join(workdir, "plots")))


# ----------------------------------------------------------------------------- end to end


def test_digits_quick_end_to_end(tmp_path):
    r = train.train_and_evaluate(_config("digits"), str(tmp_path))
    assert r["status"] == "completed" and r["pipeline"] == "classify" and r["model"] == "kan"
    for key in ("train_accuracy", "test_accuracy"):
        assert 0.0 <= r[key] <= 1.0
    assert r["test_accuracy"] > 0.5  # 20 steps on 100 images: far above chance (0.1)
    assert np.isfinite(r["test_loss"]) and r["n_params"] == models.kan_param_count([64, 16, 10], 5, 3)
    confusion = np.asarray(r["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 100
    assert np.trace(confusion) / 100 == pytest.approx(r["test_accuracy"])
    assert r["classes"] == [str(d) for d in range(10)]
    assert _plots(tmp_path) == ["confusion.png", "loss.png"]
    assert json.loads((tmp_path / "results.json").read_text())["test_accuracy"] == r["test_accuracy"]


def test_wine_quick_mlp_matches_the_kan_parameter_count(tmp_path):
    c = _config("digits", "wine,quick")
    c.model.kind = "mlp"
    r = train.train_and_evaluate(c, str(tmp_path))
    kan = models.kan_param_count([13, 4, 3], 5, 3)
    assert r["status"] == "completed" and r["dataset"] == "wine" and len(r["confusion"]) == 3
    assert abs(r["n_params"] - kan) <= 13 + 1 + 3  # one hidden unit's weights
    assert "stages" not in r


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vae")
    return d, train.train_and_evaluate(_config("vae"), str(d))


def test_vae_quick_end_to_end(vae_run):
    tmp_path, r = vae_run
    assert r["status"] == "completed" and r["pipeline"] == "vae"
    for key in ("train_elbo", "test_elbo", "test_iw_elbo"):
        assert np.isfinite(r[key]) and r[key] < 0, key  # a bound on the log-probability of binary pixels
    assert r["test_elbo"] == pytest.approx(r["test_reconstruction"] - r["test_kl"])
    assert r["test_kl"] >= 0 and r["test_elbo"] > -64 * math.log(2) - 10  # near or above the coin-flip model
    enc, dec = vae.vae_widths((64, 32, 4))
    assert (enc, dec) == ([64, 32, 8], [4, 32, 64])
    assert r["n_params"] == models.kan_param_count(enc, 5, 3) + models.kan_param_count(dec, 5, 3)
    assert _plots(tmp_path) == ["loss.png", "reconstructions.png", "samples.png"]


def test_vae_resumes_bitwise_after_a_kill(vae_run, tmp_path, monkeypatch):
    """The ELBO's noise is ``fold_in`` of the step: a run killed after its checkpoint at step 10
    and rerun ends where an uninterrupted one does."""
    _, full = vae_run

    class Killed(Exception):
        pass

    def kill(step):
        if step == 10:
            raise Killed

    monkeypatch.setattr(fit_pipeline, "_after_checkpoint", kill)
    with pytest.raises(Killed):
        train.train_and_evaluate(_config("vae"), str(tmp_path / "resumed"))
    monkeypatch.setattr(fit_pipeline, "_after_checkpoint", None)
    resumed = train.train_and_evaluate(_config("vae"), str(tmp_path / "resumed"))
    for key in ("steps", "train_elbo", "test_elbo", "test_iw_elbo", "stages"):
        assert resumed[key] == full[key], key


def test_pde_quick_end_to_end(tmp_path):
    r = train.train_and_evaluate(_config("pde"), str(tmp_path))
    assert r["status"] == "completed" and r["pipeline"] == "pde" and r["grid_size"] == 5
    assert 0 < r["test_rel_l2"] < 1.0 and r["test_max_error"] > 0  # 20 L-BFGS steps from a random KAN
    assert np.isfinite(r["train_residual_rmse"]) and np.isfinite(r["train_boundary_rmse"])
    assert [s["grid_size"] for s in r["stages"]] == [5] and r["stages"][0]["test_rel_l2"] == r["test_rel_l2"]
    assert _plots(tmp_path) == ["loss.png", "solution.png"]


def test_summary_line_names_the_task_metric():
    assert train.summary_line({"status": "completed", "test_accuracy": 0.97333}, "/w") == (
        "completed: test_accuracy 0.9733; results, metrics and plots/ in /w")
    assert train.summary_line({"status": "completed", "test_elbo": -19.523}, "/w").startswith("completed: test_elbo -19.52;")
    assert train.summary_line({"status": "completed", "test_rel_l2": 0.00251}, "/w").startswith(
        "completed: test_rel_l2 0.00251;")


@pytest.mark.parametrize("name,field,value,needle", [
    ("digits", "model.widths", (64, 16, 3), "model.widths must go from 64 features to 10 classes"),
    ("digits", "data.kind", "expression", "the classify pipeline needs data.kind='sklearn'"),
    ("digits", "data.scale", "log", "config.data: data.scale must be one of"),
    ("vae", "data.scale", "unit", "data.scale must be 'binary' for the vae pipeline"),
    ("vae", "vae.eval_samples", 0, "vae.eval_samples must be an integer >= 1"),
    ("vae", "model.mlp_widths", (64, 10, 8), "model.mlp_widths must be None for the vae pipeline"),
    ("pde", "model.activation", "relu", "model.activation must be one of ['silu', 'tanh', 'gelu'] for the pde"),
    ("pde", "pde.boundary_weight", -1.0, "pde.boundary_weight must be a number > 0.0"),
    ("pde", "model.widths", (2, 10, 2), "model.widths must go from 2 inputs to 1 output"),
])
def test_bad_task_config_is_a_config_error_naming_the_field(tmp_path, name, field, value, needle):
    c = _config(name)
    if field == "model.activation":
        c.model.kind = "mlp"
    *parents, leaf = field.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(train.ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        train.train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- classification


def test_accuracy_confusion_and_cross_entropy_against_sklearn():
    from sklearn.metrics import confusion_matrix, log_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4)) * 3
    labels = rng.integers(0, 4, 200)
    predicted = logits.argmax(1)
    assert classify.accuracy(logits, labels) == pytest.approx(np.mean(predicted == labels))
    np.testing.assert_array_equal(classify.confusion_matrix(labels, predicted, 4),
                                  confusion_matrix(labels, predicted, labels=range(4)))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert classify.softmax_cross_entropy(logits, labels) == pytest.approx(log_loss(labels, probs, labels=range(4)))
    onehot = np.eye(4)[labels]
    model = lambda x: x  # noqa: E731  (the logits are the inputs)
    assert float(classify.cross_entropy_loss(model, jnp.asarray(logits), jnp.asarray(onehot))) == pytest.approx(
        classify.softmax_cross_entropy(logits, labels))


def test_classification_dataset_split_scale_and_labels():
    ds = data.classification_dataset("digits", test_num=445, seed=3)
    assert ds.x_train.shape == (1352, 64) and ds.x_test.shape == (445, 64) and ds.task == "classification"
    assert ds.x_train.min() == -1.0 and ds.x_train.max() == 1.0
    from sklearn.datasets import load_digits

    raw = load_digits()
    rows = {tuple(r) for r in (raw.data / 8.0 - 1.0).astype(np.float32)}
    assert all(tuple(r) in rows for r in ds.x_test[:20])  # the pixels, scaled 0..16 -> -1..1
    counts = data.labels_of(ds.y_test).tolist()
    assert all(abs(counts.count(k) - 44.5) <= 2 for k in range(10))  # stratified
    again = data.classification_dataset("digits", test_num=445, seed=3)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    binary = data.classification_dataset("digits", test_num=445, seed=3, scale="binary")
    assert set(np.unique(binary.x_train)) == {0.0, 1.0}
    np.testing.assert_array_equal(binary.x_train, (ds.x_train >= 0).astype(np.float32))
    wine = data.load({"kind": "sklearn", "name": "wine", "test_num": 42, "train_num": None, "scale": "unit"})
    assert wine.x_train.shape == (136, 13) and wine.x_train.min() == 0.0 and wine.x_train.max() == 1.0
    with pytest.raises(ValueError, match="'wine' has 178 rows"):
        data.classification_dataset("wine", test_num=100, train_num=100)
    with pytest.raises(ValueError, match="data.name must be one of"):
        data.classification_dataset("iris", test_num=10)


# ----------------------------------------------------------------------------- VAE


def test_gaussian_kl_equals_numerical_integration():
    mean = np.array([0.3, -1.2, 0.0])
    log_var = np.array([-0.7, 0.4, 0.0])
    expected = 0.0
    for m, lv in zip(mean, log_var):
        q = scipy.stats.norm(m, math.exp(0.5 * lv))
        expected += scipy.integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - scipy.stats.norm.logpdf(z)), -20, 20)[0]
    assert float(vae.gaussian_kl(jnp.asarray(mean), jnp.asarray(log_var))) == pytest.approx(expected, rel=1e-8)
    assert float(vae.gaussian_kl(jnp.zeros(3), jnp.zeros(3))) == 0.0


def test_bernoulli_log_likelihood_equals_scipy():
    x = np.array([[0.0, 1.0, 1.0, 0.0]])
    logits = np.array([[-2.0, 0.5, 3.0, 1.5]])
    expected = scipy.stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum()
    assert float(vae.bernoulli_log_likelihood(jnp.asarray(x), jnp.asarray(logits))[0]) == pytest.approx(expected)


class _Affine(nnx.Module):
    """A fixed affine map ``x @ w + b`` (a stand-in network with a known likelihood)."""

    def __init__(self, w, b):
        self.w = nnx.Param(jnp.asarray(w, jnp.float64))
        self.b = nnx.Param(jnp.asarray(b, jnp.float64))

    def __call__(self, x):
        return x @ self.w[...] + self.b[...]


def test_elbo_and_importance_weighted_bound_bracket_the_integrated_log_likelihood():
    """One latent, two pixels with logits ``a z + c``: log p(x) by quadrature over z. The ELBO lies
    below it, the importance-weighted bound between them and, with 4000 samples, within 0.01."""
    a, c = np.array([2.0, -1.5]), np.array([0.3, 0.2])
    x = np.array([[1.0, 0.0]])
    enc = _Affine(np.zeros((2, 2)), np.array([0.8, math.log(0.3)]))  # q(z|x) = N(0.8, 0.3)
    model = vae.VAE(enc, _Affine(a[None, :], c), latent_dim=1)

    def joint(z):
        p = 1 / (1 + np.exp(-(a * z + c)))
        return scipy.stats.norm.pdf(z) * np.prod(np.where(x[0] == 1, p, 1 - p))

    log_px = math.log(scipy.integrate.quad(joint, -12, 12)[0])
    with jax.enable_x64(True):
        xs = jnp.asarray(x)
        rec, kl = jax.vmap(lambda k: vae.elbo_terms(model, xs, k))(jax.random.split(jax.random.PRNGKey(0), 4000))
        elbo = float(jnp.mean(rec - kl))
        iw = float(vae.importance_weighted_elbo(model, xs, jax.random.PRNGKey(1), samples=4000)[0])
    assert elbo < iw <= log_px + 0.01 and iw == pytest.approx(log_px, abs=0.01)


def test_kan_vae_counts_and_shapes():
    c = _config("vae")
    model = vae.make_vae(c)
    x = jnp.zeros((3, 64))
    mean, log_var = model.encode(x)
    assert mean.shape == log_var.shape == (3, 4) and model(x).shape == (3, 64) and model.grid_size == 5
    c.model.kind = "mlp"
    mlp = vae.make_vae(c)
    assert abs(models.count_params(mlp) - models.count_params(model)) < 200


# ----------------------------------------------------------------------------- PDE


def test_laplacian_of_known_functions():
    with jax.enable_x64(True):
        x = jax.random.uniform(jax.random.PRNGKey(0), (50, 2), jnp.float64, -1, 1)
        u = lambda p: jnp.sin(jnp.pi * p[:, 0]) * jnp.sin(jnp.pi * p[:, 1])  # noqa: E731
        np.testing.assert_allclose(pde.laplacian(u, x), data.poisson_source(np.asarray(x)), rtol=1e-12)
        poly = lambda p: p[:, 0] ** 3 * p[:, 1] + p[:, 1] ** 2 + 5 * p[:, 0]  # noqa: E731
        np.testing.assert_allclose(pde.laplacian(poly, x), 6 * x[:, 0] * x[:, 1] + 2, rtol=1e-12)
        x3 = jax.random.uniform(jax.random.PRNGKey(1), (7, 3), jnp.float64)
        gauss = lambda p: jnp.exp(-jnp.sum(p**2, axis=1))  # noqa: E731  laplacian: (4|p|^2 - 2d) exp(-|p|^2)
        r2 = jnp.sum(x3**2, axis=1)
        np.testing.assert_allclose(pde.laplacian(gauss, x3), (4 * r2 - 6) * jnp.exp(-r2), rtol=1e-12)


def test_laplacian_of_a_reference_kan_equals_its_hessian_trace():
    """Through a KAN built with ``path="reference"`` (forward-mode differentiable): the batched
    jvp-of-grad equals the trace of each point's Hessian."""
    with jax.enable_x64(True):
        model = kan_jax.KAN([2, 3, 1], grid_size=5, path="reference", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        x = jax.random.uniform(jax.random.PRNGKey(2), (6, 2), jnp.float64, -0.9, 0.9)
        hess = nnx.jit(lambda m, x: jax.vmap(jax.hessian(lambda p: m(p[None])[0, 0]))(x))(model, x)
        lap = nnx.jit(lambda m, x: pde.laplacian(lambda p: m(p)[:, 0], x))(model, x)
        np.testing.assert_allclose(lap, jnp.trace(hess, axis1=1, axis2=2), rtol=1e-9, atol=1e-9)


def test_poisson_loss_vanishes_at_the_exact_solution_and_dataset_columns():
    ds = data.poisson_dataset(train_num=200, boundary_num=40, test_grid=7, seed=1, dtype="float64")
    assert ds.x_train.shape == (240, 2) and ds.x_test.shape == (49, 2) and ds.task == "pde"
    edge = ds.y_train[:, 2] == 1
    assert edge.sum() == 40 and np.all(np.abs(ds.x_train[edge]).max(1) == 1.0)
    assert np.all(np.abs(ds.x_train[~edge]) < 1.0)
    np.testing.assert_allclose(ds.y_train[~edge, 0], data.poisson_source(ds.x_train[~edge]))
    np.testing.assert_allclose(ds.y_test[:, 1], data.poisson_solution(ds.x_test), atol=1e-15)
    exact = lambda p: (jnp.sin(jnp.pi * p[:, 0]) * jnp.sin(jnp.pi * p[:, 1]))[:, None]  # noqa: E731
    with jax.enable_x64(True):
        residual, boundary = pde.poisson_terms(exact, jnp.asarray(ds.x_train), jnp.asarray(ds.y_train))
        assert float(residual) < 1e-20 and float(boundary) < 1e-28
        shifted = lambda p: exact(p) + 0.1  # noqa: E731  residual unchanged, boundary error 0.1
        loss = pde.PoissonLoss(boundary_weight=100.0)(shifted, jnp.asarray(ds.x_train), jnp.asarray(ds.y_train))
        assert float(loss) == pytest.approx(100.0 * 0.01)
    assert pde.relative_l2(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))


# ----------------------------------------------------------------------------- loop.fit(loss=...)


def test_fit_with_a_custom_mse_loss_follows_the_default_path():
    ds = data.expression_dataset("x_1*x_2", train_num=32, test_num=8, seed=0, dtype="float64")
    c = _config("toy")
    c.model.widths = (2, 3, 1)
    start = train.make_model(c, dtype="float64")
    opt = train.make_optimizer(c.optimizer, 8)

    def mse(model, x, y, key):
        return jnp.mean(jnp.square(model(x) - y))

    with jax.enable_x64(True):
        _, default = train.fit(nnx.clone(start), ds, steps=8, optimizer=opt, chunk_size=4)
        _, custom = train.fit(nnx.clone(start), ds, steps=8, optimizer=opt, chunk_size=4, loss=mse)
    np.testing.assert_allclose(custom["train_loss"], default["train_loss"], rtol=1e-10)
    with pytest.raises(ValueError, match="regularization applies to the mean squared error only"):
        train.fit(nnx.clone(start), ds, steps=2, optimizer=opt, loss=mse, regularization={"lamb": 1.0})


def test_fit_gives_a_custom_loss_a_new_key_every_step():
    ds = data.expression_dataset("x_1", train_num=8, test_num=8, seed=0)
    model = train.MLP([1, 1], rngs=nnx.Rngs(0))

    def noise(model, x, y, key):  # the loss is the key's draw: its gradient is 0, the params stay
        return jax.random.uniform(key) + 0.0 * jnp.sum(model(x))

    _, hist = train.fit(model, ds, steps=6, optimizer=train.make_optimizer(_config("digits").optimizer, 6),
                        chunk_size=3, loss=noise, key=jax.random.PRNGKey(5))
    expected = [float(jax.random.uniform(loop._loss_key(jax.random.PRNGKey(5), s))) for s in range(6)]
    np.testing.assert_allclose(hist["train_loss"], expected, rtol=1e-6)
    assert len(set(hist["train_loss"])) == 6
