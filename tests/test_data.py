"""Tests for kan_jax.data: samplers, formulas, AI Feynman table, special functions."""

import ast
import importlib.resources
import pathlib

import numpy as np
import pytest
import scipy.special as sp
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from kan_jax import data
from kan_jax.data import (
    expression_dataset,
    feynman_dataset,
    feynman_equations,
    lambdify_expression,
    load,
    make_regression,
    parse_expression,
    special_dataset,
    special_function,
    special_functions,
)


def _prod(x):
  return x[:, 0] * np.sin(x[:, 1])


# ---------------------------------------------------------------- make_regression


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float64"])
def test_make_regression_shapes_dtypes_names(dtype):
  ds = make_regression(_prod, 2, train_num=30, test_num=20, dtype=dtype)
  dt = np.dtype(dtype)
  assert ds.x_train.shape == (30, 2) and ds.y_train.shape == (30, 1)
  assert ds.x_test.shape == (20, 2) and ds.y_test.shape == (20, 1)
  for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
    assert a.dtype == dt
  assert ds.input_names == ("x_1", "x_2") and ds.output_names == ("y",)
  assert ds.ranges == ((-1.0, 1.0), (-1.0, 1.0))
  assert ds.task == "regression" and ds.name == "custom" and ds.formula is None
  assert ds.n_var == 2 and ds.n_out == 1


def test_make_regression_targets_are_fn_of_stored_inputs():
  for dtype, tol in ((np.float32, 1e-6), (np.float64, 0.0)):
    ds = make_regression(_prod, 2, train_num=50, test_num=40, dtype=dtype, seed=3)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
      expect = _prod(x.astype(np.float64))
      np.testing.assert_allclose(y[:, 0], expect, rtol=tol, atol=tol)


def test_make_regression_determinism_and_independent_streams():
  a = make_regression(_prod, 2, train_num=40, test_num=25, seed=7)
  b = make_regression(_prod, 2, train_num=40, test_num=25, seed=7)
  c = make_regression(_prod, 2, train_num=40, test_num=25, seed=8)
  d = make_regression(_prod, 2, train_num=90, test_num=25, seed=7)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)
  assert not np.array_equal(a.x_train, c.x_train)
  assert not np.array_equal(a.x_test, c.x_test)
  # Changing train_num leaves the test set (and the train prefix) unchanged.
  np.testing.assert_array_equal(a.x_test, d.x_test)
  np.testing.assert_array_equal(a.x_train, d.x_train[:40])
  # Train and test are different samples.
  assert not np.array_equal(a.x_train[:25], a.x_test)


