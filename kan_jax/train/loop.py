"""The training loop: ``fit`` (jitted chunks of optimizer steps, host-side grid updates) and ``evaluate``.

Model state lives as ``nnx.split(model, nnx.Param, ...)`` -> ``(graphdef, params, rest)``; the steps
are pure JAX functions of ``(params, rest, opt_state)``; ``rest`` holds the non-trainable grid and
edge mask. Steps run ``chunk_size`` at a time inside one jitted ``lax.fori_loop`` (one compile per
parameter shape, not per chunk length); between chunks the host updates the grid, logs and
checkpoints. The RNG of step ``s`` is ``fold_in(key, s)`` (minibatch sampling). L-BFGS works on
the raveled parameter vector (``init_opt_state``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from kan_jax.compilation import quick_jit
from kan_jax.train import sharding
from kan_jax.train.models import count_params

__all__ = ["fit", "evaluate", "predict", "make_loss_fn", "init_opt_state", "FitState", "chunk_boundaries", "device_array",
           "stop_requested"]


@dataclasses.dataclass
class FitState:
    """What ``fit`` hands to its callbacks and returns in ``history["state"]``.

    Attributes:
      step: steps done in this fit call's numbering (``start_step`` + steps run).
      model: the live model (its params/grid are current at callback time).
      opt_state: the optimizer state after ``step`` steps.
    """

    step: int
    model: nnx.Module
    opt_state: Any


# The keywords of ``kan_jax.regularize.penalty`` a ``regularization`` mapping may set (its own
# defaults apply to the ones it leaves out).
_PENALTY_KEYS = ("lamb_l1", "lamb_entropy", "lamb_coef", "lamb_coefdiff", "metric")


def _reg_dict(reg) -> dict:
    """``reg`` (a mapping or ConfigDict, or None) as a plain dict."""
    if reg is None:
        return {}
    return dict(reg.to_dict() if hasattr(reg, "to_dict") else reg)


def _lamb(regularization, lamb=None) -> float:
    """The penalty weight: ``lamb`` when given, else ``regularization["lamb"]`` (0 without one)."""
    return float(lamb if lamb is not None else (_reg_dict(regularization).get("lamb") or 0.0))


def _reg_items(regularization, lamb=None) -> tuple | None:
    """The penalty's keyword settings as a hashable tuple, ``lamb`` excluded (it is data).

    None (no penalty term in the loss) without ``regularization``, or when its ``lamb`` is 0 and
    no ``lamb`` is given: an explicit ``lamb`` (even 0) keeps the penalized loss's program.
    """
    if regularization is None or (lamb is None and _lamb(regularization) <= 0):
        return None
    reg = _reg_dict(regularization)
    unknown = sorted(set(reg) - set(_PENALTY_KEYS) - {"lamb"})
    if unknown:
        raise ValueError(f"regularization: unknown keys {unknown}; allowed: {['lamb', *_PENALTY_KEYS]}")
    return tuple((k, reg[k] if k == "metric" else float(reg[k])) for k in _PENALTY_KEYS if reg.get(k) is not None)


def _loss_with_lamb(graphdef, reg_items, loss=None) -> Callable:
    """``loss(params, rest, x, y, lamb, key=None)``: ``loss(model, x, y, key)`` when a ``loss`` is
    given (``fit``'s argument); else the MSE, plus ``lamb * penalty`` when ``reg_items`` is not None."""
    kw = dict(reg_items or ())
    if loss is not None and reg_items is not None:
        raise ValueError("regularization applies to the mean squared error only: fit(loss=...) takes no penalty")

    def loss_fn(params, rest, x, y, lamb, key=None):
        model = nnx.merge(graphdef, params, rest)
        if loss is not None:
            return loss(model, x, y, key)
        if reg_items is None:
            return jnp.mean(jnp.square(model(x) - y))
        from kan_jax import regularize  # lazy: only regularized runs need it

        if not hasattr(model, "forward_with_edges"):
            raise ValueError("regularization.lamb > 0 needs a KAN model (model.kind='kan')")
        pred, acts = model.forward_with_edges(x)  # one pass: the output is the sum of the edges
        layer_params = [layer.params() for layer in model.layers]
        return jnp.mean(jnp.square(pred - y)) + lamb * regularize.penalty(acts, layer_params, x=x, **kw)

    return loss_fn


def make_loss_fn(graphdef, regularization=None) -> Callable:
    """``loss(params, rest, x, y) -> scalar``: mean squared error (+ ``lamb * penalty`` when ``lamb > 0``).

    ``regularization`` (mapping or ConfigDict): ``lamb``, ``lamb_l1``, ``lamb_entropy``, ``lamb_coef``,
    ``lamb_coefdiff``, ``metric`` as in ``kan_jax.regularize.penalty`` (KAN models only).
    """
    loss_fn = _loss_with_lamb(graphdef, _reg_items(regularization))
    lamb = _lamb(regularization)
    return lambda params, rest, x, y: loss_fn(params, rest, x, y, lamb)


def init_opt_state(optimizer: optax.GradientTransformation, params, *, lbfgs: bool):
    """The optimizer state ``fit`` starts from: over ``params``, or over them raveled for L-BFGS.

    L-BFGS runs on one flat vector (``jax.flatten_util.ravel_pytree``): its two-loop recursion
    and line search are then a few ops on one array instead of one per parameter leaf (a third
    less XLA to compile per training loop, measured in docs/PERFORMANCE.md). ``params``: the
    ``nnx.Param`` state (or any pytree of arrays).
    """
    # One compiled program (optax's init is many small ops, each an XLA compile when run eagerly).
    return _init_fn(optimizer, bool(lbfgs))(params)


@functools.lru_cache(maxsize=64)
def _init_fn(optimizer, lbfgs: bool, layout: "_Layout | None" = None):
    """The jitted init; ``layout`` (on a mesh): the state's shardings, so it is created in place."""
    init = lambda p: optimizer.init(ravel_pytree(p)[0] if lbfgs else p)  # noqa: E731
    return quick_jit(init) if layout is None else quick_jit(init, out_shardings=layout.unflatten())


def uses_linesearch(opt_state) -> bool:
    """Whether an optimizer state has an optax line search (zoom or backtracking: its update needs value_fn)."""
    names = ("ScaleByZoomLinesearchState", "ScaleByBacktrackingLinesearchState")
    leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=lambda t: type(t).__name__ in names)
    return any(type(t).__name__ in names for t in leaves)


