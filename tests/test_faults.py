"""Fault tests through the real command line: signals, kill -9 at random moments, damaged
checkpoints, a read-only workdir and a full disk. Each compares the resumed run with an
uninterrupted one (docs/RELIABILITY.md lists every fault with its line and exit code).

Every run in a test shares one persistent compilation cache (a fresh one per test), as a user's
reruns do; compiled programs give the same results whether compiled or loaded.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = "--config=configs/toy.py:quick"
HELLO = "--config=configs/hellokan.py:quick"


def _env(cache):
    env = dict(os.environ, KAN_JAX_COMPILATION_CACHE=str(cache), JAX_DISABLE_MOST_OPTIMIZATIONS="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device, as a user's run
    return env


def _cmd(*args):
    return [sys.executable, "-m", "experiments.main", *args]


def _run(cache, *args, prefix=()):
    return subprocess.run([*prefix, *_cmd(*args)], cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=600)


def _start(cache, *args):
    return subprocess.Popen(_cmd(*args), cwd=ROOT, env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(workdir):
    r = json.loads((workdir / "results.json").read_text())
    r.pop("wall_time_s", None)
    return r


def _metrics(workdir):
    out = []
    for line in open(workdir / "metrics.jsonl"):
        rec = json.loads(line)  # every line whole
        rec.pop("wall_time_s", None)
        out.append(rec)
    return out


def _wait_for_metrics(proc, workdir, timeout=300):
    """Waits until the run has logged a training step (it is inside a training stage)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        if (workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").read_text().strip():
            return
        time.sleep(0.05)
    raise AssertionError("no metrics line in time")


def _damage(checkpoint, how):
    """Damages one orbax checkpoint directory the way a failing disk or a stray process would."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
    assert files, checkpoint
    if how == "garbage":  # every file of the arrays overwritten with bytes of the same length
        for p in files:
            if "state" in p.relative_to(checkpoint).parts:
                p.write_bytes(os.urandom(max(p.stat().st_size, 1)))
    elif how == "truncated":  # every file cut to half
        for p in files:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif how == "missing":  # the metadata of the JSON item gone
        (checkpoint / "meta" / "metadata").unlink()
    else:
        raise ValueError(how)


def _tree_digest(path):
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _last_line(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------- the fit pipeline


FIT_ARGS = (TOY, "--config.training.steps=150", "--config.training.chunk_size=5", "--config.training.log_every=5",
            "--config.checkpoint_every=50")


@pytest.fixture(scope="module")
def fit_ref(tmp_path_factory):
    """An uninterrupted run of FIT_ARGS and its compilation cache, shared by the signal tests."""
    base = tmp_path_factory.mktemp("fit_ref")
    done = _run(base / "cache", *FIT_ARGS, f"--workdir={base / 'ref'}")
    assert done.returncode == 0, done.stderr[-3000:]
    return base / "cache", base / "ref"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_checkpoints_the_step_reached_and_the_rerun_completes(tmp_path, fit_ref, signum):
    """SIGTERM (a preempted job) or SIGINT (Ctrl-C) mid-stage: the run stops at the next chunk
    boundary, checkpoints that step (not a multiple of checkpoint_every in general), writes
    results.json "preempted" with the step and stage, and exits 128 + the signal; the rerun
    resumes there and ends equal to an uninterrupted run."""
    cache, ref = fit_ref
    w = tmp_path / "w"
    proc = _start(cache, *FIT_ARGS, f"--workdir={w}")
    _wait_for_metrics(proc, w)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"{signal.Signals(signum).name}: stopping at the next chunk boundary" in err
    r = _results(w)
    step = r["preempted_step"]
    assert r["status"] == "preempted" and r["preempted_stage"] in (0, 1), r
    assert _last_line(out).startswith(f"preempted: stopped on request at step {step} (stage {r['preempted_stage']})")
    assert (w / "checkpoints" / str(step)).is_dir(), sorted(os.listdir(w / "checkpoints"))
    assert max(m["step"] for m in _metrics(w)) <= step
    again = _run(cache, *FIT_ARGS, f"--workdir={w}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _results(w) == _results(ref)
    assert _metrics(w) == _metrics(ref)


@pytest.mark.parametrize("delay", [0.0, 0.02])
def test_a_second_signal_stops_at_once_and_the_rerun_completes(tmp_path, fit_ref, delay):
    """SIGTERM, then SIGINT ``delay`` seconds later (two different signals: a repeated one can
    merge with the first while it is pending): the run stops without waiting for the chunk
    boundary's checkpoint, wherever the second signal lands (mid-chunk, mid-checkpoint,
    mid-metrics line), says so in one line, exits 128 + a signal, leaves results.json
    "preempted", and the same command resumes from the newest checkpoint to the uninterrupted
    run's results and metrics."""
    cache, ref = fit_ref
    w = tmp_path / "w"
    proc = _start(cache, *FIT_ARGS, f"--workdir={w}")
    _wait_for_metrics(proc, w)
    proc.send_signal(signal.SIGTERM)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert _last_line(err).startswith("interrupted: stopped without a new checkpoint"), err[-3000:]
    assert _results(w)["status"] == "preempted"
    again = _run(cache, *FIT_ARGS, f"--workdir={w}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _results(w) == _results(ref)
    assert _metrics(w) == _metrics(ref)


def test_damaged_checkpoints_fall_back_to_the_one_before(tmp_path):
    """A damaged newest checkpoint (garbage arrays, truncated files, missing metadata) is set aside
    with a warning and the run resumes from the one before, ending equal to an uninterrupted run.
    When none restores, the run stops with one line and trains nothing (never starts over)."""
    cache = tmp_path / "cache"
    w = tmp_path / "w"
    first = _run(cache, TOY, f"--workdir={w}")
    assert first.returncode == 0, first.stderr[-3000:]
    ref_results, ref_metrics = _results(w), _metrics(w)
    for how in ("garbage", "truncated", "missing"):
        newest = max(int(d) for d in os.listdir(w / "checkpoints"))
        (w / "results.json").unlink()
        _damage(w / "checkpoints" / str(newest), how)
        proc = _run(cache, TOY, f"--workdir={w}")
        assert proc.returncode == 0, (how, proc.stderr[-3000:])
        assert f"checkpoint {newest} in" in proc.stderr and "does not restore" in proc.stderr, (how, proc.stderr[-3000:])
        assert (w / "checkpoints_corrupt" / str(newest)).is_dir()
        assert _results(w) == ref_results, how
        assert _metrics(w) == ref_metrics, how
        assert newest in [int(d) for d in os.listdir(w / "checkpoints")]  # trained and saved again
        shutil.rmtree(w / "checkpoints_corrupt")
    # None restores: one line, exit 2, nothing trained, nothing started over.
    (w / "results.json").unlink()
    steps = sorted(int(d) for d in os.listdir(w / "checkpoints"))
    for s in steps:
        _damage(w / "checkpoints" / str(s), "garbage")
    metrics_before = (w / "metrics.jsonl").read_text()
    proc = _run(cache, TOY, f"--workdir={w}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _last_line(proc.stderr).startswith("error: none of the checkpoints in") and "--restart" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(int(d) for d in os.listdir(w / "checkpoints_corrupt")) == steps
    assert not os.listdir(w / "checkpoints") and (w / "metrics.jsonl").read_text() == metrics_before


# --------------------------------------------------------------------------- the symbolic pipeline


def test_symbolic_pipeline_resumes_after_signals_and_kills_at_random_moments(tmp_path):
    """hellokan:quick stopped by SIGTERM, then by kill -9 at random moments (seeded), then run to
    the end: the same results.json (formula, stages, attempts) and metrics.jsonl as an
    uninterrupted run. Then a damaged newest stage checkpoint: the stage is trained again, same
    results."""
    cache = tmp_path / "cache"
    ref = tmp_path / "ref"
    t0 = time.time()
    done = _run(cache, HELLO, f"--workdir={ref}")
    t_ref = time.time() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    w = tmp_path / "w"
    # SIGTERM once training is under way: preempted, with the stage and attempt it stopped in.
    proc = _start(cache, HELLO, f"--workdir={w}")
    _wait_for_metrics(proc, w)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    r = _results(w)
    assert r["status"] == "preempted" and r["preempted_attempt"] == 0 and isinstance(r["preempted_stage"], str), r
    assert _last_line(out).startswith(f"preempted: stopped on request at step {r['preempted_step']} ")
    # kill -9 at random moments of the reruns (startup, replay, training, symbolic fits, formula).
    rng = random.Random(18)
    for _ in range(3):
        proc = _start(cache, HELLO, f"--workdir={w}")
        time.sleep(rng.uniform(0.1, 0.9) * t_ref)
        proc.kill()
        proc.communicate(timeout=60)
    final = _run(cache, HELLO, f"--workdir={w}")
    assert final.returncode == 0, final.stderr[-3000:]
    assert _results(w) == _results(ref)
    assert _metrics(w) == _metrics(ref)
    # A damaged stage checkpoint: warned about, set aside, that stage trained again.
    newest = max(int(d) for d in os.listdir(w / "checkpoints"))
    (w / "results.json").unlink()
    _damage(w / "checkpoints" / str(newest), "garbage")
    again = _run(cache, HELLO, f"--workdir={w}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "does not restore" in again.stderr and (w / "checkpoints_corrupt" / str(newest)).is_dir()
    assert _results(w) == _results(ref)
    assert _metrics(w) == _metrics(ref)


# --------------------------------------------------------------------------- the file system


def _unshare_ok():
    return shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def test_read_only_workdir_is_one_line_and_changes_nothing(tmp_path):
    """A workdir that cannot be written (read-only mount; as root, permissions are no obstacle,
    so the test mounts it read-only in a user namespace): exit 4 with one line, no file changed;
    once writable, the same command resumes and completes."""
    if not _unshare_ok():  # said in docs/RELIABILITY.md: this machine ran it
        pytest.skip("needs unshare with user namespaces to make a read-only mount (as root chmod does not stop writes)")
    cache = tmp_path / "cache"
    w = tmp_path / "w"
    args = (TOY, "--config.training.steps=150", "--config.checkpoint_every=50")
    proc = _start(cache, *args, f"--workdir={w}")
    _wait_for_metrics(proc, w)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    assert proc.returncode == 143
    before = _tree_digest(w)
    ro = ["unshare", "-rm", "sh", "-c", f'mount --bind "{w}" "{w}" && mount -o remount,ro,bind "{w}" && exec "$0" "$@"']
    proc = _run(cache, *args, f"--workdir={w}", prefix=ro)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = _last_line(proc.stderr)
    assert line.startswith("error: the workdir could not be written (") and "Read-only file system" in line, line
    assert _tree_digest(w) == before
    again = _run(cache, *args, f"--workdir={w}")
    assert again.returncode == 0 and _results(w)["status"] == "completed", again.stderr[-3000:]


def test_full_disk_stops_with_one_line_and_keeps_the_checkpoints(tmp_path):
    """The workdir on a 300 KiB file system (a tmpfs in a user namespace): the third checkpoint
    does not fit. The run exits 4 with the error as its last line; the checkpoints before it are
    intact, and the same command on a disk with room (the workdir copied out) resumes and ends
    equal to an uninterrupted run."""
    if not _unshare_ok():
        pytest.skip("needs unshare with user namespaces to mount a small tmpfs")
    cache = tmp_path / "cache"
    ref = tmp_path / "ref"
    assert _run(cache, TOY, f"--workdir={ref}").returncode == 0
    mnt = tmp_path / "small"
    mnt.mkdir()
    copy = tmp_path / "copy"
    script = (f'mount -t tmpfs -o size=300k tmpfs "{mnt}" && "$0" "$@"; rc=$?; cp -a "{mnt}/w" "{copy}"; exit $rc')
    proc = _run(cache, TOY, f"--workdir={mnt / 'w'}", prefix=["unshare", "-rm", "sh", "-c", script])
    assert proc.returncode == 4, proc.stderr[-3000:]
    # The run's own last word; orbax's save threads may still print their errors as Python exits.
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")][-1]
    assert line.startswith("error: the workdir could not be written (") and "No space left on device" in line, line
    kept = sorted(int(d) for d in os.listdir(copy / "checkpoints") if d.isdigit())
    assert kept and max(kept) < 40, kept
    again = _run(cache, TOY, f"--workdir={copy}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from step {max(kept)}" in again.stderr
    assert _results(copy) == _results(ref)
    assert _metrics(copy) == _metrics(ref)
