"""The "symbolic" pipeline (pykan's hellokan): train sparse, prune, refine, fit symbols, retrain.

Stages (``config.symbolic.*``, all optional; defaults in brackets):

1. ``train``: ``training.steps`` steps with ``config.regularization`` (sparsity), grid updates;
2. ``prune``: ``kan_jax.prune.prune(model, x_train, node_threshold, edge_threshold)``
   [``symbolic.prune``: True; thresholds 1e-2 / 3e-2 on the std attribution scores,
   ``symbolic.prune_measure`` ``"std"``], then ``symbolic.prune_steps`` [50] steps
   without regularization; with ``symbolic.prune_search`` [False], the narrowest hidden widths
   whose retrained train RMSE stays within ``symbolic.prune_search_tol`` [2] times that or
   below ``symbolic.prune_search_rtol`` [1e-2] times the target's std (``_narrowest``).
   Pruning masks the removed nodes (``masked=True``: the same function at the same shapes), so
   these stages run the first stage's compiled training loop (the penalty weight is data,
   ``fit(lamb=0)``); the network is then compacted to its live nodes (``kan_jax.prune.compact``)
   and ``pruned_widths`` are its widths;
3. ``refine``: grid extension to ``symbolic.refine_grid`` [10] and ``symbolic.refine_steps`` [50]
   steps (skipped if ``refine_grid`` is 0/None);
4. ``plots/kan_before.png`` (the diagram), then ``auto_symbolic`` on the training inputs (``symbolic.lib``: list of library names or None for
   the full library; ``symbolic.r2_threshold`` [0], ``symbolic.weight_simple`` [0.8]);
   With ``symbolic.progressive`` [False] the layers are fixed one at a time from the input side,
   each followed by ``symbolic.retrain_steps`` steps (stage ``symbolic_layer{l}``, grid updates on)
   that retrain the remaining splines to absorb what the fixed functions changed; the only
   input edge of a hidden node is fixed to ``x`` (``pass_through_edges``: a chain ``g(f(x))`` is
   one function, carried by the next layer);
5. ``retrain``: ``symbolic.retrain_steps`` [50] steps training the affine params ``a, b, c, d``
   (and any edge left a spline), no grid update;
6. ``plots/kan.png`` (the diagram with its symbolic edges), ``symbolic_formula`` (``symbolic.digits`` [4]
   decimals for constants that do not snap, 2 more at a time up to 12 while the rounded formula
   fits the training data more than 2x worse than the network: ``formula_digits``; the simplest
   accurate of the simplified and the composed formula, each also with its linear constants refit
   to the training data, ``kan_jax.symbolic.refit_constants``), re-evaluated
   on the test set: ``formula``,
   ``formula_test_rmse``, ``formula_vs_model_rmse``, ``formula_agreement``,
   ``formula_far_worse`` go to ``results.json``; a formula far worse than the model is logged as
   a warning and flagged there. Spline edges left (``r2`` below threshold) give ``formula: null``
   and ``formula_error`` naming them.

Symbolic passes: stages 4-6 run on a copy of the spline network with ``symbolic.weight_simple``,
then, while the formula is not exact on the training data, again with each value of
``symbolic.weight_simple_retry`` [none] (simpler functions preferred); the pass with the lowest
train RMSE is kept and every pass is listed in ``symbolic_passes``.

Restarts: ``symbolic.restarts`` [1] attempts of stages 1-6, seeded ``seed, seed + 1, ...``,
stopping at the first whose formula is exact on the training data (train RMSE at most
``symbolic.exact_rtol`` [1e-9] times the target's std); results.json reports the attempt whose
formula has the lowest *train* RMSE (the test set never selects), with every attempt listed
under ``attempts``. Different initializations find different decompositions of the same
function (``x_1*x_2`` as sums of squares, or a tangle of sines that only approximates it);
the exact one fits the training data to rounding error.

With ``training.stop_on_stall`` (True in configs/symbolic.py) a stage ends early once a whole
chunk of its steps left the loss bit-equal and no grid update is left (``loop.fit``); the stage
then has ``stalled: true`` and ``steps`` counts the steps that ran.

No mid-run checkpoints: a rerun restarts (the whole pipeline is minutes on a CPU).

Compiling is most of a cold run on a CPU (docs/PERFORMANCE.md): once pruning has decided the
widths (with the prune search: its first candidate, ``pruned_guess``), the refine stage's programs
(``loop.precompile``) and ``auto_symbolic``'s (``symbolic.precompile_auto_symbolic``) compile in
background threads while the prune stages train. The spline network's diagram draws in a thread
of its own while the retrain stage compiles.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from kan_jax.train import loop, models, optim
from kan_jax.train.pipeline import check_number, load_dataset, register_pipeline
from kan_jax.train.workdir import ConfigError, MetricsWriter, write_json


def _get(cfg, key, default):
    sym = cfg.get("symbolic", None)
    return default if sym is None else sym.get(key, default)


def _exact_level(config, ds) -> float:
    """Train RMSE at or below which a formula counts as exact: ``exact_rtol`` [1e-9] x std(y)."""
    return float(_get(config, "exact_rtol", 1e-9)) * (float(np.std(ds.y_train)) or 1.0)


def _check_symbolic(config) -> None:
    """The symbolic pipeline's fields, checked before anything runs (``validate_config``):
    ``ConfigError`` naming the field and the allowed values."""
    from kan_jax import prune as kprune
    from kan_jax.symbolic import SYMBOLIC_LIB

    if config.model.get("kind", None) != "kan":
        raise ConfigError(f"the symbolic pipeline needs model.kind='kan', got {config.model.get('kind', None)!r}")

    def number(field, default, **kw):
        check_number(f"symbolic.{field}", _get(config, field, default), **kw)

    number("restarts", 1, lo=1, integer=True)
    for field in ("prune_steps", "refine_steps", "retrain_steps"):
        number(field, 50, lo=0, integer=True)
    number("refine_grid", 10, lo=0, integer=True, none_ok=True)
    number("node_threshold", 1e-2, lo=0.0)
    number("edge_threshold", 3e-2, lo=0.0)
    number("prune_search_tol", 2.0, lo=0.0)
    number("prune_search_rtol", 1e-2, lo=0.0)
    number("r2_threshold", 0.0, lo=0.0, hi=1.0)
    number("digits", 4, lo=0, hi=12, integer=True)
    number("exact_rtol", 1e-9, lo=0.0)
    number("agreement_rtol", 1e-3, lo=0.0)
    measure = _get(config, "prune_measure", "std")
    if measure not in kprune.MEASURES:
        raise ConfigError(f"symbolic.prune_measure must be one of {list(kprune.MEASURES)}, got {measure!r}")
    names = _get(config, "lib", None)
    if names is not None:
        unknown = [n for n in names if n not in SYMBOLIC_LIB] if isinstance(names, (list, tuple)) else [names]
        if unknown or not names:
            raise ConfigError(f"symbolic.lib must be None (the whole library) or a non-empty list of names from "
                              f"{list(SYMBOLIC_LIB)}; unknown: {unknown}")
    _weights_simple(config)


@register_pipeline("symbolic", check=_check_symbolic)
def run_symbolic(config, workdir: str) -> dict:
    """Runs the symbolic pipeline (with restarts); returns (and writes) the results dict."""
    t0 = time.time()  # config checked by train_and_evaluate (validate_config runs _check_symbolic)
    _import_plotting_ahead()
    restarts = int(_get(config, "restarts", 1))
    ds = load_dataset(config)
    metrics = MetricsWriter(workdir, resume_step=-1)
    exact = _exact_level(config, ds)

    def runs():
        step0 = 0
        for r in range(restarts):
            if r:
                logging.info("formula not exact (train rmse <= %.3g): restarting with seed %d", exact, int(config.seed) + r)
            att = _attempt(config, ds, int(config.seed) + r, metrics, step0)
            step0 = att["steps"]
            yield att

    best, done = _best_until_exact(runs(), exact)
    metrics.close()
    step0 = done[-1]["steps"]
    attempts = [{"seed": a["seed"], "formula": a["results_formula"]["formula"], "formula_train_rmse": a["formula_train_rmse"],
                 "pruned_widths": a["pruned"]} for a in done]

    input_names = list(ds.input_names)
    x_train = jnp.asarray(ds.x_train)
    for att in done:  # each attempt drew its spline network in the background: keep the best's
        png = att["plot_before"].result()
        if att is best and png is not None:
            _write_png(png, os.path.join(workdir, "plots", "kan_before.png"))
    png = _draw(best["model"], x_train, input_names, "after auto_symbolic + retrain").result()
    if png is not None:
        _write_png(png, os.path.join(workdir, "plots", "kan.png"))
    ev = loop.evaluate(best["model"], ds)
    diverged = any(st.get("diverged") for st in best["stages"]) or not np.isfinite(ev["test_rmse"])
    results = {
        "status": "diverged" if diverged else "completed",
        "steps": step0,
        "wall_time_s": time.time() - t0,
        "n_params": models.count_params(best["model"]),
        "n_devices": jax.device_count(),
        **ev,
        "model": "kan",
        "pipeline": "symbolic",
        "dataset": ds.name,
        "true_formula": getattr(ds, "formula", None),
        "pruned_widths": best["pruned"],
        "model_test_rmse_before_symbolic": best["model_before"]["test_rmse"],
        "stages": best["stages"],
        "seed": best["seed"],
        "attempts": attempts,
        "formula_train_rmse": best["formula_train_rmse"],
        **best["results_formula"],
    }
    write_json(os.path.join(workdir, "results.json"), results)
    return results


def _attempt(config, ds, seed: int, metrics, step0: int) -> dict:
    """One run of the pipeline (train .. formula) from ``seed``; ``step0`` numbers its metrics."""
    from kan_jax import prune as kprune
    from kan_jax import symbolic as S
    from kan_jax.symbolic import SYMBOLIC_LIB

    x_train = jnp.asarray(ds.x_train)
    tr = config.training
    key = jax.random.PRNGKey(seed)
    stages = []
    # symbolic.standardize: the sparsity stages (train, prune, refine) fit (y - mean) / std, so the
    # regularization weight means the same for any target scale; the trained network is then mapped
    # back to the original units exactly (last layer's weights and bias) before auto_symbolic.
    mu, sigma = 0.0, 1.0
    if _get(config, "standardize", False):
        mu, sigma = float(np.mean(ds.y_train)), float(np.std(ds.y_train)) or 1.0
    cur = {"ds": _standardized(ds, mu, sigma), "scale": sigma}

    def evaluate(m):
        """Train/test RMSE of ``m`` in the original units."""
        ev = loop.evaluate(m, cur["ds"])
        return {**ev, "train_rmse": ev["train_rmse"] * cur["scale"], "test_rmse": ev["test_rmse"] * cur["scale"]}

    optimizers = {}  # one optimizer object per step count (L-BFGS: one in all): compiled loops are shared

    def fit_kwargs(steps, *, regularization=None, lamb=None):
        """What ``loop.fit`` and ``loop.precompile`` get in common for a stage."""
        lbfgs = optim.is_lbfgs(config.optimizer)
        opt_key = None if lbfgs else steps
        if opt_key not in optimizers:
            optimizers[opt_key] = optim.make_optimizer(config.optimizer, steps)
        return {"optimizer": optimizers[opt_key], "lbfgs": lbfgs, "batch_size": int(tr.get("batch_size", 0) or 0),
                "regularization": regularization, "lamb": lamb, "chunk_size": int(tr.get("chunk_size", 100) or 100)}

    def precompile(model, steps):
        """Compiles the programs of a later stage like ``train(model, steps, ...)`` (no penalty,
        grid updates on) in the background (``loop.precompile``)."""
        if steps > 0:
            loop.precompile(model, cur["ds"], grid_updates=int(tr.get("grid_update_every", 0) or 0) > 0,
                            **fit_kwargs(steps))

    def train(model, steps, name, *, regularization=None, lamb=None, grid_update=True):
        nonlocal step0
        if steps <= 0:
            return model
        base = step0

        def log_fn(step, live, info):
            metrics.write({"step": base + step, "stage": name, "seed": seed, "train_loss": info["train_loss"], **evaluate(live)})

        model, hist = loop.fit(
            model, cur["ds"], steps=steps,
            grid_update_every=int(tr.get("grid_update_every", 0) or 0) if grid_update else 0,
            stop_grid_update_step=int(tr.get("stop_grid_update_step", 0) or 0) if grid_update else 0,
            key=jax.random.fold_in(key, len(stages)), log_every=int(tr.get("log_every", 0) or 0), log_fn=log_fn,
            stop_on_stall=bool(tr.get("stop_on_stall", False)), **fit_kwargs(steps, regularization=regularization, lamb=lamb),
        )
        ran = int(hist["state"].step)  # fewer than ``steps`` when the stage diverged or stalled
        step0 += ran
        ev = evaluate(model)
        stages.append({"stage": name, "steps": ran, "widths": _widths(model),
                       "grid_size": int(model.grid_size), "train_rmse": ev["train_rmse"], "test_rmse": ev["test_rmse"],
                       "diverged": bool(hist["diverged"]), "stalled": bool(hist["stalled"])})
        logging.info("%s: train_rmse %.3g test_rmse %.3g", name, ev["train_rmse"], ev["test_rmse"])
        return model

    model = models.make_model(config, seed=seed)
    reg = config.get("regularization", None)
    model = train(model, int(tr.steps if not isinstance(tr.steps, (list, tuple)) else tr.steps[0]), "train",
                  regularization=reg)
    # Pruning masks nodes (kprune's masked=True) and the prune stages train without the penalty
    # through the first stage's compiled loop (lamb = 0 as data); the network is then compacted to
    # its live nodes (the same function: the same results as cutting the nodes out at once). Once
    # pruning has decided the widths, the refine stage's programs compile in the background.
    no_penalty = {"regularization": reg, "lamb": 0.0} if reg is not None and float(reg.get("lamb", 0.0) or 0.0) > 0 else {}
    refine_grid = _get(config, "refine_grid", 10)
    refine_steps = int(_get(config, "refine_steps", 50))

    def refined(model):
        model.refine(int(refine_grid), x_train)
        return model

    names = _get(config, "lib", None)
    lib = None if not names else {k: SYMBOLIC_LIB[k] for k in names}

    def progressive(n_layers):
        """Whether auto_symbolic fixes one layer at a time (``symbolic.progressive``)."""
        return bool(_get(config, "progressive", False)) and n_layers > 1

    pruned = None
    if _get(config, "prune", True):
        measure = str(_get(config, "prune_measure", "std"))
        model = kprune.prune(model, x_train, node_threshold=float(_get(config, "node_threshold", 1e-2)),
                             edge_threshold=float(_get(config, "edge_threshold", 3e-2)), measure=measure, masked=True)
        # The refine stage's programs and auto_symbolic's compile in the background while the
        # prune stages train, for the network they will most likely end with.
        search = bool(_get(config, "prune_search", False))
        ahead = pruned_guess(model, x_train, search=search, measure=measure)
        if refine_grid:
            ahead = refined(ahead)
            precompile(ahead, refine_steps)
        model = train(model, int(_get(config, "prune_steps", 50)), "prune", **no_penalty)
        if search:
            floor = float(_get(config, "prune_search_rtol", 1e-2)) * float(np.std(ds.y_train))
            fresh = lambda widths: models.make_model(config, widths=widths, seed=seed)  # noqa: E731
            model = _narrowest(model, x_train, functools.partial(train, **no_penalty), stages, fresh,
                               tol=float(_get(config, "prune_search_tol", 2.0)), floor=floor,
                               steps=int(_get(config, "prune_steps", 50)), measure=measure)
        model = kprune.compact(model)
        pruned = _widths(model)

    if refine_grid:
        model = train(refined(model), refine_steps, "refine")

    if cur["scale"] != 1.0 or mu != 0.0:
        _unstandardize_output(model, mu, sigma)
    cur.update(ds=ds, scale=1.0)
    model_before = loop.evaluate(model, ds)
    model_spline = nnx.clone(model)
    plot_before = []  # its diagram (plots/kan_before.png if this attempt is kept), drawn once
    exact = _exact_level(config, ds)

    def symbolic_pass(model, weight_simple):
        """Stages 4-6 on ``model`` (modified): fix symbols, retrain, formula. Returns the pass."""
        first = len(stages)
        sym_kw = {"lib": lib, "r2_threshold": float(_get(config, "r2_threshold", 0.0)), "weight_simple": weight_simple}
        n_layers = len(model.layers)
        if progressive(n_layers):
            # Layer by layer: fix one layer's edges, retrain the rest (splines and affine params) so
            # the later layers absorb what the fixed functions changed, then fit the next layer.
            report = []
            for l in range(n_layers - 1):
                if lib is None or "x" in lib:
                    for i, j in pass_through_edges(model, l):
                        p, r2 = S.fix_symbolic(model, l, i, j, "x", x_train, lib=lib)
                        report.append({"layer": l, "i": i, "j": j, "name": "x", "params": p.tolist(), "r2": r2, "fixed": True})
                report += S.auto_symbolic(model, x_train, layers=[l], **sym_kw)
                model = train(model, int(_get(config, "retrain_steps", 50)), f"symbolic_layer{l}")
            report += S.auto_symbolic(model, x_train, layers=[n_layers - 1], **sym_kw)
        else:
            report = S.auto_symbolic(model, x_train, **sym_kw)
        ev_sym = loop.evaluate(model, ds)
        stages.append({"stage": "auto_symbolic", "steps": 0, "weight_simple": weight_simple, "train_rmse": ev_sym["train_rmse"],
                       "test_rmse": ev_sym["test_rmse"],
                       "edges": [{k: r[k] for k in ("layer", "i", "j", "name", "r2")} for r in report]})
        if not plot_before:
            # Drawn in the background while the retrain stage compiles (the main thread waits
            # then; drawn earlier, it would compete with auto_symbolic's host work).
            plot_before.append(_draw(nnx.clone(model_spline), x_train, list(ds.input_names), "before auto_symbolic"))
        model = train(model, int(_get(config, "retrain_steps", 50)), "retrain", grid_update=False)
        sym_train = stages[-1]["train_rmse"]
        if _diverged(sym_train, model_before["train_rmse"], float(np.std(ds.y_train))):
            # Diverged (a fixed function sent the next layer far outside its grid): worse than the
            # target's mean; its formula is noise with huge constants (and sympy can take GBs on it).
            results_formula = {"formula": None, "formula_test_rmse": None,
                               "formula_error": f"symbolic fit diverged: train rmse {sym_train:.3g} "
                                                f"(spline network {model_before['train_rmse']:.3g})"}
            formula_train_rmse = float("inf")
            logging.warning("seed %d, weight_simple %g: %s", seed, weight_simple, results_formula["formula_error"])
        else:
            results_formula, formula_train_rmse = _formula(config, model, ds, sym_train, model_before, exact)
        logging.info("seed %d, weight_simple %g: formula %s (train rmse %.3g)", seed, weight_simple,
                     results_formula["formula"], formula_train_rmse)
        pass_stages = stages[first:]
        del stages[first:]
        return {"model": model, "stages": pass_stages, "results_formula": results_formula,
                "formula_train_rmse": formula_train_rmse, "weight_simple": weight_simple}

    # The first pass ranks fits with ``weight_simple``; while its formula is not exact on the
    # training data, the same spline network is fixed again with each ``weight_simple_retry``
    # (simpler functions preferred: a hidden edge that is almost linear becomes ``x`` instead of a
    # slightly better-fitting tan, and the retrained next layer then finds the exact form).
    best, done = _best_until_exact((symbolic_pass(nnx.clone(model_spline), ws) for ws in _weights_simple(config)), exact)
    stages.extend(best["stages"])
    model, results_formula, formula_train_rmse = best["model"], best["results_formula"], best["formula_train_rmse"]
    results_formula["symbolic_passes"] = [{"weight_simple": p["weight_simple"], "formula": p["results_formula"]["formula"],
                                           "formula_train_rmse": p["formula_train_rmse"]} for p in done]
    return {"model": model, "model_spline": model_spline, "plot_before": plot_before[0], "model_before": model_before, "stages": stages,
            "pruned": pruned, "results_formula": results_formula, "formula_train_rmse": formula_train_rmse,
            "steps": step0, "seed": seed}


def _best_until_exact(runs, exact: float) -> tuple[dict, list[dict]]:
    """Consumes ``runs`` (dicts with ``formula_train_rmse``) up to the first exact one (train RMSE
    at most ``exact``); returns the run with the lowest train RMSE and every run made."""
    done = []
    for run in runs:
        done.append(run)
        if run["formula_train_rmse"] <= exact:
            break
    return min(done, key=lambda run: run["formula_train_rmse"]), done


def _diverged(sym_train: float, spline_train: float, y_std: float) -> bool:
    """Whether a retrained symbolic network failed: non-finite, or worse than both 100x the spline
    network it came from and the target's std (a constant predictor)."""
    return not np.isfinite(sym_train) or sym_train > max(100.0 * spline_train, y_std)