def test_make_regression_per_variable_ranges_and_target_std():
  ranges = [(0.0, 0.5), (2.0, 3.0), (-10.0, -9.0)]
  ds = make_regression(lambda x: x.sum(1), 3, ranges=ranges, train_num=500,
                       test_num=300, dtype=np.float64)
  for x in (ds.x_train, ds.x_test):
    for i, (lo, hi) in enumerate(ranges):
      assert lo <= x[:, i].min() and x[:, i].max() <= hi
      # Uniform over the whole interval, not a corner of it.
      assert x[:, i].min() < lo + 0.05 * (hi - lo) and x[:, i].max() > hi - 0.05 * (hi - lo)
  assert ds.ranges == tuple(ranges)
  assert ds.target_std == pytest.approx(np.std(ds.y_test), rel=1e-12)
  assert ds.target_std != pytest.approx(np.std(ds.y_train), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(lo=st.floats(-5, 5), width=st.floats(1e-3, 10), seed=st.integers(0, 2**31),
       n=st.integers(1, 4))
def test_make_regression_ranges_property(lo, width, seed, n):
  hi = lo + width
  ds = make_regression(lambda x: x[:, 0], n, ranges=(lo, hi), train_num=20,
                       test_num=5, seed=seed, dtype=np.float64)
  assert np.all(ds.x_train >= lo) and np.all(ds.x_train <= hi)
  np.testing.assert_array_equal(ds.y_train[:, 0], ds.x_train[:, 0])


def test_make_regression_multi_output_and_readonly():
  ds = make_regression(lambda x: np.stack([x[:, 0], x[:, 0] ** 2], 1), 1,
                       train_num=10, test_num=10)
  assert ds.y_train.shape == (10, 2) and ds.output_names == ("y_1", "y_2")
  np.testing.assert_allclose(ds.y_train[:, 1], ds.x_train[:, 0].astype(np.float64) ** 2, rtol=1e-6)
  with pytest.raises(ValueError):
    ds.x_train[0, 0] = 1.0
  with pytest.raises(AttributeError):
    ds.name = "other"


def test_make_regression_errors():
  with pytest.raises(ValueError, match=r"not finite in \d+ of 1000 train rows \(output column 1;") as e:
    make_regression(lambda x: np.log(x[:, 0]), 1, ranges=(-1, 1))
  assert float(str(e.value).split("first at x = (")[1].split(")")[0]) <= 0  # log's pole side
  # Finite in float64, infinite in float32: caught before any training, with the failing column.
  with pytest.raises(ValueError, match=r"exceed float32's range in 20 of 20 train rows \(output column 2;"):
    make_regression(lambda x: np.stack([x[:, 0], np.exp(100 * x[:, 0])], 1), 1, ranges=(0.9, 1), train_num=20,
                    dtype="float32")
  ds = make_regression(lambda x: np.exp(100 * x[:, 0]), 1, ranges=(0.9, 1), train_num=20, dtype="float64")
  assert np.all(np.isfinite(ds.y_train))
  with pytest.raises(ValueError, match="low < high"):
    make_regression(_prod, 2, ranges=(1.0, -1.0))
  with pytest.raises(ValueError, match="ranges must be one"):
    make_regression(_prod, 2, ranges=[(0, 1)] * 3)
  with pytest.raises(ValueError, match="dtype must be one of"):
    make_regression(_prod, 2, dtype=np.int32)
  with pytest.raises(ValueError, match="train_num"):
    make_regression(_prod, 2, train_num=0)
  with pytest.raises(ValueError, match="input_names"):
    make_regression(_prod, 2, input_names=("a",))


# ----------------------------------------------------------- expression_dataset


def test_expression_dataset_matches_closed_form():
  ds = expression_dataset("exp(sin(pi*x_1)+x_2**2)", train_num=64, test_num=32,
                          dtype=np.float64, seed=1)
  assert ds.input_names == ("x_1", "x_2")
  for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
    np.testing.assert_allclose(y[:, 0], np.exp(np.sin(np.pi * x[:, 0]) + x[:, 1] ** 2),
                               rtol=1e-12)
  expr = sympy.sympify(ds.formula)
  x1, x2 = sympy.symbols("x_1 x_2")
  assert sympy.simplify(expr - sympy.exp(sympy.sin(sympy.pi * x1) + x2**2)) == 0


def test_expression_dataset_variable_inference_and_ranges():
  ds = expression_dataset("x_3 * x_1", train_num=20, test_num=10, ranges=(0, 2))
  assert ds.n_var == 3 and ds.input_names == ("x_1", "x_2", "x_3")
  np.testing.assert_allclose(
      ds.y_train[:, 0], ds.x_train[:, 0].astype(np.float64) * ds.x_train[:, 2], rtol=1e-6)
  ds = expression_dataset("x_1**2", n_var=4, train_num=5, test_num=5)
  assert ds.x_train.shape == (5, 4)
  ds = expression_dataset("x_2", ranges=[(0, 1), (5, 6)], train_num=50, test_num=5,
                          dtype=np.float64)
  assert np.all((ds.y_train >= 5) & (ds.y_train <= 6))
  ds = expression_dataset("x_1^2", train_num=5, test_num=5, dtype="float64")
  np.testing.assert_allclose(ds.y_train[:, 0], ds.x_train[:, 0] ** 2)
  # A constant expression broadcasts when n_var is given.
  ds = expression_dataset("2", n_var=1, train_num=5, test_num=5)
  assert np.all(ds.y_train == 2) and ds.target_std == 0.0


def test_expression_dataset_explicit_variables_that_clash_with_sympy():
  names = ("lambda", "gamma", "E", "I", "beta")
  ds = expression_dataset("lambda*gamma + E - I/beta", variables=names,
                          ranges=(1, 2), train_num=30, test_num=5, dtype=np.float64)
  x = ds.x_train
  np.testing.assert_allclose(ds.y_train[:, 0], x[:, 0] * x[:, 1] + x[:, 2] - x[:, 3] / x[:, 4])
  assert ds.input_names == names
  # The stored formula parses back (with the names as variables) to the same target.
  back = parse_expression(ds.formula, variables=names)
  assert {s.name for s in back.free_symbols} == set(names)
  np.testing.assert_allclose(lambdify_expression(back, names)(x), ds.y_train[:, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(expr="x_1 + y"), r"'x_1 \+ y' uses unknown name\(s\) y; allowed variables: x_1, x_2"),
        (dict(expr="foo(x_1)"), r"unknown name\(s\) foo"),
        (dict(expr="x_1 +* 2"), r"cannot parse expression 'x_1 \+\* 2'.*allowed variables"),
        (dict(expr=""), "non-empty string"),
        (dict(expr="x_0 + x_1"), r"unknown name\(s\) x_0"),
        (dict(expr="a*b + c", variables=("a", "b")), r"unknown name\(s\) c; allowed variables: a, b"),
        (dict(expr="x_3", n_var=2), "uses x_3 but n_var=2"),
        (dict(expr="pi"), "uses no variable"),
        (dict(expr="sqrt(x_1)", ranges=(-1, 0)), r"targets are not finite in \d+ of 10 train rows"),
    ],
)
def test_expression_dataset_errors(kwargs, match):
  expr = kwargs.pop("expr")
  with pytest.raises(ValueError, match=match) as info:
    expression_dataset(expr, train_num=10, test_num=10, **kwargs)
  assert "\n" not in str(info.value)


