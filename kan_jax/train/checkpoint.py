"""Orbax checkpoints of a run: ``workdir/checkpoints``, one step per save, arrays and JSON metadata."""

from __future__ import annotations

import os

import jax

__all__ = ["Checkpointer"]


class Checkpointer:
    """Orbax ``CheckpointManager`` under ``workdir/checkpoints``: items ``state`` (arrays) and ``meta`` (JSON).

    ``meta`` is read first so the caller can rebuild a model of the right shapes (e.g. the grid
    size of the saved stage) before restoring ``state`` into it.
    """

    def __init__(self, workdir: str, *, max_to_keep: int):
        import orbax.checkpoint as ocp

        if int(max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep!r}")
        self._ocp = ocp
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=int(max_to_keep), create=True)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, meta: dict) -> None:
        ocp = self._ocp
        if step in (self.manager.all_steps() or []):
            return
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict:
        ocp = self._ocp
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, step: int, like: dict) -> dict:
        ocp = self._ocp
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
