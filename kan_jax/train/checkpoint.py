"""Orbax checkpoints of a run: ``workdir/checkpoints``, one step per save, arrays and JSON metadata.

A save is atomic (orbax writes a temporary directory and renames it), so a run killed while saving
leaves the previous checkpoints as they were. Saves are asynchronous (orbax's default): ``save``
copies the arrays to host memory and returns, the files are written in the background while
training goes on, and the next ``save`` (or ``wait``, ``close``) first waits for that write. A
checkpoint that a newer one replaces (``delete``) is deleted only once the newer one is on disk.
On hellokan, where a checkpoint every 100 L-BFGS iterations follows 0.2 s of training, the
synchronous writes were 2.5 s of a 25 s run (docs/PERFORMANCE.md). A checkpoint whose files were damaged afterwards
(truncated, overwritten, deleted) fails to restore: ``restore_latest`` then warns, moves it to
``workdir/checkpoints_corrupt/STEP`` and falls back to the one before; it never starts a run over
silently while checkpoints exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx

__all__ = ["Checkpointer", "CheckpointError", "CORRUPT_DIR", "model_state", "load_model_state"]

CORRUPT_DIR = "checkpoints_corrupt"
"""Where ``restore_latest`` moves checkpoints that fail to restore (under the workdir)."""


class CheckpointError(RuntimeError):
    """Checkpoints exist in a workdir but none of them restores."""


def model_state(model: nnx.Module, opt_state: Any = None, key: jax.Array | None = None) -> dict:
    """The arrays a checkpoint holds for ``model``: ``params`` and ``rest`` (grids, masks, symbolic
    edges) as pure dicts, plus ``opt_state`` and ``key`` (as raw key data, the same on every
    process) when given."""
    _, params, rest = nnx.split(model, nnx.Param, ...)
    out = {"params": nnx.to_pure_dict(params), "rest": nnx.to_pure_dict(rest)}
    if opt_state is not None:
        out["opt_state"] = opt_state
    if key is not None:
        out["key"] = np.asarray(jax.random.key_data(key))
    return out


def load_model_state(model: nnx.Module, state: dict) -> nnx.Module:
    """A new module of ``model``'s structure holding the ``params`` and ``rest`` of ``state``."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    nnx.replace_by_pure_dict(params, state["params"])
    nnx.replace_by_pure_dict(rest, state["rest"])
    return nnx.merge(graphdef, params, rest)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_io_error(err: BaseException) -> bool:
    """Whether a failed save is the file system's doing (full, read-only, no permission): orbax
    reports tensorstore's errors as ValueError with the OS error in the text."""
    while err is not None:
        if isinstance(err, OSError) or re.search(
                r"os_error_code|RESOURCE_EXHAUSTED|PERMISSION_DENIED|No space left|Read-only file system|Permission denied",
                str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


class Checkpointer:
    """Orbax ``CheckpointManager`` under ``workdir/checkpoints``: items ``state`` (arrays) and ``meta`` (JSON).

    ``meta`` is read first so the caller can rebuild a model of the right shapes (e.g. the grid
    size of the saved stage) before restoring ``state`` into it. ``max_to_keep``: the newest
    checkpoints kept (None: all of them).
    """

    def __init__(self, workdir: str, *, max_to_keep: int | None):
        import orbax.checkpoint as ocp

        if max_to_keep is not None and int(max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None (keep all), got {max_to_keep!r}")
        self._ocp = ocp
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None if max_to_keep is None else int(max_to_keep), create=True,
                                                 enable_async_checkpointing=True),
        )
        self._in_flight: int | None = None  # the step being written in the background
        self._doomed: list[int] = []  # steps ``delete`` holds back until that write is done

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps() or [])

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Starts writing checkpoint ``step`` (``state``: arrays, ``meta``: JSON) after the save
        before it is on disk; returns once the arrays are copied, the files follow in the
        background (``wait``). A step that exists already is left as it is.

        Raises:
          OSError: the file system refused this save or the one before (full, read-only).
        """
        ocp = self._ocp
        if step in self.all_steps():
            return
        self.wait()
        with self._io_errors(step):
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        self._in_flight = step

    def wait(self) -> None:
        """Blocks until the save in flight (if any) is on disk, then deletes the checkpoints that
        ``delete`` held back for it.

        Raises:
          OSError: the file system refused that save.
        """
        if self._in_flight is not None:
            step, self._in_flight = self._in_flight, None
            with self._io_errors(step):
                self.manager.wait_until_finished()
        doomed, self._doomed = self._doomed, []
        for step in doomed:
            self.manager.delete(step)

    @contextlib.contextmanager
    def _io_errors(self, step: int):
        """File-system failures of a save as ``OSError``; other errors as they are."""
        try:
            yield
        except Exception as err:
            if not _is_io_error(err):
                raise
            # The half-written save stays a temporary directory, which restores ignore.
            raise OSError(f"could not write checkpoint {step} in {self.directory}: {_first_line(err)}") from err

    def delete(self, step: int) -> None:
        """Deletes checkpoint ``step``; while a save is in flight, once that save is on disk (a
        checkpoint is never gone before the one replacing it exists)."""
        if self._in_flight is None:
            self.manager.delete(step)
        else:
            self._doomed.append(step)

    def restore_meta(self, step: int) -> dict:
        ocp = self._ocp
        self.wait()
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, step: int, like: dict) -> dict:
        ocp = self._ocp
        self.wait()
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]

    def restore_latest(self, like_fn: Callable[[dict], dict]) -> tuple[int, dict, dict] | None:
        """The newest checkpoint that restores: ``(step, meta, state)``; None when there is none.

        ``like_fn(meta)`` gives the arrays to restore into (their shapes, dtypes and layout). A
        checkpoint that fails (damaged files) is logged as a warning and set aside
        (``set_aside``), and the one before it is tried.

        Raises:
          CheckpointError: checkpoints exist but none restores (the run is not started over).
        """
        tried = []
        for step in reversed(self.all_steps()):
            try:
                meta = self.restore_meta(step)
                return step, meta, self.restore_state(step, like_fn(meta))
            except Exception as err:  # noqa: BLE001 - any failure to read a checkpoint means it is damaged
                where = self.set_aside(step)
                logging.warning("checkpoint %d in %s does not restore (%s: %s): moved to %s; trying the one before",
                                step, self.directory, type(err).__name__, _first_line(err)[:300], where)
                tried.append(step)
        if tried:
            raise CheckpointError(
                f"none of the checkpoints in {self.directory} restores (steps {tried}, now in "
                f"{os.path.join(self.workdir, CORRUPT_DIR)}): rerun with --restart to start over")
        return None

    def set_aside(self, step: int) -> str:
        """Moves checkpoint ``step`` to ``workdir/checkpoints_corrupt/STEP`` (kept for inspection,
        out of the manager's sight) and returns that path. Process 0 moves; every process waits."""
        self.wait()
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.workdir, CORRUPT_DIR, str(step))
        if jax.process_index() == 0 and os.path.exists(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            shutil.move(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"kan_jax set_aside {step}")
        self.manager.reload()
        return dst

    def close(self) -> None:
        """Waits for the save in flight and closes the manager.

        Raises:
          OSError: the file system refused that save.
        """
        try:
            self.wait()
        finally:
            self.manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is on its way out already: a failed save must not replace it
            self.close()
        except Exception as err:  # noqa: BLE001 - logged; the error in flight is the one reported
            logging.warning("closing the checkpoints in %s: %s", self.directory, _first_line(err))
