"""Named tables of runs (the KAN paper's benchmarks and our claims), run, collected and rendered.

    python scripts/sweep.py TABLE [--root /tmp/kan_sweep] [--jobs 2] [--only ROW_PREFIX]
    python scripts/sweep.py TABLE --render          # tables and figures from the collected lines only
    python scripts/sweep.py --list                  # the tables and their rows

Tables:

- ``toy-scaling``: ``configs/toy.py:paper`` (KAN [2, 1, 1], grid sizes 3..200), seeds 0-2: test
  RMSE against G with the fitted slope over G = 3..20 and the G^-4 line.
- ``special``: the KAN paper's 15 special functions, ``configs/special.py:NAME,paper`` (the paper's
  minimal shape, grid sizes 3..200), and MLPs of depth 2-6 (hidden layers 1-5) and width 5 or 100
  on the same data with the same number of L-BFGS iterations (``--config.model.kind=mlp``).
- ``claims`` (into docs/CLAIMS.md): KAN vs MLP train/test RMSE against parameter count on noisy
  targets (overfitting), and the spread of test RMSE over 5 seeds (stability).
- ``feynman-quick``: all 100 AI Feynman equations, ``configs/feynman.py:NAME,fit`` (accuracy only)
  for the KAN and an MLP of the same size.
- ``feynman-full``: the symbolic pipeline, ``configs/feynman.py:NAME``, fewest variables first:
  exact formula recovery and the reported model's test NRMSE.

Every row is the command line a user types, ``python -m experiments.main --config=... --workdir=
ROOT/TABLE/ROW ...``, run in a subprocess, ``--jobs`` at a time (one per CPU core by default). A
row whose workdir already holds a completed ``results.json`` is not run again, and an interrupted
row resumes from its checkpoints (the runner's own resume), so a sweep stopped at any point picks
up where it was. Each finished row appends one JSON line to ``docs/bench/sweep_TABLE.jsonl``
(the command, date, commit and results); ``--render`` (also done after every run) rewrites the
table between ``<!-- sweep:TABLE -->`` markers in docs/RESULTS.md and the figures in
``docs/figures/`` from the newest line of each row. Numbers in the docs come only from these
lines.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import special as special_config  # noqa: E402 - the paper's Table 2 and the names

MLP_DEPTHS = (2, 3, 4, 5, 6)  # layers of weights: hidden layers = depth - 1
MLP_WIDTHS = (5, 100)
SCALING_G = (3, 20)  # the range of grid sizes the slope is fitted over


def _mlp_widths(n_in: int, depth: int, width: int) -> str:
    return "(" + ",".join(str(w) for w in (n_in, *([width] * (depth - 1)), 1)) + ")"


def rows(table: str) -> list[dict]:
    """``[{"id", "args"}]``: each row's id (its workdir's name) and its experiments.main flags."""
    if table == "toy-scaling":
        return [{"id": f"toy_paper_s{s}", "args": ["--config=configs/toy.py:paper", f"--config.seed={s}"]}
                for s in (0, 1, 2)]
    if table == "special":
        # Cheapest first (a sweep cut short still has whole columns): the KANs, then the MLPs by
        # width and depth.
        out = [{"id": f"{name}_kan", "args": [f"--config=configs/special.py:{name},paper"]} for name in special_config.PAPER]
        for width in MLP_WIDTHS:
            for depth in MLP_DEPTHS:
                out += [{"id": f"{name}_mlp_d{depth}_w{width}",
                         "args": [f"--config=configs/special.py:{name},paper", "--config.model.kind=mlp",
                                  f"--config.model.mlp_widths={_mlp_widths(2, depth, width)}"]}
                        for name in special_config.PAPER]
        return out
    if table == "claims":
        out = []
        for seed in CLAIM_SEEDS[:3]:  # overfitting: noisy targets, 200 training points
            base = ["--config=configs/toy.py", f"--config.data.noise={OVERFIT_NOISE}", "--config.data.train_num=200",
                    "--config.training.grid_sizes=(3,5,10,20,50)", "--config.training.steps=1000", f"--config.seed={seed}"]
            out.append({"id": f"overfit_kan_s{seed}", "args": base})
            out += [{"id": f"overfit_mlp_w{w}_s{seed}",
                     "args": base + ["--config.model.kind=mlp", f"--config.model.mlp_widths={_mlp_widths(2, 3, w)}"]}
                    for w in OVERFIT_MLP_WIDTHS]
        for name in STABILITY_FUNCTIONS:  # stability: 5 initializations, same data
            for kind, extra in (("kan", []), ("mlp", [f"--config.model.mlp_widths={STABILITY_MLP}"])):
                out += [{"id": f"stable_{name}_{kind}_s{seed}",
                         "args": [f"--config=configs/special.py:{name}", f"--config.model.kind={kind}", *extra,
                                  f"--config.seed={seed}"]}
                        for seed in CLAIM_SEEDS]
        return out
    if table in ("feynman-quick", "feynman-full"):
        from kan_jax.data import feynman_equations

        eqs = sorted(feynman_equations(), key=lambda e: (len(e.variables), e.name))  # fewest variables first
        if table == "feynman-full":
            return [{"id": e.name, "args": [f"--config=configs/feynman.py:{e.name}"]} for e in eqs]
        return [{"id": f"{e.name}_{kind}", "args": [f"--config=configs/feynman.py:{e.name},fit", f"--config.model.kind={kind}"]}
                for kind in ("kan", "mlp") for e in eqs]
    raise SystemExit(f"unknown table {table!r}; tables: {', '.join(TABLES)}")


TABLES = ("toy-scaling", "special", "claims", "feynman-quick", "feynman-full")
CLAIM_SEEDS = (0, 1, 2, 3, 4)
OVERFIT_NOISE = 0.1  # times the training targets' std
OVERFIT_MLP_WIDTHS = (5, 10, 20, 40, 80, 160)  # MLP [2, W, W, 1]: 51 to 26401 parameters
STABILITY_FUNCTIONS = ("jv", "lpmv_m1", "sph_harm_11")
STABILITY_MLP = "(2,95,1)"  # 381 parameters: the final (G = 20) KAN [2, 5, 1]'s count


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _completed(workdir: str) -> dict | None:
    try:
        with open(os.path.join(workdir, "results.json")) as f:
            res = json.load(f)
    except (OSError, ValueError):
        return None
    return res if res.get("status") == "completed" else None


def run_row(table: str, row: dict, root: str) -> dict:
    """Runs one row (unless its workdir holds a completed run) and returns its JSON line."""
    workdir = os.path.join(root, table, row["id"])
    cmd = [sys.executable, "-m", "experiments.main", *row["args"], f"--workdir={workdir}"]
    t = time.time()
    ran = _completed(workdir) is None
    proc = None
    if ran:
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    res = _completed(workdir)
    rec = {"table": table, "row": row["id"], "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": _commit(), "command": shlex.join(["python", *cmd[1:]]), "ran_now": ran,
           "sweep_wall_s": round(time.time() - t, 1)}
    if res is None:
        rec["error"] = (proc.stderr[-800:] if proc is not None else "no results.json")
        return rec
    keep = ("status", "n_params", "steps", "wall_time_s", "model", "dataset", "grid_size", "best_test_rmse",
            "best_grid_size", "stages", "formula", "formula_ops", "formula_test_rmse", "reported")
    rec.update({k: res[k] for k in keep if k in res})
    rec.update({k: v for k, v in sorted(res.items()) if k.startswith(("train_", "test_")) and isinstance(v, (int, float))})
    return rec


def _lines(table: str) -> dict[str, dict]:
    """The newest collected line of each row of ``table``."""
    path = _jsonl(table)
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    if "error" not in rec:
                        out[rec["row"]] = rec
    return out


def _jsonl(table: str) -> str:
    return os.path.join(ROOT, "docs", "bench", f"sweep_{table}.jsonl")


def fitted_slope(stages: list[dict], lo: int = SCALING_G[0], hi: int = SCALING_G[1]) -> float:
    """Least-squares slope of log test RMSE against log G over the stages with lo <= G <= hi."""
    pts = [(s["grid_size"], s["test_rmse"]) for s in stages if lo <= s["grid_size"] <= hi]
    if len(pts) < 2:
        return float("nan")
    g, e = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(g, e, 1)[0])


def _sci(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2e}"


def _header(table: str, lines: dict) -> str:
    dates = sorted(r["date"] for r in lines.values())
    commits = sorted({r["commit"] for r in lines.values()})
    return (f"Produced by `python scripts/sweep.py {table}` ({len(lines)} rows, {dates[0][:16]} to "
            f"{dates[-1][:16]} UTC, commit {', '.join(commits)}; raw lines in "
            f"[bench/sweep_{table}.jsonl](bench/sweep_{table}.jsonl)); each row's command is in its line.")


def render_toy_scaling(lines: dict) -> tuple[str, list[str]]:
    runs = [lines[k] for k in sorted(lines)]
    grids = [s["grid_size"] for s in runs[0]["stages"]]
    md = [_header("toy-scaling", lines), "",
          "| G | params | " + " | ".join(f"test RMSE seed {r['row'][-1]}" for r in runs) + " |",
          "|---:|---:|" + "---:|" * len(runs)]
    for i, g in enumerate(grids):
        md.append(f"| {g} | {runs[0]['stages'][i]['n_params']} | " +
                  " | ".join(_sci(r["stages"][i]["test_rmse"]) for r in runs) + " |")
    slopes = [fitted_slope(r["stages"]) for r in runs]
    md += ["", f"Fitted slope of log test RMSE against log G over G = {SCALING_G[0]}..{SCALING_G[1]}: " +
           ", ".join(f"{s:.2f}" for s in slopes) + f" (seeds {', '.join(r['row'][-1] for r in runs)}; theory for cubic "
           "splines: -4)."]
    fig = _scaling_figure("toy_scaling.png", {f"toy [2,1,1] seed {r['row'][-1]}": r["stages"] for r in runs})
    return "\n".join(md), [fig]


def render_special(lines: dict) -> tuple[str, list[str]]:
    md = [_header("special", lines), "",
          "Ours: the best grid-extension stage of `configs/special.py:NAME,paper` (the paper's minimal shape; "
          "grid sizes 3..200; best stage chosen on the test set, as in the paper) and the best of the ten MLPs "
          "(depth 2-6, width 5 or 100, same data and L-BFGS iterations). Paper: Table 2 of Liu et al. (2024), "
          "transcribed in `configs/special.py` (`PAPER`); its input ranges differ from ours for some functions "
          "(docs/DATA.md). `x paper`: our minimal-shape KAN's RMSE over the paper's.", "",
          "| function | shape | our KAN test RMSE (G) | params at G | paper minimal KAN | x paper | paper best KAN | our best MLP (shape, params) | paper MLP | G=3..20 slope |",
          "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    within = total = 0
    panels = {}
    for name, (shape, p_min, _p_best_shape, p_best, p_mlp) in special_config.PAPER.items():
        kan = lines.get(f"{name}_kan")
        mlps = [r for k, r in lines.items() if k.startswith(f"{name}_mlp_")]
        best_mlp = min(mlps, key=lambda r: r["test_rmse"]) if mlps else None
        if kan is not None:
            total += 1
            ratio = kan["best_test_rmse"] / p_min
            within += ratio <= 3
            at_best = [st for st in kan["stages"] if st["grid_size"] == kan["best_grid_size"]][0]
            kan_cell, params, ratio_cell = (f"{_sci(kan['best_test_rmse'])} ({kan['best_grid_size']})",
                                            str(at_best["n_params"]), f"{ratio:.2g}")
            slope = f"{fitted_slope(kan['stages']):.2f}"
            panels[name] = (kan, mlps)
        else:
            kan_cell = params = ratio_cell = slope = "-"
        mlp_cell = "-" if best_mlp is None else (
            f"{_sci(best_mlp['test_rmse'])} ({best_mlp['row'].split('_mlp_')[1]}, {best_mlp['n_params']})")
        md.append(f"| {name} | {list(shape)} | {kan_cell} | {params} | {_sci(p_min)} | {ratio_cell} | {_sci(p_best)} | "
                  f"{mlp_cell} | {_sci(p_mlp)} | {slope} |")
    md += ["", f"Within 3x of the paper's minimal-KAN RMSE: {within} of {total}."]
    figs = [_pareto_figure("special_pareto.png", panels)] if panels else []
    return "\n".join(md), figs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, name: str, dpi: int = 120) -> str:
    """Writes ``fig`` to docs/figures/NAME and returns the path."""
    d = os.path.join(ROOT, "docs", "figures")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _scaling_figure(name: str, curves: dict[str, list[dict]]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, stages in curves.items():
        g = np.array([s["grid_size"] for s in stages], float)
        e = np.array([s["test_rmse"] for s in stages])
        ax.plot(g, e, "o-", label=f"{label} (slope {fitted_slope(stages):.2f})")
    first = next(iter(curves.values()))
    g = np.array([s["grid_size"] for s in first], float)
    mid = int(np.argmin(np.abs(np.log(g) - np.log(np.sqrt(SCALING_G[0] * SCALING_G[1])))))  # mid of the fit range
    ax.plot(g, first[mid]["test_rmse"] * (g / g[mid]) ** -4.0, "k--", lw=1, label=r"$\propto G^{-4}$")
    ax.set(xscale="log", yscale="log", xlabel="grid size G", ylabel="test RMSE")
    ax.set_xticks(g, [str(int(v)) for v in g])
    ax.legend(fontsize=7)
    return _save(plt, fig, name)


def _pareto_figure(name: str, panels: dict) -> str:
    """Test RMSE against parameter count per function: the KAN's grid stages and the MLPs."""
    plt = _pyplot()
    n = len(panels)
    cols = 5
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.2 * cols, 2.6 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, (fname, (kan, mlps)) in zip(axes.flat, panels.items()):
        ax.plot([s["n_params"] for s in kan["stages"]], [s["test_rmse"] for s in kan["stages"]], "o-", label="KAN")
        for width, marker in ((5, "^"), (100, "s")):
            pts = sorted((r["n_params"], r["test_rmse"]) for r in mlps if r["row"].endswith(f"_w{width}"))
            if pts:
                ax.plot(*zip(*pts), marker, label=f"MLP width {width}", alpha=0.8)
        ax.set(xscale="log", yscale="log", title=fname)
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.yaxis.set_minor_formatter(plt.NullFormatter())
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("parameters")
    fig.supylabel("test RMSE")
    return _save(plt, fig, name, dpi=100)