def _weights_simple(config) -> list[float]:
    """``[weight_simple] + weight_simple_retry`` without repeats; ConfigError naming the field."""
    out = []
    for field, vals in (("weight_simple", [_get(config, "weight_simple", 0.8)]),
                        ("weight_simple_retry", list(_get(config, "weight_simple_retry", None) or []))):
        for w in vals:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) <= 1.0:
                raise ConfigError(f"symbolic.{field} must be numbers in [0, 1], got {w!r}")
            if float(w) not in out:
                out.append(float(w))
    return out


def _formula(config, model, ds, model_train: float, model_before: dict, exact: float) -> tuple[dict, float]:
    """``symbolic_formula`` of ``model`` (stage 6): the results.json fields and the formula's train RMSE.

    Constants that do not snap (integers, p/q, rational multiples of pi, 1/pi, 1/sqrt(2 pi)) are
    rounded to ``digits`` decimals; when that rounding costs accuracy (the formula fits the
    training data more than 2x worse than the network it came from, ``model_train``), 2 more
    digits, up to 12. At each ``digits`` the formula is the simplest accurate reading of the
    network (``_best_formula``: simplified or as composed, constants as rounded or refit).
    """
    from kan_jax import symbolic as S

    input_names = list(ds.input_names)
    results_formula = {"formula": None, "formula_test_rmse": None}
    formula_train_rmse = float("inf")
    try:
        for digits in range(int(_get(config, "digits", 4)), 13, 2):
            formulas, formula_train_rmse = _best_formula(model, ds, digits, good=2 * model_train + exact, exact=exact)
            if formula_train_rmse <= 2 * model_train + exact:
                break
        chk = S.check_formula(model, formulas, ds.x_test, y=ds.y_test, input_names=input_names,
                              rtol=float(_get(config, "agreement_rtol", 1e-3)))
        text = [str(f) for f in formulas]
        results_formula = {
            "formula": text[0] if len(text) == 1 else text,
            "formula_digits": digits,
            "formula_test_rmse": chk["formula_rmse"],
            "formula_vs_model_rmse": chk["formula_vs_model_rmse"],
            "formula_agreement": chk["agreement"],
            # Far worse than the spline model before auto_symbolic (the retrained symbolic model can
            # agree with its own formula while both are far off the data).
            "formula_far_worse": bool(chk["far_worse"] or chk["formula_rmse"] > 10 * model_before["test_rmse"] + 1e-12),
        }
        # Rounded and refit constants move a formula off the model it came from (no agreement)
        # while it fits the data as well: worth a warning only when it fits the test data worse.
        if results_formula["formula_far_worse"] or (not chk["agreement"] and chk["formula_rmse"] > 1.1 * chk["model_rmse"]):
            logging.warning("formula %s fits the test data worse than the model: formula test rmse %.3g, model %.3g",
                            text, chk["formula_rmse"], chk["model_rmse"])
    except S.NotSymbolicError as err:
        results_formula["formula_error"] = str(err)
        logging.warning("no formula: %s", err)
    return results_formula, formula_train_rmse


