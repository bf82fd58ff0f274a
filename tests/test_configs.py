"""configs/: every config file and documented argument loads by path the way experiments/main.py
loads it (absl's ``config_flags``, ``--config=configs/NAME.py[:ARG]`` from the repository root),
starts its docstring with its launch command, and defines every field the runner reads."""

import glob
import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from kan_jax.train.config import REQUIRED_FIELDS

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags loads by path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not os.path.basename(p).startswith("_"))

# Every argument the configs' docstrings, README.md and docs/ document (None: no argument).
CASES = {
    "default.py": [None, "quick"],
    "toy.py": [None, "quick", "paper", "paper,quick"],
    "hellokan.py": [None, "quick"],
    "symbolic.py": [None, "x_1*x_2", "x_1*x_2,quick", "quick", "x_1*exp(-x_2**2)"],
    "feynman.py": [None, "I.6.2", "I.6.2,quick", "quick", "I.6.2,fit", "II.6.15a,fit,quick"],
    "special.py": [None, "ellipkinc", "jv", "jv,quick", "quick", "jv,paper", "iv,paper,quick"],
    "digits.py": [None, "quick", "wine", "breast_cancer", "wine,quick", "breast_cancer,quick"],
    "vae.py": [None, "quick"],
    "pde.py": [None, "quick"],
}
CASE_IDS = [(name, arg) for name, args in CASES.items() for arg in args]

# The fields every config defines (the config contract, docs/DESIGN.md).
SPEC_FIELDS = ("seed", "model.kind", "model.widths", "model.grid_size", "model.spline_order", "model.basis",
               "optimizer.name", "optimizer.learning_rate", "mesh", "data")

# Every field the runner reads from a config (kan_jax.train.config.REQUIRED_FIELDS: the library
# keeps no defaults, so each must be defined in configs/), plus the SPEC's mesh and the data fields
# every dataset kind takes.
RUNNER_FIELDS = REQUIRED_FIELDS + ("mesh", "data.kind", "data.train_num", "data.test_num", "data.seed", "data.dtype")
# kan_jax.data.load: the dataset's name or formula field and the kind's own fields.
DATA_FIELDS = {"expression": ("data.expr", "data.ranges", "data.n_var"), "feynman": ("data.equation",),
               "special": ("data.function",), "sklearn": ("data.name", "data.scale"),
               "poisson": ("data.boundary_num", "data.test_grid")}
# The task pipelines' own sections.
PIPELINE_SECTIONS = {"vae": ("vae.eval_samples", "vae.iw_samples"), "pde": ("pde.boundary_weight",)}


def _split_rows(c):
    """``(training rows, test rows)`` of a config's data section (None: a bundled set's whole rest)."""
    if c.data.kind == "poisson":
        return c.data.train_num, c.data.test_grid ** 2
    return c.data.train_num, c.data.test_num
# kan_jax.train.symbolic_pipeline: the symbolic pipeline's ``symbolic.*`` fields.
SYMBOLIC_FIELDS = ("prune", "standardize", "prune_measure", "node_threshold", "edge_threshold", "prune_steps",
                   "prune_search", "prune_search_tol", "prune_search_rtol", "refine_grid", "refine_steps", "lib",
                   "r2_threshold", "progressive", "weight_simple", "weight_simple_retry", "retrain_steps", "digits",
                   "restarts", "exact_rtol", "agreement_rtol", "max_formula_ops")


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    """The runner's setting: started from the repository root, which is on sys.path."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(ROOT)


def _flag_arg(name, arg):
    return f"--config=configs/{name}" + ("" if arg is None else f":{arg}")


def _load(flag_arg):
    """Parses ``--config=...`` as experiments/main.py defines the flag and returns the config."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Config file.", flag_values=fv, lock_config=True)
    fv(["main", flag_arg])
    return fv.config


def _has(config, dotted):
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def _docstring(name):
    import ast

    with open(os.path.join(ROOT, "configs", name)) as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def test_every_config_has_documented_cases():
    assert CONFIGS and set(CONFIGS) == set(CASES), "add the new config's arguments to CASES"


@pytest.mark.parametrize("name,arg", CASE_IDS)
def test_config_loads_by_path_with_fields(name, arg):
    c = _load(_flag_arg(name, arg))
    missing = [f for f in SPEC_FIELDS + RUNNER_FIELDS + DATA_FIELDS[c.data.kind] if not _has(c, f)]
    assert not missing, f"{_flag_arg(name, arg)} lacks {missing}"
    if c.pipeline == "symbolic":
        missing = [f for f in SYMBOLIC_FIELDS if not _has(c, f"symbolic.{f}")]
        assert not missing, f"{_flag_arg(name, arg)} lacks symbolic.{missing}"
    else:
        assert "symbolic" not in c, "a symbolic section without pipeline='symbolic' is never read"
    missing = [f for f in PIPELINE_SECTIONS.get(c.pipeline, ()) if not _has(c, f)]
    assert not missing, f"{_flag_arg(name, arg)} lacks {missing}"
    quick = arg is not None and (arg == "quick" or arg.endswith(",quick"))
    train_rows, test_rows = _split_rows(c)
    if quick:  # the smoke run: few steps on few points
        assert c.training.steps <= 20 and train_rows <= 100 and test_rows <= 100
    else:  # at least 1000 training points, or all of a bundled dataset but its test split
        assert c.training.steps > 20 and (train_rows >= 1000 if c.data.kind != "sklearn" else train_rows is None)


