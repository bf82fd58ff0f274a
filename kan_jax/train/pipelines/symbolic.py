"""The "symbolic" pipeline (pykan's hellokan): train sparse, prune, refine, fit symbols, retrain.

Stages (``config.symbolic.*``: every field is required, configs/symbolic.py sets them):

1. ``train``: ``training.steps`` steps with ``config.regularization`` (sparsity), grid updates;
2. ``prune``: ``kan_jax.prune.prune(model, x_train, node_threshold, edge_threshold)``
   (``symbolic.prune``; ``symbolic.node_threshold`` / ``edge_threshold`` on the attribution scores
   of ``symbolic.prune_measure``), then ``symbolic.prune_steps`` steps
   without regularization; with ``symbolic.prune_search``, the narrowest hidden widths
   whose retrained train RMSE stays within ``symbolic.prune_search_tol`` times that or
   below ``symbolic.prune_search_rtol`` times the target's std (``_narrowest``).
   Pruning masks the removed nodes (``masked=True``: the same function at the same shapes), so
   these stages run the first stage's compiled training loop (the penalty weight is data,
   ``fit(lamb=0)``); ``pruned_widths`` are the live nodes' widths (``kan_jax.prune.live_widths``);
3. ``refine``: grid extension to ``symbolic.refine_grid`` and ``symbolic.refine_steps``
   steps (skipped if ``refine_grid`` is 0/None);
4. ``plots/kan_before.png`` (the diagram), then ``auto_symbolic`` on the training inputs (``symbolic.lib``: list of library names or None for
   the full library; ``symbolic.r2_threshold``, ``symbolic.weight_simple``);
   With ``symbolic.progressive`` the layers are fixed one at a time from the input side,
   each followed by ``symbolic.retrain_steps`` steps (stage ``symbolic_layer{l}``, grid updates on)
   that retrain the remaining splines to absorb what the fixed functions changed; the only
   input edge of a hidden node is fixed to ``x`` (``pass_through_edges``: a chain ``g(f(x))`` is
   one function, carried by the next layer);
5. ``retrain``: ``symbolic.retrain_steps`` steps training the affine params ``a, b, c, d``
   (and any edge left a spline), no grid update;
6. ``plots/kan.png`` (the diagram with its symbolic edges), ``symbolic_formula`` (``symbolic.digits``
   decimals for constants that do not snap, 2 more at a time up to 12 while the rounded formula
   fits the training data more than 2x worse than the network: ``formula_digits``; the simplest
   accurate of the simplified and the composed formula, each also with its linear constants refit
   to the training data, ``kan_jax.symbolic.refit_constants``), re-evaluated
   on the test set: ``formula``, ``formula_ops`` (its size, sympy's operation count),
   ``formula_test_rmse``, ``formula_vs_model_rmse``, ``formula_agreement``,
   ``formula_far_worse`` go to ``results.json``; a formula far worse than the model is logged as
   a warning and flagged there. Spline edges left (``r2`` below threshold) give ``formula: null``
   and ``formula_error`` naming them. A formula that is not exact and longer than
   ``symbolic.max_formula_ops`` operations (an unreadable formula is no explanation) is replaced by
   its best sub-sum within the bound (``kan_jax.symbolic.shorten_formula``: its dominant terms,
   constants refit; ``formula_shortened_from_ops``, ``formula_full_train_rmse``), reported with
   its own error; when no sub-sum is that short, ``formula: null`` and the pass ranks below every
   pass with a formula, so a shorter one from another pass or seed wins.

Accuracy refit: when no attempt's formula is exact, a fresh network of the configured widths is
trained for accuracy alone through each grid size of ``symbolic.accuracy_grids``,
``symbolic.refine_steps`` steps at each without the penalty (stages ``accuracy_G{G}``,
``refit_test_rmse``; the function is ``accuracy_refit``).

What results.json reports as ``train_rmse`` / ``test_rmse`` / ``test_nrmse`` (``reported``): the
symbolic model when its formula is exact; otherwise the lowest *train* RMSE of the symbolic
model, the spline network before auto_symbolic (``spline_model``), the accuracy refit
(``refit_model``) and the formula (``_accuracy_first``), so an inexact formula does not cost the
run its accuracy. ``symbolic_model_test_rmse``, ``model_test_rmse_before_symbolic`` and
``refit_test_rmse`` keep the others.

Symbolic passes: stages 4-6 run on a copy of the spline network with ``symbolic.weight_simple``,
then, while the formula is not exact on the training data, again with each value of
``symbolic.weight_simple_retry`` (simpler functions preferred); the pass with the lowest
train RMSE is kept and every pass is listed in ``symbolic_passes``.

Restarts: ``symbolic.restarts`` attempts of stages 1-6, seeded ``seed, seed + 1, ...``,
stopping at the first whose formula is exact on the training data (train RMSE at most
``symbolic.exact_rtol`` times the target's std); results.json reports the attempt whose
formula has the lowest *train* RMSE (the test set never selects), with every attempt listed
under ``attempts``. Different initializations find different decompositions of the same
function (``x_1*x_2`` as sums of squares, or a tangle of sines that only approximates it);
the exact one fits the training data to rounding error.

With ``training.stop_on_stall`` (True in configs/symbolic.py) a stage ends early once a whole
chunk of its steps left the loss bit-equal and no grid update is left (``loop.fit``); the stage
then has ``stalled: true`` and ``steps`` counts the steps that ran.

Checkpoints and resuming (``StageStore``): every training stage ends with a checkpoint of its
network, kept for the whole run, and a long stage also checkpoints every ``checkpoint_every``
steps. A rerun of the same command replays the pipeline from the start: a stage whose end is
checkpointed is restored instead of trained, the host-side work between stages (pruning,
refining, symbolic fits, formulas) runs again and, being deterministic, rebuilds the same
networks, and the stage that was running resumes from its newest checkpoint. A killed or
preempted run therefore ends with the same formula as an uninterrupted one. ``should_stop`` is
polled between chunks and before each stage and formula; once True, the run checkpoints where
it is and raises ``Preempted`` naming the step, stage and attempt.

Compiled programs: pruning masks nodes and the prune search's candidates are masks of the same
network, so the sparse, prune and prune-search stages run one compiled training loop (the
penalty weight is data) with no symbolic function in it; the network is then compacted to its
live nodes and given its symbolic table (``add_table``: the configured library), and the refine
stage (a new grid size, new shapes anyway) compiles a second loop, which the retrain stages
reuse: symbolic edges are values in ``SymbolicEdges``. Restarts
run the same programs when they end at the same pruned widths (docs/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx

from kan_jax import prune as kprune
from kan_jax import symbolic as S
from kan_jax.train import loop, models, optim, sharding
from kan_jax.train.checkpoint import Checkpointer, load_model_state, model_state
from kan_jax.train.config import ConfigError, check_number, load_dataset, require_fields
from kan_jax.train.pipelines import Preempted, register_pipeline
from kan_jax.train.workdir import MetricsWriter, is_writer, write_json


# The ``symbolic`` section's fields (configs/symbolic.py defines them all; ``_check_symbolic``
# requires every one: the library keeps no defaults of its own).
SYMBOLIC_FIELDS = (
    "restarts", "standardize", "prune", "prune_measure", "node_threshold", "edge_threshold", "prune_steps",
    "prune_search", "prune_search_tol", "prune_search_rtol", "refine_grid", "refine_steps", "lib", "r2_threshold",
    "weight_simple", "weight_simple_retry", "progressive", "retrain_steps", "digits", "exact_rtol", "agreement_rtol",
    "max_formula_ops", "accuracy_grids",
)


def _exact_level(config, ds) -> float:
    """Train RMSE at or below which a formula counts as exact: ``exact_rtol`` [1e-9] x std(y)."""
    return float(config.symbolic.exact_rtol) * (float(np.std(ds.y_train)) or 1.0)


def _check_symbolic(config) -> None:
    """The symbolic pipeline's fields, checked before anything runs (``validate_config``):
    ``ConfigError`` naming the field and the allowed values."""
    require_fields(config, [f"symbolic.{field}" for field in SYMBOLIC_FIELDS])
    if config.model.kind != "kan":
        raise ConfigError(f"the symbolic pipeline needs model.kind='kan', got {config.model.kind!r}")

    def number(field, **kw):
        check_number(f"symbolic.{field}", config.symbolic[field], **kw)

    number("restarts", lo=1, integer=True)
    for field in ("prune_steps", "refine_steps", "retrain_steps"):
        number(field, lo=0, integer=True)
    number("refine_grid", lo=0, integer=True, none_ok=True)
    number("node_threshold", lo=0.0)
    number("edge_threshold", lo=0.0)
    number("prune_search_tol", lo=0.0)
    number("prune_search_rtol", lo=0.0)
    number("r2_threshold", lo=0.0, hi=1.0)
    number("digits", lo=0, hi=12, integer=True)
    number("exact_rtol", lo=0.0)
    number("agreement_rtol", lo=0.0)
    number("max_formula_ops", lo=1, integer=True)
    measure = config.symbolic.prune_measure
    if measure not in kprune.MEASURES:
        raise ConfigError(f"symbolic.prune_measure must be one of {list(kprune.MEASURES)}, got {measure!r}")
    names = config.symbolic.lib
    if names is not None:
        unknown = [n for n in names if n not in S.SYMBOLIC_LIB] if isinstance(names, (list, tuple)) else [names]
        if unknown or not names:
            raise ConfigError(f"symbolic.lib must be None (the whole library) or a non-empty list of names from "
                              f"{list(S.SYMBOLIC_LIB)}; unknown: {unknown}")
    _weights_simple(config)
    grids = config.symbolic.accuracy_grids
    start = int(config.model.grid_size)  # a fresh network's grid
    if (not isinstance(grids, (list, tuple)) or any(isinstance(g, bool) or not isinstance(g, int) for g in grids)
            or list(grids) != sorted(grids) or any(g < start for g in grids)):
        raise ConfigError(f"symbolic.accuracy_grids must be a non-decreasing list of grid sizes >= {start} (the "
                          f"model.grid_size; empty: no refit), got {grids!r}")


class StageStore:
    """The symbolic pipeline's checkpoints in ``workdir/checkpoints``, numbered in the order written.

    A training stage is one ``train`` call; calls are counted over the whole run (``call``), in
    the order a run makes them, which a replay repeats. ``save_end`` keeps a stage's final network
    for the rest of the run (meta: how many steps ran, diverged, stalled); ``save_mid`` keeps the
    network and optimizer state every ``checkpoint_every`` steps of a stage (dropped once the
    stage ends). A checkpoint that does not restore is warned about and set aside
    (``Checkpointer.set_aside``); the stage then resumes from an earlier one, or is trained again.
    """

    def __init__(self, ckpt: Checkpointer):
        self.ckpt = ckpt
        self.calls = 0  # ``train`` calls made so far in this process (replayed ones included)
        self.ends, self.mids, self.metas = {}, {}, {}  # call -> its end step / newest mid step; step -> meta
        for step in ckpt.all_steps():
            try:
                meta = ckpt.restore_meta(step)
            except Exception as err:  # noqa: BLE001 - damaged metadata: the checkpoint is unusable
                logging.warning("checkpoint %d does not restore (%s): moved to %s", step, err, ckpt.set_aside(step))
                continue
            self.metas[step] = meta
            (self.ends if meta["end"] else self.mids)[meta["call"]] = step
        self._next = max(ckpt.all_steps(), default=-1) + 1

    @property
    def resume_step(self) -> int:
        """The highest global step a checkpoint holds (-1: none): metrics up to it stay valid."""
        return max((m["global_step"] for m in self.metas.values()), default=-1)

    def next_call(self) -> int:
        self.calls += 1
        return self.calls - 1

    def restore_end(self, call: int, model):
        """``(model, meta)`` of stage ``call``'s end checkpoint (in ``model``'s structure), or None."""
        state = self._restore(self.ends, call, model_state(model))
        return None if state is None else (load_model_state(model, state[1]), state[0])

    def restore_mid(self, call: int, model, opt_like):
        """``(stage_step, model, opt_state)`` from stage ``call``'s newest mid-stage checkpoint, or
        ``(0, model, None)``. ``opt_like``: an optimizer state of the right structure."""
        state = self._restore(self.mids, call, model_state(model, opt_like))
        if state is None:
            return 0, model, None
        return int(state[0]["stage_step"]), load_model_state(model, state[1]), state[1]["opt_state"]

    def _restore(self, steps: dict, call: int, like: dict):
        step = steps.get(call)
        if step is None:
            return None
        try:
            return self.metas[step], self.ckpt.restore_state(step, like)
        except Exception as err:  # noqa: BLE001 - damaged arrays: fall back to what is left
            logging.warning("checkpoint %d (stage %s) does not restore (%s: %s): moved to %s; falling back",
                            step, self.metas[step]["stage"], type(err).__name__, str(err)[:300], self.ckpt.set_aside(step))
            del steps[call], self.metas[step]
            return None

    def save_mid(self, call: int, model, opt_state, meta: dict) -> None:
        step = self.mids.get(call)
        if step is not None and self.metas[step]["stage_step"] == meta["stage_step"]:
            return  # that step is saved already
        self._save(self.mids, call, model_state(model, opt_state), {**meta, "call": call, "end": False})

    def save_end(self, call: int, model, meta: dict) -> None:
        self._save(self.ends, call, model_state(model), {**meta, "call": call, "end": True})
        step = self.mids.pop(call, None)
        if step is not None:  # the stage's end supersedes its mid-stage checkpoint
            self.ckpt.delete(step)
            del self.metas[step]

    def _save(self, steps: dict, call: int, state: dict, meta: dict) -> None:
        old = steps.get(call)
        self.ckpt.save(self._next, state, meta)
        steps[call], self.metas[self._next] = self._next, meta
        self._next += 1
        if old is not None:
            self.ckpt.delete(old)
            del self.metas[old]


@register_pipeline("symbolic", check=_check_symbolic)
def run_symbolic(config, workdir: str, *, should_stop=None) -> dict:
    """Runs the symbolic pipeline (with restarts); returns (and writes) the results dict.

    Resumes from ``workdir/checkpoints`` (``StageStore``); ``should_stop``: see ``register_pipeline``."""
    with Checkpointer(workdir, max_to_keep=None) as ckpt:  # every stage's end is kept: a replay needs them all
        return _run_symbolic(config, workdir, StageStore(ckpt), should_stop)


def _run_symbolic(config, workdir: str, store: StageStore, should_stop) -> dict:
    t0 = time.time()  # config checked by train_and_evaluate (validate_config runs _check_symbolic)
    restarts = int(config.symbolic.restarts)
    ds = load_dataset(config)
    metrics = MetricsWriter(workdir, resume_step=store.resume_step)
    exact = _exact_level(config, ds)
    optimizers = {}  # shared by the attempts: the same optimizer objects, the same compiled loops

    def runs():
        step0 = 0
        for r in range(restarts):
            if r:
                logging.info("formula not exact (train rmse <= %.3g): restarting with seed %d", exact, int(config.seed) + r)
            att = run_attempt(config, ds, seed=int(config.seed) + r, metrics=metrics, step0=step0, optimizers=optimizers,
                              store=store, should_stop=should_stop)
            step0 = att["steps"]
            yield att

    try:
        best, done = _best_until_exact(runs(), exact)
        refit = None
        if best["formula_train_rmse"] > exact and config.symbolic.accuracy_grids:
            refit = accuracy_refit(config, ds, best, metrics=metrics, step0=done[-1]["steps"], optimizers=optimizers,
                                   store=store, should_stop=should_stop)
    finally:
        metrics.close()
    attempts = [{"seed": a["seed"], "formula": a["results_formula"]["formula"], "formula_train_rmse": a["formula_train_rmse"],
                 "pruned_widths": a["pruned"]} for a in done]
    mesh = sharding.mesh_for(config)
    x_train = loop.device_array(ds.x_train) if mesh is None else sharding.put_replicated(ds.x_train, mesh)
    names = list(ds.input_names)
    _draw(best["model_spline"], x_train, names, "before auto_symbolic", os.path.join(workdir, "plots", "kan_before.png"))
    _draw(best["model"], x_train, names, "after auto_symbolic + retrain", os.path.join(workdir, "plots", "kan.png"))
    ev_symbolic = loop.evaluate(best["model"], ds)
    bad = [st for st in best["stages"] if st.get("diverged")]
    diverged = bool(bad) or not np.isfinite(ev_symbolic["test_rmse"])
    reported, ev = _accuracy_first(best, ev_symbolic, ds, exact, refit)
    reported_model = {"spline_model": best["model_spline"], **({} if refit is None else {"refit_model": refit["model"]})
                      }.get(reported, best["model"])  # the symbolic model, for it and for the formula
    results = {
        "status": "diverged" if diverged else "completed",
        "steps": done[-1]["steps"] if refit is None else refit["steps"],
        "wall_time_s": time.time() - t0,
        "n_params": models.count_params(reported_model),
        **sharding.run_layout(config),
        **ev,
        "reported": reported,
        "symbolic_model_test_rmse": ev_symbolic["test_rmse"],
        "model": "kan",
        "pipeline": "symbolic",
        "dataset": ds.name,
        "true_formula": getattr(ds, "formula", None),
        "pruned_widths": best["pruned"],
        "model_test_rmse_before_symbolic": best["model_before"]["test_rmse"],
        "stages": best["stages"] + ([] if refit is None else refit["stages"]),
        **({} if refit is None else {"refit_test_rmse": refit["ev"]["test_rmse"]}),
        **({"diverged_step": bad[0]["diverged_step"], "diverged_stage": bad[0]["stage"]} if bad else {}),
        "seed": best["seed"],
        "attempts": attempts,
        "formula_train_rmse": best["formula_train_rmse"],
        **best["results_formula"],
    }
    write_json(os.path.join(workdir, "results.json"), results)
    return results


def _accuracy_first(best: dict, ev_symbolic: dict, ds, exact: float, refit: dict | None = None) -> tuple[str, dict]:
    """The model whose ``train_rmse`` / ``test_rmse`` / ``test_nrmse`` results.json reports.

    An exact formula: the symbolic model (it is the formula). Otherwise the lowest *train* RMSE
    (the test set never selects) of the symbolic model, the spline network before auto_symbolic
    (``spline_model``), the accuracy refit (``refit_model``, ``accuracy_refit``) and the formula
    itself: a formula that is not exact does not cost the run its accuracy. Returns the name and
    its metrics.
    """
    if best["formula_train_rmse"] <= exact:
        return "symbolic_model", ev_symbolic
    cands = {"symbolic_model": ev_symbolic, "spline_model": best["model_before"]}
    if refit is not None:
        cands["refit_model"] = refit["ev"]
    rf = best["results_formula"]
    if rf.get("formula") is not None and rf.get("formula_test_rmse") is not None and np.isfinite(best["formula_train_rmse"]):
        std = float(ds.target_std)
        cands["formula"] = {"train_rmse": best["formula_train_rmse"], "test_rmse": rf["formula_test_rmse"],
                            "test_nrmse": rf["formula_test_rmse"] / std if std > 0 else math.nan}
    name = min(cands, key=lambda k: cands[k]["train_rmse"] if np.isfinite(cands[k]["train_rmse"]) else math.inf)
    return name, {k: cands[name][k] for k in ("train_rmse", "test_rmse", "test_nrmse")}


def accuracy_refit(config, ds, best: dict, *, metrics, step0: int, optimizers: dict, store, should_stop) -> dict:
    """When no formula is exact: a fresh network of the configured widths (the best attempt's
    seed) trained for accuracy alone, through each grid size of ``symbolic.accuracy_grids`` in
    turn, ``symbolic.refine_steps`` steps at each, without the sparsity penalty (stages
    ``accuracy_G{G}``), so the run still ends with an accurate model. (Continuing from the
    sparse, pruned or symbolic networks instead stays in their basin: on AI Feynman I.10.7 the
    sparse-stage network refit at G = 10, 20, 50 ended at test RMSE 9.7e-3, a fresh one at
    1.8e-3.) Returns ``model``, its ``ev`` (train/test RMSE, test NRMSE), its ``stages`` and the
    run's ``steps`` after it."""
    st = Attempt(config=config, ds=ds, seed=best["seed"], metrics=metrics, step0=step0, fit_ds=ds,
                 optimizers=optimizers, mesh=sharding.mesh_for(config), store=store, should_stop=should_stop)
    model = models.make_model(config, seed=best["seed"])
    for grid in config.symbolic.accuracy_grids:
        if int(grid) > int(model.grid_size):
            model.refine(int(grid), st.x_train)
        model = train(st, model, int(config.symbolic.refine_steps), f"accuracy_G{int(grid)}")
    return {"model": model, "ev": loop.evaluate(model, ds), "stages": st.stages, "steps": st.step0}