def _batch(key, x, y, batch_size):
    if batch_size <= 0 or batch_size >= x.shape[0]:
        return x, y
    idx = jax.random.choice(key, x.shape[0], (batch_size,), replace=False)
    return x[idx], y[idx]


def _loss_key(key, step):
    """The PRNG key a custom loss gets at step ``step`` (``fit(loss=...)``); the step's minibatch
    uses ``fold_in(key, step)`` itself."""
    return jax.random.fold_in(jax.random.fold_in(key, step), 1)


@functools.lru_cache(maxsize=64)
def _make_chunk_fn(graphdef, optimizer, lbfgs: bool, reg_items, batch_size: int, chunk_size: int, layout=None,
                   loss=None):
    """Jitted ``(params, rest, opt_state, x, y, key, step0, n, lamb) -> (params, opt_state, losses[chunk_size])``.

    L-BFGS steps run on the raveled params (``init_opt_state``). ``lamb`` (the penalty weight) is
    data: stages that differ only in it run one compiled program. ``layout`` (on a mesh): the
    flattened shardings of ``(params, opt_state)`` (``_Layout``), kept by every chunk's outputs.
    ``loss``: ``fit``'s custom objective (None: the MSE).
    """
    loss_fn = _loss_with_lamb(graphdef, reg_items, loss)

    def chunk(params, rest, opt_state, x, y, key, step0, n, lamb):
        unravel = None
        if lbfgs:
            params, unravel = ravel_pytree(params)

        def body(i, carry):
            params, opt_state, losses = carry
            step = step0 + i
            xb, yb = _batch(jax.random.fold_in(key, step), x, y, batch_size)
            lkey = None if loss is None else _loss_key(key, step)
            f = lambda p: loss_fn(unravel(p) if lbfgs else p, rest, xb, yb, lamb, lkey)  # noqa: E731
            if lbfgs:
                if batch_size <= 0:
                    # The value and gradient at ``params``: from the line search of the step before,
                    # or (first step of a chunk) from ``_lbfgs_start_fn``.
                    value = optax.tree_utils.tree_get(opt_state, "value")
                    grad = optax.tree_utils.tree_get(opt_state, "grad")
                else:  # a new batch each step: the cached value/grad belong to the previous batch
                    value, grad = jax.value_and_grad(f)(params)
                new_updates, new_state = optimizer.update(grad, opt_state, params, value=value, grad=grad, value_fn=f)
                # At convergence (float64 loss ~ rounding) L-BFGS's curvature pair can be 0/0 and the
                # update NaN while the loss is finite: keep the point instead of poisoning it.
                ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(u)) for u in jax.tree_util.tree_leaves(new_updates)]))
                updates = jax.tree_util.tree_map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates)
                opt_state = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new_state, opt_state)
            else:
                value, grad = jax.value_and_grad(f)(params)
                updates, opt_state = optimizer.update(grad, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, losses.at[i].set(value)

        losses = jnp.full((chunk_size,), jnp.nan, dtype=jnp.result_type(float))
        params, opt_state, losses = jax.lax.fori_loop(0, n, body, (params, opt_state, losses))
        return (unravel(params) if lbfgs else params), opt_state, losses

    if layout is None:
        return jax.jit(chunk, donate_argnums=(0, 2))
    params_sh, opt_sh = layout.unflatten()
    return jax.jit(chunk, donate_argnums=(0, 2), out_shardings=(params_sh, opt_sh, sharding.replicated(layout.mesh)))


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where ``(params, opt_state)`` live on ``mesh``: their shardings, flattened so that the
    layout can key the cache of compiled chunks (``_make_chunk_fn``)."""

    mesh: Any
    treedef: Any
    leaves: tuple

    @staticmethod
    def of(tree, mesh) -> "_Layout":
        return _Layout.of_shardings(jax.tree.map(lambda a: a.sharding, tree), mesh)

    @staticmethod
    def of_shardings(shardings, mesh) -> "_Layout":
        leaves, treedef = jax.tree_util.tree_flatten(shardings)
        return _Layout(mesh, treedef, tuple(leaves))

    def unflatten(self):
        return jax.tree_util.tree_unflatten(self.treedef, self.leaves)

    def put(self, tree):
        """``tree`` (same structure) moved into this layout (a no-op for arrays already there)."""
        return jax.device_put(tree, self.unflatten())


@functools.lru_cache(maxsize=64)
def _lbfgs_start_fn(graphdef, reg_items, loss=None):
    """``(params, rest, opt_state, x, y, lamb, key, step) -> opt_state`` with the loss value and the
    (raveled) gradient at ``params`` stored where L-BFGS's line search caches them (``key`` and
    ``step``: a custom ``loss``'s key at that step, ``_loss_key``).

    Full-batch L-BFGS steps reuse the value and gradient its line search found at the accepted
    point; a chunk starts from this instead (the host may have changed the params: grid update,
    new stage, restore). A separate quick-compiled program (``kan_jax.compilation``): inside the
    loop's program it would be one more copy of the loss and its gradient to optimize.
    """
    loss_fn = _loss_with_lamb(graphdef, reg_items, loss)

    def start(params, rest, opt_state, x, y, lamb, key, step):
        flat, unravel = ravel_pytree(params)
        lkey = None if loss is None else _loss_key(key, step)
        value, grad = jax.value_and_grad(lambda p: loss_fn(unravel(p), rest, x, y, lamb, lkey))(flat)
        return optax.tree_utils.tree_set(opt_state, value=value, grad=grad)

    return quick_jit(start)


def chunk_boundaries(start: int, steps: int, *, every: list[int], grid_update_every: int, stop_grid_update_step: int) -> list[int]:
    """Steps (in ``(start, steps]``) where a chunk ends: multiples of each ``every`` entry, grid updates, the end.

    Boundaries depend only on the schedule, never on where a run was resumed, so a resumed run
    executes exactly the same chunks as an uninterrupted one (bitwise-equal results on CPU).
    """
    b = {steps}
    for e in every:
        if e and e > 0:
            b.update(range(e, steps, e))
    if grid_update_every and grid_update_every > 0:
        b.update(s for s in range(grid_update_every, min(stop_grid_update_step, steps), grid_update_every))
    return sorted(s for s in b if start < s <= steps)


def fit(
    model: nnx.Module,
    dataset,
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    lbfgs: bool | None = None,
    batch_size: int = 0,
    grid_update_every: int = 0,
    stop_grid_update_step: int = 0,
    regularization=None,
    lamb: float | None = None,
    key: jax.Array | None = None,
    start_step: int = 0,
    opt_state: Any = None,
    log_every: int = 0,
    log_fn: Callable[[int, nnx.Module, dict], None] | None = None,
    checkpoint_every: int = 0,
    checkpoint_fn: Callable[[FitState], None] | None = None,
    chunk_size: int = 100,
    stop_on_nan: bool = True,
    stop_on_stall: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    should_stop: Callable[[], bool] | None = None,
    loss: Callable[[nnx.Module, jax.Array, jax.Array, jax.Array], jax.Array] | None = None,
) -> tuple[nnx.Module, dict]:
    """Trains a copy of ``model`` on ``dataset`` for ``steps`` optimizer steps (pykan ``fit`` semantics).

    The trained model is returned; ``model`` itself is left as it was (its arrays are copied before
    the jitted steps donate them). Always use the returned model.

    Grid updates (KAN only): ``model.update_grid(dataset.x_train)`` before step ``s`` for every
    ``s < stop_grid_update_step`` with ``s % grid_update_every == 0`` (pykan: every 5 steps until 50).

    Args:
      model: an NNX model (``kan_jax.KAN`` or ``MLP``); not modified.
      dataset: a ``kan_jax.data.Dataset`` (uses ``x_train``, ``y_train``).
      steps: the step count to reach (steps ``start_step .. steps-1`` run).
      optimizer: from ``make_optimizer``.
      lbfgs: whether ``optimizer`` is optax's L-BFGS (needs value/grad/value_fn); default: detected.
      batch_size: minibatch size; ``0``/``-1`` = full batch.
      grid_update_every, stop_grid_update_step: the grid schedule (0 = no grid updates).
      regularization: ``{lamb, lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff, metric}`` or None.
      lamb: the penalty weight, overriding ``regularization.lamb``. It is data, not part of the
        compiled loop: a stage that continues a regularized one without the penalty passes
        ``lamb=0`` with the same ``regularization`` and runs the same compiled program (a new
        shape or ``regularization=None`` compiles another).
      key: base PRNG key (step ``s`` uses ``fold_in(key, s)``); default ``PRNGKey(0)``.
      start_step, opt_state: resume point (``opt_state=None``: ``init_opt_state``; for L-BFGS a
        state over the raveled params).
      log_every: call ``log_fn(step, model, {"train_loss": ...})`` every this many steps (0 = only at the end).
      checkpoint_every, checkpoint_fn: call ``checkpoint_fn(FitState)`` every this many steps.
      chunk_size: max steps per jitted call.
      stop_on_nan: stop early when the loss turns non-finite, or the params do where they would be
        kept (a checkpoint, the last step) (``history["diverged"]`` = True).
      stop_on_stall: stop early (``history["stalled"]`` = True) after a chunk whose steps all left
        the loss bit-equal (each step's starting loss equals the previous chunk's last), once no
        grid update is left in the schedule: the optimizer is stuck (typically L-BFGS at float
        rounding, its line search failing at every step). The remaining steps would leave the
        loss where it is; the params may still move at rounding level.
      mesh: a device mesh (``kan_jax.train.sharding.make_mesh``) to train on: the samples' rows
        split over its ``data`` axis, the model's arrays placed by their partitioning metadata
        (``sharding.state_shardings``), and every step keeps that layout. The programs compute
        on the global arrays: the loss is the mean over all samples, grid updates see all of
        them. None (default): the default device.
      should_stop: called after every chunk that does not end the fit; when it returns True the fit
        stops there (``history["preempted"]``; the caller checkpoints ``history["state"]``). The
        command line sets it from SIGTERM/SIGINT. With several processes they stop together: the
        answers are combined over processes (any one asking stops all).
      loss: the objective, ``loss(model, x, y, key) -> scalar`` on a batch of rows of
        ``dataset.x_train`` / ``y_train`` (``x (batch, n_in)``, ``y (batch, n_out)``), with
        ``key`` a PRNG key of its own for the step (``fold_in(fold_in(key, step), 1)``), for
        stochastic objectives such as a VAE's ELBO. None (default): the mean squared error
        ``mean((model(x) - y)**2)`` (plus the penalty). It keys the cache of compiled loops: pass
        a module-level function or a value-compared object (a frozen dataclass) so that repeated
        fits run one program. It takes no ``regularization``.

    Returns:
      ``(model, history)``; ``history``: ``step`` and ``train_loss`` (one entry per step run),
      ``diverged``, ``stalled`` and ``preempted`` (bools), ``diverged_step`` (the first step whose loss is not
      finite, or the step whose kept params are not; None unless diverged), ``state`` (the final ``FitState``, with the optimizer state;
      its ``step`` is where the run stopped: the end of the chunk holding ``diverged_step``).
    """
    graphdef, params, rest, opt_state, lbfgs, reg_items, lamb = _setup(model, optimizer, lbfgs, opt_state, regularization,
                                                                       lamb, mesh)
    key = jax.random.PRNGKey(0) if key is None else key
    layout = None
    if mesh is None:
        x = device_array(dataset.x_train)
        y = device_array(dataset.y_train)
    else:
        x = sharding.put_batch(dataset.x_train, mesh, what="the training set")
        y = sharding.put_batch(dataset.y_train, mesh, what="the training set")
        key = sharding.put_replicated(key, mesh)
        # The layout every program keeps: params and the rest as their metadata says, the
        # optimizer state as ``_setup`` created it (``sharding.opt_state_shardings``); what the
        # host-side programs return is moved back into it.
        layout = _Layout.of((params, opt_state), mesh)
        place_params, place_rest, place_opt = (_Layout.of(t, mesh).put for t in (params, rest, opt_state))
    batch_size = int(batch_size or 0)
    can_update_grid = hasattr(model, "update_grid") and grid_update_every and grid_update_every > 0
    chunk_size = max(1, int(chunk_size))
    bounds = chunk_boundaries(
        start_step,
        steps,
        every=[chunk_size, log_every, checkpoint_every],
        grid_update_every=grid_update_every if can_update_grid else 0,
        stop_grid_update_step=stop_grid_update_step,
    )
    hist_steps, hist_loss = [], []
    diverged = stalled = preempted = False
    diverged_step = None
    last_loss = None  # the loss each chunk starts from is the previous chunk's last (same params)
    step = start_step
    # On a mesh every program traces under it (``jax.set_mesh``): the layer kernels then chunk
    # each device's own rows (``kan_jax.kernels._scan_batch``).
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        for end in bounds:
            if can_update_grid and step < stop_grid_update_step and step % grid_update_every == 0:
                params, rest = _grid_update_fn(graphdef)(params, rest, x)
                if layout is not None:
                    params, rest = place_params(params), place_rest(rest)
            n = end - step
            fn = _make_chunk_fn(graphdef, optimizer, bool(lbfgs), reg_items, batch_size, chunk_size, layout, loss)
            if lbfgs and batch_size <= 0:
                opt_state = _lbfgs_start_fn(graphdef, reg_items, loss)(params, rest, opt_state, x, y, lamb, key,
                                                                       np.asarray(step))
                if layout is not None:
                    opt_state = place_opt(opt_state)
            params, opt_state, losses = fn(params, rest, opt_state, x, y, key, np.asarray(step), np.asarray(n), lamb)
            losses = np.asarray(losses[:n])
            hist_steps.extend(range(step + 1, end + 1))
            hist_loss.extend(losses.tolist())
            step = end
            model = nnx.merge(graphdef, params, rest)
            if stop_on_nan and not np.all(np.isfinite(losses)):
                diverged = True
                diverged_step = end - n + 1 + int(np.argmin(np.isfinite(losses)))  # the first non-finite loss
                break
            # Each loss is taken before its step's update, so the chunk's last update can still
            # leave non-finite params behind finite losses. Checked where params would be kept (a
            # checkpoint, the end of the stage), not every chunk: it reads the params to the host.
            kept = step == steps or bool(checkpoint_fn is not None and checkpoint_every and step % checkpoint_every == 0)
            if stop_on_nan and kept and not _all_finite(params):
                diverged, diverged_step = True, step
                break
            grid_updates_left = can_update_grid and step < stop_grid_update_step
            stalled = stop_on_stall and last_loss is not None and not grid_updates_left and bool(np.all(losses == last_loss))
            last_loss = losses[-1]
            if log_fn is not None and ((log_every and step % log_every == 0) or step == steps or stalled):
                log_fn(step, model, {"train_loss": float(losses[-1])})
            if checkpoint_fn is not None and checkpoint_every and step % checkpoint_every == 0 and step != steps:
                checkpoint_fn(FitState(step, model, opt_state))
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)
            if stalled:
                break
            if should_stop is not None and step != steps and stop_requested(should_stop):
                preempted = True
                break
    model = nnx.merge(graphdef, params, rest)
    # nnx.merge builds a fresh module: callers must use the returned model.
    return model, {"step": hist_steps, "train_loss": hist_loss, "diverged": diverged, "diverged_step": diverged_step,
                   "stalled": stalled, "preempted": preempted, "state": FitState(step, model, opt_state)}


def _all_finite(tree) -> bool:
    """Whether every element of ``tree``'s arrays held by this process is finite (host-side: no
    compiled program)."""
    return all(bool(np.all(np.isfinite(np.asarray(shard.data))))
               for leaf in jax.tree_util.tree_leaves(tree) for shard in leaf.addressable_shards)


def stop_requested(should_stop: Callable[[], bool]) -> bool:
    """``should_stop()``, combined over processes: all stop at the same chunk or the next
    collective would wait forever for the ones that stopped."""
    stop = bool(should_stop())
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        stop = bool(np.any(multihost_utils.process_allgather(np.asarray(stop))))
    return stop


def device_array(a) -> jax.Array:
    """``a`` as a JAX array. Host arrays move with ``jax.device_put``: ``jnp.asarray`` of a NumPy
    array compiles a small program per shape (``lax.stage``), a compile per dataset split."""
    return a if isinstance(a, jax.Array) else jax.device_put(np.asarray(a))


def _setup(model, optimizer, lbfgs, opt_state, regularization, lamb, mesh=None):
    """``fit``'s split of ``model``, optimizer state and penalty settings (placed on ``mesh``)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if lbfgs is None:
        lbfgs = uses_linesearch(opt_state if opt_state is not None else jax.eval_shape(optimizer.init, params))
    if mesh is None:
        if opt_state is None:
            opt_state = init_opt_state(optimizer, params, lbfgs=bool(lbfgs))
    else:
        params, rest = sharding.place_state(params, mesh), sharding.place_state(rest, mesh)
        shape = opt_state if opt_state is not None else jax.eval_shape(_init_fn(optimizer, bool(lbfgs)), params)
        opt_sh = sharding.opt_state_shardings(optimizer, shape, params, mesh, lbfgs=bool(lbfgs))
        if opt_state is None:  # created in its layout: Adam's moments beside their parameters
            opt_state = _init_fn(optimizer, bool(lbfgs), _Layout.of_shardings(opt_sh, mesh))(params)
        else:  # a given (e.g. restored) state moved into it
            opt_state = jax.device_put(opt_state, opt_sh)
    # Params and state are donated to the jitted steps; the caller's arrays may be shared (an
    # ``nnx.clone`` shares them) and optax may alias one buffer in several leaves: copy.
    params, opt_state = _owned_copy((params, jax.tree_util.tree_map(jnp.asarray, opt_state)))
    reg_items = _reg_items(regularization, lamb)
    lamb = np.asarray(_lamb(regularization, lamb) if reg_items else 0.0, jnp.result_type(float))
    return graphdef, params, rest, opt_state, bool(lbfgs), reg_items, lamb


