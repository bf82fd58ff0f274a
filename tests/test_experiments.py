"""experiments/main.py and every config in configs/: quick end-to-end runs and one-line CLI errors."""

import glob
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kan_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not os.path.basename(p).startswith("_"))


def _load_config(name, arg="quick"):
    spec = importlib.util.spec_from_file_location(f"_cfg_{name[:-3]}", os.path.join(ROOT, "configs", name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (mod.__doc__ or "").lstrip().startswith("python -m experiments.main --config=configs/"), "docstring must start with the launch command"
    return mod.get_config(arg)


# The quick run of every config, and of the protocol options that change what runs.
QUICK_RUNS = [(name, "quick") for name in CONFIGS] + [
    ("toy.py", "paper,quick"), ("special.py", "jv,paper,quick"), ("feynman.py", "I.6.2,fit,quick")]


@pytest.mark.parametrize("name,arg", QUICK_RUNS)
def test_config_quick_runs_end_to_end(name, arg, tmp_path):
    c = _load_config(name, arg)
    for field in ("seed", "mesh"):
        assert field in c, field
    for field in ("kind", "widths", "grid_size", "spline_order", "basis"):
        assert field in c.model, f"model.{field}"
    assert "name" in c.optimizer and "learning_rate" in c.optimizer and "data" in c
    r = train.train_and_evaluate(c, str(tmp_path))
    assert r["status"] == "completed", r
    for key in ("steps", "wall_time_s", "n_params", "n_devices"):
        assert key in r
    if "test_rmse" in r:
        assert np.isfinite(r["test_rmse"]) and np.isfinite(r["test_nrmse"])
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"
    assert (tmp_path / "config.json").exists() and (tmp_path / "metrics.jsonl").exists()


def _cli(*args, cwd=ROOT, platforms="cpu"):
    env = dict(os.environ, KAN_JAX_COMPILATION_CACHE="", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env.pop("JAX_PLATFORMS", None)
    if platforms:
        env["JAX_PLATFORMS"] = platforms
    return subprocess.run([sys.executable, "-m", "experiments.main", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_cli_missing_workdir():
    _assert_one_line_error(_cli("--config=configs/toy.py:quick"), "--workdir")


def test_cli_unknown_config_file(tmp_path):
    _assert_one_line_error(_cli("--config=configs/does_not_exist.py", f"--workdir={tmp_path}"), "does_not_exist")


def test_cli_bad_config_value(tmp_path):
    _assert_one_line_error(_cli("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.optimizer.name=sgd"), "optimizer.name")
    assert not (tmp_path / "results.json").exists()


def test_cli_bad_config_value_is_one_line_without_jax_platforms(tmp_path):
    """As a user runs it (JAX picks its backends itself): the exit starts no backend, whose
    probing would log after the error line."""
    proc = _cli("--config=configs/hellokan.py", f"--workdir={tmp_path}", "--config.optimizer.learning_rate=-1", platforms=None)
    _assert_one_line_error(proc, "optimizer.learning_rate")


@pytest.mark.parametrize("args,needle", [
    (("--config=configs/symbolic.py:foo(x_1),quick",), "config.data: expression 'foo(x_1)' uses unknown name(s) foo"),
    (("--config=configs/symbolic.py:sqrt(x_1),quick",), "config.data: dataset 'sqrt(x_1)': the targets are not finite in"),
    (("--config=configs/symbolic.py:exp(100*x_1),quick", "--config.dtype=float32"),
     "dataset 'exp(100*x_1)': the targets exceed float32's range in"),
    (("--config=configs/symbolic.py:x_1*x_2,quick", "--config.symbolic.lib=['x','sinh']"), "symbolic.lib"),
    (("--config=configs/hellokan.py:quick", "--config.symbolic.digits=14"), "symbolic.digits must be an integer in [0, 12]"),
    (("--config=configs/hellokan.py:quick", "--config.symbolic.prune_measure=var"), "symbolic.prune_measure must be one of"),
])
def test_cli_bad_symbolic_config_is_one_line_and_writes_nothing(tmp_path, args, needle):
    """A bad data spec or symbolic.* value stops before anything is written or trained."""
    proc = _cli(*args, f"--workdir={tmp_path / 'w'}")
    _assert_one_line_error(proc, needle)
    assert proc.returncode == 2 and not (tmp_path / "w").exists()


def test_cli_runs_and_refuses_a_different_config(tmp_path):
    ok = _cli("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.training.steps=4", "--config.training.grid_sizes=(3,)")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "test_rmse" in ok.stdout
    _assert_no_pickles(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"
    bad = _cli("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.training.steps=5", "--config.training.grid_sizes=(3,)")
    _assert_one_line_error(bad, "different config", "training.steps", "--restart")
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"
    # --restart: the old run's files go (a file of the user's stays), the new config runs from step 0.
    (tmp_path / "notes.txt").write_text("mine")
    again = _cli("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.training.steps=5",
                 "--config.training.grid_sizes=(3,)", "--restart")
    assert again.returncode == 0, again.stderr[-2000:]
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "completed" and r["steps"] == 5
    assert json.loads((tmp_path / "config.json").read_text())["training"]["steps"] == 5
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [5]


def test_cli_diverged_run_exits_3_and_keeps_the_last_good_checkpoint(tmp_path):
    """Adam at learning rate 1e8 on toy:quick: the loss turns non-finite at the start of stage 1.
    The run stops there, says where, exits 3, and its checkpoints and metrics end before that
    step; the rerun resumes from the last good checkpoint and stops at the same step."""
    args = ("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.optimizer.name=adam",
            "--config.optimizer.learning_rate=1e8")
    for attempt in range(2):
        proc = _cli(*args)
        assert proc.returncode == 3, proc.stderr[-2000:]
        r = json.loads((tmp_path / "results.json").read_text())
        assert r["status"] == "diverged" and r["diverged_stage"] == 1 and r["diverged_grid_size"] == 5
        step = r["diverged_step"]
        assert 20 < step <= 40 and proc.stdout.strip().splitlines()[-1].startswith(f"diverged at step {step} (stage 1")
        saved = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints"))
        assert saved and max(saved) < step, saved
        logged = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
        assert logged == sorted(set(logged)) and max(logged) < step
        if attempt == 0:
            first = step
    assert step == first


def test_cli_grid_larger_than_the_samples_stays_well_posed(tmp_path):
    """G = 200 on 100 training samples: grid updates there would fit 203 coefficients per edge to
    100 points (test RMSE 6e4 before); they keep the layer instead, with a warning."""
    proc = _cli("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.data.train_num=100",
                "--config.training.grid_sizes=(5,200)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "100 samples cannot place a grid of 200 intervals" in proc.stderr
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["status"] == "completed" and r["stages"][1]["grid_size"] == 200
    assert r["test_rmse"] < 5 * r["stages"][0]["test_rmse"], r["stages"]
    best = min(r["stages"], key=lambda st: st["test_rmse"])  # the paper's tables report the best stage
    assert (r["best_test_rmse"], r["best_grid_size"]) == (best["test_rmse"], best["grid_size"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cli_inputs_up_to_1e30(tmp_path, dtype):
    """Finite inputs up to 1e30 through the command line (a bounded target, tanh). float64: the
    run completes, every metric finite (the silu base branch carries 1e30 inputs linearly, so the
    fit is poor: inputs should be scaled, docs/RELIABILITY.md). float32: the squared error of
    such outputs overflows float32's range at the first step, and the divergence guard stops the
    run with exit 3 and its one line, never a NaN in results.json or a traceback."""
    proc = _cli("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.data.expr=tanh(x_1)+tanh(x_2)",
                "--config.data.ranges=(-1e30, 1e30)", f"--config.dtype={dtype}")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    def no_nan(name):
        raise AssertionError(f"results.json holds {name}")

    r = json.loads((tmp_path / "results.json").read_text(), parse_constant=no_nan)
    if dtype == "float64":
        assert proc.returncode == 0 and r["status"] == "completed", proc.stderr[-2000:]
        vals = [r["test_rmse"], r["train_rmse"]] + [v for s in r["stages"] for v in (s["train_rmse"], s["test_rmse"])]
        assert all(math.isfinite(v) for v in vals), r
    else:
        assert proc.returncode == 3 and r["status"] == "diverged", proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1].startswith("diverged at step 1 (stage 0)")


def _assert_no_pickles(workdir):
    """Safe files: no file of a run is a pickle (restoring one would run code); the checkpoints are
    orbax arrays (OCDBT/tensorstore, zstd chunks) and JSON, and the JSON files parse."""
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any("checkpoints" in p.parts for p in files)
    for p in files:
        head = p.read_bytes()[:2]
        assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f"{p} is a pickle"
        if head[:1] in (b"{", b"["):
            json.loads(p.read_text())
    # and no code path that could write or read one
    src = "\n".join(f.read_text() for f in pathlib.Path(ROOT, "kan_jax").rglob("*.py"))
    assert "pickle" not in src and "allow_pickle=True" not in src


def test_summary_line_without_a_formula():
    """The closing line of a symbolic run whose fit diverged (formula None) names why, no TypeError."""
    summary = train.summary_line
    line = summary({"status": "completed", "test_rmse": 0.5, "formula": None, "formula_test_rmse": None,
                    "formula_error": "symbolic fit diverged: train rmse 1.8e+03"}, "/w")
    assert line == "completed: test_rmse 0.5; no formula (symbolic fit diverged: train rmse 1.8e+03); results, metrics and plots/ in /w"
    assert summary({"status": "completed", "test_rmse": 1e-3, "formula": "x_1**2", "formula_test_rmse": 0.0}, "/w") == (
        "completed: test_rmse 0.001; formula x_1**2 (formula_test_rmse 0); results, metrics and plots/ in /w")
    assert summary({"status": "failed"}, "/w") == "failed: test_rmse n/a; results, metrics and plots/ in /w"


@pytest.mark.parametrize("path,value,needle", [
    ("regularization.lamb", -1.0, "regularization.lamb must be a number >= 0"),
    ("optimizer.learning_rate", -1e-3, "optimizer.learning_rate must be a number > 0"),
    ("optimizer.learning_rate", float("nan"), "optimizer.learning_rate"),
    ("training.grid_update_every", -5, "training.grid_update_every must be a number >= 0"),
    ("training.log_every", -3, "training.log_every"),
    ("checkpoint_max_to_keep", 0, "checkpoint_max_to_keep must be a number >= 1"),
    ("model.grid_size", 0, "model.grid_size must be an integer >= 1"),
    ("model.spline_order", -1, "config.model: spline_order"),
    ("model.widths", (2,), "config.model: widths"),
    ("model.basis", "legendre", "config.model: basis must be one of"),
    ("model.grid_range", (1.0, -1.0), "config.model: grid_range"),
    ("model.activation", "swish", "model.activation must be one of"),
])
def test_validate_config_names_the_bad_field(path, value, needle):
    """Values that would otherwise fail mid-run or run silently as something else (a negative
    learning rate, a negative grid-update period) are refused up front, naming the field."""
    c = _load_config("toy.py")
    c.unlock()
    *parents, leaf = path.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(train.ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        train.validate_config(c)


def test_cli_override_of_a_missing_field_is_named(tmp_path):
    proc = _cli("--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--config.regularization.metrix=std")
    _assert_one_line_error(proc, "config.regularization.metrix: no such field in --config=configs/toy.py:quick")