@dataclasses.dataclass
class Attempt:
    """What one attempt of the pipeline carries from stage to stage.

    The stages below are plain functions of this state, run in order by ``run_attempt``.

    Attributes:
      config: the run's config.
      ds: the dataset in its own units.
      seed: this attempt's seed (``config.seed + restart``).
      metrics: where ``train`` logs.
      step0: steps run so far in the whole run (metrics numbering).
      fit_ds: what the sparsity stages fit: ``ds``, or its targets standardized
        (``symbolic.standardize``) until ``unstandardize`` maps the network back.
      mu, sigma: the standardization (0, 1 when none).
      stages: one record per stage run (results.json ``stages``).
      optimizers: one optimizer object per step count (L-BFGS: one in all), so compiled loops are shared.
      mesh: the devices the training stages run on (``sharding.mesh_for``; None on one device).
      store: the run's checkpoints (``StageStore``; None: none are written).
      should_stop: polled between chunks, stages and formulas (None: never stops).
    """

    config: Any
    ds: Any
    seed: int
    metrics: MetricsWriter
    step0: int
    fit_ds: Any = None
    mu: float = 0.0
    sigma: float = 1.0
    stages: list = dataclasses.field(default_factory=list)
    optimizers: dict = dataclasses.field(default_factory=dict)
    mesh: Any = None
    store: StageStore | None = None
    should_stop: Any = None

    def check_stop(self, stage: str, step: int) -> None:
        """Raises ``Preempted`` when asked to stop; called where everything up to global ``step``
        is checkpointed: a rerun replays up to here."""
        if self.should_stop is not None and loop.stop_requested(self.should_stop):
            raise Preempted(step=step, stage=stage, attempt=self.seed - int(self.config.seed))

    @property
    def x_train(self) -> jax.Array:
        """The training inputs for host-side queries (pruning, symbolic fits): on a mesh,
        replicated on it (every process holds them)."""
        if self.mesh is None:
            return loop.device_array(self.ds.x_train)
        return sharding.put_replicated(self.ds.x_train, self.mesh)

    @property
    def lib(self):
        """The symbolic library the config names (None: the whole library)."""
        names = self.config.symbolic.lib
        return None if not names else {k: S.SYMBOLIC_LIB[k] for k in names}

    @property
    def table(self):
        """The networks' symbolic function table: the library the passes fix from (every
        function of it is traced into the training programs, and evaluated on symbolic edges)."""
        return S.SYMBOLIC_LIB if self.lib is None else self.lib


