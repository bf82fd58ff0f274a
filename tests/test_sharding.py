"""Sharding over devices and processes (kan_jax.train.sharding): meshes from config, the layout
rule, data- and model-parallel training equal to one device, several processes, and restores
across device counts.

The test process has 4 CPU devices (conftest's XLA_FLAGS); one-device and multi-process runs
are subprocesses with their own XLA_FLAGS.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import kan_jax
from kan_jax import kernels
from kan_jax import linen as klinen
from kan_jax.train import ConfigError, loop, sharding, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _four_devices():
    """conftest.py gives the test process 4 CPU devices; any other count is a broken setup, not
    a reason to skip."""
    assert jax.device_count() == 4, (f"tests/test_sharding.py needs 4 devices, found {jax.device_count()} "
                                     "(XLA_FLAGS sets another --xla_force_host_platform_device_count?)")


# --------------------------------------------------------------------------- mesh specs


@pytest.mark.parametrize("spec, n, want", [
    (None, 4, {"data": 4}),
    ("", 2, {"data": 2}),
    ("data:-1", 8, {"data": 8}),
    ("data:2,model:2", 4, {"data": 2, "model": 2}),
    ("model:-1,data:2", 8, {"model": 4, "data": 2}),
    (" model : 4 ", 4, {"model": 4}),
])
def test_parse_mesh(spec, n, want):
    got = sharding.parse_mesh(spec, n)
    assert got == want and list(got) == list(want)


@pytest.mark.parametrize("spec, n, words", [
    ("data:3", 4, ["uses 3 devices", "there are 4"]),
    ("data:-1,model:-1", 4, ["one size as -1"]),
    ("pipe:4", 4, ["data", "model"]),
    ("data=4", 4, ["data:2,model:2"]),
    ("data:2,data:2", 4, ["twice"]),
    ("data:x", 4, ["data:-1"]),
    ("data:0", 4, [">= 1"]),
    ("data:-1,model:3", 4, ["do not split"]),
])
def test_parse_mesh_errors_name_the_field(spec, n, words):
    with pytest.raises(ConfigError) as e:
        sharding.parse_mesh(spec, n)
    msg = str(e.value)
    assert "mesh" in msg and "\n" not in msg
    for w in words:
        assert w in msg


def test_bad_mesh_is_a_config_error_before_anything_is_written(tmp_path):
    from configs import toy

    c = toy.get_config("quick")
    c.mesh = "data:3"
    with pytest.raises(ConfigError, match="mesh"):
        train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
    # Training rows that do not split over the data axis: named, before anything is written.
    c = toy.get_config("quick")
    c.data.train_num = 1001
    with pytest.raises(ConfigError, match=r"data.train_num=1001 rows do not split evenly over the mesh's data axis "
                                          r"\(4 devices\)"):
        train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- the layout rule


def test_nnx_params_name_the_model_axis_on_output_features():
    model = kan_jax.KAN([3, 8, 2], grid_size=4, rngs=nnx.Rngs(0))
    specs = nnx.get_partition_spec(nnx.state(model))
    layer = specs["layers"][0]
    assert layer["coef"].get_value() == P(None, "model", None)
    assert layer["w_base"].get_value() == P(None, "model")
    assert layer["w_spline"].get_value() == P(None, "model")
    assert layer["bias"].get_value() == P("model")
    assert layer["mask"].get_value() == P(None, "model")
    assert layer["symbolic"]["func"].get_value() == P(None, "model")
    assert layer["symbolic"]["affine"].get_value() == P(None, "model", None)
    assert layer["grid"].get_value() == P()  # knots replicated


def test_linen_params_are_partitioned_the_same_way():
    model = klinen.KAN([3, 8, 2], grid_size=4)
    x = jnp.linspace(-1, 1, 30).reshape(10, 3)
    variables = model.init(jax.random.key(0), x)
    specs = nn.get_partition_spec(variables)["params"]["layers_0"]
    assert specs == {"coef": P(None, "model", None), "w_base": P(None, "model"), "w_spline": P(None, "model"),
                     "bias": P("model")}
    # The grid helpers keep the boxes, and compute what they compute on plain arrays.
    updated = klinen.update_grid(model, variables, x)
    assert isinstance(updated["params"]["layers_0"]["coef"], nn.Partitioned)
    plain = klinen.update_grid(model, nn.meta.unbox(variables), x)
    np.testing.assert_allclose(nn.meta.unbox(updated)["params"]["layers_0"]["coef"], plain["params"]["layers_0"]["coef"])
    with pytest.warns(UserWarning, match="ill-posed"):  # 10 samples, 11 coefficients: fit on dense points
        model10, refined = klinen.refine(model, updated, 8, x)
    assert nn.get_partition_spec(refined)["params"]["layers_1"]["coef"] == P(None, "model", None)
    np.testing.assert_allclose(model10.apply(refined, x), model.apply(updated, x), atol=1e-5)


def test_alternate_model_sharding_splits_inputs_of_every_second_layer():
    """``model_sharding="alternate"``: layers 0, 2, ... on their outputs, 1, 3, ... and the last on
    their inputs (bias replicated there); NNX, Linen and a pruned subnetwork alike."""
    assert kan_jax.nnx.layer_shards("alternate", 5) == ["outputs", "inputs", "outputs", "inputs", "inputs"]
    assert kan_jax.nnx.layer_shards("alternate", 1) == ["inputs"]
    model = kan_jax.KAN([3, 8, 8, 2], grid_size=4, model_sharding="alternate", rngs=nnx.Rngs(0))
    specs = nnx.get_partition_spec(nnx.state(model))["layers"]
    assert [specs[l]["coef"].get_value() for l in range(3)] == [P(None, "model", None), P("model", None, None),
                                                                P("model", None, None)]
    inner = specs[1]
    assert (inner["w_base"].get_value(), inner["w_spline"].get_value(), inner["mask"].get_value()) == (P("model", None),) * 3
    assert inner["bias"].get_value() == P(None) and inner["grid"].get_value() == P()
    assert inner["symbolic"]["func"].get_value() == P("model", None)
    assert inner["symbolic"]["affine"].get_value() == P("model", None, None)
    small = kan_jax.prune.subnetwork(model, [[0, 1, 2], [0, 2, 4, 6], [1, 3], [0, 1]])
    assert [layer.shard for layer in small.layers] == ["outputs", "inputs", "inputs"]
    assert nnx.get_partition_spec(nnx.state(small))["layers"][1]["coef"].get_value() == P("model", None, None)

    variables = klinen.KAN([3, 8, 8, 2], grid_size=4, model_sharding="alternate").init(jax.random.key(0), jnp.zeros((4, 3)))
    lspecs = nn.get_partition_spec(variables)["params"]
    assert lspecs["layers_1"] == {"coef": P("model", None, None), "w_base": P("model", None),
                                  "w_spline": P("model", None), "bias": P(None)}
    assert lspecs["layers_2"]["coef"] == P("model", None, None)
    gspecs = nn.get_partition_spec(variables)["grid"]
    assert gspecs["layers_1"] == {"knots": P(), "mask": P("model", None)}
    assert gspecs["layers_0"] == {"knots": P(), "mask": P(None, "model")}

    with pytest.raises(ValueError, match="model_sharding must be one of"):
        kan_jax.KAN([3, 8, 2], model_sharding="inputs", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="shard must be one of"):
        kan_jax.KANLayer(3, 8, shard="rows", rngs=nnx.Rngs(0))


def test_model_sharding_config_errors():
    from configs import toy

    c = toy.get_config("quick")
    c.model.sharding = "columns"
    with pytest.raises(ConfigError, match="model.sharding must be one of"):
        train_and_evaluate(c, "/nonexistent/never-written")
    assert toy.get_config("quick").model.sharding == "alternate"  # the runner's default


def test_state_shardings_replicate_what_does_not_divide():
    mesh = sharding.make_mesh({"data": 2, "model": 2})
    model = kan_jax.KAN([4, 6, 1], grid_size=3, rngs=nnx.Rngs(0))
    sh = sharding.state_shardings(nnx.state(model), mesh)
    assert sh["layers"][0]["coef"].spec == P(None, "model", None)  # 6 outputs split 3 + 3
    assert sh["layers"][1]["coef"].spec == P(None, None, None)  # 1 output: stays whole
    assert sh["layers"][1]["bias"].spec == P(None)


# --------------------------------------------------------------------------- training on a mesh


def _wide_problem():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 16))
    y = np.sin(x[:, :1] * 2) + 0.3 * x[:, 1:2] ** 2
    return types.SimpleNamespace(x_train=x, y_train=y)  # what loop.fit reads


def _fit_wide(mesh, steps=6, model_sharding="outputs"):
    model = kan_jax.KAN([16, 64, 64, 1], grid_size=4, param_dtype=jnp.float64, model_sharding=model_sharding,
                        rngs=nnx.Rngs(0))
    return loop.fit(model, _wide_problem(), steps=steps, optimizer=optax.adam(1e-2), lbfgs=False, chunk_size=3,
                    grid_update_every=3, stop_grid_update_step=4, mesh=mesh)[0]


def test_model_parallel_training_matches_one_device_with_coefficients_sharded():
    mesh = sharding.make_mesh({"data": 2, "model": 2})
    sharded, single = _fit_wide(mesh), _fit_wide(None)
    for l, layer in enumerate(sharded.layers):
        want = P(None, "model", None) if layer.out_features % 2 == 0 else P(None, None, None)
        assert layer.coef[...].sharding.is_equivalent_to(NamedSharding(mesh, want), 3), l
        assert layer.w_base[...].sharding.is_equivalent_to(NamedSharding(mesh, P(*want[:2])), 2), l
        assert layer.grid[...].sharding.is_equivalent_to(NamedSharding(mesh, P()), 2), l
        # Grid updates see the global batch: the same knots as on one device (up to the rounding
        # of the all-reduced gradients in the steps before).
        np.testing.assert_allclose(layer.grid[...], single.layers[l].grid[...], rtol=1e-9, atol=1e-11)
    # 16 -> 64 -> 64 -> 1: two wide layers sharded, the output layer whole.
    assert [layer.coef[...].sharding.shard_shape(layer.coef.shape)[1] for layer in sharded.layers] == [32, 32, 1]
    for a, b in zip(jax.tree.leaves(nnx.state(sharded, nnx.Param)), jax.tree.leaves(nnx.state(single, nnx.Param))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-11)


def test_alternate_model_sharding_trains_like_one_device():
    """[16, 64, 64, 1]: layer 0 split on its 64 outputs, layers 1 and 2 on their 64 inputs (their
    outputs summed across ``model``)."""
    mesh = sharding.make_mesh({"data": 2, "model": 2})
    sharded, single = _fit_wide(mesh, model_sharding="alternate"), _fit_wide(None, model_sharding="alternate")
    coef = [layer.coef[...] for layer in sharded.layers]
    assert [c.sharding.shard_shape(c.shape)[:2] for c in coef] == [(16, 32), (32, 64), (32, 1)]
    assert sharded.layers[1].bias[...].sharding.is_fully_replicated
    assert sharded.layers[1].grid[...].sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves(nnx.state(sharded, nnx.Param)), jax.tree.leaves(nnx.state(single, nnx.Param))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-11)


def test_optimizer_state_is_created_in_the_parameters_layout():
    """Adam's moments sit beside their parameters (sharded over ``model`` alike), its step count
    is replicated; L-BFGS's state (over the raveled vector) is replicated."""
    mesh = sharding.make_mesh({"data": 2, "model": 2})
    model = kan_jax.KAN([4, 8, 2], grid_size=3, symbolic_lib={}, rngs=nnx.Rngs(0))
    _, params, _, opt_state, _, _, _ = loop._setup(model, optax.adam(1e-3), False, None, None, None, mesh)
    adam = opt_state[0]
    for moments in (adam.mu, adam.nu):
        for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(moments)):
            assert m.sharding.is_equivalent_to(p.sharding, p.ndim)
    assert adam.mu["layers"][0]["coef"][...].sharding.shard_shape((4, 8, 6)) == (4, 4, 6)
    assert adam.count.sharding.is_fully_replicated
    _, _, _, lbfgs_state, _, _, _ = loop._setup(model, optax.lbfgs(), True, None, None, None, mesh)
    assert all(a.sharding.is_fully_replicated and a.sharding.mesh == mesh for a in jax.tree.leaves(lbfgs_state))


