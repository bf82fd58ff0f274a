"""End-to-end wall time of the toy and hellokan protocols, kan_jax vs pykan, on this machine.

    python scripts/bench_train.py [--only toy|hellokan|none] [--repeats 2] [--skip-pykan] [--guard]
                                  [--pykan-python /work/pykan-venv/bin/python] [--out docs/bench/bench_train_cpu.jsonl]

kan_jax: each protocol runs as ``python -m experiments.main --config=configs/NAME.py
--workdir=<fresh tmp dir>`` in a subprocess, first with a cold JAX persistent compilation cache
(``KAN_JAX_COMPILATION_CACHE`` pointed at a fresh empty directory), then warm (same cache
directory, fresh workdir). The runner does not record compile time, so the subprocess runs with
``JAX_LOG_COMPILES=1`` and the script sums JAX's own "Finished tracing / jaxpr to MLIR / XLA
compilation ... in X sec" log lines (``compile_s``: tracing + lowering + backend compile; in a warm
run the backend part is the cache read) and counts the programs (``n_backend_compiles``: "Finished XLA
compilation" lines). ``cold - warm`` is reported as well.

pykan (optional, a separate venv: torch and pykan must not enter the kan_jax venv): the same
protocols written against pykan's public API (driver below, run with ``--pykan-python`` in a
fresh temporary working directory so pykan's ``auto_save`` checkpoints land there), float64 via
``torch.set_default_dtype`` as in pykan's examples:

* toy: ``KAN(width=[2,5,1], grid=3, k=3, seed=1)``, ``create_dataset(f, n_var=2, train_num=1000,
  test_num=1000)``, for G in 3, 5, 10, 20, 50: ``refine(G)`` (after the first),
  ``fit(opt="LBFGS", steps=200)``; train/test RMSE of each stage evaluated after its fit.
* hellokan (pykan's hellokan notebook / README, without the plots): ``KAN(width=[2,5,1], grid=3,
  k=3, seed=1)``; ``fit(LBFGS, 50, lamb=0.001)``; ``prune()``; ``fit(50)``; ``refine(10)``;
  ``fit(50)``; ``auto_symbolic(lib=[x, x^2, x^3, x^4, exp, log, sqrt, tanh, sin, abs])``;
  ``fit(50)``; ``ex_round(symbolic_formula()[0][0], 4)``. The fit after prune is the notebook's
  "continue training" step and matches our config's ``symbolic.prune_steps``.

The divergence guard (issue 18): ``--guard`` adds the toy protocol run warm with the guard on
(the command above) and off, interleaved, in the same call (lines ``name: "toy_guard"`` with
``guard: true/false``; the summary prints the ratio of the best times). Off is the same command
with ``loop.fit``'s ``stop_on_nan`` forced to False by a short driver (``GUARD_OFF_DRIVER``);
the library has no switch for it, since a non-finite loss cannot train on.

Every measurement is one JSON line (``name``, ``impl``, ``cache``, ``repeat``, ``wall_s``, plus
RMSE / stages / formula fields) on stdout and in ``--out`` (lines of the protocols measured in this
call replace the old ones unless ``--append``; others are kept). ``wall_s`` is the subprocess's wall time, interpreter
start and imports included, for both implementations. A summary (best and spread per
protocol/impl/cache) goes to stderr at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"toy": "configs/toy.py", "hellokan": "configs/hellokan.py"}

# The pykan side, written against pykan 0.2.x's public API; run as its own script in pykan's venv.
PYKAN_DRIVER = r'''
import json, sys, time
t_start = time.time()
import torch
from kan import KAN
from kan.utils import create_dataset, ex_round
torch.set_default_dtype(torch.float64)
import_s = time.time() - t_start

protocol, seed = sys.argv[1], int(sys.argv[2])
f = lambda x: torch.exp(torch.sin(torch.pi * x[:, [0]]) + x[:, [1]] ** 2)
dataset = create_dataset(f, n_var=2, train_num=1000, test_num=1000)


def rmse(model, split):
    with torch.no_grad():
        pred = model(dataset[split + "_input"])
        return float(torch.sqrt(torch.mean((pred - dataset[split + "_label"]) ** 2)))


def n_params(model):
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


out = {"protocol": protocol, "seed": seed, "torch": torch.__version__, "import_s": import_s,
       "torch_threads": torch.get_num_threads()}
t0 = time.time()
if protocol == "toy":
    stages = []
    model = None
    for g in (3, 5, 10, 20, 50):
        ts = time.time()
        model = KAN(width=[2, 5, 1], grid=g, k=3, seed=seed) if model is None else model.refine(g)
        res = model.fit(dataset, opt="LBFGS", steps=200)
        stages.append({"grid_size": g, "steps": 200, "train_rmse": rmse(model, "train"),
                       "test_rmse": rmse(model, "test"),
                       "fit_last_train_rmse": float(res["train_loss"][-1]),
                       "fit_last_test_rmse": float(res["test_loss"][-1]),
                       "stage_s": time.time() - ts})
        print("PYKAN_STAGE " + json.dumps(dict(stages[-1], elapsed_s=time.time() - t0)), flush=True)
    out["stages"] = stages
    out["train_rmse"], out["test_rmse"] = stages[-1]["train_rmse"], stages[-1]["test_rmse"]
elif protocol == "hellokan":
    phases = {}
    ts = time.time()
    model = KAN(width=[2, 5, 1], grid=3, k=3, seed=seed)
    model.fit(dataset, opt="LBFGS", steps=50, lamb=0.001)
    phases["train_s"] = time.time() - ts; ts = time.time()
    model = model.prune()
    out["pruned_width"] = [w if isinstance(w, int) else w[0] for w in model.width]
    model.fit(dataset, opt="LBFGS", steps=50)
    phases["prune_s"] = time.time() - ts; ts = time.time()
    model = model.refine(10)
    model.fit(dataset, opt="LBFGS", steps=50)
    phases["refine_s"] = time.time() - ts; ts = time.time()
    model.auto_symbolic(lib=["x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs"])
    phases["auto_symbolic_s"] = time.time() - ts; ts = time.time()
    model.fit(dataset, opt="LBFGS", steps=50)
    phases["retrain_s"] = time.time() - ts; ts = time.time()
    out["formula"] = str(ex_round(model.symbolic_formula()[0][0], 4))
    phases["formula_s"] = time.time() - ts
    out["phases"] = phases
    out["train_rmse"], out["test_rmse"] = rmse(model, "train"), rmse(model, "test")
else:
    raise SystemExit(f"unknown protocol {protocol!r}")
out["run_s"] = time.time() - t0
print("PYKAN_RESULT " + json.dumps(out))
'''

_COMPILE_RE = re.compile(
    r"Finished (tracing|jaxpr to MLIR module conversion|XLA compilation) .*? in ([0-9.eE+-]+) sec"
)


def machine() -> dict:
    info = {"cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:  # the code under test: HEAD and whether the tree had uncommitted changes
        info["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                          text=True, timeout=10).stdout.strip()
        info["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                                capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _compile_times(log: str) -> dict:
    sums = {"tracing": 0.0, "lowering": 0.0, "backend": 0.0}
    n = 0
    for kind, secs in _COMPILE_RE.findall(log):
        key = {"tracing": "tracing", "XLA compilation": "backend"}.get(kind, "lowering")
        sums[key] += float(secs)
        n += kind == "XLA compilation"
    out = {f"compile_{k}_s": round(v, 3) for k, v in sums.items()}
    out["compile_s"] = round(sum(sums.values()), 3)
    out["n_backend_compiles"] = n
    return out


# experiments.main with the divergence guard off: the --guard comparison's other side.
GUARD_OFF_DRIVER = r'''
import functools
from absl import app
from experiments import main
from kan_jax.train import loop
loop.fit = functools.partial(loop.fit, stop_on_nan=False)
app.run(main.main, flags_parser=main._parse_flags)
'''


def run_kan_jax(name: str, cache_dir: str, cache: str, repeat: int, keep_logs: str | None,
                guard: bool | None = None) -> dict:
    """One CLI run of protocol ``name``; ``guard=False``: with the divergence guard off."""
    workdir = tempfile.mkdtemp(prefix=f"bench_{name}_{cache}_")
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # would override KAN_JAX_COMPILATION_CACHE
    env["KAN_JAX_COMPILATION_CACHE"] = cache_dir
    env["JAX_LOG_COMPILES"] = "1"
    entry = ["-c", GUARD_OFF_DRIVER] if guard is False else ["-m", "experiments.main"]
    cmd = [sys.executable, *entry, f"--config={CONFIGS[name]}", f"--workdir={workdir}"]
    load = _loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rec = {"name": name if guard is None else f"{name}_guard", "impl": "kan_jax", "cache": cache, "repeat": repeat,
           "wall_s": round(wall, 2), "returncode": proc.returncode, "loadavg_1m_before": load,
           "command": "GUARD_OFF_DRIVER " + " ".join(cmd[3:]) if guard is False else " ".join(cmd[1:])}
    if guard is not None:
        rec["guard"] = guard
    rec.update(_compile_times(proc.stderr))
    if keep_logs:
        guard_tag = "" if guard is None else f"_guard_{'on' if guard else 'off'}"
        with open(os.path.join(keep_logs, f"{name}_kan_jax_{cache}{guard_tag}_{repeat}.log"), "w") as fh:
            fh.write(proc.stderr)
    try:
        with open(os.path.join(workdir, "results.json")) as fh:
            res = json.load(fh)
    except (OSError, ValueError):
        res = {}
        rec["error"] = (proc.stderr.strip().splitlines() or ["no results.json"])[-1][:500]
    for key in ("status", "wall_time_s", "n_params", "train_rmse", "test_rmse", "test_nrmse",
                "formula", "formula_test_rmse"):
        if key in res:
            rec["runner_" + key if key == "wall_time_s" else key] = res[key]
    if "stages" in res:
        rec["stages"] = [{k: s.get(k) for k in ("grid_size", "steps", "n_params", "train_rmse", "test_rmse")}
                         for s in res["stages"]]
    shutil.rmtree(workdir, ignore_errors=True)
    return rec


def run_pykan(name: str, python: str, driver: str, repeat: int, seed: int, keep_logs: str | None,
              timeout: float | None = None) -> dict:
    cwd = tempfile.mkdtemp(prefix=f"bench_pykan_{name}_")  # pykan's auto_save writes ./model here
    cmd = [python, driver, name, str(seed)]
    load = _loadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:  # keep the stages it finished
        def _text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")

        proc = subprocess.CompletedProcess(cmd, "timeout", _text(err.stdout), _text(err.stderr))
    wall = time.perf_counter() - t0
    rec = {"name": name, "impl": "pykan", "cache": "n/a", "repeat": repeat, "wall_s": round(wall, 2),
           "returncode": proc.returncode, "loadavg_1m_before": load}
    partial = [json.loads(ln[len("PYKAN_STAGE "):]) for ln in proc.stdout.splitlines() if ln.startswith("PYKAN_STAGE ")]
    if partial:
        rec["stages"] = partial
    if keep_logs:
        with open(os.path.join(keep_logs, f"{name}_pykan_{repeat}.log"), "w") as fh:
            fh.write(proc.stdout + "\n----- stderr -----\n" + proc.stderr)
    for line in proc.stdout.splitlines():
        if line.startswith("PYKAN_RESULT "):
            rec.update(json.loads(line[len("PYKAN_RESULT "):]))
            break
    else:
        rec["error"] = (proc.stderr.strip().splitlines() or ["no result"])[-1][:500]
    shutil.rmtree(cwd, ignore_errors=True)
    return rec


def summarize(records: list[dict]) -> list[str]:
    groups: dict[tuple, list[float]] = {}
    comp: dict[tuple, list[float]] = {}
    for r in records:
        if r.get("returncode") != 0:
            continue
        key = (r["name"], r["impl"], r["cache"]) if "guard" not in r else (r["name"], f"guard_{'on' if r['guard'] else 'off'}", r["cache"])
        groups.setdefault(key, []).append(r["wall_s"])
        if "compile_s" in r:
            comp.setdefault(key, []).append(r["compile_s"])
    lines = []
    for key, walls in sorted(groups.items()):
        extra = ""
        if key in comp:
            extra = f"  compile (JAX log) best {min(comp[key]):.1f} s"
        lines.append(f"{key[0]:9s} {key[1]:8s} {key[2]:5s} best {min(walls):7.1f} s  "
                     f"range {min(walls):.1f}-{max(walls):.1f}  n={len(walls)}{extra}")
    on, off = groups.get(("toy_guard", "guard_on", "warm")), groups.get(("toy_guard", "guard_off", "warm"))
    if on and off:
        lines.append(f"divergence guard: best on / best off = {min(on) / min(off):.3f} (toy, warm, n={len(on)} each)")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=sorted(CONFIGS) + ["none"], default=None,
                   help="one protocol; 'none' with --guard: only the guard comparison")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-pykan", action="store_true")
    p.add_argument("--pykan-python", default=os.environ.get("PYKAN_PYTHON", "/work/pykan-venv/bin/python"))
    p.add_argument("--pykan-seed", type=int, default=1)
    p.add_argument("--pykan-timeout", type=float, default=None, help="seconds; a timed-out run keeps its finished stages")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "bench_train_cpu.jsonl"))
    p.add_argument("--keep-logs", default=None, help="directory for the subprocesses' logs")
    p.add_argument("--append", action="store_true", help="keep every existing line of --out (more repeats)")
    p.add_argument("--guard", action="store_true", help="also time the toy warm with the divergence guard on and off")
    args = p.parse_args(argv)

    names = [] if args.only == "none" else [args.only] if args.only else list(CONFIGS)
    run_pykan_too = not args.skip_pykan
    if run_pykan_too and not os.path.exists(args.pykan_python):
        print(f"pykan python {args.pykan_python} not found: skipping pykan", file=sys.stderr)
        run_pykan_too = False
    if args.keep_logs:
        os.makedirs(args.keep_logs, exist_ok=True)
    mach = machine()
    tmp = tempfile.mkdtemp(prefix="bench_train_")
    driver = os.path.join(tmp, "pykan_driver.py")
    with open(driver, "w") as fh:
        fh.write(PYKAN_DRIVER)

    records = []

    def emit(rec):
        rec["machine"] = mach
        rec["date"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        records.append(rec)
        print(json.dumps(rec), flush=True)

    try:
        for rep in range(args.repeats):  # interleaved, so load drifts hit every variant alike
            for name in names:
                cache_dir = tempfile.mkdtemp(prefix=f"jax_cache_{name}_", dir=tmp)  # fresh, empty
                emit(run_kan_jax(name, cache_dir, "cold", rep, args.keep_logs))
                emit(run_kan_jax(name, cache_dir, "warm", rep, args.keep_logs))
                if run_pykan_too:
                    emit(run_pykan(name, args.pykan_python, driver, rep, args.pykan_seed, args.keep_logs,
                                   args.pykan_timeout))
            if args.guard:
                if rep == 0:
                    guard_cache = tempfile.mkdtemp(prefix="jax_cache_guard_", dir=tmp)
                    run_kan_jax("toy", guard_cache, "cold", rep, None)  # fills the cache; not recorded
                for guard in ((True, False) if rep % 2 == 0 else (False, True)):
                    emit(run_kan_jax("toy", guard_cache, "warm", rep, args.keep_logs, guard=guard))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if records:
            kept = []
            if os.path.exists(args.out):
                with open(args.out) as fh:
                    replaced = names + (["toy_guard"] if args.guard else [])
                    kept = [ln for ln in fh if ln.strip() and (args.append or json.loads(ln).get("name") not in replaced)]
            with open(args.out, "w") as fh:
                fh.writelines(kept)
                fh.writelines(json.dumps(r) + "\n" for r in records)
        for line in summarize(records):
            print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