def _best_formula(model, ds, digits: int, *, good: float, exact: float) -> tuple[list, float]:
    """The formula of ``model`` at ``digits``, and its train RMSE: the simplest of four readings.

    The candidates are ``symbolic_formula`` simplified and as composed (``simplify=False``: the
    simplification can tangle a rounded offset into the structure, e.g. ``(28686 r + 1)**2``),
    and each with its linear constants refit to the training data (``refit_constants``: the
    factor that absorbed rounded-away offsets snaps again, e.g. to ``1/(4 pi)``). The choice is
    the fewest operations among the exact ones (train RMSE <= ``exact``), else among the good
    ones (<= ``good``), else the lowest train RMSE.
    """
    import sympy

    from kan_jax import symbolic as S

    names = list(ds.input_names)
    composed = [S.symbolic_formula(model, input_names=names, digits=digits, simplify=simplify) for simplify in (True, False)]
    cands = composed + [S.refit_constants(f, names, ds.x_train, ds.y_train, digits=digits) for f in composed]
    scored = []
    for f in dict.fromkeys(tuple(c) for c in cands):  # equal readings are scored once
        f = list(f)
        rmse = float(S.formula_rmse(f, names, ds.x_train, ds.y_train))
        scored.append((rmse if np.isfinite(rmse) else float("inf"), sum(sympy.count_ops(e) for e in f), f))
    for level in (exact, good):
        ok = [t for t in scored if t[0] <= level]
        if ok:
            rmse, _, f = min(ok, key=lambda t: (t[1], t[0]))
            return f, rmse
    rmse, _, f = min(scored, key=lambda t: (t[0], t[1]))
    return f, rmse