def test_data_parallel_step_all_reduces_gradients_and_never_gathers_the_batch(monkeypatch):
    """The step as ``fit`` traces it on a mesh (``jax.set_mesh``), with the backward's batch
    chunking forced (4 rows a chunk): each device chunks its own 16 rows, the gradients are
    all-reduced, and the batch is never gathered."""
    monkeypatch.setattr(kernels, "CHUNK_ELEMENTS", 4 * 64 * 8)  # 4 rows of the 64-input layers
    mesh = sharding.make_mesh({"data": 4})
    model = kan_jax.KAN([16, 64, 64, 1], grid_size=4, symbolic_lib={}, rngs=nnx.Rngs(0))
    opt = optax.adam(1e-3)
    graphdef, params, rest, opt_state, _, reg, lamb = loop._setup(model, opt, False, None, None, None, mesh)
    ds = _wide_problem()
    x = sharding.put_batch(ds.x_train.astype(np.float32), mesh)
    y = sharding.put_batch(ds.y_train.astype(np.float32), mesh)
    assert x.sharding.spec == P("data", None) and len(x.addressable_shards) == 4
    assert x.addressable_shards[0].data.shape == (16, 16)
    chunk = loop._make_chunk_fn(graphdef, opt, False, reg, 0, 2, loop._Layout.of((params, opt_state), mesh))
    with jax.set_mesh(mesh):
        hlo = chunk.lower(params, rest, opt_state, x, y, sharding.put_replicated(jax.random.PRNGKey(0), mesh),
                          np.asarray(0), np.asarray(2), lamb).compile().as_text()
    ops = re.findall(r" (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(", hlo)
    assert ops.count("all-reduce") >= 1, "no gradient all-reduce"
    assert "all-gather" not in ops and "all-to-all" not in ops