def run_attempt(config, ds, *, seed: int, metrics, step0: int, optimizers: dict | None = None,
                store: StageStore | None = None, should_stop=None) -> dict:
    """One run of the pipeline from ``seed``: train, prune, refine, symbolic passes, formula.

    ``optimizers`` (step count -> optimizer, filled as needed) may be shared between attempts so
    they run the same compiled training loops. ``store``, ``should_stop``: see ``Attempt``."""
    st = Attempt(config=config, ds=ds, seed=seed, metrics=metrics, step0=step0,
                 optimizers={} if optimizers is None else optimizers, mesh=sharding.mesh_for(config),
                 store=store, should_stop=should_stop)
    if config.symbolic.standardize:
        st.mu, st.sigma = float(np.mean(ds.y_train)), float(np.std(ds.y_train)) or 1.0
    st.fit_ds = _standardized(ds, st.mu, st.sigma)
    model = sparse_stage(st)
    model, pruned = prune_stage(st, model)
    add_table(st, model)
    model = refine_stage(st, model)
    unstandardize(st, model)
    model_before = loop.evaluate(model, ds)
    # The first pass ranks fits with ``weight_simple``; while its formula is not exact on the
    # training data, the same spline network is fixed again with each ``weight_simple_retry``
    # (simpler functions preferred: a hidden edge that is almost linear becomes ``x`` instead of a
    # slightly better-fitting tan, and the retrained next layer then finds the exact form).
    exact = _exact_level(config, ds)
    passes = (symbolic_pass(st, nnx.clone(model), ws, model_before) for ws in _weights_simple(config))
    best, done = _best_until_exact(passes, exact)
    st.stages.extend(best["stages"])
    best["results_formula"]["symbolic_passes"] = [
        {"weight_simple": p["weight_simple"], "formula": p["results_formula"]["formula"],
         "formula_train_rmse": p["formula_train_rmse"]} for p in done]
    return {"model": best["model"], "model_spline": model, "model_before": model_before, "stages": st.stages,
            "pruned": pruned, "results_formula": best["results_formula"], "formula_train_rmse": best["formula_train_rmse"],
            "steps": st.step0, "seed": seed}