def render_claims(lines: dict) -> tuple[str, list[str]]:
    md = [_header("claims", lines), ""]
    figs = []
    kans = [r for k, r in sorted(lines.items()) if k.startswith("overfit_kan_")]
    mlps = [r for k, r in sorted(lines.items()) if k.startswith("overfit_mlp_")]
    if kans or mlps:
        md += [f"**Overfitting.** `configs/toy.py` target, {OVERFIT_NOISE:g} x std Gaussian noise on 200 training "
               "targets, test RMSE against the clean function on 1000 points (so the noise floor of train RMSE is "
               f"about {OVERFIT_NOISE:g} x std(y) and a perfect model has test RMSE 0). KAN [2, 5, 1] through grid sizes "
               "3..50 (each stage a row), MLP [2, W, W, 1] with the same 5000 L-BFGS iterations. Mean over "
               f"{len(kans)} seeds (min-max).", "",
               "| model | params | train RMSE | test RMSE (clean) | test / train |", "|---|---:|---:|---:|---:|"]
        points = {"KAN": [], "MLP": []}
        if kans:
            for i, st in enumerate(kans[0]["stages"]):
                tr = [r["stages"][i]["train_rmse"] for r in kans]
                te = [r["stages"][i]["test_rmse"] for r in kans]
                md.append(f"| KAN G={st['grid_size']} | {st['n_params']} | {_sci(np.mean(tr))} | {_sci(np.mean(te))} "
                          f"({_sci(min(te))}-{_sci(max(te))}) | {np.mean(te) / np.mean(tr):.2f} |")
                points["KAN"].append((st["n_params"], np.mean(tr), np.mean(te)))
        for w in OVERFIT_MLP_WIDTHS:
            rs = [r for r in mlps if r["row"].startswith(f"overfit_mlp_w{w}_")]
            if rs:
                tr, te = [r["train_rmse"] for r in rs], [r["test_rmse"] for r in rs]
                md.append(f"| MLP W={w} | {rs[0]['n_params']} | {_sci(np.mean(tr))} | {_sci(np.mean(te))} "
                          f"({_sci(min(te))}-{_sci(max(te))}) | {np.mean(te) / np.mean(tr):.2f} |")
                points["MLP"].append((rs[0]["n_params"], np.mean(tr), np.mean(te)))
        figs.append(_overfit_figure("claims_overfit.png", points))
    stable = [r for k, r in lines.items() if k.startswith("stable_")]
    if stable:
        md += ["", f"**Stability across seeds.** `configs/special.py:NAME` (KAN [2, 5, 1], grid sizes 3..20) and "
               f"`--config.model.kind=mlp --config.model.mlp_widths={STABILITY_MLP}` (the final KAN's parameter count, "
               "the same 4000 L-BFGS iterations), the same data, seeds "
               f"{', '.join(map(str, CLAIM_SEEDS))} (the initialization only).", "",
               "| function | model | params | seeds | test RMSE mean | std | min | max | max / min |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name in STABILITY_FUNCTIONS:
            for kind in ("kan", "mlp"):
                rs = [r for r in stable if r["row"].startswith(f"stable_{name}_{kind}_")]
                if not rs:
                    continue
                te = np.array([r["test_rmse"] for r in rs])
                md.append(f"| {name} | {kind.upper()} | {rs[0]['n_params']} | {len(rs)} | {_sci(te.mean())} | "
                          f"{_sci(te.std(ddof=1) if len(te) > 1 else float('nan'))} | {_sci(te.min())} | {_sci(te.max())} | "
                          f"{te.max() / te.min():.2f} |")
    return "\n".join(md), figs


def _overfit_figure(name: str, points: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (label, pts), color in zip(points.items(), ("C0", "C1")):
        if pts:
            n, tr, te = zip(*pts)
            ax.plot(n, te, "o-", color=color, label=f"{label} test (clean)")
            ax.plot(n, tr, "o--", color=color, alpha=0.6, label=f"{label} train (noisy)")
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="RMSE")
    ax.legend(fontsize=7)
    return _save(plt, fig, name)


def _frac(vals, limit) -> str:
    return f"{sum(v <= limit for v in vals)} of {len(vals)}"


def render_feynman_quick(lines: dict) -> tuple[str, list[str]]:
    by = {kind: {k[: -len(kind) - 1]: r for k, r in lines.items() if k.endswith(f"_{kind}")} for kind in ("kan", "mlp")}
    names = sorted(set(by["kan"]) | set(by["mlp"]))
    md = [_header("feynman-quick", lines), "",
          "`configs/feynman.py:NAME,fit`: accuracy only, KAN [n, 2n + 1, 1] through grid sizes 3..20 with L-BFGS, "
          "and `--config.model.kind=mlp` (an MLP of the same parameter count, the same iterations). test NRMSE = test "
          "RMSE / std of the test targets.", ""]
    for kind in ("kan", "mlp"):
        v = [r["test_nrmse"] for r in by[kind].values()]
        if v:
            md.append(f"- {kind.upper()}: test NRMSE <= 1e-3 on {_frac(v, 1e-3)}, <= 1e-2 on {_frac(v, 1e-2)}; "
                      f"median {np.median(v):.2e}.")
    both = [n for n in names if n in by["kan"] and n in by["mlp"]]
    if both:
        wins = sum(by["kan"][n]["test_nrmse"] < by["mlp"][n]["test_nrmse"] for n in both)
        md.append(f"- The KAN's test NRMSE is below the MLP's on {wins} of {len(both)} equations.")
    md += ["", "| equation | KAN params | KAN test NRMSE | MLP params | MLP test NRMSE |", "|---|---:|---:|---:|---:|"]
    for n in names:
        k, m = by["kan"].get(n), by["mlp"].get(n)
        md.append(f"| {n} | {k['n_params'] if k else '-'} | {_sci(k['test_nrmse']) if k else '-'} | "
                  f"{m['n_params'] if m else '-'} | {_sci(m['test_nrmse']) if m else '-'} |")
    return "\n".join(md), []


def render_feynman_full(lines: dict) -> tuple[str, list[str]]:
    md = [_header("feynman-full", lines), "",
          "`configs/feynman.py:NAME`: the symbolic pipeline (sparse training, pruning, refine, symbolic fitting, "
          "formula; with no exact formula, the accuracy refit). `exact`: the formula's test RMSE at most 1e-6 of the "
          "targets' std. test NRMSE: the reported model's (`reported`).", ""]
    rows, exact, nrmse = [], 0, []
    for name, r in sorted(lines.items()):
        std = r["test_rmse"] / r["test_nrmse"] if r.get("test_nrmse") else float("nan")
        ft = r.get("formula_test_rmse")
        ok = ft is not None and std > 0 and ft <= 1e-6 * std
        exact += ok
        nrmse.append(r["test_nrmse"])
        rows.append(f"| {name} | {'yes' if ok else 'no'} | {_sci(r['test_nrmse'])} | {r.get('reported', '-')} | "
                    f"{r.get('formula_ops', '-')} | `{r.get('formula') or '-'}` |")
    md += [f"- Exact formulas: {exact} of {len(lines)}.",
           f"- Test NRMSE <= 1e-3: {_frac(nrmse, 1e-3)}; <= 1e-2: {_frac(nrmse, 1e-2)}.", "",
           "| equation | exact | test NRMSE | reported | formula ops | formula |", "|---|---|---:|---|---:|---|", *rows]
    return "\n".join(md), []


RENDER = {"toy-scaling": render_toy_scaling, "special": render_special, "claims": render_claims,
          "feynman-quick": render_feynman_quick, "feynman-full": render_feynman_full}
DOCS = {"toy-scaling": "RESULTS.md", "special": "RESULTS.md", "claims": "CLAIMS.md", "feynman-quick": "RESULTS.md",
        "feynman-full": "RESULTS.md"}  # where each table goes


def render(table: str) -> None:
    lines = _lines(table)
    if not lines:
        print(json.dumps({"table": table, "rendered": False, "why": "no collected lines"}))
        return
    md, figs = RENDER[table](lines)
    md += "".join(f"\n\n![{table}](figures/{os.path.basename(f)})" for f in figs)
    doc = os.path.join(ROOT, "docs", DOCS[table])
    text = open(doc).read()
    start, end = f"<!-- sweep:{table} -->", f"<!-- /sweep:{table} -->"
    block = f"{start}\n{md}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    with open(doc, "w") as f:
        f.write(text)
    print(json.dumps({"table": table, "rendered": True, "rows": len(lines), "figures": figs}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", nargs="?", choices=TABLES)
    ap.add_argument("--root", default="/tmp/kan_sweep", help="workdirs go to ROOT/TABLE/ROW")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default="", help="run only the rows whose id starts with this")
    ap.add_argument("--render", action="store_true", help="only rewrite the docs from the collected lines")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list or a.table is None:
        for t in TABLES:
            print(f"{t}: {len(rows(t))} rows, e.g. {shlex.join(rows(t)[0]['args'])}")
        return
    if not a.render:
        todo = [r for r in rows(a.table) if r["id"].startswith(a.only)]
        os.makedirs(os.path.dirname(_jsonl(a.table)), exist_ok=True)
        collected = _lines(a.table)
        with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:  # each row is its own process
            for rec in pool.map(lambda r: run_row(a.table, r, a.root), todo):
                print(json.dumps({k: v for k, v in rec.items() if k != "stages"}), flush=True)
                if rec["ran_now"] or "error" in rec or rec["row"] not in collected:
                    with open(_jsonl(a.table), "a") as f:
                        f.write(json.dumps(rec) + "\n")
    render(a.table)


if __name__ == "__main__":
    main()
