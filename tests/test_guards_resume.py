"""Guard: a fit run killed BETWEEN two checkpoints resumes to the uninterrupted run's results.

configs/toy.py:quick runs two stages of 20 L-BFGS steps (G = 3, then 5), logs every 5 steps and
checkpoints every 10 (and at each stage end). The kill comes from the metrics writer right after
it wrote a line past the last checkpoint, so metrics.jsonl holds steps the resumed run computes
again: they must be dropped, not duplicated.
"""

import json
import os
import sys

import pytest

from kan_jax import train


def _fit_module():
    """The module of the "fit" pipeline (it holds the ``_after_checkpoint`` test hook), wherever
    the training package keeps it."""
    return sys.modules[train.PIPELINES["fit"].__module__]


def _config():
    from configs import toy

    return toy.get_config("quick")


class _Killed(Exception):
    pass


def _metrics(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _strip(records):
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("full"))
    return d, train.train_and_evaluate(_config(), d)


@pytest.mark.parametrize("kill_at", [15, 35])  # between checkpoints 10 and 20; 30 and 40 (after the grid extension)
def test_resume_after_kill_between_checkpoints(uninterrupted, tmp_path, monkeypatch, kill_at):
    full_dir, full = uninterrupted
    c = _config()
    assert kill_at % c.training.log_every == 0 and kill_at % c.checkpoint_every != 0  # logged, not checkpointed

    write = train.MetricsWriter.write

    def killing_write(self, record):
        write(self, record)
        if record["step"] == kill_at:
            raise _Killed(f"killed after logging step {kill_at}")

    checkpoints = []
    assert hasattr(_fit_module(), "_after_checkpoint")
    monkeypatch.setattr(train.MetricsWriter, "write", killing_write)
    monkeypatch.setattr(_fit_module(), "_after_checkpoint", checkpoints.append)
    with pytest.raises(_Killed):
        train.train_and_evaluate(c, str(tmp_path))
    # The kill came after a checkpoint and after at least one more metrics line.
    last_ckpt = max(checkpoints)
    assert last_ckpt < kill_at
    written = [r["step"] for r in _metrics(str(tmp_path))]
    assert written[-1] == kill_at and [s for s in written if s > last_ckpt] == [kill_at]
    ck = train.Checkpointer(str(tmp_path), max_to_keep=3)
    assert ck.latest_step() == last_ckpt == kill_at - kill_at % c.checkpoint_every
    ck.close()

    monkeypatch.setattr(train.MetricsWriter, "write", write)
    monkeypatch.setattr(_fit_module(), "_after_checkpoint", None)
    resumed = train.train_and_evaluate(c, str(tmp_path))
    steps = [r["step"] for r in _metrics(str(tmp_path))]
    assert steps == sorted(set(steps)), f"duplicated or unordered steps: {steps}"
    assert steps == [r["step"] for r in _metrics(full_dir)] == list(range(5, 41, 5))
    # Every logged value (wall times aside) and every result equal the uninterrupted run's, bitwise.
    assert _strip(_metrics(str(tmp_path))) == _strip(_metrics(full_dir))
    for key in ("status", "steps", "n_params", "train_rmse", "test_rmse", "test_nrmse", "stages", "grid_size"):
        assert resumed[key] == full[key], key
