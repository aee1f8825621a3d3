"""Checkpoints of the meta-state with orbax: the latest N and the best by validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from metajax.typing import PyTree


def _to_items(tree: PyTree) -> dict[str, np.ndarray]:
    # Saved as a flat dict of leaves; the tree structure comes from the config,
    # which rebuilds it exactly (NamedTuples and empty nodes included).
    return {f"{i:05d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def _from_items(items: dict[str, Any], like: PyTree) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if len(items) != len(leaves):
        raise ValueError(f"checkpoint holds {len(items)} arrays but the config builds {len(leaves)}")
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(items[f"{i:05d}"]) for i in range(len(leaves))])


class Checkpoints:
    """An orbax ``CheckpointManager`` over ``directory`` keeping the last ``keep`` steps.

    Saves are asynchronous; :meth:`close` waits for them.
    """

    def __init__(self, directory: Path, keep: int):
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def save(self, step: int, state: PyTree, meta: dict[str, Any]) -> None:
        if step in self.manager.all_steps():  # a resumed run replaying past the last checkpoint
            self.manager.wait_until_finished()
            self.manager.delete(step)
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(_to_items(state)), meta=ocp.args.JsonSave(meta))
        )

    def latest_step(self) -> Optional[int]:
        self.manager.wait_until_finished()
        return self.manager.latest_step()

    def restore(self, step: int, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """The state at ``step`` in the structure of ``like``, and the saved metadata."""
        self.manager.wait_until_finished()
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_to_items(like)), meta=ocp.args.JsonRestore())
        )
        return _from_items(restored["state"], like), dict(restored["meta"])

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