def test_data_parallel_training_with_chunked_backward_matches_one_device(monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK_ELEMENTS", 3 * 16 * 9)  # 3 rows a chunk of the 16-input layer
    def run(mesh):
        model = kan_jax.KAN([16, 8, 1], grid_size=5, param_dtype=jnp.float64, rngs=nnx.Rngs(1))
        return loop.fit(model, _wide_problem(), steps=4, optimizer=optax.adam(1e-2), lbfgs=False, chunk_size=2,
                        mesh=mesh)[0]
    sharded, single = run(sharding.make_mesh({"data": 4})), run(None)
    for a, b in zip(jax.tree.leaves(nnx.state(sharded, nnx.Param)), jax.tree.leaves(nnx.state(single, nnx.Param))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-11)


def test_rows_must_split_evenly_over_data():
    mesh = sharding.make_mesh({"data": 4})
    with pytest.raises(ValueError, match="do not split evenly over the mesh's data axis"):
        sharding.put_batch(np.zeros((10, 2)), mesh)


# --------------------------------------------------------------------------- end to end


def _toy_quick(**overrides):
    from configs import toy

    c = toy.get_config("quick")
    for k, v in overrides.items():
        node, *path = k.split(".")
        target = c if not path else c[node]
        target[path[-1] if path else node] = v
    return c


def _env(n_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


_DRIVER = """
import json, os, signal, sys
from kan_jax.train.pipelines import fit
from kan_jax.train import train_and_evaluate
from configs import toy
workdir, kill_at = sys.argv[1], int(sys.argv[2])
c = toy.get_config("quick")
c.checkpoint_every = 10
if kill_at:  # kill -9 right after the checkpoint of step kill_at
    fit._after_checkpoint = lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == kill_at else None
r = train_and_evaluate(c, workdir)
print("RESULT " + json.dumps(r))
"""


def _driver(workdir, n_devices: int, kill_at: int = 0):
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(workdir), str(kill_at)], cwd=ROOT, env=_env(n_devices),
                          capture_output=True, text=True, timeout=300)
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        return None
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


