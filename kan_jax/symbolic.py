"""Symbolic regression with a KAN: fit library functions to edges, read out formulas, verify them.

The fitting math is in :mod:`kan_jax.symbolic_fit` (library, chunked affine fits, ranking,
sympy output); the symbolic edge type is in :mod:`kan_jax.symbolic_edges` and
``KANLayer.set_symbolic``. This module ties them to a network:

* :func:`edge_samples` -- per layer, the inputs reaching it and its spline edge values;
* :func:`suggest_symbolic` -- ranked candidate functions for one edge;
* :func:`fix_symbolic` -- fix one edge to a function (fitting ``a, b, c, d`` or given);
* :func:`auto_symbolic` -- fix every active edge, one batched fit per layer;
* :func:`symbolic_formula` -- one sympy expression per output (all edges must be symbolic);
* :func:`formula_rmse`, :func:`check_formula` -- evaluate formulas on data and compare them with
  the model, so a pipeline reports a formula worse than the model instead of hiding it.

After :func:`auto_symbolic` the affine params live in each layer's ``sym_affine`` ``nnx.Param``,
so training the model (e.g. ``kan_jax.train.fit``) retrains them.

Example::

    model = kan_jax.KAN([2, 5, 1], rngs=nnx.Rngs(0))
    ...  # train, prune
    report = auto_symbolic(model, x)              # every active edge -> c f(a x + b) + d
    [expr] = symbolic_formula(model)              # exp(x_2**2 + sin(pi*x_1))
    check_formula(model, [expr], x_test, y=y_test)
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy
from flax import nnx

from kan_jax import functional as F
from kan_jax.compilation import quick_jit
from kan_jax.symbolic_fit import (
    SYMBOLIC_LIB,
    SymbolicCandidate,
    SymbolicFunction,
    fit_affine,
    precompile_fit_affine_all,
    round_constants,
    suggest_symbolic_batch,
)

__all__ = [
    "NotSymbolicError",
    "edge_samples",
    "precompile_auto_symbolic",
    "suggest_symbolic",
    "fix_symbolic",
    "unfix_symbolic",
    "auto_symbolic",
    "symbolic_edges",
    "symbolic_formula",
    "formula_rmse",
    "formula_predict",
    "refit_constants",
    "check_formula",
]


class NotSymbolicError(ValueError):
    """Raised by :func:`symbolic_formula` when active spline edges remain; ``.edges`` lists them."""

    def __init__(self, edges):
        self.edges = list(edges)
        shown = ", ".join(f"(layer {l}, {i}, {j})" for l, i, j in self.edges[:20])
        more = f" and {len(self.edges) - 20} more" if len(self.edges) > 20 else ""
        super().__init__(
            f"{len(self.edges)} active edge(s) are still splines, not symbolic: {shown}{more}. "
            "Fix them (auto_symbolic / fix_symbolic) or prune them first."
        )


def _lib(lib) -> Mapping[str, SymbolicFunction]:
    return SYMBOLIC_LIB if lib is None else lib


def _check_layer(model, layer):
    if not 0 <= layer < len(model.layers):
        raise ValueError(f"layer must be in [0, {len(model.layers)}), got {layer}")
    return model.layers[layer]


def _check_edge(lay, layer, i, j):
    if not (0 <= i < lay.in_features and 0 <= j < lay.out_features):
        raise ValueError(
            f"edge ({i}, {j}) out of range for layer {layer} ({lay.in_features} inputs, {lay.out_features} outputs)"
        )


def _spline_phi(lay, xin: jax.Array) -> jax.Array:
    """``(batch, n, o)`` spline edge functions ``phi_ij(x_i)`` without any mask."""
    ones = jnp.ones_like(lay.mask[...])
    return F.edge_values(lay.params(), lay.grid[...], ones, xin, **lay._kw())


def edge_samples(model, x: jax.Array, layers: Sequence[int] | None = None) -> dict[int, tuple[jax.Array, jax.Array]]:
    """Samples of the spline edges: ``{layer: (inputs (batch, n_l), phi (batch, n_l, n_{l+1}))}``.

    The inputs are those reaching each layer when the network runs on ``x (batch, widths[0])``;
    ``phi`` is each edge's spline function on them (mask not applied). One quick-compiled
    program per network structure computes every layer's (``kan_jax.compilation``).
    """
    graphdef, state = nnx.split(model)
    samples = _edge_samples_fn(graphdef)(state, jnp.asarray(x))
    layers = range(len(model.layers)) if layers is None else layers
    return {l: samples[l] for l in layers}


def precompile_auto_symbolic(
    model, x: jax.Array, *, lib: Mapping[str, SymbolicFunction] | None = None, calls: Sequence[Sequence[int] | None] = (None,),
    **fit_kwargs,
) -> None:
    """Compiles, in the calling thread, the programs that ``auto_symbolic(model, x, lib=lib,
    layers=layers, **fit_kwargs)`` runs for each ``layers`` in ``calls`` (default: one call on
    every layer): the edge samples of ``model``'s structure and the library fits for the counts
    of active spline edges. Only shapes and dtypes matter, not ``model``'s values: a pipeline
    that knows the network early calls it in a background thread."""
    graphdef, state = nnx.split(model)
    lowered = _edge_samples_fn(graphdef).lower(state, jnp.asarray(x))
    lowered.compile()
    counts = [len(_active_edges(lay)) for lay in model.layers]
    xin0 = lowered.out_info[0][0]
    shapes = set()
    for layers in calls:
        layers = range(len(model.layers)) if layers is None else layers
        for group in _fit_groups({l: counts[l] for l in layers}):
            shapes.add((sum(counts[l] for l in group), xin0.shape[0], str(xin0.dtype)))
    for n_edges, n_samples, dtype in sorted(shapes):
        precompile_fit_affine_all(n_edges, n_samples, dtype=dtype, lib=lib, **fit_kwargs)


def _active_edges(layer) -> np.ndarray:
    """``(E, 2)`` row-major ``(i, j)`` of the edges ``auto_symbolic`` fits (``mask > 0``)."""
    return np.argwhere(np.asarray(layer.mask[...]) > 0)


# ``auto_symbolic`` fits the edges of several layers in one call while they are at most this many
# in all (one program run instead of one per layer); larger layers are fitted one at a time, so
# the fit's memory stays that of the largest layer.
FIT_BATCH_EDGES = 256


def _fit_groups(counts: Mapping[int, int]) -> list[list[int]]:
    """The layers ``auto_symbolic`` fits together: ``counts`` maps each layer to its active edge
    count (layers without any are left out); consecutive layers share a call while their total is
    at most ``FIT_BATCH_EDGES``."""
    groups, total = [], 0
    for l, n in counts.items():
        if n <= 0:
            continue
        if groups and total + n <= FIT_BATCH_EDGES:
            groups[-1].append(l)
            total += n
        else:
            groups.append([l])
            total = n
    return groups


@functools.lru_cache(maxsize=32)
def _edge_samples_fn(graphdef):
    def run(state, x):
        model = nnx.merge(graphdef, state)
        inputs = model.layer_inputs(x)
        return [(inputs[l], _spline_phi(lay, inputs[l])) for l, lay in enumerate(model.layers)]

    return quick_jit(run)


def suggest_symbolic(
    model,
    layer: int,
    i: int,
    j: int,
    x: jax.Array,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
    topk: int = 5,
    weight_simple: float = 0.8,
    **fit_kwargs,
) -> list[SymbolicCandidate]:
    """Ranked library functions for edge ``(i, j)`` of ``layer`` (samples from the inputs ``x``).

    Args:
      model: a ``kan_jax.KAN``.
      layer, i, j: the edge.
      x: ``(batch, widths[0])`` network inputs.
      lib: library (default ``SYMBOLIC_LIB``).
      topk: candidates returned.
      weight_simple: simplicity weight (``symbolic_fit.symbolic_scores``).
      **fit_kwargs: forwarded to ``symbolic_fit.fit_affine_all`` (``a_range``, ``grid_number``, ...).

    Returns:
      Up to ``topk`` ``SymbolicCandidate(name, params [a, b, c, d], r2, complexity, score)``.
    """
    lay = _check_layer(model, layer)
    _check_edge(lay, layer, i, j)
    xin, phi = edge_samples(model, x, [layer])[layer]
    return suggest_symbolic_batch(
        xin[:, i][None], phi[:, i, j][None], lib=_lib(lib), topk=topk, weight_simple=weight_simple, **fit_kwargs
    )[0]


def fix_symbolic(
    model,
    layer: int,
    i: int,
    j: int,
    name: str,
    x: jax.Array | None = None,
    *,
    fit_params: bool = True,
    params: Sequence[float] | None = None,
    lib: Mapping[str, SymbolicFunction] | None = None,
    **fit_kwargs,
) -> tuple[np.ndarray, float | None]:
    """Fixes edge ``(i, j)`` of ``layer`` to ``c * lib[name](a x + b) + d`` (in place).

    With ``params`` given they are used as ``[a, b, c, d]``; otherwise, with ``fit_params`` and
    samples ``x``, they are fitted to the edge's spline on the inputs reaching it (and stored in
    the function's canonical form, ``SymbolicFunction.canonical``); otherwise ``[1, 0, 1, 0]``.

    Returns:
      ``(params (4,), r2)``; ``r2`` is ``None`` when nothing was fitted.
    """
    lib = _lib(lib)
    if name not in lib:
        raise ValueError(f"{name!r} is not in the symbolic library ({', '.join(lib)})")
    lay = _check_layer(model, layer)
    _check_edge(lay, layer, i, j)
    r2 = None
    if params is not None:
        p = np.asarray(params, np.float64).reshape(4)
    elif fit_params:
        if x is None:
            raise ValueError("fit_params=True needs samples x (or pass params=[a, b, c, d])")
        xin, phi = edge_samples(model, x, [layer])[layer]
        p, r2 = fit_affine(xin[:, i], phi[:, i, j], lib[name], **fit_kwargs)
        p, r2 = np.asarray(p, np.float64), float(r2)
    else:
        p = np.array([1.0, 0.0, 1.0, 0.0])
    lay.set_symbolic([(i, j)], [lib[name]], p[None])
    return p, r2


def unfix_symbolic(model, layer: int, i: int, j: int) -> None:
    """Turns edge ``(i, j)`` of ``layer`` back into its spline."""
    lay = _check_layer(model, layer)
    _check_edge(lay, layer, i, j)
    lay.clear_symbolic([(i, j)])


def auto_symbolic(
    model,
    x: jax.Array,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
    r2_threshold: float = 0.0,
    weight_simple: float = 0.8,
    layers: Sequence[int] | None = None,
    verbose: bool = False,
    **fit_kwargs,
) -> list[dict[str, Any]]:
    """Fixes every active spline edge (``mask = 1``) to its best library function, in place.

    All active edges are fitted against the whole library in one batched, chunked computation
    (``symbolic_fit.suggest_symbolic_batch``; layers together up to ``FIT_BATCH_EDGES`` edges in
    all, larger layers one at a time); each edge takes its best-scoring
    candidate with ``r2 >= r2_threshold`` and keeps its spline otherwise (pykan's
    ``auto_symbolic``). The samples are the spline edge values on the inputs reaching each layer
    when the network (as it was before this call) runs on ``x``. Pruned edges (``mask = 0``,
    not symbolic) and edges already symbolic are left as they are.

    Args:
      model: a ``kan_jax.KAN``.
      x: ``(batch, widths[0])`` inputs (the training inputs, typically).
      lib: library (default ``SYMBOLIC_LIB``).
      r2_threshold: minimum ``r2`` to fix an edge.
      weight_simple: simplicity weight of the ranking.
      layers: the layers to process (default all).
      verbose: print one line per edge.
      **fit_kwargs: forwarded to ``symbolic_fit.fit_affine_all``.

    Returns:
      One dict per processed active edge: ``layer, i, j, name`` (``None`` if left a spline),
      ``params`` ``[a, b, c, d]``, ``r2``, ``fixed``.
    """
    lib = _lib(lib)
    samples = edge_samples(model, x, layers)
    active = {l: _active_edges(model.layers[l]) for l in samples}
    report = []
    for group in _fit_groups({l: len(a) for l, a in active.items()}):
        # Gathered on the host (no compile per shape): (E, N) inputs and spline values.
        xs = np.concatenate([np.asarray(samples[l][0])[:, active[l][:, 0]].T for l in group])
        ys = np.concatenate([np.asarray(samples[l][1])[:, active[l][:, 0], active[l][:, 1]].T for l in group])
        cands = iter(suggest_symbolic_batch(xs, ys, lib=lib, topk=1, weight_simple=weight_simple,
                                            r2_threshold=r2_threshold, **fit_kwargs))
        for l in group:
            edges, funcs, params = [], [], []
            for i, j in active[l].tolist():
                c = next(cands)
                best = c[0] if c else None
                rec = {"layer": l, "i": i, "j": j, "name": best.name if best else None,
                       "params": best.params.tolist() if best else None, "r2": best.r2 if best else None,
                       "fixed": best is not None}
                report.append(rec)
                if verbose:
                    print(f"layer {l} edge ({i},{j}): " + (f"{best.name} r2={best.r2:.6f}" if best else "kept spline (below r2_threshold)"))
                if best is not None:
                    edges.append((i, j))
                    funcs.append(lib[best.name])
                    params.append(best.params)
            if edges:
                model.layers[l].set_symbolic(edges, funcs, np.stack(params))
    return report


def symbolic_edges(model) -> list[dict[str, Any]]:
    """The symbolic edges of a network: ``layer, i, j, name, params`` per edge."""
    out = []
    for l, lay in enumerate(model.layers):
        if not lay.has_symbolic:
            continue
        aff = np.asarray(lay.sym_affine[...], np.float64)
        sm = np.asarray(lay.sym_mask[...])
        for i, row in enumerate(lay.sym_names):
            for j, name in enumerate(row):
                if name is not None and sm[i, j] != 0:
                    out.append({"layer": l, "i": i, "j": j, "name": name, "params": aff[i, j].tolist()})
    return out


def _non_symbolic_edges(model) -> list[tuple[int, int, int]]:
    bad = []
    for l, lay in enumerate(model.layers):
        m = np.asarray(lay.mask[...])
        for i, j in np.argwhere(m != 0).tolist():
            bad.append((l, i, j))
    return bad


def _pull_constants(expr):
    """``(k * B)^p -> k^p * B^p`` for non-integer powers of sums, ``k > 0`` the constant term of the
    sum (else its first coefficient), so ``0.5 * sqrt(4 + 4 x^2)`` meets its factor ``2`` and
    rounds to ``sqrt(x^2 + 1)`` instead of ``1.0 * sqrt(...)`` with both halves rounded apart."""

    def is_target(e):
        return isinstance(e, sympy.Pow) and isinstance(e.base, sympy.Add) and not e.exp.is_integer

    def pull(e):
        terms = e.base.as_ordered_terms()
        consts = [t for t in terms if t.is_number]
        k = consts[0] if consts else terms[0].as_coeff_Mul()[0]
        if not (k.is_number and k.is_positive) or k == 1:
            return e
        return sympy.Pow(k, e.exp) * sympy.Pow(sympy.expand(e.base / k), e.exp)

    return expr.replace(is_target, pull)


def _snap_tol(digits: int) -> float:
    """Relative snapping tolerance that matches the rounding: 1e-4 at 4 digits, 1e-12 at 12."""
    return 10.0 ** -max(int(digits), 4)


def _simplify(expr, digits: int):
    """Expands sums out of exponents (so constant factors meet and round), rounds, recombines."""
    expr = round_constants(expr, digits=max(digits, 12), snap_tol=1e-12)
    try:
        e = sympy.expand(expr, power_exp=True, mul=True, multinomial=True, log=False, trig=False)
    except Exception:  # pragma: no cover - sympy corner cases
        e = expr
    e = _pull_constants(e)
    e = round_constants(e, digits=digits, snap_tol=_snap_tol(digits))
    e = sympy.powsimp(e, combine="exp")
    try:
        e = sympy.simplify(e)
    except Exception:  # pragma: no cover
        pass
    return round_constants(_shorter_factored(e), digits=digits, snap_tol=_snap_tol(digits))


def _shorter_factored(expr):
    """A polynomial's factored form when it has fewer operations (the expansion above undoes
    ``(x_1 + x_2)**3`` into four terms); anything else unchanged."""
    syms = sorted(expr.free_symbols, key=str)
    if not syms or not expr.is_polynomial(*syms) or sympy.count_ops(expr) > 80:
        return expr
    try:
        factored = sympy.factor(expr)
    except Exception:  # pragma: no cover - sympy corner cases
        return expr
    return factored if sympy.count_ops(factored) < sympy.count_ops(expr) else expr


SIMPLIFY_SECONDS = 5.0
"""Default wall-clock bound on simplifying one expression (``symbolic_formula``): sympy's
``simplify`` can run for many minutes on a 26-operation expression mixing ``sin``, ``log`` and
rational functions (a non-exact fit of AI Feynman I.6.2)."""


class _OutOfTime(Exception):
    pass


def _within(seconds: float | None, fn, fallback):
    """``fn()``, or ``fallback()`` once ``seconds`` of wall time have passed (SIGALRM: bounded in
    the main thread on POSIX; elsewhere, or with ``seconds=None``, ``fn()`` runs unbounded).

    A timer the caller already runs (``ITIMER_REAL``, e.g. a test timeout) is kept: when it is due
    first, ``fn()`` runs under it alone; otherwise it is re-armed afterwards with its remaining time.
    """
    if (seconds is None or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        return fn()
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if 0.0 < outer_delay <= seconds:
        return fn()
    start = time.monotonic()
    armed = [True]

    def on_alarm(signum, frame):
        if armed[0]:  # an alarm handled after fn() is done is ignored
            raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        # Repeating: a raise that lands in code that swallows exceptions (a gc callback, a
        # __del__) is printed and dropped; the next alarm, 0.25 s later, raises again.
        signal.setitimer(signal.ITIMER_REAL, float(seconds), 0.25)
        return fn()
    except _OutOfTime:
        armed[0] = False
        return fallback()
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay > 0.0:
            signal.setitimer(signal.ITIMER_REAL, max(outer_delay - (time.monotonic() - start), 1e-3), outer_interval)


def symbolic_formula(
    model,
    *,
    input_names: Sequence[str] | None = None,
    digits: int = 4,
    simplify: bool = True,
    simplify_seconds: float | None = SIMPLIFY_SECONDS,
) -> list[sympy.Expr]:
    """The network as sympy expressions, one per output.

    Every active edge must be symbolic (pruned edges count as 0). Layer ``l`` node ``j`` is
    ``bias_j + sum_i sym_mask_ij (c f(a x_i + b) + d)``. Constants are rounded with
    ``symbolic_fit.round_constants`` (integers, small rationals and rational multiples of pi,
    1/pi and 1/sqrt(2 pi) within a relative ``10**-digits`` are snapped; others rounded to ``digits`` decimals). With ``simplify``, sums inside ``exp`` are expanded
    first, so that constant factors combine (and snap, e.g. ``0.5 e^{0.6931}`` -> 1) before
    ``sympy.simplify``.

    Args:
      model: a ``kan_jax.KAN``.
      input_names: names of the inputs (default ``x_1 .. x_n``).
      digits: decimals kept for constants that do not snap.
      simplify: simplify the expressions (slower for big networks).
      simplify_seconds: wall-clock bound on simplifying each expression (``None``: unbounded;
        bounded in the main thread on POSIX). An expression that runs out of time is returned
        as with ``simplify=False``.

    Returns:
      ``widths[-1]`` sympy expressions.

    Raises:
      NotSymbolicError: listing the active edges that are still splines.
    """
    bad = _non_symbolic_edges(model)
    if bad:
        raise NotSymbolicError(bad)
    n_in = model.layers[0].in_features
    names = [f"x_{k + 1}" for k in range(n_in)] if input_names is None else list(input_names)
    if len(names) != n_in:
        raise ValueError(f"need {n_in} input names, got {len(names)}")
    nodes: list[Any] = [sympy.Symbol(nm) for nm in names]
    for lay in model.layers:
        bias = np.asarray(lay.bias[...], np.float64)
        outs: list[Any] = [sympy.Float(float(b)) for b in bias]
        if lay.has_symbolic:
            aff = np.asarray(lay.sym_affine[...], np.float64)
            sm = np.asarray(lay.sym_mask[...], np.float64)
            fn = {f.name: f for f in lay.sym_funcs}
            for i, row in enumerate(lay.sym_names):
                for j, name in enumerate(row):
                    if name is None or sm[i, j] == 0:
                        continue
                    a, b, c, d = (sympy.Float(float(v)) for v in aff[i, j])
                    outs[j] = outs[j] + sympy.Float(float(sm[i, j])) * (c * fn[name].sympy_fn(a * nodes[i] + b) + d)
        nodes = outs
    def rounded(e):
        return round_constants(e, digits=digits, snap_tol=_snap_tol(digits))

    if not simplify:
        return [rounded(e) for e in nodes]
    return [_within(simplify_seconds, lambda e=e: _simplify(e, digits), lambda e=e: rounded(e)) for e in nodes]


def _symbols_for(exprs, names):
    by_name = {}
    for e in exprs:
        for s in sympy.sympify(e).free_symbols:
            by_name[s.name] = s
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise ValueError(f"formula uses {unknown}, not among the input names {list(names)}")
    return [by_name.get(nm, sympy.Symbol(nm)) for nm in names]


def formula_predict(formulas: Sequence[Any], input_names: Sequence[str], x) -> np.ndarray:
    """Evaluates sympy formulas (or strings) with numpy: ``x (N, n)`` -> ``(N, len(formulas))``."""
    exprs = [sympy.sympify(f) if isinstance(f, str) else f for f in formulas]
    x = np.asarray(x, np.float64)
    syms = _symbols_for(exprs, input_names)
    cols = [x[:, k] for k in range(x.shape[1])]
    out = np.empty((x.shape[0], len(exprs)))
    for k, e in enumerate(exprs):
        out[:, k] = _evaluate(e, syms, cols, x.shape[0])
    return out


def _evaluate(expr, syms, cols, n: int) -> np.ndarray:
    """``expr`` on the columns ``cols`` with numpy: ``(n,)`` float64, NaN where complex or undefined."""
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return np.full((n,), np.nan)
    with np.errstate(all="ignore"):
        v = np.asarray(sympy.lambdify(syms, expr, modules="numpy")(*cols))
        if np.iscomplexobj(v):
            v = np.where(np.abs(v.imag) < 1e-12, v.real, np.nan)
    return np.broadcast_to(np.asarray(v, np.float64), (n,))


def formula_rmse(formulas: Sequence[Any], input_names: Sequence[str], x, y) -> float:
    """RMSE of the formulas against targets ``y (N,)`` or ``(N, n_out)``; ``inf`` if non-finite."""
    pred = formula_predict(formulas, input_names, x)
    y = np.asarray(y, np.float64).reshape(pred.shape[0], -1)
    err = float(np.sqrt(np.mean((pred - y) ** 2)))
    return err if np.isfinite(err) else float("inf")


def refit_constants(formulas: Sequence[Any], input_names: Sequence[str], x, y, *, digits: int = 4,
                    seconds: float | None = SIMPLIFY_SECONDS) -> list[sympy.Expr]:
    """The formulas with their linear constants refit to the data, then rounded and snapped.

    Each formula is read as ``c_0 + sum_i c_i m_i(x)`` (its top-level terms; a term's numeric
    factor is its coefficient, a term without symbols is ``c_0``), and the ``c_i`` are the least
    squares fit to ``y`` on ``x``, rounded as ``symbolic_formula`` rounds (``digits``). After the
    network's small offsets are rounded away (a log edge's ``log(q + 3e-5)`` becomes ``log(q)``)
    the overall factor that absorbed them is off by more than the snapping tolerance
    (``0.07960 q/(epsilon r^2)``); refit, it is ``1/(4 pi)`` again.

    Args:
      formulas: sympy expressions (or strings), one per output.
      input_names: names of the columns of ``x``.
      x: ``(N, n)`` inputs; y: ``(N,)`` or ``(N, len(formulas))`` targets.
      digits: decimals kept for constants that do not snap.
      seconds: wall-clock bound per formula, as ``symbolic_formula``'s ``simplify_seconds``.

    Returns:
      One expression per formula; a formula whose terms cannot be evaluated finitely (or has
      none to refit, or runs out of time) comes back unchanged.
    """
    exprs = [sympy.sympify(f) if isinstance(f, str) else f for f in formulas]
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(x.shape[0], -1)
    syms = _symbols_for(exprs, input_names)
    cols = [x[:, k] for k in range(x.shape[1])]

    def refit(expr, target):
        if not expr.free_symbols:
            return expr
        # A term's numeric factors, also those inside it (``1/(1.0083 chi + 1.0083)``), are its
        # coefficient: what is left is the monomial ``m_i``.
        parts = [sympy.factor_terms(t.as_coeff_Mul()[1]).as_coeff_Mul()[1] for t in sympy.Add.make_args(expr)]
        design = np.stack([_evaluate(m, syms, cols, x.shape[0]) for m in parts], axis=1)
        if not np.all(np.isfinite(design)):
            return expr
        c, *_ = np.linalg.lstsq(design, target, rcond=None)
        if not np.all(np.isfinite(c)):
            return expr
        new = sympy.Add(*(sympy.Float(float(ci)) * m for ci, m in zip(c, parts)))
        return round_constants(new, digits=digits, snap_tol=_snap_tol(digits))

    return [_within(seconds, lambda e=e, k=k: refit(e, y[:, k]), lambda e=e: e) for k, e in enumerate(exprs)]


def check_formula(
    model,
    formulas: Sequence[Any],
    x,
    *,
    y=None,
    input_names: Sequence[str] | None = None,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Compares formulas with the model on inputs ``x``, and both with targets ``y`` if given.

    Returns:
      ``model_rmse`` and ``formula_rmse`` (vs ``y``; ``None`` without it),
      ``formula_vs_model_rmse``, ``agreement`` (``formula_vs_model_rmse <= rtol * max(std of the
      model outputs, 1e-12)``, with a finite formula), and ``far_worse`` (the formula's error vs
      ``y`` exceeds ten times the model's plus ``rtol * std(y)``), so a caller can report a formula
      much worse than the model instead of hiding it.
    """
    x_np = np.asarray(x, np.float64)
    names = [f"x_{k + 1}" for k in range(x_np.shape[1])] if input_names is None else list(input_names)
    pred_f = formula_predict(formulas, names, x_np)
    pred_m = np.asarray(model(jnp.asarray(x)), np.float64).reshape(pred_f.shape[0], -1)
    with np.errstate(all="ignore"):
        vs_model = float(np.sqrt(np.mean((pred_f - pred_m) ** 2)))
    vs_model = vs_model if np.isfinite(vs_model) else float("inf")
    scale = max(float(np.std(pred_m)), 1e-12)
    out = {
        "formula_vs_model_rmse": vs_model,
        "agreement": bool(vs_model <= rtol * scale),
        "model_rmse": None,
        "formula_rmse": None,
        "far_worse": None,
    }
    if y is not None:
        yy = np.asarray(y, np.float64).reshape(pred_f.shape[0], -1)
        m_rmse = float(np.sqrt(np.mean((pred_m - yy) ** 2)))
        with np.errstate(all="ignore"):
            f_rmse = float(np.sqrt(np.mean((pred_f - yy) ** 2)))
        f_rmse = f_rmse if np.isfinite(f_rmse) else float("inf")
        out.update(model_rmse=m_rmse, formula_rmse=f_rmse, far_worse=bool(f_rmse > 10 * m_rmse + rtol * float(np.std(yy))))
    return out