# ------------------------------------------------------------------ AI Feynman


def test_feynman_table_is_package_data_and_complete():
  res = importlib.resources.files("kan_jax.data").joinpath("FeynmanEquations.csv")
  assert res.is_file()
  eqs = feynman_equations()
  assert len(eqs) == 100
  assert feynman_equations() is eqs  # cached
  assert len({e.name for e in eqs}) == 100
  assert sorted(e.number for e in eqs) == list(range(1, 101))
  eq = {e.name: e for e in eqs}["I.6.2"]
  assert eq.output == "f"
  assert eq.variables == (("sigma", 1.0, 3.0), ("theta", 1.0, 3.0))
  assert eq.formula == "exp(-(theta/sigma)**2/2)/(sqrt(2*pi)*sigma)"


def test_every_feynman_equation_parses_and_is_finite():
  for eq in feynman_equations():
    ds = feynman_dataset(eq.name, train_num=64, test_num=16, dtype=np.float64, seed=0)
    names = eq.variable_names
    assert ds.input_names == names and ds.output_names == (eq.output,)
    assert ds.x_train.shape == (64, len(names)), eq.name
    assert np.all(np.isfinite(ds.y_train)) and np.all(np.isfinite(ds.y_test)), eq.name
    lo = np.array([v[1] for v in eq.variables])
    hi = np.array([v[2] for v in eq.variables])
    assert np.all(ds.x_train >= lo) and np.all(ds.x_train <= hi), eq.name
    # Every table variable is a sympy Symbol of the formula (none is eaten as a
    # sympy function/constant such as gamma, E or I).
    expr = parse_expression(ds.formula, variables=names)
    assert {s.name for s in expr.free_symbols} <= set(names), eq.name
    assert isinstance(expr, sympy.Expr) and not expr.has(sympy.I), eq.name
    np.testing.assert_allclose(
        lambdify_expression(expr, names)(ds.x_test), ds.y_test[:, 0], rtol=1e-10,
        err_msg=eq.name)


_HAND_WRITTEN = {
    # name: numpy closed form on columns in the table's variable order
    "I.6.2": lambda s, t: np.exp(-((t / s) ** 2) / 2) / (np.sqrt(2 * np.pi) * s),
    "I.39.11": lambda gamma, pr, V: pr * V / (gamma - 1),
    "I.26.2": lambda n, t2: np.arcsin(n * np.sin(t2)),
    "I.30.5": lambda lambd, d, n: np.arcsin(lambd / (n * d)),
    "I.44.4": lambda n, kb, T, V1, V2: n * kb * T * np.log(V2 / V1),
    "III.8.54": lambda E_n, t, h: np.sin(E_n * t / (h / (2 * np.pi))) ** 2,
    "III.17.37": lambda beta, alpha, theta: beta * (1 + alpha * np.cos(theta)),
    "I.37.4": lambda I1, I2, delta: I1 + I2 + 2 * np.sqrt(I1 * I2) * np.cos(delta),
}


@pytest.mark.parametrize("name", sorted(_HAND_WRITTEN))
def test_feynman_targets_match_hand_written_numpy(name):
  ds = feynman_dataset(name, train_num=100, test_num=10, dtype=np.float64, seed=5)
  eq = {e.name: e for e in feynman_equations()}[name]
  expect = _HAND_WRITTEN[name](*ds.x_train.T)
  np.testing.assert_allclose(ds.y_train[:, 0], expect, rtol=1e-12)
  assert ds.name == name and len(eq.variables) == ds.n_var


