"""KAN vs MLP inside task models: the classify, vae and pde configs, both kinds, several seeds.

    python scripts/bench_models.py [--tasks digits,vae,pde] [--seeds 0,1,2] [--out docs/bench/models_DATE.jsonl]
    python scripts/bench_models.py --tasks pde --kinds mlp --seeds 0 --override=--config.training.steps=3000
    python scripts/bench_models.py --table docs/bench/models_DATE.jsonl   # the markdown table of docs/MODELS.md

Each run is the command line a user types, ``python -m experiments.main --config=configs/TASK.py
--workdir=<fresh tmp dir> --config.model.kind=KIND --config.seed=SEED``, in a subprocess, one at a
time. The JAX persistent compilation cache starts empty for the whole call
(``KAN_JAX_COMPILATION_CACHE`` in a fresh directory), so the first seed of each task and kind
compiles its programs (``cache: "cold"``) and the later seeds read them (``"warm"``). The seed
changes the initialization only; the data split and collocation points stay those of
``data.seed``. Every run prints one JSON line (task, kind, seed, cache, the exact command,
``wall_s`` of the subprocess with interpreter start and imports, the run's own ``wall_time_s``,
``n_params``, status and every ``train_*`` / ``test_*`` metric of results.json), also appended
to ``--out``. ``--override`` (repeatable) appends a flag to every command (``overrides`` in the
line; the table gives such runs rows of their own).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = {"digits": "test_accuracy", "vae": "test_elbo", "pde": "test_rel_l2"}  # config -> headline metric
KINDS = ("kan", "mlp")


def command(task: str, kind: str, seed: int, workdir: str, overrides=()) -> list[str]:
    return ["python", "-m", "experiments.main", f"--config=configs/{task}.py", f"--workdir={workdir}",
            f"--config.model.kind={kind}", f"--config.seed={seed}", *overrides]


def run(task: str, kind: str, seed: int, cache: str, cold: bool, overrides=()) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"bench_{task}_{kind}_{seed}_")
    cmd = command(task, kind, seed, workdir, overrides)
    env = dict(os.environ, KAN_JAX_COMPILATION_CACHE=cache, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    t = time.time()
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t
    rec = {"task": task, "kind": kind, "seed": seed, "cache": "cold" if cold else "warm",
           "command": shlex.join(cmd).replace(workdir, f"/tmp/{task}_{kind}_{seed}"), "wall_s": round(wall, 2),
           "returncode": proc.returncode, "overrides": " ".join(overrides)}
    try:
        with open(os.path.join(workdir, "results.json")) as f:
            res = json.load(f)
    except OSError:
        rec["error"] = proc.stderr[-500:]
        return rec
    rec.update({"status": res.get("status"), "n_params": res.get("n_params"), "steps": res.get("steps"),
                "run_wall_time_s": round(res.get("wall_time_s", float("nan")), 2), "metric": TASKS[task]})
    rec.update({k: v for k, v in sorted(res.items()) if k.startswith(("train_", "test_")) and isinstance(v, (int, float))})
    shutil.rmtree(workdir, ignore_errors=True)
    return rec


def table(path: str) -> str:
    """The markdown table of ``path``'s lines: one row per task and kind, mean and spread over seeds."""
    import numpy as np

    lines = [json.loads(x) for x in open(path) if x.strip()]
    out = ["| task | model | params | metric | mean | std | min | max | seeds | wall s (cold; warm mean) | command (seed S) |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for task, metric in TASKS.items():
        for kind, extra in sorted({(r["kind"], r.get("overrides", "")) for r in lines if r["task"] == task},
                                  key=lambda ke: (KINDS.index(ke[0]), ke[1])):
            rows = [r for r in lines if r["task"] == task and r["kind"] == kind and r.get("overrides", "") == extra
                    and r.get("status") == "completed"]
            if not rows:
                continue
            v = np.array([r[metric] for r in rows], np.float64)
            cold = [r["wall_s"] for r in rows if r["cache"] == "cold"]
            warm = [r["wall_s"] for r in rows if r["cache"] == "warm"]
            wall = f"{cold[0]:.0f}" if cold else "-"
            wall += f"; {np.mean(warm):.0f}" if warm else ""
            fmt = ".2e" if metric == "test_rel_l2" else ".2f" if metric == "test_elbo" else ".4f"
            cmd = rows[0]["command"].replace(f"--config.seed={rows[0]['seed']}", "--config.seed=S")
            cmd = cmd.replace(f"_{rows[0]['seed']}", "_S")
            model = kind.upper() + (f" `{extra}`" if extra else "")
            out.append(f"| {task} | {model} | {rows[0]['n_params']} | {metric} | {v.mean():{fmt}} | "
                       f"{v.std(ddof=1) if len(v) > 1 else 0:{fmt}} | {v.min():{fmt}} | {v.max():{fmt}} | {len(v)} | "
                       f"{wall} | `{cmd}` |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--out", default=None, help="append the JSON lines here too")
    ap.add_argument("--override", action="append", default=[], help="a flag appended to every command")
    ap.add_argument("--table", default=None, help="print the markdown table of these JSON lines and exit")
    a = ap.parse_args()
    if a.table:
        print(table(a.table))
        return
    cache = tempfile.mkdtemp(prefix="bench_models_cache_")
    try:
        for task in a.tasks.split(","):
            if task not in TASKS:
                raise SystemExit(f"--tasks: one of {list(TASKS)}, got {task!r}")
            for kind in a.kinds.split(","):
                for i, seed in enumerate(int(s) for s in a.seeds.split(",")):
                    rec = run(task, kind, seed, cache, cold=i == 0, overrides=a.override)
                    line = json.dumps(rec)
                    print(line, flush=True)
                    if a.out:
                        with open(a.out, "a") as f:
                            f.write(line + "\n")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