def pass_through_edges(model, layer: int) -> list[tuple[int, int]]:
    """Active spline edges ``(i, j)`` of ``layer`` that are the only active input of node ``j``.

    Such a node passes one function on: ``g(f(x))`` through it is one function of ``x``, and any
    split of it into ``f`` and ``g`` fits equally well (``exp(-t^2/2)`` on ``t`` in [1, 3] came out
    as ``asin(tanh(...))`` and ``sin(tanh(...))``). The progressive pipeline fixes ``f`` to ``x``
    and lets the node's outgoing splines, retrained next, carry the whole function. Output nodes
    (the last layer) are not hidden and never listed.
    """
    if layer >= len(model.layers) - 1:
        return []
    lay = model.layers[layer]
    active = np.asarray(lay.mask[...]) > 0  # spline edges (a symbolic edge has mask 0)
    n_in = active.sum(axis=0)
    n_in = n_in + lay.symbolic.active().sum(axis=0)
    return [(int(np.flatnonzero(active[:, j])[0]), int(j)) for j in np.flatnonzero((n_in == 1) & active.any(axis=0))]


def _narrowest(model, x, train, stages, fresh, *, tol: float, floor: float, steps: int, measure: str):
    """The prune search: the narrowest hidden layers whose retrained fit stays good.

    Attribution thresholds stop where the sparsity training left a function spread over several
    hidden nodes. For each hidden node layer in turn, tries keeping only its ``k = 1, 2, ...``
    best-scoring nodes (``kan_jax.prune.keep_top_nodes``), retrains ``steps`` steps and accepts
    the first ``k`` whose train RMSE is at most ``max(tol * r, floor)``, ``r`` the pruned
    network's (the last stage's) and ``floor`` an absolute level (the pipeline passes
    ``prune_search_rtol`` times the target's std: a network explaining 99.99% of the variance
    is good enough to carry on to the symbolic fit). A narrow network started from the wide
    one's best nodes can sit in a poor local minimum (the best node of a spread-out function
    carries only part of it), so a rejected width is tried once more from a fresh
    initialization (``fresh(widths)``, stage ``prune_search_fresh``) before moving on. Each
    try is a stage in results.json with ``accepted``.
    """
    from kan_jax import prune as kprune

    ref = max(tol * stages[-1]["train_rmse"], floor)
    for layer in range(1, len(_widths(model)) - 1):
        for k in range(1, _widths(model)[layer]):
            ok = False
            for name in ("prune_search", "prune_search_fresh"):
                if name == "prune_search":
                    trial = kprune.keep_top_nodes(model, x, layer=layer, k=k, measure=measure, masked=True)
                else:
                    widths = _widths(model)
                    widths[layer] = k
                    trial = fresh(widths)
                trial = train(trial, steps, name)
                ok = bool(np.isfinite(stages[-1]["train_rmse"]) and stages[-1]["train_rmse"] <= ref)
                stages[-1]["accepted"] = ok
                logging.info("%s: hidden layer %d at width %d: train_rmse %.3g vs at most %.3g: %s", name,
                             layer, k, stages[-1]["train_rmse"], ref, "accepted" if ok else "rejected")
                if ok:
                    break
            if ok:
                model = trial
                break
    return model


