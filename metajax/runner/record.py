"""What a run directory records about where it ran (versions, devices, code)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import jax

PACKAGES = ("metajax", "jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "numpy")


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(path: Path) -> Optional[str]:
    """The commit of the git checkout holding ``path`` (with ``-dirty`` if modified), or None."""
    try:
        cwd = Path(path).resolve().parent if Path(path).is_file() else Path(path)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if commit.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(experiment_module: Optional[str] = None) -> dict[str, Any]:
    """Package versions, Python, devices and code commits, for ``run.json``."""
    devices = jax.devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "metajax_commit": git_commit(Path(__file__)),
        "experiment_module": experiment_module,
        "experiment_module_commit": git_commit(Path(experiment_module)) if experiment_module else None,
    }
