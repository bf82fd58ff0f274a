"""The symbolic library of KAN edges: functions with their JAX form, sympy form and complexity.

:class:`SymbolicFunction` and the default library :data:`SYMBOLIC_LIB` (an immutable ordered
mapping ``name -> SymbolicFunction``: x, x^2..x^5, 1/x, 1/x^2, sqrt, exp, log, sin, cos, tan,
tanh, abs, sgn, arcsin, arctan, arctanh, gaussian, 0), plus :func:`register_symbolic` to build
extended libraries. Libraries are plain immutable mappings: nothing here mutates global state,
:func:`register_symbolic` always returns a *new* mapping. The singular functions guard their
inputs so that values and gradients stay finite everywhere. Fitting lives in
:mod:`kan_jax.symbolic.fit`.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sympy

__all__ = ["SymbolicFunction", "SYMBOLIC_LIB", "register_symbolic", "GUARD_EPS"]

# Guard used by the singular library functions: inputs are kept at least this
# far from a singularity, so outputs stay finite (|1/x| <= 1/EPS, ...).
GUARD_EPS = 1e-4
# exp() arguments are clipped here so that exp, and squares of it summed over
# thousands of samples, stay finite in float32.
_EXP_MAX = 30.0


# ---------------------------------------------------------------------------
# Library
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SymbolicFunction:
    """One entry of a symbolic library.

    Attributes:
      name: Library key, e.g. ``"sin"`` or ``"x^2"``.
      jax_fn: Elementwise jnp function ``(...,) -> (...,)``. Must return finite
        values for every finite input (singular functions clip/guard their
        input); should be jit- and vmap-safe.
      sympy_fn: Callable on a sympy expression returning the plain
        mathematical function, e.g. ``sympy.sin``.
      complexity: Integer cost used by the simplicity-vs-accuracy ranking.
      domain: Optional ``(low, high)`` interval of the mathematical function's
        natural domain (``None`` means the whole real line); outside it
        ``jax_fn`` is a guarded continuation, not the math function.
      search_fn: Optional cheaper stand-in for ``jax_fn`` (same values to
        ~1e-6) used only to rank grid-search candidates in
        :func:`fit_affine`; the final fit always uses ``jax_fn``. The default
        library sets it for sin/cos/tan/arcsin/arctan/arctanh, whose XLA CPU kernels
        are scalar library calls, with polynomial versions that vectorize
        (about 10x faster on CPU).
      canonical: Optional map of fitted ``[a, b, c, d]`` (numpy, ``(..., 4)``) to an equivalent
        parametrization of the same function ``c * f(a * x + b) + d``. The default library uses
        it where two of the four are redundant: ``exp`` (``b = 0``), ``log`` (``a = +-1``) and the
        homogeneous functions (powers, 1/x, sqrt, abs, sgn): ``(a x + b)^2 = a^2 (x + b/a)^2`` is stored as ``a = 1`` (``a = +-1`` for
        sqrt), which keeps formulas short and the affine retraining well conditioned (a linear
        edge fitted as ``0.02 * (-8.2 x + 3.6)`` trains slowly; ``-0.17 x`` does not).
    """

    name: str
    jax_fn: Callable[[jax.Array], jax.Array]
    sympy_fn: Callable[[Any], Any]
    complexity: int
    domain: tuple[float, float] | None = None
    search_fn: Callable[[jax.Array], jax.Array] | None = None
    canonical: Callable[[Any], Any] | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.jax_fn(x)


def _safe_abs_floor(x: jax.Array, eps: float = GUARD_EPS) -> jax.Array:
    """``sign(x) * max(|x|, eps)`` with sign(0) := +1: never closer to 0 than eps."""
    s = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    return s * jnp.maximum(jnp.abs(x), eps)


def _inv(x):
    return 1.0 / _safe_abs_floor(x)


def _inv2(x):
    return 1.0 / jnp.maximum(x * x, GUARD_EPS**2)


def _sqrt(x):
    # Double-where keeps both the value and the gradient finite at x <= 0.
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _exp(x):
    return jnp.exp(jnp.minimum(x, _EXP_MAX))


def _log(x):
    return jnp.log(jnp.maximum(x, GUARD_EPS))


def _tan(x):
    return jnp.sin(x) / _safe_abs_floor(jnp.cos(x))


def _arcsin(x):
    # Exact on [-1, 1], constant +-pi/2 outside; double-where keeps grads finite.
    inside = jnp.abs(x) < 1
    return jnp.where(
        inside, jnp.arcsin(jnp.where(inside, x, 0.0)), jnp.sign(x) * (jnp.pi / 2)
    )


def _arctanh(x):
    lim = 1.0 - 1e-6
    return jnp.arctanh(jnp.clip(x, -lim, lim))


# --- Vectorizable polynomial trig (search-only stand-ins) -------------------

# pi/2 split in three parts (Cody-Waite) for an accurate float32 reduction.
_PIO2_1 = 1.5703125
_PIO2_2 = 4.837512969970703125e-4
_PIO2_3 = 7.549789954891882e-8


def _sin_quadrant(x, shift):
    """sin(x + shift * pi/2) via reduction to |r| <= pi/4 and Taylor series."""
    x = jnp.clip(x, -1e5, 1e5)
    k = jnp.floor(x * (2 / math.pi) + 0.5)
    r = ((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    r2 = r * r
    sin_r = r + r * r2 * (-1 / 6 + r2 * (1 / 120 + r2 * (-1 / 5040 + r2 * (1 / 362880))))
    cos_r = 1 + r2 * (-0.5 + r2 * (1 / 24 + r2 * (-1 / 720 + r2 * (1 / 40320))))
    q = k.astype(jnp.int32) + shift
    val = jnp.where((q & 1) == 0, sin_r, cos_r)
    return jnp.where((q & 2) == 0, val, -val)


def _fast_sin(x):
    return _sin_quadrant(x, 0)


def _fast_cos(x):
    return _sin_quadrant(x, 1)


def _fast_tan(x):
    return _fast_sin(x) / _safe_abs_floor(_fast_cos(x))


def _fast_arctan(x):
    ax = jnp.abs(x)
    big = ax > 1
    z = jnp.where(big, 1 / jnp.where(big, ax, 1.0), ax)  # in [0, 1]
    # atan(z) = 2 atan(z / (1 + sqrt(1 + z^2))), applied twice: |t| <= 0.2.
    z = z / (1 + jnp.sqrt(1 + z * z))
    t = z / (1 + jnp.sqrt(1 + z * z))
    t2 = t * t
    at = 4 * t * (1 + t2 * (-1 / 3 + t2 * (1 / 5 + t2 * (-1 / 7 + t2 * (1 / 9 - t2 / 11)))))
    at = jnp.where(big, math.pi / 2 - at, at)
    return jnp.sign(x) * at


def _fast_arcsin(x):
    xc = jnp.clip(x, -1.0, 1.0)
    return 2 * _fast_arctan(xc / (1 + jnp.sqrt(jnp.maximum(1 - xc * xc, 0.0))))


def _fast_arctanh(x):
    lim = 1.0 - 1e-6
    xc = jnp.clip(x, -lim, lim)
    return 0.5 * (jnp.log1p(xc) - jnp.log1p(-xc))


def _sgn(x):
    return jnp.sign(x)


def _gaussian(x):
    return jnp.exp(-(x * x))


def _homogeneous(degree: float, parity: int | None) -> Callable[[Any], Any]:
    """``canonical`` for ``f(s u) = s^degree f(u)`` (``s > 0``), ``f`` even (+1), odd (-1) or neither.

    ``c f(a x + b) = c |a|^degree f(sgn(a) (x + b / a))``; an even or odd ``f`` also absorbs
    ``sgn(a)`` (into ``c`` or not at all), leaving ``a = 1``. ``a = 0`` is left alone.
    """

    def canonical(params):
        p = np.array(params, dtype=np.float64, copy=True)
        a, b, c = p[..., 0], p[..., 1], p[..., 2]
        ok = a != 0
        mag = np.where(ok, np.abs(a), 1.0)
        sgn = np.where(a < 0, -1.0, 1.0)
        c2 = c * mag**degree
        b2 = b / mag  # f(sgn (x + b/a)) = f(sgn x + b/|a|)
        a2 = sgn
        if parity is not None:  # f(-u) = parity * f(u): flip to a = +1
            c2 = np.where(sgn < 0, parity * c2, c2)
            b2 = sgn * b2
            a2 = np.ones_like(a)
        p[..., 0] = np.where(ok, a2, a)
        p[..., 1] = np.where(ok, b2, b)
        p[..., 2] = np.where(ok, c2, c)
        return p

    return canonical


def _linear_canonical(params):
    """``c (a x + b) + d = (c a) x + (c b + d)``: stored as ``a = 1, b = 0``."""
    p = np.array(params, dtype=np.float64, copy=True)
    a, b, c, d = (p[..., k].copy() for k in range(4))
    p[..., 0], p[..., 1], p[..., 2], p[..., 3] = 1.0, 0.0, c * a, c * b + d
    return p


def _exp_canonical(params):
    """``c exp(a x + b) = (c e^b) exp(a x)``: stored as ``b = 0``."""
    p = np.array(params, dtype=np.float64, copy=True)
    with np.errstate(over="ignore"):
        c2 = p[..., 2] * np.exp(p[..., 1])
    ok = np.isfinite(c2)
    p[..., 2] = np.where(ok, c2, p[..., 2])
    p[..., 1] = np.where(ok, 0.0, p[..., 1])
    return p


def _log_canonical(params):
    """``c log(a x + b) = c log|a| + c log(sgn(a) x + b/|a|)``: stored as ``a = +-1``."""
    p = np.array(params, dtype=np.float64, copy=True)
    a, b, c = p[..., 0], p[..., 1], p[..., 2]
    ok = a != 0
    mag = np.where(ok, np.abs(a), 1.0)
    p[..., 3] = np.where(ok, p[..., 3] + c * np.log(mag), p[..., 3])
    p[..., 1] = np.where(ok, b / mag, b)
    p[..., 0] = np.where(ok, np.sign(a), a)
    return p


def _zero(x):
    return jnp.zeros_like(x)


def _make_lib() -> Mapping[str, SymbolicFunction]:
    inf = math.inf
    entries = [
        SymbolicFunction("x", lambda x: x, lambda x: x, 1, canonical=_linear_canonical),
        SymbolicFunction("x^2", lambda x: x**2, lambda x: x**2, 2, canonical=_homogeneous(2, 1)),
        SymbolicFunction("x^3", lambda x: x**3, lambda x: x**3, 3, canonical=_homogeneous(3, -1)),
        SymbolicFunction("x^4", lambda x: x**4, lambda x: x**4, 3, canonical=_homogeneous(4, 1)),
        SymbolicFunction("x^5", lambda x: x**5, lambda x: x**5, 3, canonical=_homogeneous(5, -1)),
        SymbolicFunction("1/x", _inv, lambda x: 1 / x, 2, domain=(-inf, inf), canonical=_homogeneous(-1, -1)),
        SymbolicFunction("1/x^2", _inv2, lambda x: 1 / x**2, 2, canonical=_homogeneous(-2, 1)),
        SymbolicFunction("sqrt", _sqrt, sympy.sqrt, 2, domain=(0.0, inf), canonical=_homogeneous(0.5, None)),
        SymbolicFunction("exp", _exp, sympy.exp, 2, canonical=_exp_canonical),
        SymbolicFunction("log", _log, sympy.log, 2, domain=(0.0, inf), canonical=_log_canonical),
        SymbolicFunction("sin", jnp.sin, sympy.sin, 2, search_fn=_fast_sin),
        SymbolicFunction("cos", jnp.cos, sympy.cos, 2, search_fn=_fast_cos),
        SymbolicFunction("tan", _tan, sympy.tan, 3, search_fn=_fast_tan),
        SymbolicFunction("tanh", jnp.tanh, sympy.tanh, 3),
        SymbolicFunction("abs", jnp.abs, sympy.Abs, 3, canonical=_homogeneous(1, 1)),
        SymbolicFunction("sgn", _sgn, sympy.sign, 3, canonical=_homogeneous(0, -1)),
        SymbolicFunction(
            "arcsin", _arcsin, sympy.asin, 4, domain=(-1.0, 1.0), search_fn=_fast_arcsin
        ),
        SymbolicFunction("arctan", jnp.arctan, sympy.atan, 4, search_fn=_fast_arctan),
        SymbolicFunction(
            "arctanh", _arctanh, sympy.atanh, 4, domain=(-1.0, 1.0),
            search_fn=_fast_arctanh,
        ),
        SymbolicFunction("gaussian", _gaussian, lambda x: sympy.exp(-(x**2)), 3),
        SymbolicFunction("0", _zero, lambda x: sympy.Integer(0), 0),
    ]
    return types.MappingProxyType({e.name: e for e in entries})


SYMBOLIC_LIB: Mapping[str, SymbolicFunction] = _make_lib()
"""Default library: an immutable ordered mapping ``name -> SymbolicFunction``."""


def register_symbolic(
    name: str,
    jax_fn: Callable[[jax.Array], jax.Array],
    sympy_fn: Callable[[Any], Any],
    complexity: int,
    *,
    lib: Mapping[str, SymbolicFunction] | None = None,
    domain: tuple[float, float] | None = None,
    search_fn: Callable[[jax.Array], jax.Array] | None = None,
    canonical: Callable[[Any], Any] | None = None,
) -> Mapping[str, SymbolicFunction]:
    """Returns a new library with ``name`` added (or replaced).

    Neither :data:`SYMBOLIC_LIB` nor the passed ``lib`` is modified: libraries
    are immutable values, so pass the returned mapping explicitly wherever a
    ``lib=`` keyword is accepted.

    Args:
      name: Key of the new entry.
      jax_fn: Elementwise jnp function; it should return finite values for all
        finite inputs (guard singularities yourself).
      sympy_fn: Callable on a sympy expression (the plain math function).
      complexity: Integer complexity used in ranking.
      lib: Base library (default :data:`SYMBOLIC_LIB`).
      domain: Optional natural domain ``(low, high)``.
      search_fn: Optional fast stand-in for the grid search (see
        :class:`SymbolicFunction`).
      canonical: Optional equivalent re-parametrization of fitted ``[a, b, c, d]``
        (see :class:`SymbolicFunction`).

    Returns:
      An immutable ordered mapping ``name -> SymbolicFunction``; a new name is
      appended at the end, an existing one keeps its position.

    Example:
      >>> lib = register_symbolic("softplus", jax.nn.softplus,
      ...     lambda x: sympy.log(1 + sympy.exp(x)), 3)
      >>> "softplus" in lib, "softplus" in SYMBOLIC_LIB
      (True, False)
    """
    base = SYMBOLIC_LIB if lib is None else lib
    new = dict(base)
    new[name] = SymbolicFunction(
        name, jax_fn, sympy_fn, int(complexity), domain, search_fn=search_fn, canonical=canonical
    )
    return types.MappingProxyType(new)