def train(st: Attempt, model, steps: int, name: str, *, regularization=None, lamb=None, grid_update: bool = True):
    """Trains ``model`` ``steps`` steps on ``st.fit_ds`` (``loop.fit``); records stage ``name``."""
    if steps <= 0:
        return model
    lbfgs = optim.is_lbfgs(st.config.optimizer)
    opt_key = None if lbfgs else steps
    if opt_key not in st.optimizers:
        st.optimizers[opt_key] = optim.make_optimizer(st.config.optimizer, steps)
    base = st.step0
    call = None if st.store is None else st.store.next_call()
    done = None if st.store is None else st.store.restore_end(call, model)
    if done is not None:  # a replay: this stage ended before the run was stopped
        model, meta = done
        ran, diverged, stalled, diverged_step = meta["ran"], meta["diverged"], meta["stalled"], meta["diverged_step"]
    else:
        model, hist = _fit_stage(st, model, steps, name, call, optimizer=st.optimizers[opt_key], lbfgs=lbfgs,
                                 regularization=regularization, lamb=lamb, grid_update=grid_update)
        ran = int(hist["state"].step)  # fewer than ``steps`` when the stage diverged or stalled
        diverged, stalled = bool(hist["diverged"]), bool(hist["stalled"])
        diverged_step = base + hist["diverged_step"] if diverged else None
        if st.store is not None:
            st.store.save_end(call, model, {"stage": name, "seed": st.seed, "stage_step": ran, "global_step": base + ran,
                                            "ran": ran, "diverged": diverged, "stalled": stalled,
                                            "diverged_step": diverged_step})
    st.step0 += ran
    ev = _evaluate(st, model)
    st.stages.append({"stage": name, "steps": ran, "widths": _widths(model), "grid_size": int(model.grid_size),
                      "train_rmse": ev["train_rmse"], "test_rmse": ev["test_rmse"],
                      "diverged": diverged, "stalled": stalled,
                      **({"diverged_step": diverged_step} if diverged else {})})
    logging.info("%s: train_rmse %.3g test_rmse %.3g", name, ev["train_rmse"], ev["test_rmse"])
    return model


