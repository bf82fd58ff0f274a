"""End-to-end: the symbolic pipeline (configs/symbolic.py:'...,quick') writes a formula, re-evaluates it, draws the diagrams."""

import importlib.util
import json
import os

import numpy as np
import pytest
import sympy

from kan_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _symbolic_config(arg):
    spec = importlib.util.spec_from_file_location("_cfg_symbolic_e2e", os.path.join(ROOT, "configs", "symbolic.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def test_symbolic_pipeline_quick_writes_and_checks_formula(tmp_path):
    c = _symbolic_config("x_1+x_2**2,quick")
    c.model.widths = [2, 2, 1]  # tiny: a few seconds
    c.symbolic.lib = ["x", "x^2", "sin"]
    r = train.train_and_evaluate(c, str(tmp_path))
    assert r["status"] == "completed", r
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["formula"] == r["formula"] and isinstance(r["formula"], str)
    # The formula is sympy-parsable in the input names and re-evaluated by the pipeline on the test set.
    expr = sympy.sympify(r["formula"])
    assert {str(s) for s in expr.free_symbols} <= {"x_1", "x_2"}
    assert r["formula_ops"] == sympy.count_ops(sympy.sympify(r["formula"]))  # its size
    for key in ("formula_test_rmse", "formula_vs_model_rmse"):
        assert np.isfinite(r[key]), key
    assert isinstance(r["formula_agreement"], bool) and isinstance(r["formula_far_worse"], bool)
    # Our own re-evaluation on the pipeline's test set gives the same RMSE.
    from kan_jax import data as kdata

    ds = kdata.load(c.data)
    f = sympy.lambdify(sympy.symbols("x_1 x_2"), expr, "numpy")
    x, y = np.asarray(ds.x_test, np.float64), np.asarray(ds.y_test, np.float64).reshape(-1)
    rmse = float(np.sqrt(np.mean((np.broadcast_to(f(x[:, 0], x[:, 1]), y.shape) - y) ** 2)))
    np.testing.assert_allclose(rmse, r["formula_test_rmse"], rtol=1e-3, atol=1e-6)
    # Stages and the diagrams before / after auto_symbolic.
    names = [s["stage"] for s in r["stages"]]
    search = [s for s in r["stages"] if s["stage"].startswith("prune_search")]
    base = ["train", "prune"] + [s["stage"] for s in search] + ["refine", "symbolic_layer0", "auto_symbolic", "retrain"]
    # A formula that is not exact is followed by the accuracy refit (quick: one stage at G = 10).
    assert names[: len(base)] == base and names[len(base):] in ([], ["accuracy_G10"]), names
    assert ("refit_test_rmse" in r) == (names[-1] == "accuracy_G10")
    assert all(isinstance(s["accepted"], bool) for s in search)
    assert r["pruned_widths"] == [st for st in r["stages"] if st["stage"] == "retrain"][-1]["widths"]
    for name in ("kan_before.png", "kan.png"):
        png = tmp_path / "plots" / name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_a_long_inexact_formula_is_not_reported(tmp_path):
    """A formula that is not exact and longer than ``symbolic.max_formula_ops`` gives
    ``formula: null`` with its size and the bound named; the spline model's results stay."""
    c = _symbolic_config("sin(3*x_1)*x_2,quick")  # a quick [2, 1, 1] run never reaches it exactly
    c.model.widths = [2, 1, 1]
    c.symbolic.lib = ["x", "sin"]
    c.symbolic.prune_search = False
    c.symbolic.max_formula_ops = 1
    r = train.train_and_evaluate(c, str(tmp_path))
    assert r["status"] == "completed" and r["formula"] is None, r.get("formula")
    assert r["formula_ops"] > 1 and "symbolic.max_formula_ops=1" in r["formula_error"], r["formula_error"]
    # Accuracy first: the formula is not exact, so a fresh network is fit for accuracy alone
    # (symbolic.accuracy_grids; quick: G = 10), and the reported metrics are those of the
    # lowest *train* RMSE of the symbolic model, the spline network and the refit.
    last = {st["stage"]: st for st in r["stages"]}
    assert last["accuracy_G10"]["widths"] == list(c.model.widths) and last["accuracy_G10"]["grid_size"] == 10  # a fresh network
    test_of = {"symbolic_model": r["symbolic_model_test_rmse"], "spline_model": r["model_test_rmse_before_symbolic"],
               "refit_model": r["refit_test_rmse"]}
    train_of = {"symbolic_model": last["retrain"]["train_rmse"], "spline_model": last["refine"]["train_rmse"],
                "refit_model": last["accuracy_G10"]["train_rmse"]}
    assert r["test_rmse"] == test_of[r["reported"]]
    assert r["reported"] == min(train_of, key=train_of.get), train_of
    np.testing.assert_allclose(r["refit_test_rmse"], last["accuracy_G10"]["test_rmse"], rtol=1e-9)
    c.symbolic.max_formula_ops = 0
    with pytest.raises(ValueError, match="symbolic.max_formula_ops"):
        train.train_and_evaluate(c, str(tmp_path / "bad"))
    c.symbolic.max_formula_ops = 1
    for grids in ([2], [20, 10], ["x"]):
        c.symbolic.accuracy_grids = grids
        with pytest.raises(ValueError, match=r"symbolic.accuracy_grids must be a non-decreasing list of grid sizes >= 5"):
            train.train_and_evaluate(c, str(tmp_path / "bad"))


def test_unstandardize_output_is_exact():
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import kan_jax
    from kan_jax.train.pipelines.symbolic import _unstandardize_output

    model = kan_jax.KAN([2, 3, 1], rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (50, 2)))
    y0 = model(x)
    _unstandardize_output(model, 1.5, 2.0)
    np.testing.assert_allclose(model(x), 2.0 * y0 + 1.5, atol=1e-12)


def test_symbolic_pipeline_restarts_keep_the_best_train_formula(tmp_path):
    """An inexact formula triggers the next seed; the lowest *train* RMSE attempt is reported."""
    c = _symbolic_config("sin(3*x_1)*x_2,quick")  # not reachable by a quick [2, 1, 1] run: never exact
    c.model.widths = [2, 1, 1]
    c.symbolic.lib = ["x", "sin"]
    c.symbolic.prune_search = False
    c.symbolic.restarts = 2
    c.symbolic.weight_simple_retry = [0.9, 0.5]  # 0.5 repeats weight_simple: tried once
    r = train.train_and_evaluate(c, str(tmp_path))
    att = r["attempts"]
    assert [a["seed"] for a in att] == [c.seed, c.seed + 1]
    assert r["formula_train_rmse"] == min(a["formula_train_rmse"] for a in att) > 0
    assert r["seed"] == att[int(np.argmin([a["formula_train_rmse"] for a in att]))]["seed"]
    assert r["formula"] == att[[a["seed"] for a in att].index(r["seed"])]["formula"]
    # Within the reported attempt: a pass per distinct weight_simple, the best train formula kept.
    passes = r["symbolic_passes"]
    assert [p["weight_simple"] for p in passes] == [0.5, 0.9]
    best = min(passes, key=lambda p: p["formula_train_rmse"])
    assert r["formula"] == best["formula"] and r["formula_train_rmse"] == best["formula_train_rmse"]
    assert [s["weight_simple"] for s in r["stages"] if s["stage"] == "auto_symbolic"] == [best["weight_simple"]]
    c.symbolic.restarts = 0
    with pytest.raises(ValueError, match="symbolic.restarts"):
        train.train_and_evaluate(c, str(tmp_path / "bad"))
    c.symbolic.restarts = 1
    c.symbolic.weight_simple_retry = [1.5]
    with pytest.raises(ValueError, match=r"symbolic.weight_simple_retry.*\[0, 1\]"):
        train.train_and_evaluate(c, str(tmp_path / "bad2"))


def test_symbolic_config_library_is_the_whole_library_but_zero():
    from kan_jax.symbolic import SYMBOLIC_LIB

    c = _symbolic_config("x_1*x_2")
    assert list(c.symbolic.lib) == [k for k in SYMBOLIC_LIB if k != "0"]


def test_pass_through_edges():
    """Hidden nodes with exactly one active incoming edge; output nodes never count."""
    import jax.numpy as jnp
    from flax import nnx

    import kan_jax
    from kan_jax import symbolic as S
    from kan_jax.symbolic import SYMBOLIC_LIB
    from kan_jax.train.pipelines.symbolic import pass_through_edges

    model = kan_jax.KAN([2, 3, 1], grid_size=3, rngs=nnx.Rngs(0))
    l0 = model.layers[0]
    mask = np.ones((2, 3))
    mask[1, 0] = 0.0  # node 0 has one input (x_1)
    mask[:, 2] = 0.0  # node 2 has none: not a pass-through
    l0.mask.set_value(jnp.asarray(mask, l0.mask[...].dtype))
    assert pass_through_edges(model, 0) == [(0, 0)]
    assert pass_through_edges(model, 1) == []  # the output layer
    # A node whose other input is already symbolic has two inputs.
    model.layers[0].mask.set_value(jnp.ones((2, 3), l0.mask[...].dtype))
    S.fix_symbolic(model, 0, 1, 1, "x", fit_params=False)
    mask = np.asarray(model.layers[0].mask[...]).copy()
    mask[0, 1] = 1.0
    mask[1, 0] = mask[0, 2] = mask[1, 2] = 0.0
    model.layers[0].mask.set_value(jnp.asarray(mask, mask.dtype))
    assert pass_through_edges(model, 0) == [(0, 0)]
    # fix_symbolic stores the canonical form: a linear edge is c * x + d.
    x = jnp.linspace(-1, 1, 64)[:, None] * jnp.ones((1, 2))
    p, r2 = S.fix_symbolic(model, 0, 0, 0, "x", x, lib=SYMBOLIC_LIB)
    assert p[0] == 1.0 and p[1] == 0.0 and r2 > 0.9


def test_diverged_symbolic_fit_is_recognized():
    from kan_jax.train.pipelines.symbolic import _diverged

    assert _diverged(float("nan"), 1e-4, 1.0) and _diverged(float("inf"), 1e-4, 1.0)
    assert _diverged(2.6e61, 8.7e-5, 0.6)  # the blow-up seen on exp(-4*x_1**2)+x_2, seed 1
    assert not _diverged(5e-4, 8.7e-5, 0.6)  # worse than the splines, still a formula worth reading
    assert not _diverged(0.5, 1e-2, 0.6)  # below the target's std
    assert _diverged(0.7, 1e-3, 0.6)


def test_symbolic_pipeline_plot_failure_only_warns(tmp_path, monkeypatch, caplog):
    """A diagram that fails to draw is a warning: the run completes
    with its formula and without the PNGs."""
    import logging

    from kan_jax import plot as kplot

    def broken(*args, **kwargs):
        raise RuntimeError("no canvas")

    monkeypatch.setattr(kplot, "plot_kan", broken)
    c = _symbolic_config("x_1+x_2**2,quick")
    c.model.widths = [2, 1, 1]
    c.symbolic.lib = ["x", "x^2"]
    c.symbolic.prune_search = False
    with caplog.at_level(logging.WARNING):
        r = train.train_and_evaluate(c, str(tmp_path))
    assert r["status"] == "completed" and isinstance(r["formula"], str)
    assert not (tmp_path / "plots" / "kan_before.png").exists() and not (tmp_path / "plots" / "kan.png").exists()
    assert sum("no canvas" in rec.getMessage() for rec in caplog.records) == 2