def test_config_args_pick_the_named_target():
    assert _load("--config=configs/symbolic.py:x_1*exp(-x_2**2)").data.expr == "x_1*exp(-x_2**2)"
    assert _load("--config=configs/symbolic.py:quick").data.expr == "x_1*x_2"
    assert tuple(_load("--config=configs/symbolic.py:x_1*x_2*x_3,quick").model.widths) == (3, 7, 1)
    assert _load("--config=configs/feynman.py:I.6.2,quick").data.equation == "I.6.2"
    assert _load("--config=configs/special.py:jv,quick").data.function == "jv"
    assert _load("--config=configs/digits.py").data.name == "digits"
    wine = _load("--config=configs/digits.py:wine,quick")
    assert wine.data.name == "wine" and tuple(wine.model.widths) == (13, 4, 3)
    assert tuple(_load("--config=configs/digits.py:breast_cancer").model.widths) == (30, 4, 2)


def test_paper_protocol_args():
    """``paper``: the KAN paper's grid schedule 3..200 and, for special functions, its minimal
    shape of each function (Table 2); combined with ``quick`` it shrinks like any quick run."""
    from configs import _common, special

    toy = _load("--config=configs/toy.py:paper")
    assert tuple(toy.model.widths) == (2, 1, 1) and tuple(toy.training.grid_sizes) == (3, 5, 10, 20, 50, 100, 200)
    assert len(special.PAPER) == 15
    for name, (shape, *_) in special.PAPER.items():
        c = special.get_config(f"{name},paper")
        assert tuple(c.model.widths) == shape and tuple(c.training.grid_sizes) == _common.PAPER_GRIDS, name
        assert c.data.function == name
    fit = _load("--config=configs/feynman.py:I.12.11,fit")  # 5 variables: KAN [5, 11, 1], no formula
    assert fit.pipeline == "fit" and tuple(fit.model.widths) == (5, 11, 1) and fit.data.equation == "I.12.11"
    q = _load("--config=configs/special.py:iv,paper,quick")
    assert tuple(q.model.widths) == (2, 4, 3, 2, 1, 1) and tuple(q.training.grid_sizes) == (3, 5)
    with pytest.raises(ValueError, match="unknown special function 'ellipk,paper'|unknown special function 'ellipk'"):
        special.get_config("ellipk,paper")


@pytest.mark.parametrize("name", CONFIGS)
def test_docstring_starts_with_launch_command_and_runtime(name):
    first = _docstring(name).splitlines()[0] if _docstring(name) else ""
    assert first.startswith(f"python -m experiments.main --config=configs/{name}"), first
    assert re.search(r" --workdir=\S+ +\(~[^)]*\b(s|min)\b[^)]*\)$", first), f"launch command, then '(~N s/min ...)': {first}"
    # The command itself loads (shell quoting as a user would type it).
    config_arg = next(a for a in shlex.split(first.split("(~")[0]) if a.startswith("--config="))
    _load(config_arg)


@pytest.mark.parametrize("name", CONFIGS)
def test_no_import_by_path_fallback(name):
    with open(os.path.join(ROOT, "configs", name)) as f:
        src = f.read()
    assert "importlib" not in src and "except ImportError" not in src, "import siblings as `from configs import ...`"


@pytest.mark.parametrize("flag_arg,needle", [
    ("--config=configs/toy.py:foo", "configs/toy.py takes no argument or 'quick'"),
    ("--config=configs/hellokan.py:x_1", "configs/hellokan.py takes no argument or 'quick'"),
    ("--config=configs/default.py:fast", "configs/default.py takes no argument or 'quick'"),
    ("--config=configs/symbolic.py:y+1", "x_1..x_n"),
    ("--config=configs/digits.py:iris", "takes one of ['breast_cancer', 'digits', 'wine']"),
    ("--config=configs/vae.py:wine", "configs/vae.py takes no argument or 'quick'"),
    ("--config=configs/pde.py:heat", "configs/pde.py takes no argument or 'quick'"),
])
def test_bad_argument_is_an_error_naming_it(flag_arg, needle):
    with pytest.raises(Exception) as err:  # noqa: PT011 - absl wraps the config file's error
        _load(flag_arg).keys()
    assert needle in str(err.value)


def test_split_quick():
    from configs import _common

    assert _common.split_quick(None, "d") == ("d", False)
    assert _common.split_quick("quick", "d") == ("d", True)
    assert _common.split_quick("x_1*x_2", "d") == ("x_1*x_2", False)
    assert _common.split_quick(" x_1*x_2,quick ", "d") == ("x_1*x_2", True)
    assert _common.split_quick("I.6.2,quick", "d") == ("I.6.2", True)
