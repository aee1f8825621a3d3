"""Checkpoints of the meta-state with orbax, sealed by a checksum manifest.

orbax writes each step atomically (a temporary directory renamed when
complete) and keeps the last N. It does not detect damage afterwards: a
truncated file is still listed by ``latest_step()`` and fails with a raw
``JSONDecodeError``, and a flipped byte can restore silently wrong values.
So once orbax has finished a step, :class:`Checkpoints` writes
``metajax_manifest.json`` into the step directory: the sha256 of every file
orbax wrote. A step without a manifest (killed mid-save) or whose files do
not match it is skipped with a :class:`~metajax.errors.CheckpointWarning`,
falling back to the previous step.

Each checkpoint's metadata carries the config that wrote it; restoring it
under a different config is a :class:`~metajax.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from metajax.errors import CheckpointError, CheckpointWarning, ConfigError
from metajax.runner.build import resolve_conv_impl
from metajax.typing import Config, PyTree

MANIFEST = "metajax_manifest.json"
CONFIG_FILE = "config.json"  # in the run directory, the parent of a checkpoint directory
PAUSE_ENV = "METAJAX_TEST_PAUSE_SAVE"  # test-only: "<step>" pauses that save before orbax commits it
PAUSE_MARKER = "PAUSED_SAVE"


def _to_items(tree: PyTree) -> dict[str, np.ndarray]:
    # Saved as a flat dict of leaves; the tree structure comes from the config,
    # which rebuilds it exactly (NamedTuples and empty nodes included).
    return {f"{i:05d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def _from_items(items: dict[str, Any], like: PyTree, where: Path) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if len(items) != len(leaves):
        raise ConfigError(
            f"checkpoint {where} holds {len(items)} arrays but the config builds {len(leaves)}; "
            "it was written by a different model or learner: restore the run's config.json or use a new run directory."
        )
    out = []
    for i, leaf in enumerate(leaves):
        value = np.asarray(items[f"{i:05d}"])
        if value.shape != np.shape(leaf):
            raise ConfigError(
                f"checkpoint {where} array {i} has shape {value.shape} but the config builds {np.shape(leaf)}; "
                "restore the run's config.json or use a new run directory."
            )
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(step_dir: Path) -> None:
    """Writes ``metajax_manifest.json``: the sha256 of every file under ``step_dir`` (atomic rename)."""
    step_dir = Path(step_dir)
    files = {str(p.relative_to(step_dir)): sha256_file(p) for p in _files(step_dir)}
    tmp = step_dir / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"sha256": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, step_dir / MANIFEST)
    _fsync_dir(step_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_manifest(step_dir: Path) -> Optional[str]:
    """``None`` if every file listed in the manifest exists with its checksum, else what is wrong."""
    path = Path(step_dir) / MANIFEST
    if not path.exists():
        return "incomplete (no checksum manifest: the process was probably killed while saving)"
    try:
        files = json.loads(path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        return f"unverifiable (its {MANIFEST} is unreadable)"
    if not files:
        return f"unverifiable (its {MANIFEST} lists no files)"
    for name, expected in sorted(files.items()):
        file = Path(step_dir) / name
        if not file.is_file():
            return f"corrupt ({name} is missing)"
        if sha256_file(file) != expected:
            return f"corrupt ({name} does not match its checksum)"
    return None


def config_digest(config: Config) -> str:
    """sha256 of a config's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


RESUMABLE = ("guard", "parallel")  # config keys a resumed run may change (devices: results equal to float tolerance)
# Keys that do not change what a checkpoint's arrays mean: a checkpoint restores under any of their values.
STATE_FREE = ("guard", "parallel", "steps", "log_every", "checkpoint", "eval", "reference")


def comparable(config: Any, ignore: tuple[str, ...] = RESUMABLE) -> Any:
    """``config`` without the top-level keys in ``ignore``.

    ``model.conv_impl`` is completed as the builder resolves it, so a run
    recorded before that key was written compares equal to the same config
    today (same strategy, same convolutions).
    """
    if not isinstance(config, dict):
        return config
    return {k: v for k, v in resolve_conv_impl(config).items() if k not in ignore}


