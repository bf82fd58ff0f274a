"""scripts/sweep.py: its tables' rows are well formed and load, and its renderers compute what
the docs say (the fitted slope, the best stage against the paper, the KAN-vs-MLP counts)."""

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("_sweep", os.path.join(ROOT, "scripts", "sweep.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _config(arg: str):
    """``--config=configs/NAME.py[:ARG]`` -> the config, loaded the way the configs package does."""
    import importlib

    path, _, cfg_arg = arg.split("=", 1)[1].partition(":")
    module = importlib.import_module("configs." + os.path.basename(path)[:-3])
    return module.get_config(cfg_arg or None)


@pytest.mark.parametrize("table", ["toy-scaling", "special", "claims", "feynman-quick", "feynman-full"])
def test_rows_are_unique_and_their_configs_load(sweep, table):
    rows = sweep.rows(table)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and all("/" not in i for i in ids)
    for arg in sorted({r["args"][0] for r in rows})[:40]:  # each distinct config argument (a sample of the 100 equations)
        c = _config(arg)
        assert c.data.kind in ("expression", "special", "feynman"), arg


def test_table_sizes(sweep):
    assert len(sweep.rows("special")) == 15 * (1 + 10)  # each function: its KAN and ten MLPs (depth 2-6, width 5/100)
    assert len(sweep.rows("feynman-quick")) == 200 and len(sweep.rows("feynman-full")) == 100
    mlp = [r for r in sweep.rows("special") if r["id"] == "jv_mlp_d4_w100"][0]
    assert "--config.model.mlp_widths=(2,100,100,100,1)" in mlp["args"]


def test_fitted_slope_is_the_log_log_least_squares_over_3_to_20(sweep):
    stages = [{"grid_size": g, "test_rmse": 7.0 * g**-4.0} for g in (3, 5, 10, 20)]
    stages += [{"grid_size": g, "test_rmse": 1e-3} for g in (50, 100)]  # past the fit range: ignored
    assert sweep.fitted_slope(stages) == pytest.approx(-4.0)
    noisy = [{"grid_size": g, "test_rmse": r} for g, r in ((3, 1e-2), (5, 5e-3), (10, 4e-4), (20, 3e-5))]
    g, e = np.log([3, 5, 10, 20]), np.log([1e-2, 5e-3, 4e-4, 3e-5])
    assert sweep.fitted_slope(noisy) == pytest.approx(np.polyfit(g, e, 1)[0])


def test_special_render_compares_the_best_stage_with_the_paper(sweep, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "ROOT", str(tmp_path))  # figures go under tmp_path/docs/figures
    p_min = sweep.special_config.PAPER["jv"][1]
    stages = [{"grid_size": g, "n_params": 10 * g, "test_rmse": r, "train_rmse": r}
              for g, r in ((3, 1e-2), (5, 2.5 * p_min), (10, 3e-2))]
    lines = {"jv_kan": {"row": "jv_kan", "date": "2026-12-06T00:00:00", "commit": "abc", "n_params": 100,
                        "best_test_rmse": 2.5 * p_min, "best_grid_size": 5, "stages": stages},
             "jv_mlp_d2_w5": {"row": "jv_mlp_d2_w5", "date": "2026-12-06T00:00:01", "commit": "abc", "n_params": 21,
                              "test_rmse": 4e-3},
             "jv_mlp_d3_w100": {"row": "jv_mlp_d3_w100", "date": "2026-12-06T00:00:02", "commit": "abc",
                                "n_params": 10501, "test_rmse": 1e-3}}
    md, figs = sweep.render_special(lines)
    row = [ln for ln in md.splitlines() if ln.startswith("| jv |")][0]
    assert f"{2.5 * p_min:.2e} (5) | 50 |" in row and "| 2.5 |" in row and "1.00e-03 (d3_w100, 10501)" in row
    assert "Within 3x of the paper's minimal-KAN RMSE: 1 of 1." in md
    assert all(os.path.exists(f) for f in figs)