def _fit_stage(st: Attempt, model, steps: int, name: str, call, *, optimizer, lbfgs, regularization, lamb, grid_update):
    """``train``'s training: ``loop.fit`` from the stage's newest mid-stage checkpoint (if any),
    checkpointing every ``checkpoint_every`` steps; on a stop request, checkpoints the step
    reached and raises ``Preempted``. Returns ``(model, history)``."""
    tr = st.config.training
    base = st.step0
    start, opt_state = 0, None
    if st.store is not None:
        start, model, opt_state = st.store.restore_mid(
            call, model, loop.init_opt_state(optimizer, nnx.state(model, nnx.Param), lbfgs=lbfgs))
    st.check_stop(name, base + start)
    st.metrics.truncate(base + start)  # lines past the resume point are written again

    def log_fn(step, live, info):
        st.metrics.write({"step": base + step, "stage": name, "seed": st.seed, "train_loss": info["train_loss"],
                          **_evaluate(st, live)})

    def checkpoint_fn(fs):
        if st.store is not None:
            st.store.save_mid(call, fs.model, fs.opt_state, {"stage": name, "seed": st.seed, "stage_step": int(fs.step),
                                                              "global_step": base + int(fs.step)})

    every = int(tr.grid_update_every) if grid_update else 0
    model, hist = loop.fit(
        model, st.fit_ds, steps=steps, optimizer=optimizer, lbfgs=lbfgs,
        batch_size=int(tr.batch_size), chunk_size=int(tr.chunk_size),
        grid_update_every=every, stop_grid_update_step=int(tr.stop_grid_update_step) if every else 0,
        regularization=regularization, lamb=lamb, key=jax.random.fold_in(jax.random.PRNGKey(st.seed), len(st.stages)),
        start_step=start, opt_state=opt_state, log_every=int(tr.log_every), log_fn=log_fn,
        checkpoint_every=int(st.config.checkpoint_every) if st.store is not None else 0, checkpoint_fn=checkpoint_fn,
        stop_on_stall=bool(tr.stop_on_stall), mesh=st.mesh, should_stop=st.should_stop,
    )
    if hist["preempted"]:
        checkpoint_fn(hist["state"])
        raise Preempted(step=base + int(hist["state"].step), stage=name, attempt=st.seed - int(st.config.seed))
    return model, hist