@pytest.fixture(scope="module")
def one_device_toy(tmp_path_factory):
    """configs/toy.py:quick (checkpoint_every=10) on one device, uninterrupted."""
    return _driver(tmp_path_factory.mktemp("one") / "w", 1)


def _close(a, b, rtol=1e-4):
    assert abs(a - b) <= rtol * abs(b), (a, b)


@pytest.mark.parametrize("mesh, model_sharding, want", [(None, "outputs", {"data": 4}),
                                                        ("data:2,model:2", "outputs", {"data": 2, "model": 2}),
                                                        ("model:4", "alternate", {"model": 4})])
def test_toy_on_four_devices_equals_one_device(one_device_toy, tmp_path, mesh, model_sharding, want):
    config = _toy_quick(checkpoint_every=10, mesh=mesh, **{"model.sharding": model_sharding})
    r = train_and_evaluate(config, str(tmp_path / "w"))
    assert r["status"] == "completed" and r["n_devices"] == 4 and r["n_processes"] == 1 and r["mesh"] == want
    assert one_device_toy["n_devices"] == 1 and one_device_toy["mesh"] == {"data": 1}
    _close(r["train_rmse"], one_device_toy["train_rmse"])
    _close(r["test_rmse"], one_device_toy["test_rmse"])
    on_disk = json.load(open(tmp_path / "w" / "results.json"))
    assert on_disk["mesh"] == want and on_disk["n_devices"] == 4


