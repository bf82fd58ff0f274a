"""Runs one experiment: ``python -m experiments.main --config=configs/toy.py --workdir=DIR``.

Flags -> ``kan_jax.train.train_and_evaluate(config, workdir)``. Overrides use absl's form
(``--config.model.grid_size=10``).

A rerun of the same command resumes; a workdir holding another config is refused (the message
names the differing fields) unless ``--restart`` is given, which deletes that workdir's run files
first.

SIGTERM and SIGINT (a preempted job, Ctrl-C) ask the run to stop at its next chunk boundary: it
checkpoints the step reached, writes results.json with ``status: "preempted"`` and where, and
exits; rerunning the same command resumes there. A second signal stops at once (the last
periodic checkpoint is kept). The handlers live here, at the top of the run; the library only
polls the flag they set (``train_and_evaluate(should_stop=...)``).

Exit status: 0 completed; 2 a runner error (bad flags or config values, a workdir holding
another config: one line on stderr, no traceback, nothing written; or checkpoints none of
which restores: they are set aside, nothing is trained); 3 diverged (a loss turned
non-finite: results.json has ``status: "diverged"``, ``diverged_step`` and ``diverged_stage``,
and the checkpoints stop at the last good state, so a rerun resumes from there); 4 the workdir
could not be written (read-only, disk full: one line; the checkpoints written so far are kept
and a rerun resumes from the newest); 128 + the signal number when stopped by a signal (130
SIGINT, 143 SIGTERM, the shell's convention).
"""

import os
import re
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/toy.py[:ARG].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics, checkpoints, results, plots.")
_COORD = flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port (multi-host).")
_NPROC = flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes.")
_PID = flags.DEFINE_integer("process_id", None, "jax.distributed: this process's id.")
_RESTART = flags.DEFINE_bool("restart", False, "Delete the workdir's run files (config.json, metrics.jsonl, "
                             "results.json, checkpoints/, plots/) and start over, whatever config they were from.")


EXIT_DIVERGED = 3
EXIT_WORKDIR = 4


class _StopOnSignal:
    """The run's stop flag: SIGTERM or SIGINT sets it (the runner polls it between chunks and
    stages); a second signal raises KeyboardInterrupt to stop at once."""

    def __init__(self):
        self.signum = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write: a handler may run in the middle of another write to sys.stderr.
        os.write(2, f"{signal.Signals(signum).name}: stopping at the next chunk boundary with a checkpoint "
                    "(send it again to stop now)\n".encode())

    def install(self) -> "_StopOnSignal":
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)
        return self

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)


def _die(msg: str) -> None:
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    if any(ln.startswith("Traceback") for ln in lines):  # config_flags embeds the config file's traceback
        lines = [lines[0], lines[-1]]
    sys.stderr.write(f"error: {' '.join(lines)}\n")
    sys.exit(2)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001 - flag errors, config files that fail to load
        if isinstance(err, AttributeError) and isinstance(err.__context__, KeyError):  # an override of a missing field
            raw = str(err.__context__.args[0])  # the field's name, then ml_collections' suggestion if any
            field = re.match(r"['\"]?(\w+)", raw).group(1)
            hint = re.search(r'Did you mean "(\w+)"', raw)
            names = [a.split("=")[0][2:] for a in argv if a.startswith("--config.") and a.split("=")[0].endswith("." + field)]
            cfg = [a for a in argv if a.startswith("--config=")]
            _die(f"{names[0] if names else field}: no such field in {cfg[0] if cfg else 'the config'}"
                 + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
        _die(str(err) or type(err).__name__)


def _quiet_orbax():
    """Drops orbax's per-save INFO lines from the absl log (warnings still show)."""
    import logging as pylogging

    class _Filter(pylogging.Filter):
        def filter(self, record):
            return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname

    for handler in pylogging.getLogger("absl").handlers + pylogging.getLogger().handlers:
        handler.addFilter(_Filter())


def main(argv):
    if len(argv) > 1:
        _die(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _WORKDIR.value:
        _die("--workdir is required (a directory for the run's outputs)")
    try:
        config = _CONFIG.value  # config files load lazily, on first access
        config.keys()
    except Exception as err:  # noqa: BLE001 - a config file that fails to load or rejects its argument
        _die(f"--config: {str(err) or type(err).__name__}")
    if config is None:
        _die("--config is required, e.g. --config=configs/toy.py")
    import jax

    if _distributed():
        # CPU processes talk through gloo (several processes on one machine, a CPU cluster);
        # GPU and TPU backends bring their own collectives and ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=_COORD.value, num_processes=_NPROC.value, process_id=_PID.value
        )
    from kan_jax.train import ConfigError, Preempted, summary_line, train_and_evaluate
    from kan_jax.train.checkpoint import CheckpointError

    _quiet_orbax()
    stop = _StopOnSignal().install()
    try:
        results = train_and_evaluate(config, _WORKDIR.value, restart=_RESTART.value, should_stop=stop)
    except (ConfigError, CheckpointError) as err:
        _die(str(err))
    except Preempted as err:
        if jax.process_index() == 0:
            print(f"preempted: {err}; rerun the same command to resume (results.json in {_WORKDIR.value})")
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: stopped without a new checkpoint; rerunning the same command resumes from the "
                         "newest one\n")
        sys.exit(stop.exit_code)
    except OSError as err:
        sys.stderr.write(f"error: the workdir could not be written ({err}); the checkpoints written so far are kept: "
                         "make it writable (or free space) and rerun the same command to resume\n")
        sys.exit(EXIT_WORKDIR)
    if jax.process_index() == 0:
        print(summary_line(results, _WORKDIR.value))
    if results.get("status") == "diverged":
        sys.exit(EXIT_DIVERGED)


def _distributed() -> bool:
    """Whether the flags ask for ``jax.distributed`` (several processes)."""
    return bool(_COORD.value) or _NPROC.value is not None or _PID.value is not None


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