def _evaluate(st: Attempt, model) -> dict:
    """Train/test RMSE of ``model`` on ``st.fit_ds``, in the original units."""
    ev = loop.evaluate(model, st.fit_ds)
    return {**ev, "train_rmse": ev["train_rmse"] * st.sigma, "test_rmse": ev["test_rmse"] * st.sigma}


def _no_penalty(st: Attempt) -> dict:
    """``train`` arguments for a stage without the penalty that runs the penalized stage's compiled
    loop: the same regularization settings with ``lamb = 0`` (the weight is data)."""
    reg = st.config.regularization
    return {"regularization": reg, "lamb": 0.0} if float(reg.lamb) > 0 else {}


def sparse_stage(st: Attempt):
    """Stage 1: a fresh network trained ``training.steps`` steps with the sparsity penalty."""
    tr = st.config.training
    steps = int(tr.steps[0] if isinstance(tr.steps, (list, tuple)) else tr.steps)
    model = models.make_model(st.config, seed=st.seed)  # no symbolic table yet: see ``add_table``
    return train(st, model, steps, "train", regularization=st.config.regularization)


def prune_stage(st: Attempt, model):
    """Stage 2: prune on attribution scores (masked: same widths), retrain, prune search.

    Returns ``(model, pruned_widths)``; the widths are the live nodes' (None without pruning).
    """
    if not st.config.symbolic.prune:
        return model, None
    measure = str(st.config.symbolic.prune_measure)
    steps = int(st.config.symbolic.prune_steps)
    model = kprune.prune(model, st.x_train, node_threshold=float(st.config.symbolic.node_threshold),
                         edge_threshold=float(st.config.symbolic.edge_threshold), measure=measure, masked=True)
    model = train(st, model, steps, "prune", **_no_penalty(st))
    if st.config.symbolic.prune_search:
        floor = float(st.config.symbolic.prune_search_rtol) * float(np.std(st.ds.y_train))
        model = _narrowest(st, model, tol=float(st.config.symbolic.prune_search_tol), floor=floor, steps=steps,
                           measure=measure)
    # The network is compacted to its live nodes once the widths are decided: the refine stage
    # changes the shapes anyway (a new grid size), and the narrower network trains faster.
    return kprune.compact(model), _widths(model)


def add_table(st: Attempt, model) -> None:
    """Gives every layer the symbolic function table (``st.table``), in place.

    The sparse and prune stages train a network without one: their compiled loop then holds no
    library function (on hellokan 1.2 s less to compile). The table comes once the network is
    compacted, before the refine stage, whose new grid size compiles a new loop anyway; the
    retrain stages reuse that loop (fixing an edge changes values only)."""
    for layer in model.layers:
        layer.symbolic.extend_table(st.table)


def refine_stage(st: Attempt, model):
    """Stage 3: grid extension to ``symbolic.refine_grid`` and ``symbolic.refine_steps`` steps."""
    grid = st.config.symbolic.refine_grid
    if not grid:
        return model
    model.refine(int(grid), st.x_train)
    return train(st, model, int(st.config.symbolic.refine_steps), "refine")


def unstandardize(st: Attempt, model) -> None:
    """Maps a network fit to standardized targets back to the original units (in place, exact);
    the later stages fit ``st.ds`` itself."""
    _unstandardize_output(model, st.mu, st.sigma)
    st.fit_ds, st.mu, st.sigma = st.ds, 0.0, 1.0