@quick_jit
def _owned_copy(tree):
    """Fresh buffers for every leaf of ``tree`` (one compiled program). The explicit dtype drops
    weak types, which would otherwise retrace (and recompile) a loop after its first call."""
    return jax.tree_util.tree_map(lambda a: jnp.array(a, dtype=a.dtype, copy=True), tree)


# ``predict(quick=True)`` compiles quickly while rows x parameters stay at most this (the
# forward's work): above it a quick forward evaluated at every log costs more than the compile it
# saves (toy at G = 50, 1000 rows, 60 logged evaluations per stage: warm run 25.7 -> 34.2 s).
QUICK_FORWARD_MAX_WORK = 1 << 18


def predict(model: nnx.Module, x, *, batch: int = 65536, quick: bool = False) -> np.ndarray:
    """``model(x)`` in batches of ``batch`` rows, as numpy (one jit per model structure).

    ``quick``: compile with ``kan_jax.compilation.quick_jit`` when rows x parameters is at most
    ``QUICK_FORWARD_MAX_WORK`` (the training loop's evaluations of small networks).
    """
    graphdef, state = nnx.split(model)
    mesh = sharding.on_mesh(state)  # a model placed on a mesh: inputs and outputs replicated on it
    fn = _forward_fn(graphdef, quick and _quick_forward(model, min(len(x), batch)), mesh)
    x = device_array(x) if mesh is None else sharding.put_replicated(x, mesh)
    return np.concatenate([np.asarray(fn(state, x[i : i + batch])) for i in range(0, x.shape[0], batch)], axis=0)


