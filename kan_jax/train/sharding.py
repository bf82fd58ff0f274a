"""Device meshes and where arrays live on them (``jax.sharding``); the one place that knows layouts.

A run's mesh comes from ``config.mesh`` (``"data:-1"``, ``"data:2,model:2"``; None: every device
on ``data``) and always has both axes of ``MESH_AXES`` (an axis the spec leaves out has size 1),
so the partitioning metadata of a layer (which names ``model``) fits every mesh. The axes are
``AxisType.Auto``: programs are written for the global arrays and XLA's partitioner inserts the
collectives (the gradient all-reduce over ``data``; the gathers a ``model``-sharded layer needs).

The layout rule:

* **batches** (``x``, ``y``, any array whose leading axis is the sample axis): rows split over
  ``data`` (``batch_sharding``); a full batch must split evenly.
* **parameters and the rest of a model's state**: what their NNX partitioning metadata says
  (``nnx.get_partition_spec``). ``kan_jax.KANLayer`` names ``model`` on the output-feature axis
  of ``coef (in, out, M)``, ``w_base``, ``w_spline``, ``mask`` (``(in, out)``), ``bias (out,)``
  and the symbolic edges' ``func`` / ``affine``; its knots ``grid (in, K)`` are replicated.
  An axis whose size does not divide evenly over its mesh axis (a 1-wide output layer on a
  2-way ``model`` axis) stays whole: ``state_shardings`` replicates it instead of failing.
* **optimizer state** (``opt_state_shardings``): every tree in it shaped like the parameters
  (Adam's moments) in the parameters' layout, found with ``optax.tree_map_params``; the rest
  (step counts) replicated. L-BFGS works on one flat vector (``loop.init_opt_state``): its whole
  state is replicated.

On one device in all (``mesh_for`` returns None) nothing here runs: single-device runs are
exactly the programs they were before sharding existed.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from kan_jax.functional import MODEL_AXIS
from kan_jax.kernels import DATA_AXIS
from kan_jax.train.config import ConfigError

__all__ = [
    "MESH_AXES",
    "parse_mesh",
    "make_mesh",
    "mesh_for",
    "mesh_sizes",
    "state_shardings",
    "place_state",
    "place_model",
    "opt_state_shardings",
    "run_layout",
    "batch_sharding",
    "replicated",
    "put_batch",
    "put_replicated",
    "on_mesh",
]

MESH_AXES = (DATA_AXIS, MODEL_AXIS)
"""The axis names every mesh has: ``data`` (batch rows) and ``model`` (a layer's output features)."""


def parse_mesh(spec: str | None, n_devices: int) -> dict[str, int]:
    """``config.mesh`` as ``{axis: size}`` in the order written, ``-1`` resolved.

    Args:
      spec: ``"data:-1"``, ``"data:2,model:2"``, ``"model:4"``...; None or ``""``: ``data:-1``.
      n_devices: the global device count the sizes must multiply to.

    Raises:
      ConfigError: one line naming ``mesh``, the problem and the allowed form.
    """
    form = f"mesh must look like 'data:-1' or 'data:2,model:2' (axes {', '.join(MESH_AXES)}; one size may be -1)"
    if spec is None or str(spec).strip() == "":
        spec = "data:-1"
    axes: dict[str, int] = {}
    for part in str(spec).split(","):
        name, sep, size = part.strip().partition(":")
        name = name.strip()
        if not sep or name not in MESH_AXES:
            raise ConfigError(f"{form}, got {spec!r}")
        if name in axes:
            raise ConfigError(f"mesh names axis {name!r} twice in {spec!r}")
        try:
            n = int(size)
        except ValueError:
            raise ConfigError(f"{form}, got {spec!r}") from None
        if n < 1 and n != -1:
            raise ConfigError(f"mesh axis {name!r} needs a size >= 1 or -1, got {n} in {spec!r}")
        axes[name] = n
    free = [a for a, n in axes.items() if n == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh may leave one size as -1, got {spec!r}")
    fixed = math.prod(n for n in axes.values() if n != -1)
    if free:
        if n_devices % fixed:
            raise ConfigError(f"mesh {spec!r}: {n_devices} devices do not split into {fixed} x {free[0]}")
        axes[free[0]] = n_devices // fixed
    if math.prod(axes.values()) != n_devices:
        raise ConfigError(f"mesh {spec!r} uses {math.prod(axes.values())} devices, but there are {n_devices} "
                          f"(jax.device_count()); use sizes that multiply to {n_devices}, or -1")
    return axes


def make_mesh(axes: dict[str, int], devices=None) -> jax.sharding.Mesh:
    """A ``jax.make_mesh`` with both ``MESH_AXES`` (sizes from ``axes``, missing ones 1), Auto axes."""
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh axes must be among {list(MESH_AXES)}, got {unknown}")
    shape = tuple(int(axes.get(a, 1)) for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def mesh_for(config) -> jax.sharding.Mesh | None:
    """The run's mesh from ``config.mesh``; None when the run has one device in all (nothing to
    shard: the single-device programs run unchanged). ConfigError for a bad spec."""
    axes = parse_mesh(config.get("mesh", None), jax.device_count())
    return make_mesh(axes) if jax.device_count() > 1 else None


def mesh_sizes(config) -> dict[str, int]:
    """``{axis: size}`` as ``config.mesh`` writes it (results.json ``mesh``), ``-1`` resolved."""
    return parse_mesh(config.get("mesh", None), jax.device_count())


def _fit(spec: PartitionSpec, shape, mesh) -> PartitionSpec:
    """``spec`` with each axis entry kept only where it divides that dimension evenly."""
    out = []
    for dim, names in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        group = (names,) if isinstance(names, str) else tuple(names or ())
        size = math.prod(mesh.shape[n] for n in group)
        out.append(names if group and dim % size == 0 else None)
    return PartitionSpec(*out)


def state_shardings(state, mesh: jax.sharding.Mesh):
    """``NamedSharding`` per array of an ``nnx.State`` (same tree), from its partitioning metadata.

    Like ``nnx.get_named_sharding``, except that a dimension that does not split evenly over its
    mesh axis is replicated (``_fit``) instead of raising.
    """
    specs = nnx.get_partition_spec(state)
    is_var = lambda v: isinstance(v, nnx.Variable)  # noqa: E731

    def one(spec, leaf):
        value = leaf.get_value() if is_var(leaf) else leaf
        spec = spec.get_value() if is_var(spec) else spec
        return NamedSharding(mesh, _fit(spec if spec is not None else PartitionSpec(), np.shape(value), mesh))

    return jax.tree.map(one, specs, state, is_leaf=is_var)


def place_state(state, mesh: jax.sharding.Mesh):
    """``state`` (an ``nnx.State`` or pure tree of arrays) moved into its layout on ``mesh``."""
    return jax.device_put(state, state_shardings(state, mesh))


def place_model(model: nnx.Module, mesh: jax.sharding.Mesh) -> nnx.Module:
    """A copy of ``model`` whose arrays live in their layout on ``mesh`` (``state_shardings``)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, place_state(state, mesh))


def opt_state_shardings(optimizer: optax.GradientTransformation, opt_state, params, mesh: jax.sharding.Mesh, *,
                        lbfgs: bool):
    """``NamedSharding`` per leaf of ``opt_state`` (arrays or ``jax.ShapeDtypeStruct``s).

    Trees shaped like ``params`` (Adam's ``mu`` and ``nu``) take the parameters' shardings
    (``state_shardings``); every other leaf is replicated. ``lbfgs``: the state is over the
    raveled parameter vector, all replicated.
    """
    rep = replicated(mesh)
    if lbfgs:
        return jax.tree.map(lambda _: rep, opt_state)
    # One sharding per array leaf, in the parameters' own tree structure (Variables and all).
    per_leaf = jax.tree.unflatten(jax.tree.structure(params), jax.tree.leaves(state_shardings(params, mesh)))
    return optax.tree_map_params(optimizer, lambda _, s: s, opt_state, per_leaf, transform_non_params=lambda _: rep)


def run_layout(config) -> dict:
    """results.json's ``mesh`` (``{axis: size}`` as ``config.mesh`` writes it), ``n_devices``
    (global) and ``n_processes``."""
    return {"mesh": mesh_sizes(config), "n_devices": jax.device_count(), "n_processes": jax.process_count()}


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
    """Rows over ``data``, the other ``ndim - 1`` axes whole."""
    return NamedSharding(mesh, PartitionSpec("data", *([None] * (ndim - 1))))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def put_batch(x, mesh: jax.sharding.Mesh, *, what: str = "the batch") -> jax.Array:
    """The global array ``x`` (every process holds all of it) with rows split over ``data``.

    With several processes each one hands over only the rows its devices hold
    (``jax.make_array_from_process_local_data``). ValueError if the rows do not split evenly.
    """
    x = np.asarray(x)
    n_data = mesh.shape["data"]
    if x.shape[0] % n_data:
        raise ValueError(f"{what} has {x.shape[0]} rows, which do not split evenly over the mesh's "
                         f"data axis ({n_data} devices): use a multiple of {n_data} (data.train_num, "
                         "training.batch_size) or a mesh with a smaller data axis")
    sharding = batch_sharding(mesh, x.ndim)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    rows = sharding.addressable_devices_indices_map(x.shape)
    lo = min(idx[0].start or 0 for idx in rows.values())
    hi = max(idx[0].stop if idx[0].stop is not None else x.shape[0] for idx in rows.values())
    return jax.make_array_from_process_local_data(sharding, x[lo:hi], x.shape)


def put_replicated(x, mesh: jax.sharding.Mesh) -> jax.Array:
    """``x`` (the same on every process) replicated on every device of ``mesh``."""
    return jax.device_put(np.asarray(x), replicated(mesh))


def on_mesh(tree) -> jax.sharding.Mesh | None:
    """The mesh the arrays of ``tree`` live on (the first ``NamedSharding`` found), or None."""
    for leaf in jax.tree.leaves(tree):
        s = getattr(leaf, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh.size > 1:
            return s.mesh
    return None