def symbolic_pass(st: Attempt, model, weight_simple: float, model_before: dict) -> dict:
    """Stages 4-6 on ``model`` (modified): fix library functions, retrain, read the formula.

    Returns the pass: ``model``, its ``stages``, ``results_formula``, ``formula_train_rmse``,
    ``weight_simple``. Its stage records are returned, not left in ``st.stages``.
    """
    first = len(st.stages)
    x = st.x_train
    lib = st.lib
    sym_kw = {"lib": lib, "r2_threshold": float(st.config.symbolic.r2_threshold), "weight_simple": weight_simple}
    retrain_steps = int(st.config.symbolic.retrain_steps)
    n_layers = len(model.layers)
    if bool(st.config.symbolic.progressive) and n_layers > 1:
        # Layer by layer: fix one layer's edges, retrain the rest (splines and affine params) so
        # the later layers absorb what the fixed functions changed, then fit the next layer.
        report = []
        for l in range(n_layers - 1):
            if lib is None or "x" in lib:
                for i, j in pass_through_edges(model, l):
                    p, r2 = S.fix_symbolic(model, l, i, j, "x", x, lib=lib)
                    report.append({"layer": l, "i": i, "j": j, "name": "x", "params": p.tolist(), "r2": r2, "fixed": True})
            report += S.auto_symbolic(model, x, layers=[l], **sym_kw)
            model = train(st, model, retrain_steps, f"symbolic_layer{l}")
        report += S.auto_symbolic(model, x, layers=[n_layers - 1], **sym_kw)
    else:
        report = S.auto_symbolic(model, x, **sym_kw)
    ev_sym = loop.evaluate(model, st.ds)
    st.stages.append({"stage": "auto_symbolic", "steps": 0, "weight_simple": weight_simple, "train_rmse": ev_sym["train_rmse"],
                      "test_rmse": ev_sym["test_rmse"],
                      "edges": [{k: r[k] for k in ("layer", "i", "j", "name", "r2")} for r in report]})
    model = train(st, model, retrain_steps, "retrain", grid_update=False)
    sym_train = st.stages[-1]["train_rmse"]
    if _diverged(sym_train, model_before["train_rmse"], float(np.std(st.ds.y_train))):
        # Diverged (a fixed function sent the next layer far outside its grid): worse than the
        # target's mean; its formula is noise with huge constants (and sympy can take GBs on it).
        results_formula = {"formula": None, "formula_test_rmse": None,
                           "formula_error": f"symbolic fit diverged: train rmse {sym_train:.3g} "
                                            f"(spline network {model_before['train_rmse']:.3g})"}
        formula_train_rmse = float("inf")
        logging.warning("seed %d, weight_simple %g: %s", st.seed, weight_simple, results_formula["formula_error"])
    else:
        st.check_stop("formula", st.step0)
        exact = _exact_level(st.config, st.ds)
        results_formula, formula_train_rmse = _formula(st.config, model, st.ds, sym_train, model_before, exact)
    logging.info("seed %d, weight_simple %g: formula %s (train rmse %.3g)", st.seed, weight_simple,
                 results_formula["formula"], formula_train_rmse)
    pass_stages = st.stages[first:]
    del st.stages[first:]
    return {"model": model, "stages": pass_stages, "results_formula": results_formula,
            "formula_train_rmse": formula_train_rmse, "weight_simple": weight_simple}


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
    for field, vals in (("weight_simple", [config.symbolic.weight_simple]),
                        ("weight_simple_retry", list(config.symbolic.weight_simple_retry or []))):
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
    input_names = list(ds.input_names)
    results_formula = {"formula": None, "formula_test_rmse": None}
    formula_train_rmse = float("inf")
    try:
        for digits in range(int(config.symbolic.digits), 13, 2):
            formulas, formula_train_rmse = _best_formula(model, ds, digits, good=2 * model_train + exact, exact=exact)
            if formula_train_rmse <= 2 * model_train + exact:
                break
        ops = formula_ops(formulas)
        max_ops = int(config.symbolic.max_formula_ops)
        shortened = {}
        if formula_train_rmse > exact and ops > max_ops:
            # Too long to read: its best sub-sum within the bound (dominant terms, refit), if any.
            short, short_rmse = (S.shorten_formula(formulas[0], input_names, ds.x_train, ds.y_train, max_ops=max_ops,
                                                   digits=digits) if len(formulas) == 1 else (None, float("inf")))
            if short is None:
                err = (f"the formula is not exact (train rmse {formula_train_rmse:.3g}) and has {ops} operations, more "
                       f"than symbolic.max_formula_ops={max_ops}, and no sum of its terms is that short")
                logging.warning("no formula: %s", err)
                return {"formula": None, "formula_test_rmse": None, "formula_ops": ops, "formula_error": err}, float("inf")
            logging.info("formula of %d operations (> %d) shortened to its dominant terms: %s (train rmse %.3g, was %.3g)",
                         ops, max_ops, short, short_rmse, formula_train_rmse)
            shortened = {"formula_shortened_from_ops": ops, "formula_full_train_rmse": formula_train_rmse}
            formulas, formula_train_rmse, ops = [short], short_rmse, formula_ops([short])
        chk = S.check_formula(model, formulas, ds.x_test, y=ds.y_test, input_names=input_names,
                              rtol=float(config.symbolic.agreement_rtol))
        text = [str(f) for f in formulas]
        results_formula = {
            "formula": text[0] if len(text) == 1 else text,
            "formula_digits": digits,
            "formula_ops": ops,
            "formula_test_rmse": chk["formula_rmse"],
            "formula_vs_model_rmse": chk["formula_vs_model_rmse"],
            "formula_agreement": chk["agreement"],
            # Far worse than the spline model before auto_symbolic (the retrained symbolic model can
            # agree with its own formula while both are far off the data).
            "formula_far_worse": bool(chk["far_worse"] or chk["formula_rmse"] > 10 * model_before["test_rmse"] + 1e-12),
            **shortened,
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


def formula_ops(formulas) -> int:
    """A formula's size: sympy's operation count (``count_ops``) summed over the outputs."""
    import sympy

    return int(sum(sympy.count_ops(e) for e in formulas))


def _best_formula(model, ds, digits: int, *, good: float, exact: float) -> tuple[list, float]:
    """The formula of ``model`` at ``digits``, and its train RMSE: the simplest of four readings.

    The candidates are ``symbolic_formula`` simplified and as composed (``simplify=False``: the
    simplification can tangle a rounded offset into the structure, e.g. ``(28686 r + 1)**2``),
    and each with its linear constants refit to the training data (``refit_constants``: the
    factor that absorbed rounded-away offsets snaps again, e.g. to ``1/(4 pi)``). The choice is
    the fewest operations among the exact ones (train RMSE <= ``exact``), else among the good
    ones (<= ``good``), else the lowest train RMSE.
    """
    names = list(ds.input_names)
    composed = [S.symbolic_formula(model, input_names=names, digits=digits, simplify=simplify) for simplify in (True, False)]
    cands = composed + [S.refit_constants(f, names, ds.x_train, ds.y_train, digits=digits) for f in composed]
    scored = []
    for f in dict.fromkeys(tuple(c) for c in cands):  # equal readings are scored once
        f = list(f)
        rmse = float(S.formula_rmse(f, names, ds.x_train, ds.y_train))
        scored.append((rmse if np.isfinite(rmse) else float("inf"), formula_ops(f), f))
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
    n_in = active.sum(axis=0) + lay.symbolic.active().sum(axis=0)
    return [(int(np.flatnonzero(active[:, j])[0]), int(j)) for j in np.flatnonzero((n_in == 1) & active.any(axis=0))]


def _narrowest(st: Attempt, model, *, tol: float, floor: float, steps: int, measure: str):
    """The prune search: the narrowest hidden layers whose retrained fit stays good.

    Attribution thresholds stop where the sparsity training left a function spread over several
    hidden nodes. For each hidden node layer in turn, tries keeping only its ``k = 1, 2, ...``
    best-scoring live nodes (``kan_jax.prune.keep_top_nodes``, masked), retrains ``steps`` steps
    and accepts the first ``k`` whose train RMSE is at most ``max(tol * r, floor)``, ``r`` the
    pruned network's (the last stage's) and ``floor`` an absolute level (the pipeline passes
    ``prune_search_rtol`` times the target's std: a network explaining 99.99% of the variance
    is good enough to carry on to the symbolic fit). A narrow network started from the wide
    one's best nodes can sit in a poor local minimum (the best node of a spread-out function
    carries only part of it), so a rejected width is tried once more from a fresh
    initialization with the same live nodes (stage ``prune_search_fresh``) before moving on.
    Every candidate keeps the network's shapes (masked nodes), so all of them run the prune
    stage's compiled loop. Each try is a stage in results.json with ``accepted``.
    """
    ref = max(tol * st.stages[-1]["train_rmse"], floor)
    for layer in range(1, len(model.layers)):
        for k in range(1, _widths(model)[layer]):
            ok = False
            for name in ("prune_search", "prune_search_fresh"):
                trial = kprune.keep_top_nodes(model, st.x_train, layer=layer, k=k, measure=measure, masked=True)
                if name == "prune_search_fresh":
                    fresh = models.make_model(st.config, seed=st.seed)
                    trial = kprune.mask_nodes(fresh, kprune.live_nodes(trial))
                trial = train(st, trial, steps, name, **_no_penalty(st))
                ok = bool(np.isfinite(st.stages[-1]["train_rmse"]) and st.stages[-1]["train_rmse"] <= ref)
                st.stages[-1]["accepted"] = ok
                logging.info("%s: hidden layer %d at width %d: train_rmse %.3g vs at most %.3g: %s", name,
                             layer, k, st.stages[-1]["train_rmse"], ref, "accepted" if ok else "rejected")
                if ok:
                    break
            if ok:
                model = trial
                break
    return model


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
    # On the host: three eager multiplies would each compile a program.
    last.w_base.set_value(jax.device_put(np.asarray(last.w_base[...]) * sigma))
    last.w_spline.set_value(jax.device_put(np.asarray(last.w_spline[...]) * sigma))
    last.bias.set_value(jax.device_put(np.asarray(last.bias[...]) * sigma + mu))


def _draw(model, x, input_names, title: str, path: str) -> None:
    """Writes the KAN diagram of ``model`` (``kan_jax.plot.plot_kan``) to ``path``; a failure is
    logged as a warning (a diagram never fails the run). Only the writing process draws."""
    if not is_writer():
        return
    try:
        from kan_jax import plot as kplot

        os.makedirs(os.path.dirname(path), exist_ok=True)
        kplot.plot_kan(model, x, path, input_names=input_names, title=title)
    except Exception as err:  # noqa: BLE001
        logging.warning("plot_kan (%s) failed: %s", title, err)


def _widths(model) -> list[int]:
    """The widths of ``model``'s live nodes (``kan_jax.prune.live_widths``: masked nodes not counted)."""
    return kprune.live_widths(model)
