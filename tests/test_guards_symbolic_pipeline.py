"""Guard: the quick symbolic pipeline recovers the true formula, not just some formula.

configs/symbolic.py:'x_1+x_2**2,quick' on a [2, 1, 1] KAN with the library {x, x^2} recovers
``x_1 + x_2**2`` exactly (measured: formula_train_rmse 0); the test asserts that the reported
formula is sympy-equal to the truth and numerically equal on random points.
"""

import json

import numpy as np
import sympy

from kan_jax import train

TRUTH = "x_1+x_2**2"


def _symbolic_config(arg):
    from configs import symbolic

    return symbolic.get_config(arg)


def test_quick_symbolic_pipeline_recovers_the_formula(tmp_path):
    c = _symbolic_config(TRUTH + ",quick")
    c.model.widths = [2, 1, 1]
    c.symbolic.lib = ["x", "x^2"]
    r = train.train_and_evaluate(c, str(tmp_path))
    assert r["status"] == "completed", r
    assert json.loads((tmp_path / "results.json").read_text())["formula"] == r["formula"]
    x1, x2 = sympy.symbols("x_1 x_2")
    got = sympy.sympify(r["formula"], locals={"x_1": x1, "x_2": x2})
    truth = x1 + x2**2
    assert got.free_symbols <= {x1, x2}, r["formula"]
    assert sympy.simplify(got - truth) == 0, f"recovered {r['formula']!r}, expected {TRUTH!r}"
    # And numerically, on points inside and outside the training range.
    pts = np.random.default_rng(0).uniform(-3, 3, (200, 2))
    f = sympy.lambdify((x1, x2), got, "numpy")
    np.testing.assert_allclose(np.broadcast_to(f(pts[:, 0], pts[:, 1]), (200,)), pts[:, 0] + pts[:, 1] ** 2,
                               rtol=1e-12, atol=1e-12)
    # The pipeline's own re-evaluation agrees that the formula is exact on its data.
    assert r["formula_train_rmse"] < 1e-9 and r["formula_test_rmse"] < 1e-9