def test_feynman_determinism_and_dtype():
  a = feynman_dataset("I.9.18", train_num=20, test_num=10, seed=2)
  b = feynman_dataset("I.9.18", train_num=20, test_num=10, seed=2)
  assert a.x_train.dtype == np.float32 and a.x_train.shape == (20, 9)
  np.testing.assert_array_equal(a.y_train, b.y_train)


def test_feynman_unknown_name_lists_close_matches():
  with pytest.raises(ValueError, match=r"unknown AI Feynman equation 'I\.6\.3'; close matches: I\.6\.2"):
    feynman_dataset("I.6.3")


# ---------------------------------------------------------- special functions


def _scipy_reference(name, a, b):
  if name == "ellipj":
    return sp.ellipj(a, b)[0]
  if name.startswith("lpmv_m"):
    return sp.lpmv(int(name[-1]), a, b)
  if name.startswith("sph_harm_"):
    m, n = name[-2], name[-1]
    return np.real(sp.sph_harm_y(int(n), int(m), a, b))
  return getattr(sp, name)(a, b)


def test_special_function_names():
  names = special_functions()
  expected = {"ellipj", "ellipkinc", "ellipeinc", "jv", "yv", "kv", "iv",
              "lpmv_m0", "lpmv_m1", "lpmv_m2", "sph_harm_01", "sph_harm_11",
              "sph_harm_02", "sph_harm_12", "sph_harm_22"}
  assert set(names) == expected and len(names) == 15


@pytest.mark.parametrize("alias,name", [("lpmv_m_0", "lpmv_m0"), ("lpmv_m_2", "lpmv_m2"),
                                        ("sph_harm_m_0_n_1", "sph_harm_01"), ("sph_harm_m_1_n_2", "sph_harm_12")])
def test_special_function_earlier_names_are_aliases(alias, name):
  assert special_function(alias) is special_function(name)
  a = special_dataset(alias, train_num=20, test_num=5, dtype=np.float64, seed=1)
  b = special_dataset(name, train_num=20, test_num=5, dtype=np.float64, seed=1)
  np.testing.assert_array_equal(a.y_train, b.y_train)


@pytest.mark.parametrize("name", special_functions())
def test_special_dataset_equals_scipy_and_is_finite(name):
  ds = special_dataset(name, train_num=400, test_num=100, dtype=np.float64, seed=4)
  assert ds.input_names == ("x_1", "x_2") and ds.x_train.shape == (400, 2)
  assert np.all(np.isfinite(ds.y_train)) and np.all(np.isfinite(ds.y_test))
  assert ds.target_std > 1e-3  # not a constant target on its box
  (l1, h1), (l2, h2) = ds.ranges
  assert np.all((ds.x_train[:, 0] >= l1) & (ds.x_train[:, 0] <= h1))
  assert np.all((ds.x_train[:, 1] >= l2) & (ds.x_train[:, 1] <= h2))
  for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
    np.testing.assert_allclose(y[:, 0], _scipy_reference(name, x[:, 0], x[:, 1]), rtol=1e-12)
  if ds.formula is not None:
    expr = parse_expression(ds.formula, variables=ds.input_names)
    np.testing.assert_allclose(lambdify_expression(expr, ds.input_names)(ds.x_test),
                               ds.y_test[:, 0], rtol=1e-10)
  f32 = special_dataset(name, train_num=400, test_num=100, seed=4)
  assert f32.y_train.dtype == np.float32
  np.testing.assert_allclose(f32.y_train, ds.y_train, rtol=1e-4, atol=1e-5)


def test_sph_harm_closed_forms_fix_the_angle_convention():
  ds = special_dataset("sph_harm_01", train_num=50, test_num=5, dtype=np.float64)
  polar, azimuth = ds.x_train.T
  np.testing.assert_allclose(ds.y_train[:, 0], np.sqrt(3 / (4 * np.pi)) * np.cos(polar), atol=1e-12)
  ds = special_dataset("sph_harm_11", train_num=50, test_num=5, dtype=np.float64)
  polar, azimuth = ds.x_train.T
  expect = -0.5 * np.sqrt(3 / (2 * np.pi)) * np.sin(polar) * np.cos(azimuth)
  np.testing.assert_allclose(ds.y_train[:, 0], expect, atol=1e-12)


def test_special_unknown_name():
  with pytest.raises(ValueError, match="unknown special function 'elipj'; close matches: ellipj"):
    special_dataset("elipj")


# ------------------------------------------------------------------------ load