def test_restore_across_device_counts(one_device_toy, tmp_path):
    """Killed (``kill -9``) on 4 devices, resumed on 1; killed on 1, resumed on 4: the final
    metrics of an uninterrupted run."""
    four_to_one = tmp_path / "a"
    _driver(four_to_one, 4, kill_at=10)
    assert sorted(os.listdir(four_to_one / "checkpoints")) and not (four_to_one / "results.json").exists()
    r = _driver(four_to_one, 1)
    assert r["n_devices"] == 1 and r["status"] == "completed"
    _close(r["train_rmse"], one_device_toy["train_rmse"])
    _close(r["test_rmse"], one_device_toy["test_rmse"])

    one_to_four = tmp_path / "b"
    _driver(one_to_four, 1, kill_at=30)
    assert sorted(os.listdir(one_to_four / "checkpoints")) and not (one_to_four / "results.json").exists()
    r = train_and_evaluate(_toy_quick(checkpoint_every=10), str(one_to_four))
    assert r["n_devices"] == 4 and r["status"] == "completed"
    _close(r["train_rmse"], one_device_toy["train_rmse"])
    _close(r["test_rmse"], one_device_toy["test_rmse"])
    steps = [json.loads(line)["step"] for line in open(one_to_four / "metrics.jsonl")]
    assert steps == sorted(set(steps)), "a resumed run logs each step once"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_two_devices_each(one_device_toy, tmp_path):
    workdir = tmp_path / "w"
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "experiments.main", "--config=configs/toy.py:quick", f"--workdir={workdir}",
                          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                         cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "4 devices (mesh data:4), 2 process(es)" in outs[0][0]
    # One summary line, from process 0 (gloo itself prints its connections on stdout, from
    # several threads, so its lines can come interleaved).
    assert "devices (mesh" not in outs[1][0]
    r = json.load(open(workdir / "results.json"))
    assert r["status"] == "completed" and r["n_devices"] == 4 and r["n_processes"] == 2 and r["mesh"] == {"data": 4}
    _close(r["train_rmse"], one_device_toy["train_rmse"])
    assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "metrics.jsonl", "plots", "results.json"]
    assert not [f for f in os.listdir(workdir) if ".tmp" in f]
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
    assert steps == sorted(set(steps)), "metrics written by one process"