def pruned_guess(model, x, *, search: bool, measure: str = "std"):
    """The network the prune stages most likely end with, compacted (``kan_jax.prune.compact``).

    What the pipeline compiles the refine stage's programs for while the prune stages train: only
    the structure matters, not the values. ``model`` is the thresholded network with its removed
    nodes masked. Without the prune search that is the result. With it (``search``), the guess is
    the search's first candidate, one node kept in the first hidden layer wider than one
    (``kan_jax.prune.keep_top_nodes``), which the search accepts unless the function needs more
    nodes there; a wrong guess costs a compile, the refine stage then compiles its own.
    """
    from kan_jax import prune as kprune

    wide = [l for l, w in enumerate(_widths(model)[1:-1], start=1) if w > 1] if search else []
    if wide:
        model = kprune.keep_top_nodes(model, x, layer=wide[0], k=1, measure=measure, masked=True)
    return kprune.compact(model)


def _standardized(ds, mu: float, sigma: float):
    """``ds`` with targets ``(y - mu) / sigma`` (``ds`` itself when that is the identity)."""
    if mu == 0.0 and sigma == 1.0:
        return ds
    return dataclasses.replace(
        ds, y_train=(ds.y_train - mu) / sigma, y_test=(ds.y_test - mu) / sigma, target_std=ds.target_std / sigma
    )