def test_load_dispatches_each_kind():
  ds = load({"kind": "expression", "expr": "x_1*x_2", "train_num": 11, "test_num": 7,
             "seed": 3, "ranges": (0, 1), "dtype": "float64"})
  ref = expression_dataset("x_1*x_2", train_num=11, test_num=7, seed=3, ranges=(0, 1),
                           dtype=np.float64)
  assert ds.x_train.dtype == np.float64
  np.testing.assert_array_equal(ds.x_train, ref.x_train)
  np.testing.assert_array_equal(ds.y_test, ref.y_test)
  ds = load({"kind": "feynman", "equation": "I.12.1", "train_num": 5, "test_num": 5})
  assert ds.input_names == ("mu", "Nn") and ds.x_train.dtype == np.float32
  ds = load({"kind": "special", "function": "ellipkinc", "train_num": 5, "test_num": 6})
  assert ds.name == "ellipkinc" and ds.x_test.shape == (6, 2)
  ds = load({"kind": "expression", "expr": "x_1", "ranges": "(2, 3)", "train_num": 5,
             "test_num": 5})
  assert np.all(ds.x_train >= 2)


def test_load_accepts_configdict():
  ml_collections = pytest.importorskip("ml_collections")
  cfg = ml_collections.ConfigDict()
  cfg.kind = "feynman"
  cfg.equation = "I.6.2a"
  cfg.train_num = 12
  cfg.test_num = 3
  cfg.seed = 1
  cfg.dtype = "float32"
  ds = load(cfg)
  ref = feynman_dataset("I.6.2a", train_num=12, test_num=3, seed=1)
  np.testing.assert_array_equal(ds.y_train, ref.y_train)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"kind": "mnist"}, r"data\.kind must be one of 'expression', 'feynman', 'special', 'sklearn', 'poisson', got 'mnist'"),
        ({}, r"data\.kind must be one of"),
        ({"kind": "expression"}, r"data\.expr is required when data\.kind='expression'"),
        ({"kind": "feynman"}, r"data\.equation is required"),
        ({"kind": "special"}, r"data\.function is required"),
        ({"kind": "special", "function": "jv", "dtype": "float16"}, "dtype must be one of"),
        ({"kind": "expression", "expr": "x_1", "ranges": "(0,"}, r"data\.ranges must be"),
        ({"kind": "expression", "expr": "x_1", "noise": -0.1}, r"data\.noise must be a finite number >= 0"),
        ({"kind": "expression", "expr": "x_1", "noise": "lots"}, r"data\.noise must be a number >= 0, got 'lots'"),
        ({"kind": "sklearn", "name": "wine", "noise": 0.1}, r"data\.noise applies to the regression kinds"),
    ],
)
def test_load_errors(cfg, match):
  with pytest.raises(ValueError, match=match) as info:
    load(cfg)
  assert "\n" not in str(info.value)


def test_label_noise_is_on_the_training_targets_only():
  """data.noise: Gaussian noise of noise * std(y_train) on the training targets, seeded by
  data.seed; inputs and test targets are the clean dataset's."""
  spec = {"kind": "special", "function": "jv", "train_num": 4000, "test_num": 50, "seed": 3, "dtype": "float64"}
  clean, noisy = load(spec), load({**spec, "noise": 0.1})
  np.testing.assert_array_equal(noisy.x_train, clean.x_train)
  np.testing.assert_array_equal(noisy.y_test, clean.y_test)
  residual = noisy.y_train - clean.y_train
  assert abs(np.std(residual) / (0.1 * np.std(clean.y_train)) - 1) < 0.05  # 4000 draws: ~1% spread
  assert abs(np.mean(residual)) < 4 * 0.1 * np.std(clean.y_train) / np.sqrt(4000)
  np.testing.assert_array_equal(load({**spec, "noise": 0.1}).y_train, noisy.y_train)  # deterministic
  assert not np.array_equal(load({**spec, "noise": 0.1, "seed": 4}).y_train - load({**spec, "seed": 4}).y_train,
                            residual)
  np.testing.assert_array_equal(load({**spec, "noise": 0}).y_train, clean.y_train)


# ----------------------------------------------------------------- boundaries


def test_data_package_imports_no_model_code():
  root = pathlib.Path(data.__file__).parent
  allowed_kan = "kan_jax.data"
  for path in root.glob("*.py"):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      mods = []
      if isinstance(node, ast.Import):
        mods = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        mods = [node.module] if node.level == 0 else []
      for mod in mods:
        top = mod.split(".")[0]
        assert top not in {"flax", "optax", "orbax", "experiments", "configs"}, (path, mod)
        if top == "kan_jax":
          assert mod.startswith(allowed_kan), (path, mod)


def test_public_api_exported():
  for name in data.__all__:
    assert hasattr(data, name)
