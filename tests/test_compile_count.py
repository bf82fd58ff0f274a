"""How many XLA programs a cold run compiles (docs/DESIGN.md, "What compiles").

Each run is a fresh interpreter with JAX's compile log on and no persistent compilation cache,
driven through the command line as a user runs it; the count is the number of "Finished XLA
compilation" lines.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The bound for a cold hellokan run (69 before the redesign).
HELLOKAN_MAX_COMPILES = 35


def _compiles(tmp_path, name, *overrides):
    env = dict(os.environ, JAX_LOG_COMPILES="1", KAN_JAX_COMPILATION_CACHE="", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    workdir = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.main", "--config=configs/hellokan.py:quick", f"--workdir={workdir}",
         "--config.compilation_cache_dir=", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr.count("Finished XLA compilation"), proc.stdout


@pytest.fixture(scope="module")
def one_attempt(tmp_path_factory):
    """The count and summary line of a cold quick hellokan run (one attempt), shared by the tests."""
    return _compiles(tmp_path_factory.mktemp("compiles"), "one")


def test_cold_hellokan_compiles_a_bounded_number_of_programs(one_attempt):
    n, out = one_attempt
    assert out.startswith("completed"), out
    assert n <= HELLOKAN_MAX_COMPILES, f"{n} XLA compiles"


def test_more_stages_compile_no_more_programs(tmp_path, one_attempt):
    """Two attempts (no formula counts as exact, so every restart runs) run twice the
    stages of one: sparse training, pruning, the prune search, refine, auto_symbolic and retrain
    at the same shapes reuse the same programs, so the count stays the same."""
    one, _ = one_attempt
    many, _ = _compiles(tmp_path, "many", "--config.symbolic.restarts=2", "--config.symbolic.exact_rtol=0")
    assert many == one, (one, many)
