"""Workdir files other than checkpoints: config.json, metrics.jsonl, results.json, the progress line,
TensorBoard, and the persistent compilation cache's location."""

from __future__ import annotations

import json
import logging as _pylogging
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from kan_jax.train.config import ConfigError

__all__ = [
    "is_writer",
    "RUN_FILES",
    "clear_run",
    "config_to_dict",
    "check_or_write_config",
    "write_json",
    "read_json",
    "MetricsWriter",
    "Progress",
    "setup_compilation_cache",
]


def is_writer() -> bool:
    """Whether this process writes the workdir's files (config.json, metrics.jsonl, results.json,
    plots): process 0 of a multi-process run, or the only process. Checkpoints are written by
    every process together (orbax)."""
    return jax.process_index() == 0


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def config_to_dict(config) -> dict:
    """The resolved config as plain JSON data (tuples become lists)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=_jsonable, sort_keys=True))


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON atomically (tmp file + rename); NaN/inf become null. Only the
    writing process writes (``is_writer``); the others return."""
    if not is_writer():
        return

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(clean(json.loads(json.dumps(obj, default=_jsonable))), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def check_or_write_config(workdir: str, config) -> bool:
    """Writes ``workdir/config.json``; if one exists it must equal ``config`` (returns True then).

    Raises:
      ConfigError: the workdir holds a run of a different config.
    """
    path = os.path.join(workdir, "config.json")
    new = config_to_dict(config)
    if os.path.exists(path):
        try:
            old = read_json(path)
        except (OSError, ValueError):
            old = None
        if old != new:
            diff = sorted(_diff_keys(old or {}, new))
            raise ConfigError(
                f"workdir {workdir!r} holds a run of a different config (differs in: {', '.join(diff[:5]) or 'unreadable config.json'}); "
                "use a new --workdir, or --restart to start this one over (deletes its run files)"
            )
        return True
    os.makedirs(workdir, exist_ok=True)
    write_json(path, new)
    return False


RUN_FILES = ("config.json", "metrics.jsonl", "results.json", "checkpoints", "checkpoints_corrupt", "plots")
"""What a run writes into its workdir (``clear_run`` deletes these and nothing else)."""


def clear_run(workdir: str) -> list[str]:
    """Deletes the ``RUN_FILES`` in ``workdir`` (``--restart``: start a run over on purpose).

    Process 0 deletes, then every process waits for it (``multihost_utils.sync_global_devices``),
    so none reads a half-deleted run. Other files in the workdir are left alone. Returns the
    names deleted.
    """
    import shutil

    gone = [name for name in RUN_FILES if os.path.exists(os.path.join(workdir, name))]
    if is_writer():
        for name in gone:
            path = os.path.join(workdir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("kan_jax clear_run")
    return gone


def _diff_keys(a, b, prefix=""):
    keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else set()
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (and TensorBoard when available)."""

    def __init__(self, workdir: str, *, resume_step: int | None = None):
        """``resume_step``: keep the lines of steps up to it (a resumed run); None: start empty."""
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        self.last_step = -1  # the highest step in the file
        self.enabled = is_writer()  # other processes of a multi-process run write nothing
        if not self.enabled:
            return
        self._rewrite(-1 if resume_step is None else resume_step)
        try:
            from tensorboardX import SummaryWriter  # optional

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except Exception:  # noqa: BLE001 - any import/setup failure means no TensorBoard
            self._tb = None

    def truncate(self, step: int) -> None:
        """Drops the lines of steps after ``step``: a run about to train from ``step`` on (resumed
        from a checkpoint there) rewrites them, so the file matches an uninterrupted run's."""
        if self.enabled and self.last_step > step:
            self._rewrite(step)

    def _rewrite(self, step: int) -> None:
        keep = [rec for rec in self.read() if rec.get("step", 0) <= step]  # half-written lines are dropped
        # Atomically (tmp file + rename): a run killed here keeps the old file.
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(rec, default=_jsonable) + "\n" for rec in keep)
        os.replace(tmp, self.path)
        self.last_step = max([rec.get("step", 0) for rec in keep], default=-1)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
        self.last_step = max(self.last_step, int(record.get("step", 0)))
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def read(self) -> list[dict]:
        out = []
        if os.path.exists(self.path):
            for line in open(self.path):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A one-line progress bar with ETA on a TTY; periodic absl log lines otherwise."""

    def __init__(self, total: int, *, stream=None, log_interval_s: float = 5.0):
        self.total = max(int(total), 1)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.time()
        self.first_step = None
        self.log_interval_s = log_interval_s
        self._last_log = 0.0

    def update(self, step: int, info: dict, *, force: bool = False) -> None:
        now = time.time()
        if self.first_step is None:
            self.first_step = (step, now)
        s0, t0 = self.first_step
        rate = (step - s0) / (now - t0) if now > t0 and step > s0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        text = " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        if self.tty:
            width = 30
            done = int(width * min(step, self.total) / self.total)
            eta_s = f"{eta:5.0f}s" if math.isfinite(eta) else "  ?"
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{self.total} {text} ETA {eta_s}\x1b[K")
            self.stream.flush()
        elif force or now - self._last_log >= self.log_interval_s:
            self._last_log = now
            logging.info("step %d/%d %s (%.1f steps/s)", step, self.total, text, rate)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _quiet_cache_info(record) -> bool:
    """Drops JAX's per-program INFO lines about the persistent cache (warnings still show)."""
    return record.levelno >= _pylogging.WARNING or record.module != "compilation_cache"


CACHE_MAX_BYTES = 2 * 1024**3  # least recently used programs go past this (a hellokan run: ~2 MB)


def setup_compilation_cache(config=None) -> str | None:
    """Enables JAX's persistent compilation cache (before the first compile).

    Directory: ``config.compilation_cache_dir`` if set, else ``$KAN_JAX_COMPILATION_CACHE``, else
    ``$XDG_CACHE_HOME/kan_jax/jax`` (``~/.cache/kan_jax/jax``). ``""``/``"none"`` disables it;
    an already configured ``jax_compilation_cache_dir`` (e.g. ``$JAX_COMPILATION_CACHE_DIR``) wins.
    Size: at most ``CACHE_MAX_BYTES`` unless ``jax_compilation_cache_max_size`` is set; the bound
    also makes concurrent runs sharing the directory safe (reads and writes under a file lock).
    """
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    d = None
    if config is not None:
        d = config.get("compilation_cache_dir", None)
    if d is None:
        d = os.environ.get("KAN_JAX_COMPILATION_CACHE")
    if d is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "kan_jax", "jax")
    if not d or str(d).lower() == "none":
        return None
    try:
        os.makedirs(d, exist_ok=True)
        # A size bound turns on JAX's file lock around every cache read and write. Without it
        # (JAX's default, -1) an entry is written in place, and a second process that reads it
        # half-written (two runs of a sweep, two test workers) aborts in XLA's deserializer.
        if jax.config.jax_compilation_cache_max_size == -1 and "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
            jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
        jax.config.update("jax_compilation_cache_dir", d)
        # Every program, the small ones too: a warm hellokan run has ~110 programs that compile in
        # under 0.2 s each (~2 s together); cached they make it 11.2 s instead of 13.5 s, for 2.2 MB
        # of cache instead of 1.6 MB (docs/PERFORMANCE.md).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        _pylogging.getLogger("jax").addFilter(_quiet_cache_info)
    except Exception as err:  # noqa: BLE001 - a cache problem must never stop a run
        logging.warning("compilation cache disabled: %s", err)
        return None
    return d