def _quick_forward(model, rows: int) -> bool:
    """Whether ``predict(quick=True)`` on ``rows`` rows compiles quickly (``QUICK_FORWARD_MAX_WORK``)."""
    return rows * count_params(model) <= QUICK_FORWARD_MAX_WORK


@functools.lru_cache(maxsize=32)
def _forward_fn(graphdef, quick: bool, mesh=None):
    fn = lambda state, x: nnx.merge(graphdef, state)(x)  # noqa: E731
    kw = {} if mesh is None else {"out_shardings": sharding.replicated(mesh)}
    return quick_jit(fn, **kw) if quick else jax.jit(fn, **kw)


@functools.lru_cache(maxsize=16)
def _grid_update_fn(graphdef):
    """``model.update_grid(x)`` as one quick-compiled program per model structure:
    ``(params, rest, x) -> (params, rest)``."""

    def run(params, rest, x):
        model = nnx.merge(graphdef, params, rest)
        model.update_grid(x)
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return params, rest

    return quick_jit(run)


def evaluate(model: nnx.Module, dataset) -> dict:
    """Regression metrics: ``train_rmse``, ``test_rmse``, ``test_nrmse`` (= test_rmse / dataset.target_std).

    The forward is one quick-compiled program per model structure (``predict(quick=True)``);
    the squared errors are summed on the host in float64.
    """
    out = {}
    for split in ("train", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        err = np.asarray(predict(model, x, quick=True), np.float64) - np.asarray(y, np.float64)
        out[f"{split}_rmse"] = float(np.sqrt(np.mean(np.square(err))))
    std = float(dataset.target_std)
    out["test_nrmse"] = out["test_rmse"] / std if std > 0 else math.nan
    return out