def _unstandardize_output(model, mu: float, sigma: float) -> None:
    """Maps a network fit to ``(y - mu) / sigma`` back to ``y``: exact, in its last layer."""
    last = model.layers[-1]
    if last.symbolic.active().any():
        raise ValueError("unstandardize before any edge is made symbolic")
    last.w_base.set_value(last.w_base[...] * sigma)
    last.w_spline.set_value(last.w_spline[...] * sigma)
    last.bias.set_value(last.bias[...] * sigma + mu)


def _import_plotting_ahead() -> None:
    """Imports sympy (~0.3 s) and matplotlib (~0.4 s) in a background thread while training
    compiles (XLA releases the GIL), so the formula and the diagrams at the end do not wait for
    them. A failure here is silent: the real import reports it."""

    def run():
        try:
            import sympy  # noqa: F401

            from kan_jax import symbolic  # noqa: F401
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401

            from kan_jax import plot  # noqa: F401
        except Exception:  # noqa: BLE001
            pass

    threading.Thread(target=run, name="kan_jax_import_plotting", daemon=True).start()


# Diagrams draw one at a time (matplotlib is not thread-safe) in a thread of their own, so the
# spline network's diagram draws while the retrain stage compiles.
_DRAWER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kan_jax_plot")


def _draw(model, x, input_names, title) -> concurrent.futures.Future:
    """Draws the KAN diagram of ``model`` (``kan_jax.plot.plot_kan``) in the background; the
    future's result is the PNG's bytes, or None when plotting failed (logged as a warning: a
    diagram must never fail the run)."""

    def run():
        try:
            from kan_jax import plot as kplot

            buf = io.BytesIO()
            kplot.plot_kan(model, x, buf, input_names=input_names, title=title)
            return buf.getvalue()
        except Exception as err:  # noqa: BLE001
            logging.warning("plot_kan (%s) failed: %s", title, err)
            return None

    return _DRAWER.submit(run)


def _write_png(png: bytes, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(png)


def _widths(model) -> list[int]:
    """The widths of ``model``'s live nodes (``kan_jax.prune.live_widths``: masked nodes not counted)."""
    from kan_jax import prune as kprune

    return kprune.live_widths(model)