def config_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Differences ``"key: old -> new"`` between two JSON-like configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += config_changes(old.get(key, "<missing>"), new.get(key, "<missing>"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _pausing_path_class(step: str):
    """A temporary-path class that stops before orbax commits ``step`` (test-only hook, see PAUSE_ENV)."""
    from orbax.checkpoint._src.path import atomicity

    class PausingTemporaryPath(atomicity.AtomicRenameTemporaryPath):
        async def finalize(self):
            final = Path(self.get_final())
            if final.name == step:
                # Every file is written, the rename that commits them is not done:
                # the test kills the process here. Resumes after a minute if not.
                (final.parent.parent / PAUSE_MARKER).write_text(str(final))
                time.sleep(60)
            await super().finalize()

    return PausingTemporaryPath


class Checkpoints:
    """An orbax ``CheckpointManager`` over ``directory`` keeping the last ``keep`` verified steps.

    Saves are asynchronous; the manifest of a step is written once orbax has
    finished it (at the next :meth:`save`, :meth:`latest_step` or :meth:`close`).

    Args:
      directory: the checkpoint directory (made absolute: orbax needs it).
      keep: how many steps orbax keeps.
      config: the run's config, stored with every checkpoint and compared on
        restore; defaults to ``config.json`` in ``directory``'s parent, if any.
    """

    def __init__(self, directory: Path, keep: int, *, config: Optional[Config] = None):
        self.directory = Path(directory).absolute()
        self._config = config
        pause = os.environ.get(PAUSE_ENV)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                cleanup_tmp_directories=True,
                **({"temporary_path_class": _pausing_path_class(pause)} if pause else {}),
            ),
        )
        self._unsealed: list[int] = []
        self._problems: dict[int, Optional[str]] = {}
        self._warned: set[int] = set()

    def config(self) -> Optional[Config]:
        if self._config is None and (self.directory.parent / CONFIG_FILE).exists():
            try:
                self._config = json.loads((self.directory.parent / CONFIG_FILE).read_text())
            except ValueError:
                return None
        return self._config

    def _seal(self) -> None:
        """Waits for pending saves and writes their manifests."""
        self.manager.wait_until_finished()
        for step in self._unsealed:
            step_dir = self.directory / str(step)
            if step_dir.is_dir():
                write_manifest(step_dir)
        self._unsealed = []

    def save(self, step: int, state: PyTree, meta: dict[str, Any]) -> None:
        """Starts saving ``state`` and JSON ``meta`` (plus the config) as ``step``; returns before it is written."""
        self._seal()
        if step in self.manager.all_steps():  # a resumed run replaying past its last good checkpoint
            self.manager.delete(step)
        self._problems.pop(step, None)
        self._warned.discard(step)
        config = self.config()
        meta = {**meta, "config": config} if config is not None else dict(meta)
        self.manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(_to_items(state)), meta=ocp.args.JsonSave(meta))
        )
        self._unsealed.append(step)

    def problem(self, step: int) -> Optional[str]:
        """What is wrong with ``step`` on disk (``None`` when its manifest verifies); cached."""
        if step not in self._problems:
            self._problems[step] = verify_manifest(self.directory / str(step))
        return self._problems[step]

    def _warn(self, step: int, why: str) -> None:
        if step not in self._warned:
            self._warned.add(step)
            warnings.warn(
                f"checkpoint {self.directory / str(step)} is {why}; falling back to the previous checkpoint.",
                CheckpointWarning,
                stacklevel=3,
            )

    def valid_steps(self) -> list[int]:
        """Steps whose manifest verifies, newest first; warns about each skipped newer one."""
        self._seal()
        steps = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            why = self.problem(step)
            if why is None:
                steps.append(step)
            elif not steps:
                self._warn(step, why)
        return steps

    def latest_step(self) -> Optional[int]:
        """The newest step that verifies (older ones replace corrupt newer ones, with a warning)."""
        steps = self.valid_steps()
        return steps[0] if steps else None

    def restore(self, step: int, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """The state at ``step`` in the structure of ``like``, and the saved metadata.

        Raises:
          CheckpointError: the step is corrupt, incomplete or unreadable.
          ConfigError: it was written under a different config than this run's.
        """
        self._seal()
        where = self.directory / str(step)
        why = self.problem(step)
        if why is not None:
            raise CheckpointError(f"checkpoint {where} is {why}; restore another step or retrain.")
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_to_items(like)), meta=ocp.args.JsonRestore()),
            )
        except Exception as e:  # orbax raises whatever its readers raise (JSONDecodeError, ValueError, ...)
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise CheckpointError(
                f"checkpoint {where} cannot be read ({type(e).__name__}: {first}); restore another step or retrain."
            ) from None
        meta = dict(restored["meta"])
        saved, config = meta.pop("config", None), self.config()
        if saved is not None and config is not None and comparable(saved, STATE_FREE) != comparable(config, STATE_FREE):
            changes = config_changes(comparable(saved, STATE_FREE), comparable(config, STATE_FREE))
            raise ConfigError(
                f"checkpoint {where} was written with a different config ({'; '.join(changes[:3])}"
                f"{' ...' if len(changes) > 3 else ''}); restore the run's config.json or evaluate the right run."
            )
        return _from_items(restored["state"], like, where), meta

    def restore_latest(self, like: PyTree) -> Optional[tuple[int, PyTree, dict[str, Any]]]:
        """``(step, state, meta)`` of the newest readable step, falling back past bad ones with a warning."""
        for step in self.valid_steps():
            try:
                state, meta = self.restore(step, like)
            except CheckpointError as e:
                self._problems[step] = str(e)
                self._warn(step, "unreadable")
                continue
            return step, state, meta
        return None

    def close(self) -> None:
        self._seal()
        self.manager.close()
